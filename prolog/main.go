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
	"os"

	"canhazgpu/internal/batch"
	"canhazgpu/internal/hookmain"
	"canhazgpu/internal/schedulers"
)

// usage answers --help: Slurm never passes arguments, so a flag comes
// from a person or from the man page generator.
const usage = `Usage: canhazgpu-prolog
       canhazgpu-prolog --pbs [flags]

Reserve a batch job's GPUs when the job starts on this node, and tell its
tasks which GPUs to use.

Under Slurm it serves as Prolog= and TaskProlog= and takes no arguments:
SLURM_SCRIPT_CONTEXT says which role it plays. As the Prolog (root) it
reserves the GPUs of SLURM_JOB_GPUS for the job in one atomic store
operation, per [slurm] placement, on_conflict and on_store_error. As the
TaskProlog (the job's user) it prints the export lines for the step's
GPUs from the job's state file, per [slurm] export.

Under PBS it is called with --pbs by the canhazgpu hook or the Torque
prologue; 'canhazgpu-prolog --pbs --help' lists those flags.

Settings come from /etc/canhazgpu/config.toml, or the file CANHAZGPU_CONFIG
names. Exit status: 0 the job may run; non-zero the scheduler must not
start it here (Slurm drains the node and requeues the job).
`

func main() {
	p := hookmain.Program{Name: "canhazgpu-prolog", Role: "Slurm's Prolog and TaskProlog", Usage: usage,
		Schedulers: schedulers.All, Mode: batch.Scheduler.Prolog}
	os.Exit(p.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
