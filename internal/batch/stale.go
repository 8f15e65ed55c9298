package batch

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"canhazgpu/allocator"
)

// WhyEarlierBoot is why a grant from another boot is stale.
const WhyEarlierBoot = "granted before this boot"

// Stale is one grant of a batch job to release: its GPUs share the
// grant's fencing token, which fences the release against a new grant of
// a reused job id made after the snapshot.
type Stale struct {
	JobID string
	Token int64
	GPUs  []string
	Why   string
}

// Judge says why a job no longer runs on this node, or "" while it runs
// or when that cannot be told (the job keeps its GPUs).
type Judge func(job string) string

// FindStale picks the grants of one scheduler's jobs that no longer run
// here. A grant made in an earlier boot is stale whatever else says: no
// job survives a reboot. A grant younger than grace may come from a
// prolog still running, and is left alone; any other is stale when judge
// says its job ended. judge is asked once per job, in job id order.
// Other kinds and queue holds are never touched.
func FindStale(snap *allocator.Snapshot, kind allocator.Kind, bootID string, grace time.Duration, judge Judge) []Stale {
	var mine []allocator.Reservation
	for _, r := range snap.Reservations {
		if r.Kind == kind && !r.Queued {
			mine = append(mine, r)
		}
	}
	slices.SortFunc(mine, func(a, b allocator.Reservation) int {
		return cmp.Or(cmp.Compare(a.JobID, b.JobID), cmp.Compare(a.Token, b.Token), cmp.Compare(a.GPU, b.GPU))
	})
	verdicts := map[string]string{}
	byGrant := map[string]*Stale{}
	for _, r := range mine {
		why := ""
		switch {
		case r.BootID != "" && bootID != "" && r.BootID != bootID:
			why = WhyEarlierBoot
		case snap.Now.Sub(r.StartedAt) < grace:
			continue
		default:
			v, asked := verdicts[r.JobID]
			if !asked {
				v = judge(r.JobID)
				verdicts[r.JobID] = v
			}
			if v == "" {
				continue
			}
			why = v
		}
		key := fmt.Sprintf("%s/%d", r.JobID, r.Token)
		s, ok := byGrant[key]
		if !ok {
			s = &Stale{JobID: r.JobID, Token: r.Token, Why: why}
			byGrant[key] = s
		}
		s.GPUs = append(s.GPUs, r.GPU)
	}
	out := make([]Stale, 0, len(byGrant))
	for _, s := range byGrant {
		slices.Sort(s.GPUs)
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Stale) int {
		return cmp.Or(cmp.Compare(a.JobID, b.JobID), cmp.Compare(a.Token, b.Token))
	})
	return out
}
