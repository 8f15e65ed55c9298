// Package buildtest builds the project's programs for tests that run them
// the way their real callers do (Slurm, the PBS hook, a user's shell).
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles each program (name → import path) into a new temporary
// directory and returns it; the caller removes it. The directory is
// world-readable, since some programs run as other users (the TaskProlog
// as the job's user, the CLI as test accounts).
func Build(programs map[string]string) (string, error) {
	return BuildWithSystemFile(programs, "")
}

// BuildWithSystemFile is Build with another system config file compiled
// in (config.SystemFile; "" keeps the default). Ordinary users' programs
// read only that file, so tests that run them as test accounts build them
// this way, as a site's package does with /etc/canhazgpu/config.toml.
func BuildWithSystemFile(programs map[string]string, systemFile string) (string, error) {
	dir, err := os.MkdirTemp("", "canhazgpu-bin-")
	if err != nil {
		return "", fmt.Errorf("buildtest: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("buildtest: %w", err)
	}
	for name, pkg := range programs {
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if systemFile != "" {
			args = append(args, "-ldflags", "-X canhazgpu/internal/config.SystemFile="+systemFile)
		}
		out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("buildtest: build %s: %w\n%s", name, err, out)
		}
	}
	return dir, nil
}
