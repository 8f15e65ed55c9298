// Package integration runs canhazgpu's programs as their real callers run
// them: the Slurm tests under a private slurmctld and slurmd (see
// slurmtest), the benchmarks as separate processes. Every test talks to a
// private redis-server.
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"canhazgpu/internal/buildtest"
	"canhazgpu/internal/redistest"
)

var (
	srv *redistest.Server
	// binDir holds the programs under test, built once for the test binary.
	// It is world-readable: the TaskProlog runs as the job's user.
	binDir string
)

// programs are the commands built for the tests: name → package.
var programs = map[string]string{
	"canhazgpu-prolog": "canhazgpu/prolog",
	"canhazgpu-epilog": "canhazgpu/epilog",
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	srv, err = redistest.Start(redistest.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Stop()
	if binDir, err = buildtest.Build(programs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	return m.Run()
}

// bin is the path of a built program.
func bin(name string) string { return filepath.Join(binDir, name) }
