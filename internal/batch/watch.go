package batch

import (
	"context"
	"fmt"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
)

// NodeView is what the health check knows of this node in one run, for a
// scheduler's adapter to judge its jobs by.
type NodeView struct {
	Config *config.Config
	// Devices is the run's GPU scan. Their processes carry the job ids the
	// node's process reader found (gpu.Process.JobID).
	Devices []gpu.Device
	// BootID is this boot's id; "": unknown.
	BootID string
	// Node is the scheduler's name of this node (Slurm's NodeName).
	Node string
	// Env is the check's environment, for the scheduler's commands.
	Env []string
	// NHC: the check runs under NHC, whose own checks ask the scheduler
	// about jobs; an adapter may leave such questions to them.
	NHC bool
	// Blind records what the adapter could not see. The health check
	// reports it loudly and never calls such a run healthy: stale jobs
	// may keep GPUs nobody uses.
	Blind func(what string)
}

// Watcher is what a scheduler adapter adds when it judges its jobs from
// more than one question to the scheduler: signs on this node, processes
// on the GPUs. An adapter with only Liveness, or neither, is judged as
// Watch says.
type Watcher interface {
	Watch(view NodeView) JobWatch
}

// JobWatch judges one scheduler's jobs on this node for one health check
// run. Making one reads nothing; it reads what it needs when first asked,
// at most once per run.
type JobWatch interface {
	// Judge is the judge of the scheduler's grants for FindStale. An
	// error means this node could not be read: settling stops.
	Judge(ctx context.Context) (Judge, error)
	// Holds says whether the job of a job file still runs here and holds
	// its GPUs: the store lost the job's reservations, and the check
	// restores them only for such a job.
	Holds(ctx context.Context, job string, f jobstate.JobFile) bool
	// InJob says whether a process of a job's user runs inside the job.
	// A scheduler whose jobs the process reader cannot tell says true:
	// judging by job would flag every process of its jobs.
	InJob(p gpu.Process, job string) bool
}

// Watch is how the health check judges a scheduler's jobs: by its own
// Watcher; else by asking the scheduler about each job (Liveness) along
// with the boot id; else by the boot id alone.
func Watch(s Scheduler, view NodeView) JobWatch {
	if w, ok := s.(Watcher); ok {
		return w.Watch(view)
	}
	live, _ := s.(Liveness)
	return askWatch{kind: s.Kind(), live: live, view: view}
}

// askWatch judges the jobs of a scheduler without a Watcher.
type askWatch struct {
	kind allocator.Kind
	live Liveness // nil: the scheduler cannot be asked
	view NodeView
}

func (w askWatch) Judge(ctx context.Context) (Judge, error) {
	if w.live == nil {
		return func(string) string { return "" }, nil
	}
	return func(job string) string { return w.ask(ctx, job) }, nil
}

// Holds: the job file is of this boot (the epilog removes it when the job
// ends, and no job outlives a reboot; a file without a boot id is not
// trusted), and the scheduler, where it can be asked, does not say the
// job ended.
func (w askWatch) Holds(ctx context.Context, job string, f jobstate.JobFile) bool {
	if w.view.BootID == "" || f.BootID != w.view.BootID {
		return false
	}
	if w.live == nil {
		return true
	}
	return w.ask(ctx, job) == ""
}

// InJob is true: processes are attributed to no job of such a scheduler.
func (askWatch) InJob(gpu.Process, string) bool { return true }

// ask says why a job ended, or "" while it runs or when the scheduler
// gives no answer, which the run reports (blind).
func (w askWatch) ask(ctx context.Context, job string) string {
	why, err := w.live.Ended(ctx, job)
	if err != nil {
		w.view.Blind(fmt.Sprintf("cannot learn the state of %s job %s (%v): it keeps its GPUs", w.kind, job, err))
		return ""
	}
	return why
}
