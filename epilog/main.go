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
	"os"

	"canhazgpu/internal/batch"
	"canhazgpu/internal/hookmain"
	"canhazgpu/internal/schedulers"
)

// usage answers --help: Slurm never passes arguments, so a flag comes
// from a person or from the man page generator.
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
	p := hookmain.Program{Name: "canhazgpu-epilog", Role: "Slurm's Epilog", Usage: usage,
		Schedulers: schedulers.All, Mode: batch.Scheduler.Epilog}
	os.Exit(p.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
