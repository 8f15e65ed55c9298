package store

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// violationRun is a run at now that saw bob use GPU 0 unreserved with
// the given processes, all killable, under notify at once and kill after
// 10 minutes.
func violationRun(now time.Time, pids ...int) ViolationRun {
	run := ViolationRun{Now: now, Gap: 2 * time.Hour, Renotify: time.Hour, KillsPerHour: 2, KillPending: 30 * time.Second,
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
	require.Empty(t, p.Record.Killed(), "claimed, not done yet")
	require.Equal(t, []string{allocator.KillPending, allocator.KillPending}, kills(p.Record))
	require.NoError(t, s.RecordKillOutcomes(ctx, []KillOutcome{
		{Record: p.Record.ID, PID: 10, Start: 1010, Claimed: t0.Add(10 * time.Minute), Outcome: allocator.KillTerm, Sent: true},
		{Record: p.Record.ID, PID: 11, Start: 1011, Claimed: t0.Add(10 * time.Minute), Outcome: allocator.KillKill, Sent: true}}))

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
	require.Equal(t, []string{"notify", "kill", "kill", "kill_limited", "notify", "kill"}, what)
	require.Equal(t, []int{10, 11}, recs[0].Killed())
	require.Equal(t, []string{allocator.KillTerm, allocator.KillKill, allocator.KillUnknown}, kills(recs[0]),
		"12's claim got no outcome before its deadline")
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

// kills is the outcomes of a record's kill actions, in order.
func kills(r allocator.ViolationRecord) []string {
	var out []string
	for _, a := range r.Actions {
		if a.What == "kill" {
			out = append(out, a.Outcome)
		}
	}
	return out
}

// TestKillOutcomes: a kill is recorded as claimed, then as it went. A kill
// that sent no signal (the PID named another process) gives its place
// under the hourly limit back and is claimed again when the process is
// seen again; one that was done is not. A claim that never got its
// outcome (the check was stopped) is unknown after its deadline, and
// claimed again; its late outcome then changes nothing.
func TestKillOutcomes(t *testing.T) {
	s := newNode(t, 2)
	ctx := context.Background()
	// Anchored at the real clock, an hour back: the reads judge pending
	// claims by it.
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	run := func(at time.Duration, pids ...int) ViolationPlan {
		t.Helper()
		r := violationRun(t0.Add(at), pids...)
		r.KillPending = 2 * time.Hour
		plans, err := s.RecordViolations(ctx, r)
		require.NoError(t, err)
		return plans[0]
	}
	outcome := func(p ViolationPlan, at time.Duration, pid int, o string, sent bool) {
		t.Helper()
		require.NoError(t, s.RecordKillOutcomes(ctx, []KillOutcome{
			{Record: p.Record.ID, PID: pid, Start: uint64(1000 + pid), Claimed: t0.Add(at), Outcome: o, Sent: sent}}))
	}
	read := func() allocator.ViolationRecord {
		t.Helper()
		recs, err := s.Violations(ctx, time.Time{})
		require.NoError(t, err)
		require.Len(t, recs, 1)
		return recs[0]
	}

	run(0, 10, 11)
	p := run(10*time.Minute, 10, 11)
	require.Equal(t, []int{10, 11}, p.Kill)
	require.Equal(t, []string{allocator.KillPending, allocator.KillPending}, kills(read()))
	outcome(p, 10*time.Minute, 10, allocator.KillTerm, true)
	outcome(p, 10*time.Minute, 11, allocator.KillNotSame, false)
	rec := read()
	require.Equal(t, []string{allocator.KillTerm, allocator.KillNotSame}, kills(rec))
	require.Equal(t, []int{10}, rec.Killed())

	// Both seen again: 10 was killed, not again; 11 is claimed again, and
	// the limit (2 an hour) has room, 11's first claim having sent nothing.
	p = run(11*time.Minute, 10, 11, 12)
	require.Equal(t, []int{11}, p.Kill)
	require.Equal(t, []int{12}, p.Limited, "10 and the second try of 11 fill the hour")
	require.Equal(t, []string{allocator.KillTerm, allocator.KillPending}, kills(read()), "one claim per process, the latest")

	// The check that claimed 11 was stopped before it wrote the outcome:
	// pending until the claim's deadline, not claimed again meanwhile...
	p = run(12*time.Minute, 11)
	require.Empty(t, p.Kill)
	require.Empty(t, p.Limited)
	// ...then unknown, and claimed again.
	p = run(11*time.Minute+2*time.Hour, 11)
	require.Equal(t, []int{11}, p.Kill)
	require.Equal(t, []string{allocator.KillTerm, allocator.KillPending}, kills(p.Record))
	outcome(p, 11*time.Minute, 11, allocator.KillTerm, true) // the first run's, late
	require.Equal(t, []string{allocator.KillTerm, allocator.KillPending}, kills(read()), "a later claim is left alone")
	outcome(p, 11*time.Minute+2*time.Hour, 11, allocator.KillKill, true)
	require.Equal(t, []string{allocator.KillTerm, allocator.KillKill}, kills(read()))
	require.Equal(t, []int{10, 11}, read().Killed())

	// A failure keeps its reason.
	p = run(11*time.Minute+2*time.Hour+time.Second, 13)
	require.NoError(t, s.RecordKillOutcomes(ctx, []KillOutcome{{Record: p.Record.ID, PID: 13, Start: 1013,
		Claimed: t0.Add(11*time.Minute + 2*time.Hour + time.Second), Outcome: allocator.KillFailed, Error: "process 13: operation not permitted"}}))
	last := read().Actions[len(read().Actions)-1]
	require.Equal(t, allocator.KillFailed, last.Outcome)
	require.Equal(t, "process 13: operation not permitted", last.Error)
	require.Equal(t, []int{13}, last.PIDs)
}

// TestKillPendingRead: read back, a claim whose deadline has passed by
// the reader's clock says unknown, without a run to change it.
func TestKillPendingRead(t *testing.T) {
	s := newNode(t, 2)
	ctx := context.Background()
	r := violationRun(time.Now().Add(-2*time.Hour), 10) // backdated: claimed 2 hours ago, 30 s to answer
	r.Steps = []ViolationStep{{Action: "kill"}}
	_, err := s.RecordViolations(ctx, r)
	require.NoError(t, err)
	recs, err := s.Violations(ctx, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []string{allocator.KillUnknown}, kills(recs[0]))
}

// TestViolationsOfManyNodes: every node's records in one round trip,
// however many nodes; AllViolations adds one for the registry.
func TestViolationsOfManyNodes(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var nodes []string
	var reader *Store
	for i := range 3 {
		s := newNode(t, 1)
		_, err := s.RecordViolations(ctx, violationRun(t0.Add(time.Duration(i)*time.Minute), 10+i))
		require.NoError(t, err)
		nodes = append(nodes, s.node)
		reader = s
	}
	_, err := reader.Violations(ctx, time.Time{}) // connected, the library loaded
	require.NoError(t, err)

	trips := countRoundTrips(reader)
	recs, err := reader.ViolationsOf(ctx, nodes, time.Time{})
	require.NoError(t, err)
	require.Equal(t, int64(1), trips.Load(), "one pipelined round trip for 3 nodes")
	require.Len(t, recs, 3)
	for i, rec := range recs {
		require.Equal(t, nodes[i], rec.Node)
		require.Equal(t, 10+i, rec.Processes[0].PID)
	}

	trips.Reset()
	all, err := reader.AllViolations(ctx, time.Time{})
	require.NoError(t, err)
	require.Equal(t, int64(2), trips.Load(), "the registry, then every node's records")
	got := map[string]int{}
	for _, rec := range all {
		got[rec.Node] = rec.Processes[0].PID
	}
	for i, n := range nodes {
		require.Equal(t, 10+i, got[n])
	}

	_, err = reader.ViolationsOf(ctx, []string{"bad node"}, time.Time{})
	require.Error(t, err)
}

// TestKillClaimedOnce: checks running at once claim each kill once, and
// their outcomes, written at once with further runs, each land on their
// own claim.
func TestKillClaimedOnce(t *testing.T) {
	s := newNode(t, 1)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	first := violationRun(t0, 10, 11)
	first.KillsPerHour = 10
	_, err := s.RecordViolations(ctx, first)
	require.NoError(t, err)

	at := t0.Add(10 * time.Minute)
	plans := make([]ViolationPlan, 8)
	var wg sync.WaitGroup
	for i := range plans {
		wg.Go(func() {
			r := violationRun(at, 10, 11)
			r.KillsPerHour, r.KillPending = 10, 2*time.Hour
			p, err := s.RecordViolations(ctx, r)
			if assert.NoError(t, err) {
				plans[i] = p[0]
			}
		})
	}
	wg.Wait()
	var claimed []int
	for _, p := range plans {
		claimed = append(claimed, p.Kill...)
	}
	slices.Sort(claimed)
	require.Equal(t, []int{10, 11}, claimed, "each process claimed by one run")

	id := plans[0].Record.ID
	for _, pid := range []int{10, 11} {
		wg.Go(func() {
			assert.NoError(t, s.RecordKillOutcomes(ctx, []KillOutcome{{Record: id, PID: pid, Start: uint64(1000 + pid),
				Claimed: at, Outcome: allocator.KillTerm, Sent: true}}))
		})
		wg.Go(func() {
			r := violationRun(at.Add(time.Minute), 10, 11)
			r.KillsPerHour, r.KillPending = 10, 2*time.Hour
			p, err := s.RecordViolations(ctx, r)
			if assert.NoError(t, err) {
				assert.Empty(t, p[0].Kill, "claimed already")
			}
		})
	}
	wg.Wait()
	recs, err := s.Violations(ctx, time.Time{})
	require.NoError(t, err)
	require.Equal(t, []string{allocator.KillTerm, allocator.KillTerm}, kills(recs[0]))
}
