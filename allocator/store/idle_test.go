package store

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// held returns the node's reservations of GPUs, as the health check sees
// them in its snapshot.
func held(t *testing.T, s *Store, gpus ...string) []allocator.Reservation {
	t.Helper()
	snap, err := s.Snapshot(context.Background())
	require.NoError(t, err)
	var out []allocator.Reservation
	for _, g := range gpus {
		r, ok := snap.Reservations[g]
		require.True(t, ok, "%s is reserved", g)
		out = append(out, r)
	}
	return out
}

// The health check's snapshot restarts the clock of every grant with a
// GPU not named idle, in the same round trip, at most once per
// granularity.
func TestSnapshotMarkingUseRestartsTheClockOfGrantsInUse(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	alice, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	bob, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	ageReservations(t, s, 40*time.Minute)
	before := held(t, s, alice.GPUs[0], alice.GPUs[1], bob.GPUs[0])
	require.True(t, before[0].ActiveAt.IsZero(), "no sign of use yet")
	require.Equal(t, before[0].StartedAt, before[0].IdleSince(), "idle since its start")

	// alice's second GPU is idle, her first is not: her whole grant is in
	// use. bob's only GPU is idle.
	idle := []string{alice.GPUs[1], bob.GPUs[0]}
	snap, err := s.SnapshotMarkingUse(ctx, idle, time.Minute)
	require.NoError(t, err)
	after := held(t, s, alice.GPUs[0], alice.GPUs[1], bob.GPUs[0])
	for i, r := range after[:2] {
		require.Equal(t, snap.Reservations[r.GPU], r, "the snapshot shows what it wrote")
		require.WithinDuration(t, snap.Now, r.ActiveAt, time.Second, "the store's now")
		require.Equal(t, r.ActiveAt, r.IdleSince())
		require.Equal(t, before[i].ExpiresAt, r.ExpiresAt, "a sign of use does not extend the reservation")
	}
	require.Equal(t, before[2], after[2], "bob's grant is idle: untouched")

	// Within the granularity nothing is written again; past it, it is.
	ageReservations(t, s, time.Minute-time.Second)
	_, err = s.SnapshotMarkingUse(ctx, idle, time.Minute)
	require.NoError(t, err)
	aged := held(t, s, alice.GPUs[0])[0]
	require.Equal(t, after[0].ActiveAt.Add(-time.Minute+time.Second), aged.ActiveAt, "younger than a minute: kept")
	ageReservations(t, s, time.Second)
	_, err = s.SnapshotMarkingUse(ctx, idle, time.Minute)
	require.NoError(t, err)
	require.True(t, held(t, s, alice.GPUs[0])[0].ActiveAt.After(aged.ActiveAt), "a minute old: written")

	// Its history record keeps the clock: idle from the last use.
	last := held(t, s, alice.GPUs[0])[0].ActiveAt
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob"})
	require.NoError(t, err)
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"})
	require.NoError(t, err)
	recs, err := s.History(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Len(t, recs, 3)
	for _, rec := range recs {
		if rec.User == "alice" {
			require.Equal(t, last, rec.IdleFrom)
		} else {
			require.True(t, rec.IdleFrom.IsZero(), "no clock kept: nothing known idle")
		}
	}
}

// A use after a warning ends the spell warned about at once, however
// young its clock.
func TestSnapshotMarkingUseEndsAWarnedSpell(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	warned, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	fresh, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	_, err = s.ApplyIdle(ctx, IdleUpdate{Warned: held(t, s, warned.GPUs...)})
	require.NoError(t, err)
	before := held(t, s, warned.GPUs[0], fresh.GPUs[0])
	require.Equal(t, before[0].IdleSince(), before[0].IdleWarned)

	_, err = s.SnapshotMarkingUse(ctx, nil, time.Hour)
	require.NoError(t, err)
	after := held(t, s, warned.GPUs[0], fresh.GPUs[0])
	require.False(t, after[0].ActiveAt.IsZero(), "the warned spell is over")
	require.NotEqual(t, after[0].IdleSince(), after[0].IdleWarned, "the new spell is not warned yet")
	require.Equal(t, before[1], after[1], "bob's clock is younger than the granularity: kept")
}

func TestApplyIdleWarnsOncePerIdleSpell(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	r := held(t, s, g.GPUs...)
	_, err = s.ApplyIdle(ctx, IdleUpdate{Warned: r})
	require.NoError(t, err)
	warned := held(t, s, g.GPUs...)[0]
	require.Equal(t, r[0].IdleSince(), warned.IdleWarned)

	// A warning decided before a use that came in between is not
	// recorded against the new spell.
	ageReservations(t, s, time.Minute)
	stale := held(t, s, g.GPUs...)
	_, err = s.SnapshotMarkingUse(ctx, nil, time.Minute)
	require.NoError(t, err)
	_, err = s.ApplyIdle(ctx, IdleUpdate{Warned: stale})
	require.NoError(t, err)
	now := held(t, s, g.GPUs...)[0]
	require.NotEqual(t, now.IdleSince(), now.IdleWarned, "the new spell is not warned yet")
}

func TestApplyIdleReleasesAManualReservationStillIdle(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	g, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	ageReservations(t, s, 40*time.Minute)
	decided := held(t, s, g.GPUs...)

	released, err := s.ApplyIdle(ctx, IdleUpdate{Release: decided})
	require.NoError(t, err)
	require.ElementsMatch(t, g.GPUs, released)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)

	recs, err := s.History(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Len(t, recs, 2)
	for _, rec := range recs {
		require.Equal(t, "reclaimed_idle", rec.End)
		require.Equal(t, "alice", rec.User)
		require.Equal(t, decided[0].IdleSince(), rec.IdleFrom, "idle since its start: it never showed use")
	}

	again, err := s.ApplyIdle(ctx, IdleUpdate{Release: decided})
	require.NoError(t, err)
	require.Empty(t, again, "a retry releases nothing more")
}

func TestApplyIdleKeepsWhatChangedSinceTheDecision(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	ageReservations(t, s, 40*time.Minute)
	decided := held(t, s, g.GPUs...)

	t.Run("kept alive in between", func(t *testing.T) {
		kept, refused, err := s.KeepAlive(ctx, "alice", nil)
		require.NoError(t, err)
		require.Equal(t, g.GPUs, kept)
		require.Empty(t, refused)
		released, err := s.ApplyIdle(ctx, IdleUpdate{Release: decided})
		require.NoError(t, err)
		require.Empty(t, released)
		require.Len(t, held(t, s, g.GPUs...), 1)
	})
	t.Run("released and granted again in between", func(t *testing.T) {
		_, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"})
		require.NoError(t, err)
		again, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
			User: "bob", UID: 1001, GPUs: g.GPUs, Lease: time.Hour})
		require.NoError(t, err)
		ageReservations(t, s, 40*time.Minute)
		released, err := s.ApplyIdle(ctx, IdleUpdate{Release: decided})
		require.NoError(t, err)
		require.Empty(t, released, "bob's grant has another token")
		require.Equal(t, "bob", held(t, s, again.GPUs...)[0].User)
	})
}

func TestApplyIdleNeverReleasesOtherKinds(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	run := manual("alice", 1)
	run.Kind = allocator.KindRun
	g, err := s.Allocate(ctx, run)
	require.NoError(t, err)
	r := held(t, s, g.GPUs...)
	_, err = s.ApplyIdle(ctx, IdleUpdate{Release: r})
	var in *allocator.InputError
	require.ErrorAs(t, err, &in)
	require.EqualError(t, err, `invalid idle release "run reservation of `+g.GPUs[0]+`": want manual reservations only`)
	require.Len(t, held(t, s, g.GPUs...), 1, "nothing changed")
}

func TestKeepAliveTouchesOnlyTheUsersManualReservations(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	mine, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	theirs, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	run := manual("alice", 1)
	run.Kind = allocator.KindRun
	lease, err := s.Allocate(ctx, run)
	require.NoError(t, err)

	named := append([]string{mine.GPUs[0]}, theirs.GPUs[0], lease.GPUs[0])
	kept, refused, err := s.KeepAlive(ctx, "alice", named)
	require.NoError(t, err)
	require.Empty(t, kept, "all or nothing")
	require.Equal(t, []string{theirs.GPUs[0], lease.GPUs[0]}, refused)
	for _, r := range held(t, s, mine.GPUs[0], mine.GPUs[1], theirs.GPUs[0], lease.GPUs[0]) {
		require.True(t, r.ActiveAt.IsZero(), "%s of %s untouched", r.Kind, r.User)
	}

	kept, refused, err = s.KeepAlive(ctx, "alice", mine.GPUs[:1])
	require.NoError(t, err)
	require.Equal(t, mine.GPUs[:1], kept)
	require.Empty(t, refused)
	rs := held(t, s, mine.GPUs...)
	require.False(t, rs[0].ActiveAt.IsZero())
	require.True(t, rs[1].ActiveAt.IsZero(), "only the GPU named")

	kept, refused, err = s.KeepAlive(ctx, "alice", nil)
	require.NoError(t, err)
	require.ElementsMatch(t, mine.GPUs, kept, "all of alice's manual reservations")
	require.Empty(t, refused)

	_, _, err = s.KeepAlive(ctx, "a,b", nil)
	require.EqualError(t, err, `invalid user "a,b": want an account name without commas or control characters`)
}

// A keep-alive racing the release of the same idle reservation: exactly
// one of them wins, and the store agrees with its answer.
func TestKeepAliveRacesIdleRelease(t *testing.T) {
	ctx := context.Background()
	for range 20 {
		s := newNode(t, 1)
		g, err := s.Allocate(ctx, manual("alice", 1))
		require.NoError(t, err)
		ageReservations(t, s, 40*time.Minute)
		decided := held(t, s, g.GPUs...)
		var wg sync.WaitGroup
		var kept, released []string
		var kerr, rerr error
		wg.Go(func() { kept, _, kerr = s.KeepAlive(ctx, "alice", nil) })
		wg.Go(func() { released, rerr = s.ApplyIdle(ctx, IdleUpdate{Release: decided}) })
		wg.Wait()
		require.NoError(t, kerr)
		require.NoError(t, rerr)
		require.NotEqual(t, len(kept), len(released), "exactly one wins: kept %v, released %v", kept, released)
		snap, err := s.Snapshot(ctx)
		require.NoError(t, err)
		require.Equal(t, len(kept), len(snap.Reservations))
	}
}

// TestApplyIdleReleasesAGrantWholeOrNotAtAll: a keep-alive of one GPU of a
// two-GPU grant between the decision and the release keeps both, so the
// owner is never told of a release that left part of the grant held.
func TestApplyIdleReleasesAGrantWholeOrNotAtAll(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	g, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	ageReservations(t, s, 40*time.Minute)
	decided := held(t, s, g.GPUs...)
	kept, refused, err := s.KeepAlive(ctx, "alice", g.GPUs[:1])
	require.NoError(t, err)
	require.Empty(t, refused)
	require.Equal(t, g.GPUs[:1], kept)

	released, err := s.ApplyIdle(ctx, IdleUpdate{Release: decided})
	require.NoError(t, err)
	require.Empty(t, released)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2, "both GPUs still held")
}
