package slurm

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

// vacate is the batch engine's Vacate on a node with interactive holds as
// placeholders: of the interactive holds that took a job's GPUs, it
// releases those whose placeholder job no longer runs. Slurm placed the
// job there because the placeholder was gone (its owner cancelled it,
// say); the health check would settle the hold at its next run the same
// way (lost_placeholder), but the job would meet on_conflict first, and
// with "fail" drain the node over one user's scancel. With
// lost_placeholder = "keep" holds are left alone, and nothing is asked of
// Slurm. It runs only when a job meets taken GPUs, and asks Slurm about
// each placeholder once (squeue, beside scontrol: the Prolog avoids Slurm
// commands on its usual path).
func (h *Hook) vacate(ctx context.Context, st *store.Store, taken []allocator.Reservation) []string {
	holds := h.Config.Slurm.Holds
	if holds.Mode != "placeholder" || holds.Lost == "keep" {
		return nil
	}
	// Within half of what is left of the Prolog's deadline, and not at all
	// with under a second left: the conflict's own handling, and the
	// job's record, must still fit in it.
	if end, ok := ctx.Deadline(); ok {
		left := time.Until(end)
		if left < time.Second {
			return nil
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, left/2)
		defer cancel()
	}
	// Of the Prolog's environment only SLURM_CONF (slurmd's, in a
	// configless cluster): the rest carries the job's own text.
	sc := Scontrol{Path: h.Config.Health.Scontrol, Node: h.Config.Node, Timeout: h.Config.Health.ScontrolTimeout,
		Env: OwnerEnv(h.Config, h.Env["SLURM_CONF"])}
	byJob := map[string][]allocator.Reservation{}
	for _, r := range taken {
		if !r.Kind.Batch() && ValidJobID(r.JobID) {
			byJob[r.JobID] = append(byJob[r.JobID], r)
		}
	}
	var out []string
	for _, job := range slices.Sorted(maps.Keys(byJob)) {
		held := byJob[job]
		ended, state, err := sc.JobEnded(ctx, job)
		if err != nil || !ended {
			continue // running, or Slurm could not say: on_conflict decides
		}
		r := held[0]
		gpus := make([]string, len(held))
		for i, x := range held {
			gpus[i] = x.GPU
		}
		rel, err := st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: r.User,
			Kinds: []allocator.Kind{r.Kind}, GPUs: gpus, Token: r.Token, JobID: job})
		if err != nil || len(rel.GPUs) == 0 {
			continue
		}
		if state == "" {
			state = "unknown to Slurm"
		}
		out = append(out, fmt.Sprintf("released %s's %s hold of %s: its placeholder job %s no longer runs (%s)",
			r.User, r.Kind, strings.Join(rel.GPUs, ", "), job, state))
	}
	return out
}
