package slurm

import (
	"context"
	"io"
	"os"

	"canhazgpu/allocator"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
)

// Scheduler is Slurm's adapter as the programs list it. Slurm runs the
// hook programs without arguments. Whether a Slurm job still runs here it
// judges for the health check from slurmd's step sockets, the job files,
// the GPUs' processes and scontrol (Watch).
type Scheduler struct{}

var _ batch.Scheduler = Scheduler{}

// Kind is "slurm".
func (Scheduler) Kind() allocator.Kind { return allocator.KindSlurm }

// Policy is the [slurm] section.
func (Scheduler) Policy(cfg *config.Config) batch.Policy { return Policy(cfg) }

// Flag is "": slurmd passes no arguments.
func (Scheduler) Flag() string { return "" }

// Prolog is PrologMain on the program's environment.
func (Scheduler) Prolog(ctx context.Context, _ []string, stdout, _ io.Writer) int {
	return PrologMain(ctx, os.Environ(), stdout)
}

// Epilog is EpilogMain on the program's environment.
func (Scheduler) Epilog(ctx context.Context, _ []string, stdout, _ io.Writer) int {
	return EpilogMain(ctx, os.Environ(), stdout)
}
