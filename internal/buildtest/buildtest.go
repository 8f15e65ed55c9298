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
	dir, err := os.MkdirTemp("", "canhazgpu-bin-")
	if err != nil {
		return "", fmt.Errorf("buildtest: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("buildtest: %w", err)
	}
	for name, pkg := range programs {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("buildtest: build %s: %w\n%s", name, err, out)
		}
	}
	return dir, nil
}
