package batch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

func TestFindStale(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	res := func(gpu, job string, token int64, boot string, start time.Time) allocator.Reservation {
		return allocator.Reservation{GPU: gpu, Kind: testKind, JobID: job, Token: token, BootID: boot, StartedAt: start}
	}
	snap := &allocator.Snapshot{Now: now, Reservations: map[string]allocator.Reservation{
		"g0": res("g0", "1", 1, "boot-old", now), // an earlier boot: stale even while young
		"g1": res("g1", "2", 2, "boot-now", old), // ended
		"g2": res("g2", "2", 2, "boot-now", old), // the same grant
		"g3": res("g3", "3", 3, "boot-now", old), // runs
		"g4": res("g4", "4", 4, "boot-now", now), // young: never asked
		"g5": res("g5", "", 0, "", old),          // a queue hold
		"g6": {GPU: "g6", Kind: allocator.KindManual, User: "alice", StartedAt: old},
		"g7": {GPU: "g7", Kind: "other", JobID: "2", StartedAt: old},
	}}
	r := snap.Reservations["g5"]
	r.Queued = true
	snap.Reservations["g5"] = r
	var asked []string
	judge := func(job string) string {
		asked = append(asked, job)
		if job == "2" {
			return "the job is over"
		}
		return ""
	}
	got := FindStale(snap, testKind, "boot-now", time.Minute, judge)
	require.Equal(t, []Stale{
		{JobID: "1", Token: 1, GPUs: []string{"g0"}, Why: WhyEarlierBoot},
		{JobID: "2", Token: 2, GPUs: []string{"g1", "g2"}, Why: "the job is over"},
	}, got)
	require.Equal(t, []string{"2", "3"}, asked, "once per job, in job order; young grants and other kinds never")
}
