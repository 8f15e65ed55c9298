package pbs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"canhazgpu/internal/redistest"
)

var (
	srv *redistest.Server
	// binDir holds the programs the hook and the Torque wrappers run,
	// built from this tree once per test binary.
	binDir string
)

// repoRoot is where the contrib/ tests and the main packages are.
const repoRoot = "../.."

var programs = map[string]string{
	"canhazgpu-prolog":      "./prolog",
	"canhazgpu-epilog":      "./epilog",
	"canhazgpu-healthcheck": "./cmd/canhazgpu-healthcheck",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if binDir, err = os.MkdirTemp("", "canhazgpu-pbs-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	for name, pkg := range programs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			return 1
		}
	}
	if srv, err = redistest.Start(redistest.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Stop()
	return m.Run()
}
