package cli

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// lease is a run lease of alice on the fixture's GPUs with the given
// indices, under token (0: one the store never granted, as after it lost
// its data).
func (f *fixture) lease(token int64, uuids ...string) *runLease {
	return &runLease{store: f.store(), user: "alice", uid: 2001, note: "retaken", token: token, gpus: uuids,
		names: "0,1", timeout: time.Minute}
}

// registered registers n fake GPUs and returns their UUIDs by index.
func (f *fixture) registered(n int) []string {
	f.t.Helper()
	require.Equal(f.t, 0, f.run(root, "admin", "--gpus", strconv.Itoa(n)).code)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(f.t, err)
	require.Len(f.t, snap.GPUs, n)
	out := make([]string, n)
	for i, g := range snap.GPUs {
		out[i] = g.UUID
	}
	return out
}

func TestHoldRetakesALeaseTheStoreForgot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, idleGPUs(2))
	uuids := f.registered(2)
	l := f.lease(999, uuids...)

	retaken, err := l.hold(ctx)
	require.NoError(t, err)
	require.True(t, retaken)
	require.NotEqual(t, int64(999), l.token, "the new grant's token")
	snap, err := f.store().Snapshot(ctx)
	require.NoError(t, err)
	for _, u := range uuids {
		r := snap.Reservations[u]
		require.Equal(t, allocator.KindRun, r.Kind)
		require.Equal(t, "alice", r.User)
		require.Equal(t, "retaken", r.Note)
		require.Equal(t, l.token, r.Token)
	}

	retaken, err = l.hold(ctx)
	require.NoError(t, err)
	require.False(t, retaken, "a plain renewal")
	require.False(t, l.beat.IsZero(), "the store's time of the renewal")
}

func TestHoldKeepsALeaseEndedInTheStoreEnded(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, idleGPUs(2))
	uuids := f.registered(2)
	g, err := f.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
		User: "alice", GPUs: uuids, Lease: time.Minute})
	require.NoError(t, err)
	l := f.lease(g.Token, uuids...)
	_, err = l.hold(ctx)
	require.NoError(t, err)

	// An administrator releases one of the GPUs: the release is on
	// record, so the lease is over rather than forgotten.
	require.Equal(t, 0, f.run(root, "admin", "--release", "--gpu-ids", "1").code)
	_, err = l.hold(ctx)
	var lost *allocator.LeaseLostError
	require.ErrorAs(t, err, &lost)
	require.Nil(t, lost.Holder)
	require.Equal(t, uuids[1], lost.GPU)
	snap, err := f.store().Snapshot(ctx)
	require.NoError(t, err)
	require.NotContains(t, snap.Reservations, uuids[1], "not taken again")
}

func TestHoldGivesUpGPUsSomeoneElseHolds(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, idleGPUs(2))
	uuids := f.registered(2)
	// The store lost alice's lease; meanwhile zoe reserved GPU 1. The
	// renewal trips over GPU 0, which nobody holds; taking both again
	// finds zoe on GPU 1.
	_, err := f.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "zoe", GPUs: uuids[1:], Lease: time.Hour})
	require.NoError(t, err)
	l := f.lease(999, uuids...)
	retaken, err := l.hold(ctx)
	require.False(t, retaken)
	var lost *allocator.LeaseLostError
	require.ErrorAs(t, err, &lost)
	require.Equal(t, uuids[1], lost.GPU)
	require.Equal(t, "zoe", lost.Holder.User)
	require.Equal(t, "reservation of GPU "+uuids[1]+" was lost: now held by zoe (manual)", err.Error())
	snap, err := f.store().Snapshot(ctx)
	require.NoError(t, err)
	require.NotContains(t, snap.Reservations, uuids[0], "all or nothing")
}

func TestHoldWaitsForTheNodeToBeRegistered(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, idleGPUs(2))
	uuids := f.registered(2) // the fake GPUs' UUIDs, the same on every node
	empty := newFixture(t, idleGPUs(2))
	l := empty.lease(999, uuids...)
	retaken, err := l.hold(ctx)
	require.False(t, retaken)
	var forgotten *forgottenError
	require.ErrorAs(t, err, &forgotten)
	require.ErrorIs(t, err, allocator.ErrNotRegistered)
	require.Equal(t, "the store lost the reservation of GPU 0,1 and it cannot be taken again yet: node "+empty.node+": node has no GPUs registered", err.Error())

	require.Equal(t, 0, empty.run(root, "admin", "--gpus", "2").code)
	retaken, err = l.hold(ctx)
	require.NoError(t, err)
	require.True(t, retaken)
}
