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
	"canhazgpu/internal/version"
)

// usage answers --help: Slurm never passes arguments, so any flag here
// comes from a person or from the man page generator.
const usage = `Usage: canhazgpu-epilog
       canhazgpu-epilog --pbs [flags]

Release a batch job's GPUs when the job ends on this node.

Under Slurm it serves as Epilog= and takes no arguments. It releases every
reservation of this node held by the job in SLURM_JOB_ID, whatever
SLURM_JOB_GPUS says, also after a failed Prolog; nothing to release is
success. When the store cannot be reached, [slurm] on_store_error decides:
allow (a release marker the health check settles later, exit 0) or fail.

Under PBS it is called with --pbs by the canhazgpu hook or the Torque
epilogue; 'canhazgpu-epilog --pbs --help' lists those flags.

Settings come from /etc/canhazgpu/config.toml, or the file CANHAZGPU_CONFIG
names. Exit status: 0 released or nothing to release; non-zero Slurm
drains the node.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run picks the scheduler. Slurm passes no arguments; other schedulers'
// modes are selected by a leading flag.
func run(args []string) int {
	if len(args) > 0 && args[0] == "--pbs" {
		return pbs.RunEpilog(context.Background(), args[1:], os.Stdout, os.Stderr)
	}
	if len(args) == 1 {
		switch args[0] {
		case "-h", "--help":
			fmt.Print(usage)
			return 0
		case "--version":
			fmt.Println("canhazgpu-epilog " + version.String())
			return 0
		}
	}
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "canhazgpu-epilog: unexpected argument %q: as Slurm's Epilog it takes none\n", args[0])
		return 2
	}
	return slurm.EpilogMain(context.Background(), os.Environ(), os.Stdout)
}
