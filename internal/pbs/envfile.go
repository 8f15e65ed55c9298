package pbs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// envLines is the job's environment as the prolog prints it: UUIDs for
// CUDA, the NVML indices in the same order for people.
func envLines(uuids []string, indices []int) string {
	idx := make([]string, len(indices))
	for i, n := range indices {
		idx[i] = fmt.Sprint(n)
	}
	return "CUDA_VISIBLE_DEVICES=" + strings.Join(uuids, ",") + "\n" +
		"CANHAZGPU_GPU_INDICES=" + strings.Join(idx, ",") + "\n"
}

// writeEnvFile replaces path with text atomically (temp file and rename in
// the same directory), so the launch step never reads half a file. The
// file is world-readable: the job's user reads it (Torque jobs source it).
func writeEnvFile(path, text string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return fmt.Errorf("env file: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("env file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("env file: %w", err)
	}
	return nil
}

// removeEnvFile removes path; a file that is not there is fine, so the
// epilogue and the end step may both remove it.
func removeEnvFile(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("env file: %w", err)
	}
	return nil
}
