package store

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

func TestSetHoldJobNeedsOwnerAndToken(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	g, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)

	var lost *allocator.LeaseLostError
	require.ErrorAs(t, s.SetHoldJob(ctx, "bob", g.Token, g.GPUs, "42"), &lost, "another user")
	require.ErrorAs(t, s.SetHoldJob(ctx, "alice", g.Token+1, g.GPUs, "42"), &lost, "another grant")
	other := append([]string{g.GPUs[0]}, uuid(2)) // uuid(2) is free
	if g.GPUs[0] == uuid(2) {
		other = append([]string{g.GPUs[1]}, uuid(0))
	}
	require.ErrorAs(t, s.SetHoldJob(ctx, "alice", g.Token, other, "42"), &lost, "a GPU the hold lacks")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	for _, u := range g.GPUs {
		require.Empty(t, snap.Reservations[u].JobID, "a refused call changes nothing")
	}

	require.NoError(t, s.SetHoldJob(ctx, "alice", g.Token, g.GPUs, "42"))
	require.NoError(t, s.SetHoldJob(ctx, "alice", g.Token, g.GPUs, "42"), "again: the same effect")
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	for _, u := range g.GPUs {
		r := snap.Reservations[u]
		require.Equal(t, "42", r.JobID)
		require.Equal(t, allocator.KindManual, r.Kind, "still alice's manual hold")
		require.Equal(t, g.Token, r.Token)
	}
}

func TestSetHoldJobBadInputWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	var input *allocator.InputError
	for _, job := range []string{"", "12;rm", "1 2", "-3", "123456789012345678901"} {
		require.ErrorAs(t, s.SetHoldJob(ctx, "alice", g.Token, g.GPUs, job), &input, job)
	}
	require.ErrorAs(t, s.SetHoldJob(ctx, "alice", 0, g.GPUs, "1"), &input)
	require.ErrorAs(t, s.SetHoldJob(ctx, "alice", g.Token, nil, "1"), &input)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations[g.GPUs[0]].JobID)
}

// A placeholder that replaces a vanished one takes its place only while
// the hold still names the vanished one: of two replacements one wins,
// and a hold released or lapsed meanwhile is never written back.
func TestReplaceHoldJob(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	g, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	require.NoError(t, s.SetHoldJob(ctx, "alice", g.Token, g.GPUs, "42"))

	var lost *allocator.LeaseLostError
	require.ErrorAs(t, s.ReplaceHoldJob(ctx, "alice", g.Token, g.GPUs, "41", "43"), &lost, "the hold names another job")
	require.NoError(t, s.ReplaceHoldJob(ctx, "alice", g.Token, g.GPUs, "42", "43"))
	require.ErrorAs(t, s.ReplaceHoldJob(ctx, "alice", g.Token, g.GPUs, "42", "44"), &lost, "replaced already")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	for _, u := range g.GPUs {
		require.Equal(t, "43", snap.Reservations[u].JobID, "the first replacement won")
	}
	var input *allocator.InputError
	require.ErrorAs(t, s.ReplaceHoldJob(ctx, "alice", g.Token, g.GPUs, "", "44"), &input)

	ageReservations(t, s, 2*time.Hour)
	require.ErrorAs(t, s.ReplaceHoldJob(ctx, "alice", g.Token, g.GPUs, "43", "44"), &lost, "the hold lapsed")
	require.ErrorAs(t, s.SetHoldJob(ctx, "alice", g.Token, g.GPUs, "44"), &lost, "the hold lapsed")

	h, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	require.NoError(t, s.SetHoldJob(ctx, "alice", h.Token, h.GPUs, "50"))
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", Token: h.Token})
	require.NoError(t, err)
	require.ErrorAs(t, s.ReplaceHoldJob(ctx, "alice", h.Token, h.GPUs, "50", "51"), &lost, "released meanwhile")
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "nothing resurrected")
}

// TestReleaseNamesTheHoldsPlaceholders: a release's reply carries the
// holds it ended that named a job of their own, as they were, so that the
// CLI cancels their placeholders without reading the node first; a hold
// without one is not among them.
func TestReleaseNamesTheHoldsPlaceholders(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	withJob, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	require.NoError(t, s.SetHoldJob(ctx, "alice", withJob.Token, withJob.GPUs, "42"))
	_, err = s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)

	done, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"})
	require.NoError(t, err)
	require.Len(t, done.GPUs, 3)
	require.Len(t, done.Holds, 2)
	for _, r := range done.Holds {
		require.Equal(t, "42", r.JobID)
		require.Equal(t, withJob.Token, r.Token)
		require.Contains(t, withJob.GPUs, r.GPU)
	}
}
