package health

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/slurm"
)

// settlePlaceholders keeps Slurm's placeholder jobs and the interactive
// holds they stand for in step, on a node with slurm.interactive_holds =
// "placeholder" (docs/slurm.md). Both ways:
//
//   - a placeholder job of this node that no live hold names (by its job
//     id, or by the token in its comment while the CLI has yet to record
//     the id) is cancelled: its hold ended (released behind the CLI's
//     back, a run whose canhazgpu was killed and whose lease lapsed), and
//     it keeps batch jobs off a free GPU;
//   - with lost_placeholder = "release", a hold whose placeholder job no
//     longer runs is released: Slurm may give its GPUs to a job now.
func (c *check) settlePlaceholders(ctx context.Context, snap *allocator.Snapshot, _ []gpu.Device) ([]Settled, error) {
	if c.cfg.Slurm.Holds.Mode != "placeholder" || c.deps.NHC || !slurmInstalled(c.cfg.Health.Scontrol) {
		return nil, nil
	}
	sc := c.scontrol()
	jobs, err := sc.HoldJobs(ctx)
	if err != nil {
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
	holds := &slurm.Holds{Scancel: c.cfg.Slurm.Holds.Scancel, Scontrol: *sc, Env: c.deps.Env}
	var out []Settled
	for _, j := range orphans {
		if err := holds.Cancel(ctx, j.ID); err != nil {
			out = append(out, Settled{What: "unsettled", Kind: allocator.KindSlurm, JobID: j.ID,
				Message: fmt.Sprintf("placeholder job %s stands for no hold, and cancelling it failed: %v", j.ID, err)})
			continue
		}
		out = append(out, Settled{What: "placeholder", Kind: allocator.KindSlurm, JobID: j.ID,
			Message: fmt.Sprintf("cancelled placeholder job %s (%s): it stands for no interactive hold", j.ID, j.State)})
	}
	if c.cfg.Slurm.Holds.Lost != "release" {
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
		r := owner[job]
		rel, err := c.deps.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: r.User,
			Kinds: []allocator.Kind{r.Kind}, GPUs: lost[job], Token: r.Token, JobID: job})
		if err != nil {
			return out, fmt.Errorf("release the hold of ended placeholder job %s: %w", job, err)
		}
		if len(rel.GPUs) == 0 {
			continue
		}
		out = append(out, Settled{What: "placeholder", Kind: r.Kind, JobID: job, GPUs: rel.GPUs,
			Message: fmt.Sprintf("released %s of %s's %s hold: its placeholder job %s no longer runs (lost_placeholder=release)",
				gpuList(snap, rel.GPUs), r.User, r.Kind, job)})
	}
	return out, nil
}

// standsFor: the placeholder job stands for a live interactive hold of
// snap, by the job id the hold recorded or the token its comment carries.
func standsFor(snap *allocator.Snapshot, j slurm.HoldJob) bool {
	for _, r := range snap.Reservations {
		if r.Kind.Batch() || r.Queued || !r.Active(snap.Now) {
			continue
		}
		if r.JobID == j.ID || (j.Token > 0 && r.Token == j.Token) {
			return true
		}
	}
	return false
}
