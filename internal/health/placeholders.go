package health

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/slurm"
)

// settlePlaceholders keeps Slurm's placeholder jobs and the interactive
// holds they stand for in step, on a node with slurm.interactive_holds =
// "placeholder" (docs/slurm.md). Both ways:
//
//   - a placeholder job of this node that no live hold stands behind (see
//     standsFor) is cancelled, as its owner: its hold ended (released
//     behind the CLI's back, a run whose canhazgpu was killed and whose
//     lease lapsed), and it keeps batch jobs off a free GPU;
//   - a hold whose placeholder job no longer runs is, by lost_placeholder,
//     released (Slurm may give its GPUs to a job now), given a new
//     placeholder (resubmit), or kept.
//
// It runs under NHC too: it only reads Slurm's jobs and cancels or submits
// placeholders, never marks the node, which is what NHC does itself. Under
// NHC a Slurm that does not answer is reported as unsettled rather than as
// a failed check, which NHC would drain the node for.
func (c *check) settlePlaceholders(ctx context.Context, snap *allocator.Snapshot, devs []gpu.Device) ([]Settled, error) {
	if c.cfg.Slurm.Holds.Mode != "placeholder" || !slurmInstalled(c.cfg.Health.Scontrol) {
		return nil, nil
	}
	unlock, err := lockPlaceholders(c.cfg.Slurm.StateDir)
	if err != nil {
		return []Settled{{What: "unsettled", Kind: allocator.KindSlurm, Message: "placeholder jobs left as they are: " + err.Error()}}, nil
	}
	defer unlock()
	holds := c.holds()
	jobs, err := holds.Scontrol.HoldJobs(ctx)
	if err != nil {
		if c.deps.NHC {
			return []Settled{{What: "unsettled", Kind: allocator.KindSlurm,
				Message: "placeholder jobs left as they are: " + err.Error()}}, nil
		}
		c.blindTo("placeholder jobs: " + err.Error())
		return nil, nil
	}
	alive := map[string]bool{}
	var orphans []slurm.HoldJob
	for _, j := range jobs {
		alive[j.ID] = true
		// A job still starting may stand for a hold the store learns
		// only when its Prolog or its salloc returns.
		if !j.Starting && !standsFor(snap, j) {
			orphans = append(orphans, j)
		}
	}
	if len(orphans) > 0 {
		// The snapshot was read before the jobs were listed: a hold
		// granted in between, whose salloc was on its way, is in a fresh
		// read only.
		fresh, err := c.deps.Store.Snapshot(ctx)
		if err != nil {
			return nil, err
		}
		orphans = slices.DeleteFunc(orphans, func(j slurm.HoldJob) bool { return standsFor(fresh, j) })
	}
	var out []Settled
	for _, j := range orphans {
		if err := holds.CancelAsOwner(ctx, j.ID, j.UID); err != nil {
			out = append(out, Settled{What: "unsettled", Kind: allocator.KindSlurm, JobID: j.ID,
				Message: fmt.Sprintf("placeholder job %s stands for no hold, and cancelling it failed: %v", j.ID, err)})
			continue
		}
		out = append(out, Settled{What: "placeholder", Kind: allocator.KindSlurm, JobID: j.ID,
			Message: fmt.Sprintf("cancelled placeholder job %s (%s): it stands for no interactive hold", j.ID, j.State)})
	}
	policy := c.cfg.Slurm.Holds.Lost
	if policy == "keep" {
		return out, nil
	}
	lost := map[string][]string{} // placeholder job -> the GPUs of its hold
	owner := map[string]allocator.Reservation{}
	for uuid, r := range snap.Reservations {
		if r.Kind.Batch() || r.Queued || r.JobID == "" || alive[r.JobID] || !r.Active(snap.Now) {
			continue
		}
		lost[r.JobID] = append(lost[r.JobID], uuid)
		owner[r.JobID] = r
	}
	for _, job := range slices.Sorted(maps.Keys(lost)) {
		r, gpus := owner[job], lost[job]
		slices.Sort(gpus)
		why := ""
		if policy == "resubmit" {
			s, reason, err := c.resubmit(ctx, holds, snap, devs, r, gpus)
			if err != nil {
				return out, err
			}
			if reason == "" {
				out = append(out, s...)
				continue
			}
			why = " and " + reason
		}
		rel, err := c.deps.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: r.User,
			Kinds: []allocator.Kind{r.Kind}, GPUs: gpus, Token: r.Token, JobID: job})
		if err != nil {
			return out, fmt.Errorf("release the hold of ended placeholder job %s: %w", job, err)
		}
		if len(rel.GPUs) == 0 {
			continue
		}
		out = append(out, Settled{What: "placeholder", Kind: r.Kind, JobID: job, GPUs: rel.GPUs,
			Message: fmt.Sprintf("released %s of %s's %s hold: its placeholder job %s no longer runs%s (lost_placeholder=%s)",
				gpuList(snap, rel.GPUs), r.User, r.Kind, job, why, policy)})
	}
	return out, nil
}

// lockPlaceholders keeps two checks of the node (a timer's and one run by
// hand, say) from settling placeholders at once: one resubmitting a hold's
// placeholder, whose salloc takes seconds, would have the other see the
// hold still naming the vanished job, find Slurm refusing a second
// placeholder on the same GPUs, and release the hold. The second check
// does not wait; it leaves the placeholders to the first.
func lockPlaceholders(stateDir string) (unlock func(), err error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(stateDir, "placeholders.lock")
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errors.New("another health check is settling them")
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { unix.Close(fd) }, nil
}

// holds runs the placeholders' Slurm commands as the CLI does (the
// config's paths and slurm_conf), on Slurm's name of this node.
//
// salloc and scancel run as the hold's owner, who may read their
// environment: they get PATH and SLURM_CONF alone, not the check's.
func (c *check) holds() *slurm.Holds {
	sc := c.scontrol()
	return &slurm.Holds{Salloc: c.cfg.Slurm.Holds.Salloc, Scancel: c.cfg.Slurm.Holds.Scancel, Scontrol: *sc,
		Env: slurm.OwnerEnv(c.cfg, slurm.ParseEnv(c.deps.Env)["SLURM_CONF"])}
}

// resubmit gives the hold r of gpus, whose placeholder job vanished, a new
// one (lost_placeholder = "resubmit"): submitted as the hold's owner, as
// `reserve` does, pinned to the same GPUs under the hold's token, for what
// is left of the hold. The new job id replaces the vanished one in one
// store step that holds only while the hold is the same one, unexpired
// and still naming the vanished job: a hold released meanwhile is not
// resurrected, and its new placeholder is cancelled at once.
//
// why is not "" when no placeholder could be had, saying why; the caller
// then releases the hold. Any refusal counts: this runs only after Slurm
// listed its jobs, so a failing salloc is Slurm's answer (a batch job has
// the GPU now, a job of higher priority waits), not Slurm being away.
func (c *check) resubmit(ctx context.Context, h *slurm.Holds, snap *allocator.Snapshot, devs []gpu.Device, r allocator.Reservation, gpus []string) (out []Settled, why string, err error) {
	pinned, err := h.PinnedTypes(ctx)
	switch {
	case err != nil:
		return nil, "no new one could be pinned to its GPUs: " + err.Error(), nil
	case !pinned:
		return nil, "Slurm's node has no GRES type per GPU (gpu:dev0:1,...), so no new placeholder can name its GPUs", nil
	}
	indices, err := slurm.Indices(gpu.VendorOf(c.cfg.GPU.Provider), c.cfg.Slurm.GresDevices, gpus, devs)
	if err != nil {
		return nil, err.Error(), nil
	}
	// The CLI acts for itself; the check, as root, for the owner, so that
	// squeue and accounting show them, and only for the account the hold
	// was granted to. It cancels as the owner too: the job id comes from
	// salloc's output, which the owner's own process prints.
	owned := *h
	if r.UID != os.Geteuid() {
		if owned.As, err = slurm.Account(r.User, r.UID); err != nil {
			return nil, "no new placeholder can be submitted as its owner: " + err.Error(), nil
		}
	}
	h = &owned
	job, err := h.Submit(ctx, c.deps.SlurmNode, slurm.Placeholder{Token: r.Token, Indices: indices, Limit: c.resubmitLimit(r, snap.Now)})
	if errors.Is(err, slurm.ErrNoAnswer) || ctx.Err() != nil {
		// No answer is no refusal: the placeholder may be granted yet
		// (its Prolog is slow). The hold stays; the next run finds the
		// new job or tries again.
		return []Settled{{What: "unsettled", Kind: allocator.KindSlurm, JobID: r.JobID,
			Message: fmt.Sprintf("%s's %s hold of %s kept: no answer from Slurm about a new placeholder: %v", r.User, r.Kind, gpuList(snap, gpus), err)}}, "", nil
	}
	if err != nil {
		return nil, "Slurm refused a new one: " + err.Error(), nil
	}
	names := gpuList(snap, gpus)
	err = c.deps.Store.ReplaceHoldJob(ctx, r.User, r.Token, gpus, r.JobID, job)
	var lost *allocator.LeaseLostError
	if errors.As(err, &lost) {
		msg := fmt.Sprintf("cancelled placeholder job %s: submitted for %s's %s hold of %s, which ended meanwhile", job, r.User, r.Kind, names)
		if cerr := h.Cancel(context.WithoutCancel(ctx), job); cerr != nil {
			return []Settled{{What: "unsettled", Kind: allocator.KindSlurm, JobID: job,
				Message: fmt.Sprintf("placeholder job %s was submitted for %s's %s hold of %s, which ended meanwhile, and cancelling it failed: %v", job, r.User, r.Kind, names, cerr)}}, "", nil
		}
		return []Settled{{What: "placeholder", Kind: allocator.KindSlurm, JobID: job, Message: msg}}, "", nil
	}
	if err != nil {
		cerr := h.Cancel(context.WithoutCancel(ctx), job)
		return nil, "", errors.Join(fmt.Errorf("record placeholder job %s of %s's hold: %w", job, r.User, err), cerr)
	}
	return []Settled{{What: "placeholder", Kind: r.Kind, JobID: job, GPUs: gpus,
		Message: fmt.Sprintf("re-submitted the placeholder of %s's %s hold of %s: job %s in place of job %s, which no longer runs (lost_placeholder=resubmit)",
			r.User, r.Kind, names, job, r.JobID)}}, "", nil
}

// resubmitLimit is a new placeholder's time limit: what is left of the
// hold. A run lease has no end of its own (its heartbeats extend it): it
// gets what a run without --timeout gets, reserve.max_duration, less the
// time it has run, and like every run's placeholder the heartbeat
// timeout on top; never less than what is left of its lease.
func (c *check) resubmitLimit(r allocator.Reservation, now time.Time) time.Duration {
	left := r.ExpiresAt.Sub(now)
	if r.Kind != allocator.KindRun {
		return left
	}
	return max(left, c.cfg.Reserve.MaxDuration-now.Sub(r.StartedAt)) + c.cfg.Run.HeartbeatTimeout
}

// standsFor: the placeholder job stands for a live interactive hold of
// snap: one that recorded its job id, or one of its owner's that records
// none yet (its salloc has not returned). Its comment is not read: it is
// the user's text (see slurm.HoldJobs).
func standsFor(snap *allocator.Snapshot, j slurm.HoldJob) bool {
	for _, r := range snap.Reservations {
		if r.Kind.Batch() || r.Queued || !r.Active(snap.Now) {
			continue
		}
		if r.JobID == j.ID || (r.JobID == "" && r.UID == j.UID) {
			return true
		}
	}
	return false
}
