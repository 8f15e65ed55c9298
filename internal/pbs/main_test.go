package pbs

import (
	"fmt"
	"os"
	"testing"

	"canhazgpu/internal/buildtest"
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
	"canhazgpu-prolog":      "canhazgpu/prolog",
	"canhazgpu-epilog":      "canhazgpu/epilog",
	"canhazgpu-healthcheck": "canhazgpu/cmd/canhazgpu-healthcheck",
	"canhazgpu":             "canhazgpu/cmd/canhazgpu",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if binDir, err = buildtest.Build(programs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	if srv, err = redistest.Start(redistest.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Stop()
	return m.Run()
}
