package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// violationRun is a run at now that saw bob use GPU 0 unreserved with
// the given processes, all killable, under notify at once and kill after
// 10 minutes.
func violationRun(now time.Time, pids ...int) ViolationRun {
	run := ViolationRun{Now: now, Gap: 2 * time.Hour, Renotify: time.Hour, KillsPerHour: 2,
		MaxAge: 24 * time.Hour, MaxRecords: 100,
		Steps: []ViolationStep{{Action: "notify"}, {Action: "kill", After: 10 * time.Minute}}}
	s := Sighting{Kind: "unreserved", GPU: uuid(0), User: "bob", Model: "meta-llama/Llama-3.1-8B"}
	for _, pid := range pids {
		p := allocator.ViolationProcess{PID: pid, Name: "python3", Start: uint64(1000 + pid)}
		s.Processes = append(s.Processes, p)
		s.Kill = append(s.Kill, p)
	}
	run.Seen = []Sighting{s}
	return run
}

// TestRecordViolations follows one violation through runs of the health
// check: first and last seen merge, notify once per renotify interval,
// kill after its grace and within the hourly limit, every step recorded.
func TestRecordViolations(t *testing.T) {
	s := newNode(t, 2)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	plans, err := s.RecordViolations(ctx, violationRun(t0, 10))
	require.NoError(t, err)
	require.Len(t, plans, 1)
	p := plans[0]
	require.Equal(t, []string{"notify"}, p.Due)
	require.Empty(t, p.Kill)
	require.Equal(t, t0, p.Record.FirstSeen)
	require.Equal(t, "unreserved|"+uuid(0)+"|bob|"+strconv.FormatInt(t0.UnixMilli(), 10), p.Record.ID)

	// 5 minutes on, a second process: merged, not re-notified, not killed yet.
	plans, err = s.RecordViolations(ctx, violationRun(t0.Add(5*time.Minute), 10, 11))
	require.NoError(t, err)
	p = plans[0]
	require.Empty(t, p.Due)
	require.Empty(t, p.Kill)
	require.Equal(t, t0, p.Record.FirstSeen)
	require.Equal(t, t0.Add(5*time.Minute), p.Record.LastSeen)
	require.Len(t, p.Record.Processes, 2)

	// After the grace: kill, but the limit is 2 per hour of the 3 processes.
	plans, err = s.RecordViolations(ctx, violationRun(t0.Add(10*time.Minute), 10, 11, 12))
	require.NoError(t, err)
	p = plans[0]
	require.Equal(t, []int{10, 11}, p.Kill)
	require.Equal(t, []int{12}, p.Limited)
	require.Equal(t, []int{10, 11}, p.Record.Killed())

	// Killed processes are not killed again; the limit still holds; an
	// hour after the first notify, notify again.
	plans, err = s.RecordViolations(ctx, violationRun(t0.Add(60*time.Minute), 10, 12))
	require.NoError(t, err)
	p = plans[0]
	require.Equal(t, []string{"notify"}, p.Due)
	require.Empty(t, p.Kill)
	plans, err = s.RecordViolations(ctx, violationRun(t0.Add(71*time.Minute), 12))
	require.NoError(t, err)
	require.Equal(t, []int{12}, plans[0].Kill, "an hour after the first kills, the limit has room")

	recs, err := s.Violations(ctx, t0)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	var what []string
	for _, a := range recs[0].Actions {
		what = append(what, a.What)
	}
	require.Equal(t, []string{"notify", "kill", "kill_limited", "notify", "kill"}, what)
	require.Equal(t, s.node, recs[0].Node)
	require.Equal(t, "meta-llama/Llama-3.1-8B", recs[0].Model)
	require.Equal(t, p.Record.ID, recs[0].ID)

	// Not seen for longer than the gap: the next sighting is a new record.
	t1 := t0.Add(5 * time.Hour)
	plans, err = s.RecordViolations(ctx, violationRun(t1, 20))
	require.NoError(t, err)
	require.Equal(t, t1, plans[0].Record.FirstSeen)
	require.Equal(t, []string{"notify"}, plans[0].Due)
	recs, err = s.Violations(ctx, t0)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, t0, recs[0].FirstSeen)
	require.Equal(t, t1, recs[1].FirstSeen)
	recs, err = s.Violations(ctx, t1)
	require.NoError(t, err)
	require.Len(t, recs, 1, "since filters by last seen")

	// Bounded by age: a day later the old records are gone.
	_, err = s.RecordViolations(ctx, violationRun(t1.Add(25*time.Hour), 30))
	require.NoError(t, err)
	recs, err = s.Violations(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, recs, 1)
}

// TestRecordViolationsCount: the records are bounded by count, oldest
// dropped first.
func TestRecordViolationsCount(t *testing.T) {
	s := newNode(t, 4)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 4 {
		run := violationRun(t0.Add(time.Duration(i)*time.Minute), 10)
		run.MaxRecords = 2
		run.Seen[0].GPU = uuid(i)
		_, err := s.RecordViolations(ctx, run)
		require.NoError(t, err)
	}
	recs, err := s.Violations(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, uuid(2), recs[0].GPU)
	require.Equal(t, uuid(3), recs[1].GPU)
}

// TestViolationsRoles: only the admin credential (the health check's)
// records violations; the CLI's and the monitor's read them, and their
// attempts to record change nothing.
func TestViolationsRoles(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin, _ := batchSetup(t, own, "n1")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, err := admin.RecordViolations(ctx, violationRun(t0, 10))
	require.NoError(t, err)
	for _, r := range []Role{RoleCLI, RoleMonitor} {
		s := openAs(t, own, r, "n1", Options{})
		recs, err := s.Violations(ctx, time.Time{})
		require.NoError(t, err, r)
		require.Len(t, recs, 1, r)
		all, err := s.AllViolations(ctx, time.Time{})
		require.NoError(t, err, r)
		require.Len(t, all, 1, r)
		before := dumpAll(t, own)
		_, err = s.RecordViolations(ctx, violationRun(t0.Add(time.Hour), 11))
		require.ErrorIs(t, err, allocator.ErrNotPermitted, r)
		require.Equal(t, before, dumpAll(t, own), r)
	}
}
