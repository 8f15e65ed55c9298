package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// applyMarkers settles the pending markers of every state directory. Only
// an unreachable store fails the check; a marker that cannot be applied
// (a reserve whose GPU someone took meanwhile) stays for the next round
// and is reported.
func (c *check) applyMarkers(ctx context.Context) ([]Settled, error) {
	var out []Settled
	var dirs []string
	for _, sched := range c.deps.Schedulers {
		if d := sched.Policy(c.cfg).StateDir; d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, dir := range dirs {
		done, err := jobstate.SettleAll(ctx, c.deps.Store, dir)
		for _, m := range done {
			msg := fmt.Sprintf("applied the pending %s of %s job %s", m.Op, m.Kind, m.JobID)
			if m.Op == jobstate.OpReserve {
				msg += " (" + plural(len(m.GPUs), "GPU") + ")"
			}
			out = append(out, Settled{What: "marker", Kind: m.Kind, JobID: m.JobID, GPUs: m.GPUs, Message: msg})
		}
		if errors.Is(err, allocator.ErrUnavailable) || ctx.Err() != nil {
			return out, err
		}
		if err != nil {
			out = append(out, Settled{What: "unsettled", Message: "not applied yet: " + strings.ReplaceAll(err.Error(), "\n", "; ")})
		}
	}
	return out, nil
}
