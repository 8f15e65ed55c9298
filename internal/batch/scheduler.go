package batch

import (
	"context"
	"io"

	"canhazgpu/allocator"
	"canhazgpu/internal/config"
)

// Scheduler is one scheduler's adapter, as the programs list it
// (internal/schedulers).
type Scheduler interface {
	// Kind names the scheduler's reservations and job files.
	Kind() allocator.Kind
	// Policy reads the scheduler's section of the settings.
	Policy(cfg *config.Config) Policy
	// Flag selects the scheduler on the hook programs' command line
	// ("--pbs"); "" for the one scheduler that runs them without
	// arguments (Slurm).
	Flag() string
	// Prolog and Epilog are canhazgpu-prolog and canhazgpu-epilog under
	// the scheduler; args are those after Flag. They return the exit
	// status.
	Prolog(ctx context.Context, args []string, stdout, stderr io.Writer) int
	Epilog(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Liveness is what a scheduler adapter may add for the health check: a
// way to ask the scheduler whether one of its jobs still runs here.
// Without it a job's reservation is found stale by the boot id alone.
type Liveness interface {
	// Ended says why a job of the scheduler no longer runs on this node,
	// or "" while it runs. An error means the scheduler could not be
	// asked: the job keeps its GPUs this round, and the check says so.
	Ended(ctx context.Context, job string) (why string, err error)
}
