package health

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

// jobPlaces says where this node shows that a Slurm job still runs here.
type jobPlaces struct {
	spoolDir  string // slurmd's SlurmdSpoolDir
	slurmNode string // slurmd's NodeName: the prefix of its step sockets
	stateDir  string // [slurm] state_dir: the Prolog's per-job files
}

// stepSockets lists the jobs that have a step on this node: slurmstepd
// listens on <SlurmdSpoolDir>/<NodeName>_<job>.<step> while a step runs
// (the batch step is 4294967291, the extern step 4294967292).
func (p jobPlaces) stepSockets() (map[string]bool, error) {
	entries, err := os.ReadDir(p.spoolDir)
	if err != nil {
		return nil, fmt.Errorf("slurmd spool dir: %w", err)
	}
	jobs := map[string]bool{}
	prefix := p.slurmNode + "_"
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

// hasJobFile: the Prolog wrote the job's file and no Epilog removed it yet.
// It covers an allocation without any step (salloc with PrologFlags=Alloc
// but without Contain), which has no socket at all. Only a file the Prolog
// could have written counts: one planted by someone else must not keep a
// reservation alive.
func (p jobPlaces) hasJobFile(job string) bool {
	_, err := jobstate.ReadJob(p.stateDir, allocator.KindSlurm, job) // checks the id before building a path
	return err == nil
}

// slurmJudge judges a Slurm job that holds GPUs here for batch.FindStale.
// It runs while it has a step socket or a process on one of the GPUs. A
// job with neither but with its per-job file (an allocation without
// steps, such as salloc with PrologFlags=Alloc but not Contain, or a job
// whose Epilog never ran) is left for Slurm to judge. sockets nil means
// the spool dir could not be read: then only the boot id counts.
func (c *check) slurmJudge(ctx context.Context, places jobPlaces, sockets, procs map[string]bool) batch.Judge {
	return func(job string) string {
		switch {
		case sockets == nil, sockets[job], procs[job]:
			return ""
		case places.hasJobFile(job):
			return c.slurmEnded(ctx, job)
		default:
			return "the job no longer runs on this node"
		}
	}
}

// jobsOnGPUs lists the Slurm jobs that have a process on one of the GPUs.
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

// slurmPlaces: spoolDir is known once slurmSockets has found it.
func (c *check) slurmPlaces() jobPlaces {
	return jobPlaces{spoolDir: c.spool, slurmNode: c.deps.SlurmNode, stateDir: c.cfg.Slurm.StateDir}
}

// slurmSockets lists the jobs with a step socket here, reading slurmd's
// spool dir at most once per run. When the dir cannot be found (not
// configured and Slurm does not say, or it does not exist) it returns nil
// and no error, since a missing socket then proves nothing, and the run
// says so loudly (blind): stale jobs may keep their GPUs.
func (c *check) slurmSockets(ctx context.Context) (map[string]bool, error) {
	if c.socketsRead {
		return c.sockets, c.socketsErr
	}
	c.socketsRead = true
	dir, err := c.spoolDir(ctx)
	if err != nil {
		c.blindTo(fmt.Sprintf("cannot find the slurmd spool directory (%v): set [health] slurmd_spool_dir", err))
		return nil, nil
	}
	c.spool = dir
	c.sockets, c.socketsErr = c.slurmPlaces().stepSockets()
	if errors.Is(c.socketsErr, fs.ErrNotExist) {
		c.blindTo(fmt.Sprintf("the slurmd spool directory %s does not exist: set [health] slurmd_spool_dir to the SlurmdSpoolDir of slurm.conf", dir))
		c.sockets, c.socketsErr = nil, nil
	}
	return c.sockets, c.socketsErr
}

// spoolDir is [health] slurmd_spool_dir, or when that is empty Slurm's own
// SlurmdSpoolDir: packages put it in different places (Debian
// /var/lib/slurm/slurmd, RHEL and source installs /var/spool/slurmd).
// Asking is a read, so it is done under NHC too.
func (c *check) spoolDir(ctx context.Context) (string, error) {
	if dir := c.cfg.Health.SlurmdSpoolDir; dir != "" {
		return dir, nil
	}
	host, err := os.Hostname()
	if err != nil {
		return "", err
	}
	return c.scontrol().SpoolDir(ctx, host)
}

// blindTo records something the run could not see; such a run is never
// healthy (see Run).
func (c *check) blindTo(what string) {
	c.blind = append(c.blind, what)
}

// releaseStale releases the stale grants of every scheduler's jobs and
// says what it did. A failing release stops the rest: the store is not
// answering.
func (c *check) releaseStale(ctx context.Context, snap *allocator.Snapshot, devs []gpu.Device) ([]Settled, error) {
	var out []Settled
	for _, sched := range c.deps.Schedulers {
		kind := sched.Kind()
		if !hasKind(snap, kind) {
			continue // nothing to settle: skip asking the scheduler
		}
		pol := sched.Policy(c.cfg)
		judge, err := c.judge(ctx, sched, devs)
		if err != nil {
			return out, err
		}
		for _, s := range batch.FindStale(snap, kind, c.deps.BootID, pol.Deadline, judge) {
			rel, err := c.deps.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
				Kinds: []allocator.Kind{kind}, JobID: s.JobID, Token: s.Token, GPUs: s.GPUs})
			if err != nil {
				return out, fmt.Errorf("release stale %s job %s: %w", kind, s.JobID, err)
			}
			if len(rel.GPUs) == 0 {
				continue // granted again since the snapshot
			}
			msg := fmt.Sprintf("released %s of %s job %s: %s", gpuList(snap, rel.GPUs), kind, s.JobID, s.Why)
			if err := c.removeJobFile(pol, s); err != nil {
				msg += "; job file left: " + err.Error()
			}
			out = append(out, Settled{What: "stale_job", Kind: kind, JobID: s.JobID, GPUs: rel.GPUs, Message: msg})
		}
	}
	return out, nil
}

// judge is how one scheduler's jobs are judged: Slurm's by the node's
// signs and scontrol, another's by its adapter when it can ask the
// scheduler (batch.Liveness), else never (the boot id alone counts).
// Only the grace a prolog needs (the policy's deadline) applies to all.
func (c *check) judge(ctx context.Context, sched batch.Scheduler, devs []gpu.Device) (batch.Judge, error) {
	if sched.Kind() == allocator.KindSlurm {
		sockets, err := c.slurmSockets(ctx)
		if err != nil {
			return nil, err
		}
		return c.slurmJudge(ctx, c.slurmPlaces(), sockets, jobsOnGPUs(devs)), nil
	}
	live, ok := sched.(batch.Liveness)
	if !ok {
		return func(string) string { return "" }, nil
	}
	return func(job string) string { return c.askScheduler(ctx, sched.Kind(), live, job) }, nil
}

// askScheduler asks a scheduler's adapter whether a job ended; "" while
// it runs, or when the scheduler gives no answer, which the run reports
// (blind).
func (c *check) askScheduler(ctx context.Context, kind allocator.Kind, live batch.Liveness, job string) string {
	why, err := live.Ended(ctx, job)
	if err != nil {
		c.blindTo(fmt.Sprintf("cannot learn the state of %s job %s (%v): it keeps its GPUs", kind, job, err))
		return ""
	}
	return why
}

// removeJobFile deletes the file of a job whose GPUs were just released,
// as its epilog would have: a released job's file would otherwise stay in
// the state dir until reboot, telling admins and the next checks of a job
// that is gone. Only a file the prolog wrote goes; one planted by someone
// else is reported by the restore step, not silently removed. A grant
// from an earlier boot says nothing about a file written in this boot:
// that is a new job with the same id, and keeps it.
func (c *check) removeJobFile(pol batch.Policy, s batch.Stale) error {
	f, err := jobstate.ReadJob(pol.StateDir, pol.Kind, s.JobID)
	if err != nil {
		return nil // none, or not the prolog's
	}
	if s.Why == batch.WhyEarlierBoot && (f.BootID == "" || f.BootID == c.deps.BootID) {
		return nil // maybe this boot's
	}
	return jobstate.RemoveJob(pol.StateDir, pol.Kind, s.JobID)
}

// askSlurm reads a job's state from Slurm (see Scontrol.JobEnded). ok is
// false when Slurm cannot be asked: under NHC, which makes no scontrol
// calls of ours about jobs, or when scontrol gives no answer, which the
// run reports (blind).
func (c *check) askSlurm(ctx context.Context, job string) (state string, ended, ok bool) {
	if c.deps.NHC {
		return "", false, false
	}
	ended, state, err := c.scontrol().JobEnded(ctx, job)
	if err != nil {
		c.blindTo(fmt.Sprintf("cannot learn the state of slurm job %s (%v): it keeps its GPUs", job, err))
		return "", false, false
	}
	return state, ended, true
}

// slurmEnded says why a job Slurm reports as ended is stale, or "" when
// it runs, or Slurm cannot be asked (under NHC, or no answer): then the
// job keeps its GPUs this round.
func (c *check) slurmEnded(ctx context.Context, job string) string {
	state, ended, ok := c.askSlurm(ctx, job)
	switch {
	case !ok || !ended:
		return ""
	case state == "":
		return "Slurm no longer knows the job"
	default:
		return "the job is " + state + " in Slurm"
	}
}

// gpuList names GPUs by index for messages ("GPU 1", "GPUs 1, 3").
func gpuList(snap *allocator.Snapshot, uuids []string) string {
	var idx []string
	for _, u := range uuids {
		if g, ok := snap.GPUByUUID(u); ok {
			idx = append(idx, fmt.Sprint(g.Index))
		} else {
			idx = append(idx, u)
		}
	}
	if len(idx) == 1 {
		return "GPU " + idx[0]
	}
	return "GPUs " + strings.Join(idx, ", ")
}

func hasKind(snap *allocator.Snapshot, k allocator.Kind) bool {
	for _, r := range snap.Reservations {
		if r.Kind == k {
			return true
		}
	}
	return false
}

// isDigits: Slurm job and step ids in socket names are plain decimals.
func isDigits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
