package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/jobstate"
)

// restoreJobs gives running batch jobs back the reservations the store
// lost. After Redis restarts without its data (no AOF), or a failover
// loses acknowledged writes, every job the Prologs reserved for runs on
// GPUs the store calls free, and the check would report the jobs' own use
// as unreserved. The job files the Prologs wrote name each job's GPUs: a
// job that still runs here gets back those that nobody holds and nobody
// released. A GPU someone else holds by now is reported ("unrestored"),
// never taken.
//
// The usual run makes no store call here: the snapshot shows every job
// file's GPUs held by its job. Only a job that lacks a reservation is
// checked against its scheduler.
func (c *check) restoreJobs(ctx context.Context, snap *allocator.Snapshot, devs []gpu.Device) ([]Settled, error) {
	var out []Settled
	for _, sched := range c.deps.Schedulers {
		s, err := c.restoreKind(ctx, snap, sched.Kind(), sched.Policy(c.cfg).StateDir, c.watch(sched, devs))
		out = append(out, s...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// restoreKind restores the jobs of one scheduler from its job files. An
// unreadable file is reported and the others still restored; only a store
// that does not answer stops the run. A job is restored only while its
// scheduler's watch says it still holds its GPUs here.
func (c *check) restoreKind(ctx context.Context, snap *allocator.Snapshot, kind allocator.Kind, dir string,
	watch batch.JobWatch) ([]Settled, error) {
	// Jobs returns the good ids along with an error naming the files it
	// left out (not root's): those are reported, the others restored.
	ids, err := jobstate.Jobs(dir, kind)
	var out []Settled
	if err != nil {
		out = append(out, Settled{What: "unrestored", Kind: kind, Message: fmt.Sprintf("%s job files: %v", kind, err)})
	}
	slices.Sort(ids) // directory order is arbitrary: report jobs in a stable order
	var pending map[string]bool
	for _, id := range ids {
		f, err := jobstate.ReadJob(dir, kind, id)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the job's Epilog removed it meanwhile
		}
		if err != nil {
			out = append(out, Settled{What: "unrestored", Kind: kind, JobID: id,
				Message: fmt.Sprintf("could not check %s job %s: %v", kind, id, err)})
			continue
		}
		p := planRestore(snap, kind, id, f)
		if len(p.free) == 0 && len(p.blocked) == 0 {
			continue // the store holds every GPU of the job for it
		}
		if pending == nil {
			pending = pendingReserves(dir, kind)
		}
		if pending[id] || !watch.Holds(ctx, id, f) {
			continue
		}
		if p, err = c.dropEnded(ctx, kind, id, f, p); err != nil {
			return out, err
		}
		s, err := c.restore(ctx, snap, kind, id, f, p)
		out = append(out, s...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// blockedGPU is a GPU of a job that cannot be given back to it, and why.
type blockedGPU struct{ uuid, why string }

// restorePlan sorts the GPUs a job file names by what the store shows.
type restorePlan struct {
	free    []string // nobody holds them: to reserve for the job again
	blocked []blockedGPU
	held    int // the store's reservations of the job, on any GPU
}

// planRestore compares a job file with the snapshot. The GPUs recorded as
// conflicts were never the job's to hold (on_conflict = "warn" let it run
// on GPUs others held), so they are not asked for.
func planRestore(snap *allocator.Snapshot, kind allocator.Kind, id string, f jobstate.JobFile) restorePlan {
	var p restorePlan
	for _, r := range snap.Reservations {
		if r.Kind == kind && r.JobID == id {
			p.held++
		}
	}
	// In index order, as the messages name them (files keep the
	// scheduler's order).
	gpus := slices.Clone(f.GPUs)
	slices.SortStableFunc(gpus, func(a, b jobstate.GPU) int { return cmp.Compare(a.Index, b.Index) })
	for _, g := range gpus {
		if g.UUID == "" || slices.ContainsFunc(f.Conflicts, func(c jobstate.Conflict) bool { return c.GPU == g.UUID }) {
			continue
		}
		r, reserved := snap.Reservations[g.UUID]
		_, known := snap.GPUByUUID(g.UUID)
		switch {
		case reserved && r.Kind == kind && r.JobID == id:
		case reserved:
			p.blocked = append(p.blocked, blockedGPU{g.UUID, "reserved by " + holderOf(r)})
		case !known:
			p.blocked = append(p.blocked, blockedGPU{g.UUID, "not on this node"})
		default:
			p.free = append(p.free, g.UUID)
		}
	}
	return p
}

// clockSlack is how far the node's clock (a job file's time) and the
// store's (the history's times) may disagree.
const clockSlack = 10 * time.Minute

// dropEnded takes out of the plan the GPUs whose reservation for the job
// the store's history shows ended since the job file was written: the
// job's Epilog released them and is about to remove the file, or an admin
// or settling did. The store lost nothing there, so nothing is restored.
// One store round trip.
func (c *check) dropEnded(ctx context.Context, kind allocator.Kind, id string, f jobstate.JobFile,
	p restorePlan) (restorePlan, error) {
	if len(p.free) == 0 {
		return p, nil
	}
	recs, err := c.deps.Store.History(ctx, f.At.Add(-clockSlack))
	if err != nil {
		return p, fmt.Errorf("%s job %s: %w", kind, id, err)
	}
	p.free = slices.DeleteFunc(p.free, func(u string) bool {
		return slices.ContainsFunc(recs, func(r allocator.Record) bool { return r.GPU == u && r.Kind == kind && r.JobID == id })
	})
	return p, nil
}

// holderOf names a reservation's holder for messages.
func holderOf(r allocator.Reservation) string {
	if r.Kind.Batch() {
		return fmt.Sprintf("%s job %s of %s", r.Kind, r.JobID, r.User)
	}
	return fmt.Sprintf("%s (%s)", r.User, r.Kind)
}

// restore reserves the plan's free GPUs for the job again, as its Prolog
// did: batch kind, job id, user, restart count, and this boot's id.
//
// The store is asked for a count of GPUs, the job's free ones preferred,
// not for the GPUs by UUID: by UUID it would take a GPU over from another
// job of the same scheduler that reserved it since the snapshot (the rule
// that lets a requeued job's Prolog replace a stale grant), and restoring
// never takes anything from anyone. A GPU the grant had to include
// instead is given back at once, and the GPU it stood for is reported.
// Like a pending reserve marker, the grant does not exclude GPUs in use:
// the job's own processes use them.
func (c *check) restore(ctx context.Context, snap *allocator.Snapshot, kind allocator.Kind, id string,
	f jobstate.JobFile, p restorePlan) ([]Settled, error) {
	blocked := p.blocked
	var restored []string
	var fatal error
	if len(p.free) > 0 {
		var err error
		restored, err = c.reserveAgain(ctx, kind, id, f, p)
		why := "reserved by someone else meanwhile"
		var short *allocator.ShortageError
		switch {
		case err == nil, errors.As(err, &short):
		case errors.Is(err, allocator.ErrUnavailable) || ctx.Err() != nil:
			fatal = fmt.Errorf("%s job %s: %w", kind, id, err)
		default:
			why = err.Error()
		}
		for _, u := range p.free {
			if fatal == nil && !slices.Contains(restored, u) {
				blocked = append(blocked, blockedGPU{u, why})
			}
		}
	}
	var out []Settled
	if len(restored) > 0 {
		it := "it"
		if len(restored) > 1 {
			it = "them"
		}
		out = append(out, Settled{What: "restored", Kind: kind, JobID: id, GPUs: restored,
			Message: fmt.Sprintf("restored %s of %s job %s: the store had lost %s", gpuList(snap, restored), kind, id, it)})
	}
	if len(blocked) > 0 {
		out = append(out, unrestored(snap, kind, id, blocked))
	}
	return out, fatal
}

// reserveAgain makes the grant and gives back what it got beyond the
// plan's GPUs. It returns the plan's GPUs now held again.
func (c *check) reserveAgain(ctx context.Context, kind allocator.Kind, id string, f jobstate.JobFile,
	p restorePlan) ([]string, error) {
	user := f.User
	if user == "" {
		user = "uid:" + strconv.Itoa(f.UID)
	}
	// The Prologs' ids start with the scheduler's name ("slurm-prolog-",
	// "pbs-"); the random part keeps a reply stored for an earlier
	// restore of the same job from being replayed.
	req := allocator.Request{RequestID: "healthcheck-restore-" + allocator.NewRequestID(), Kind: kind, User: user,
		UID: f.UID, JobID: id, Count: p.held + len(p.free), Prefer: p.free, Restart: f.Restart, BootID: c.deps.BootID}
	g, err := c.deps.Store.Allocate(ctx, req)
	if err != nil {
		return nil, err
	}
	var restored, extra []string
	for _, u := range p.free {
		if slices.Contains(g.GPUs, u) {
			restored = append(restored, u)
		}
	}
	for _, u := range g.GPUs {
		if !slices.ContainsFunc(f.GPUs, func(x jobstate.GPU) bool { return x.UUID == u }) {
			extra = append(extra, u)
		}
	}
	if len(extra) > 0 {
		_, err := c.deps.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
			Kinds: []allocator.Kind{kind}, JobID: id, Token: g.Token, GPUs: extra})
		if err != nil {
			return restored, fmt.Errorf("give back GPUs granted beyond %s job %s: %w", kind, id, err)
		}
	}
	return restored, nil
}

// unrestored reports the GPUs of a running job that stay without its
// reservation: "could not restore GPU 1 of slurm job 13: reserved by bob
// (manual)".
func unrestored(snap *allocator.Snapshot, kind allocator.Kind, id string, blocked []blockedGPU) Settled {
	uuids := make([]string, len(blocked))
	whys := make([]string, len(blocked))
	for i, b := range blocked {
		uuids[i] = b.uuid
		whys[i] = gpuList(snap, []string{b.uuid}) + " " + b.why
	}
	why := strings.Join(whys, "; ")
	if len(blocked) == 1 {
		why = blocked[0].why
	}
	return Settled{What: "unrestored", Kind: kind, JobID: id, GPUs: uuids,
		Message: fmt.Sprintf("could not restore %s of %s job %s: %s", gpuList(snap, uuids), kind, id, why)}
}

// pendingReserves lists the jobs of a kind whose reserve marker is still
// pending: settling the marker reserves them, and why it could not yet is
// reported with the marker.
func pendingReserves(dir string, kind allocator.Kind) map[string]bool {
	markers, _ := jobstate.Markers(dir) // unreadable markers are reported by applyMarkers
	out := map[string]bool{}
	for _, m := range markers {
		if m.Kind == kind && m.Op == jobstate.OpReserve {
			out[m.JobID] = true
		}
	}
	return out
}
