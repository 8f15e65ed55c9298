// Package schedulers lists the batch schedulers canhazgpu serves: the
// hook programs dispatch to them and the health check settles their jobs.
// Adding a scheduler is its adapter package and one line here
// (docs/schedulers.md).
package schedulers

import (
	"canhazgpu/internal/batch"
	"canhazgpu/internal/pbs"
	"canhazgpu/internal/slurm"
)

// All is every scheduler's adapter. The one without a flag (Slurm) is
// what the hook programs run as when called without arguments.
var All = []batch.Scheduler{
	slurm.Scheduler{},
	pbs.Scheduler{},
}
