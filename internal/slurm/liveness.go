package slurm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/jobstate"
)

var _ batch.Watcher = Scheduler{}

// Watch judges Slurm's jobs on this node from slurmd's step sockets, the
// Prolog's job files, the processes on the GPUs and, for a job with none
// of these signs but its file, scontrol.
func (Scheduler) Watch(view batch.NodeView) batch.JobWatch {
	cfg := view.Config
	return &jobWatch{view: view,
		sc:    &Scontrol{Path: cfg.Health.Scontrol, Node: view.Node, Timeout: cfg.Health.ScontrolTimeout, Env: CommandEnv(cfg, view.Env)},
		procs: jobsOnGPUs(view.Devices)}
}

// jobWatch is one health check run's view of Slurm's jobs here.
type jobWatch struct {
	view  batch.NodeView
	sc    *Scontrol
	procs map[string]bool // jobs with a process on a GPU
	// the jobs with a step socket in slurmd's spool dir, read once per run
	sockets     map[string]bool
	socketsErr  error
	socketsRead bool
}

// Judge judges a Slurm job that holds GPUs here for batch.FindStale. It
// runs while it has a step socket or a process on one of the GPUs. A job
// with neither but with its per-job file (an allocation without steps,
// such as salloc with PrologFlags=Alloc but not Contain, or a job whose
// Epilog never ran) is left for Slurm to judge. When the spool dir cannot
// be read only the boot id counts.
func (w *jobWatch) Judge(ctx context.Context) (batch.Judge, error) {
	sockets, err := w.stepSockets(ctx)
	if err != nil {
		return nil, err
	}
	return func(job string) string {
		switch {
		case sockets == nil, sockets[job], w.procs[job]:
			return ""
		case w.hasJobFile(job):
			return w.ended(ctx, job)
		default:
			return "the job no longer runs on this node"
		}
	}, nil
}

// holdingStates are the job states in which a job holds its GPUs and its
// Epilog has not begun (a COMPLETING job's Epilog is releasing them).
var holdingStates = map[string]bool{"RUNNING": true, "SUSPENDED": true, "STOPPED": true, "CONFIGURING": true}

// Holds: the file is of this boot (files of older releases carry no boot
// id), and the job has a step socket or a process on a GPU here, or Slurm
// reports it in a state that holds its GPUs (not under NHC, which makes
// no scontrol calls of ours about jobs). These are the signs Judge uses
// to keep a job's reservations.
func (w *jobWatch) Holds(ctx context.Context, job string, f jobstate.JobFile) bool {
	boot := w.view.BootID
	if boot != "" && f.BootID != "" && f.BootID != boot {
		return false
	}
	// An unreadable spool dir proves nothing: Slurm is still asked.
	sockets, _ := w.stepSockets(ctx)
	if sockets[job] || w.procs[job] {
		return true
	}
	state, _, ok := w.ask(ctx, job)
	return ok && holdingStates[state]
}

// InJob: a process's job is what the process reader found (Slurm's cgroup
// or slurmstepd), so a reservation's user must use it inside the job.
func (*jobWatch) InJob(p gpu.Process, job string) bool { return p.JobID == job }

// hasJobFile: the Prolog wrote the job's file and no Epilog removed it yet.
// It covers an allocation without any step (salloc with PrologFlags=Alloc
// but without Contain), which has no socket at all. Only a file the Prolog
// could have written counts: one planted by someone else must not keep a
// reservation alive.
func (w *jobWatch) hasJobFile(job string) bool {
	_, err := jobstate.ReadJob(w.view.Config.Slurm.StateDir, allocator.KindSlurm, job) // checks the id before building a path
	return err == nil
}

// stepSockets lists the jobs with a step socket here, reading slurmd's
// spool dir at most once per run: slurmstepd listens on
// <SlurmdSpoolDir>/<NodeName>_<job>.<step> while a step runs (the batch
// step is 4294967291, the extern step 4294967292). When the dir cannot be
// found (not configured and Slurm does not say, or it does not exist) it
// returns nil and no error, since a missing socket then proves nothing,
// and the run says so loudly (blind): stale jobs may keep their GPUs.
func (w *jobWatch) stepSockets(ctx context.Context) (map[string]bool, error) {
	if w.socketsRead {
		return w.sockets, w.socketsErr
	}
	w.socketsRead = true
	dir, err := w.spoolDir(ctx)
	if err != nil {
		w.view.Blind(fmt.Sprintf("cannot find the slurmd spool directory (%v): set [health] slurmd_spool_dir", err))
		return nil, nil
	}
	w.sockets, w.socketsErr = readStepSockets(dir, w.view.Node)
	if errors.Is(w.socketsErr, fs.ErrNotExist) {
		w.view.Blind(fmt.Sprintf("the slurmd spool directory %s does not exist: set [health] slurmd_spool_dir to the SlurmdSpoolDir of slurm.conf", dir))
		w.sockets, w.socketsErr = nil, nil
	}
	return w.sockets, w.socketsErr
}

// readStepSockets lists the jobs that have a step socket in dir, of the
// slurmd named node.
func readStepSockets(dir, node string) (map[string]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("slurmd spool dir: %w", err)
	}
	jobs := map[string]bool{}
	prefix := node + "_"
	for _, e := range entries {
		if e.Type()&fs.ModeSocket == 0 {
			continue
		}
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		job, step, ok := strings.Cut(rest, ".")
		if ok && isDigits(job) && isDigits(step) {
			jobs[job] = true
		}
	}
	return jobs, nil
}

// spoolDir is [health] slurmd_spool_dir, or when that is empty Slurm's own
// SlurmdSpoolDir: packages put it in different places (Debian
// /var/lib/slurm/slurmd, RHEL and source installs /var/spool/slurmd).
// Asking is a read, so it is done under NHC too.
func (w *jobWatch) spoolDir(ctx context.Context) (string, error) {
	if dir := w.view.Config.Health.SlurmdSpoolDir; dir != "" {
		return dir, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", err
	}
	return w.sc.SpoolDir(ctx, host)
}

// ask reads a job's state from Slurm (see Scontrol.JobEnded). ok is false
// when Slurm cannot be asked: under NHC, which makes no scontrol calls of
// ours about jobs, or when scontrol gives no answer, which the run
// reports (blind).
func (w *jobWatch) ask(ctx context.Context, job string) (state string, ended, ok bool) {
	if w.view.NHC {
		return "", false, false
	}
	ended, state, err := w.sc.JobEnded(ctx, job)
	if err != nil {
		w.view.Blind(fmt.Sprintf("cannot learn the state of slurm job %s (%v): it keeps its GPUs", job, err))
		return "", false, false
	}
	return state, ended, true
}

// ended says why a job Slurm reports as ended is stale, or "" when it
// runs, or Slurm cannot be asked (under NHC, or no answer): then the job
// keeps its GPUs this round.
func (w *jobWatch) ended(ctx context.Context, job string) string {
	state, ended, ok := w.ask(ctx, job)
	switch {
	case !ok || !ended:
		return ""
	case state == "":
		return "Slurm no longer knows the job"
	default:
		return "the job is " + state + " in Slurm"
	}
}

// jobsOnGPUs lists the jobs that have a process on one of the GPUs.
func jobsOnGPUs(devs []gpu.Device) map[string]bool {
	jobs := map[string]bool{}
	for _, d := range devs {
		for _, p := range d.Processes {
			if p.JobID != "" {
				jobs[p.JobID] = true
			}
		}
	}
	return jobs
}

// isDigits: Slurm job and step ids in socket names are plain decimals.
func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
