// Command canhazgpu-prolog reserves a batch job's GPUs when the job starts
// on a node and tells the job's tasks which GPUs to use.
//
// Under Slurm it is both Prolog= and TaskProlog=: Slurm runs it without
// arguments and says which in SLURM_SCRIPT_CONTEXT (see docs/slurm.md).
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
		return pbs.RunProlog(context.Background(), args[1:], os.Stdout, os.Stderr)
	}
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "canhazgpu-prolog: unexpected argument %q: as Slurm's Prolog and TaskProlog it takes none\n", args[0])
		return 2
	}
	return slurm.PrologMain(context.Background(), os.Environ(), os.Stdout)
}
