package health

import (
	"context"
	"fmt"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/jobstate"
)

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
		judge, err := c.watch(sched, devs).Judge(ctx)
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

// watch is how one scheduler's jobs are judged this run (batch.Watch),
// from the run's GPU scan devs: made once per run, so what it reads of
// the node it reads once.
func (c *check) watch(sched batch.Scheduler, devs []gpu.Device) batch.JobWatch {
	kind := sched.Kind()
	if w, ok := c.watches[kind]; ok {
		return w
	}
	if c.watches == nil {
		c.watches = map[allocator.Kind]batch.JobWatch{}
	}
	w := batch.Watch(sched, batch.NodeView{Config: c.cfg, Devices: devs, BootID: c.deps.BootID,
		Node: c.deps.SlurmNode, Env: c.deps.Env, NHC: c.deps.NHC, Blind: c.blindTo})
	c.watches[kind] = w
	return w
}

// inJob says whether a process of a reservation's user runs inside the
// reservation's job, as the reservation's scheduler tells (its watch's
// InJob). Reservations of no scheduler's kind belong to no job.
func (c *check) inJob(devs []gpu.Device) func(gpu.Process, allocator.Reservation) bool {
	return func(p gpu.Process, r allocator.Reservation) bool {
		for _, sched := range c.deps.Schedulers {
			if sched.Kind() == r.Kind {
				return c.watch(sched, devs).InJob(p, r.JobID)
			}
		}
		return true
	}
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

// gpuList names GPUs by index for messages ("GPU 1", "GPUs 1, 3").
func gpuList(snap *allocator.Snapshot, uuids []string) string {
	names := usage.Registered(snap.GPUs).Names(uuids)
	if len(names) == 1 {
		return "GPU " + names[0]
	}
	return "GPUs " + strings.Join(names, ", ")
}

func hasKind(snap *allocator.Snapshot, k allocator.Kind) bool {
	for _, r := range snap.Reservations {
		if r.Kind == k {
			return true
		}
	}
	return false
}
