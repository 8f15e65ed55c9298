// Command canhazgpu-epilog releases a batch job's GPUs when the job ends
// on a node.
//
// Under Slurm it is Epilog=: Slurm runs it without arguments on every node
// of the job, also when the Prolog failed or never ran (see docs/slurm.md).
// Settings come from /etc/canhazgpu/config.toml, or the file CANHAZGPU_CONFIG
// names.
package main

import (
	"context"
	"fmt"
	"os"

	"canhazgpu/internal/pbs"
	"canhazgpu/internal/slurm"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run picks the scheduler. Slurm passes no arguments; other schedulers'
// modes are selected by a leading flag.
func run(args []string) int {
	if len(args) > 0 && args[0] == "--pbs" {
		return pbs.RunEpilog(context.Background(), args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "canhazgpu-epilog: unexpected argument %q: as Slurm's Epilog it takes none\n", args[0])
		return 2
	}
	return slurm.EpilogMain(context.Background(), os.Environ(), os.Stdout)
}
