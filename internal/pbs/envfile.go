package pbs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"canhazgpu/allocator/gpu"
)

// envLines is the job's environment as the prolog prints it: the
// vendor's variables (UUIDs where the runtime takes them, as they hold
// whatever numbering the job sees), then the indices in the same order
// for people. A GPU that vanished since the grant cannot be used and is
// left out.
func envLines(v gpu.Vendor, held gpu.Set) string {
	var b strings.Builder
	for _, e := range v.Exports(held.IDs(), gpu.ByUUID) {
		b.WriteString(e.Name + "=" + e.Value + "\n")
	}
	b.WriteString("CANHAZGPU_GPU_INDICES=" + held.IndexList() + "\n")
	return b.String()
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
