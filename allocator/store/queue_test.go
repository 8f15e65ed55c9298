package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

func TestQueueHeadOnlyWithPartialHolds(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	first, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)

	pos, err := s.Enqueue(ctx, allocator.QueueEntry{ID: "bob-1", Kind: allocator.KindManual, User: "bob", Count: 3}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, 1, pos)
	pos, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "carol-1", Kind: allocator.KindManual, User: "carol", Count: 1}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, 2, pos)

	carol := manual("carol", 1)
	carol.QueueEntry = "carol-1"
	_, err = s.Allocate(ctx, carol)
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short, "carol is not the head, although a GPU is free")
	require.Equal(t, 1, short.Waiting)

	bob := manual("bob", 3)
	bob.QueueEntry = "bob-1"
	_, err = s.Allocate(ctx, bob)
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending, "the head holds what is free so far")
	require.Len(t, pending.Allocated, 1)

	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Queue, 2)
	require.Equal(t, "bob", snap.Queue[0].User)
	require.Equal(t, pending.Allocated, snap.Queue[0].Allocated)
	require.True(t, snap.Reservations[pending.Allocated[0]].Queued)

	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", Token: first.Token})
	require.NoError(t, err)
	bob.RequestID = allocator.NewRequestID()
	g, err := s.Allocate(ctx, bob)
	require.NoError(t, err)
	require.Len(t, g.GPUs, 3)
	require.Contains(t, g.GPUs, pending.Allocated[0])

	pos, err = s.QueueHeartbeat(ctx, "carol-1")
	require.NoError(t, err)
	require.Equal(t, 1, pos, "carol moved up")
	_, err = s.QueueHeartbeat(ctx, "bob-1")
	require.ErrorIs(t, err, allocator.ErrNotQueued, "a granted entry leaves the queue")
}

func TestQueueLeaveFreesPartialHolds(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	_, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "b", Kind: allocator.KindRun, User: "bob", Count: 2}, time.Minute)
	require.NoError(t, err)
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun, User: "bob", Count: 2, Lease: time.Minute, QueueEntry: "b"}
	_, err = s.Allocate(ctx, req)
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending)

	require.NoError(t, s.LeaveQueue(ctx, "b"))
	require.NoError(t, s.LeaveQueue(ctx, "b"), "leaving twice is fine")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1)
	require.Empty(t, snap.Queue)
	hist, err := s.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Empty(t, hist, "a hold never handed out is not usage")

	req.RequestID = allocator.NewRequestID()
	_, err = s.Allocate(ctx, req)
	require.ErrorIs(t, err, allocator.ErrNotQueued)
}

func TestQueueEntryWithoutHeartbeatIsDropped(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	_, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "gone", Kind: allocator.KindManual, User: "bob", Count: 2}, time.Minute)
	require.NoError(t, err)
	_, err = s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "bob", Count: 2, Lease: time.Minute, QueueEntry: "gone"})
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending)

	// Two minutes without a heartbeat: the entry and its hold are past
	// their one-minute timeout; alice's hour is not.
	ageQueueEntry(t, s, "gone", 2*time.Minute)
	ageReservations(t, s, 2*time.Minute)
	g, err := s.Allocate(ctx, manual("carol", 1))
	require.NoError(t, err, "the crashed waiter's entry and hold are gone")
	require.Equal(t, pending.Allocated, g.GPUs)
}

func TestAdminReleaseAlsoClearsTheQueue(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	held, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	for _, e := range []allocator.QueueEntry{
		{ID: "bob-1", Kind: allocator.KindManual, User: "bob", Count: 3},
		{ID: "bob-2", Kind: allocator.KindRun, User: "bob", Count: 1},
		{ID: "carol-1", Kind: allocator.KindManual, User: "carol", Count: 1},
	} {
		_, err := s.Enqueue(ctx, e, time.Minute)
		require.NoError(t, err)
	}
	bob := manual("bob", 3)
	bob.QueueEntry = "bob-1"
	_, err = s.Allocate(ctx, bob)
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending, "bob heads the queue and holds the free GPU")

	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob", Queue: true})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "bob held nothing handed out")
	require.Len(t, r.Dequeued, 2)
	require.Equal(t, "bob-1", r.Dequeued[0].ID)
	require.Equal(t, pending.Allocated, r.Dequeued[0].Allocated)
	require.Equal(t, allocator.KindRun, r.Dequeued[1].Kind)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2, "bob's hold is freed with his entry")
	require.Len(t, snap.Queue, 1)
	require.Equal(t, "carol", snap.Queue[0].User)

	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Queue: true})
	require.NoError(t, err)
	require.ElementsMatch(t, held.GPUs, r.GPUs)
	require.Len(t, r.Dequeued, 1)
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
	require.Empty(t, snap.Queue)

	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Queue: true, GPUs: []string{uuid(0)}})
	var in *allocator.InputError
	require.ErrorAs(t, err, &in, "queue entries have no GPU ids")
}

// A run taking back the GPUs the store forgot does not queue behind
// requests made after it held them; anyone else still does.
func TestRetakeDoesNotWaitBehindTheQueue(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	gpu0 := snap.GPUs[0].UUID
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "bob-1", Kind: allocator.KindManual, User: "bob", Count: 2}, time.Minute)
	require.NoError(t, err)

	plain := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun, User: "alice", GPUs: []string{gpu0}, Lease: time.Minute}
	_, err = s.Allocate(ctx, plain)
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short, "an ordinary request waits behind bob")
	require.Equal(t, 1, short.Waiting)

	retake := plain
	retake.RequestID, retake.Retake = allocator.NewRequestID(), true
	g, err := s.Allocate(ctx, retake)
	require.NoError(t, err)
	require.Equal(t, []string{gpu0}, g.GPUs)

	bad := retake
	bad.RequestID, bad.Kind = allocator.NewRequestID(), allocator.KindManual
	_, err = s.Allocate(ctx, bad)
	var input *allocator.InputError
	require.ErrorAs(t, err, &input, "only a run retakes")
}

// A queue written by a version without the expiry set (qx) still works:
// the first operation builds qx from the entries' stored heartbeats, drops
// the entries whose heartbeat is too old and keeps the others' order.
func TestQueueWrittenWithoutExpirySetIsTakenOver(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	_, err := s.Allocate(ctx, manual("alice", 2))
	require.NoError(t, err)
	for _, id := range []string{"gone", "bob-1", "carol-1"} {
		_, err := s.Enqueue(ctx, allocator.QueueEntry{ID: id, Kind: allocator.KindManual, User: "u" + id, Count: 1}, time.Minute)
		require.NoError(t, err)
	}
	c := srv.Client()
	defer c.Close()
	k := s.keys
	require.NoError(t, c.Del(ctx, k.qx).Err(), "as the previous version left it")
	raw, err := c.HGet(ctx, k.qe, "gone").Result()
	require.NoError(t, err)
	var w map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &w))
	w["h"] = 1 // a heartbeat in 1970: long expired
	b, err := json.Marshal(w)
	require.NoError(t, err)
	require.NoError(t, c.HSet(ctx, k.qe, "gone", b).Err())

	pos, err := s.QueueHeartbeat(ctx, "carol-1")
	require.NoError(t, err)
	require.Equal(t, 2, pos, "the expired entry is dropped, bob stays ahead")
	require.Equal(t, int64(2), c.ZCard(ctx, k.qx).Val())
	require.Equal(t, int64(2), c.ZCard(ctx, k.q).Val())
	require.False(t, c.HExists(ctx, k.qe, "gone").Val())
	_, err = s.QueueHeartbeat(ctx, "gone")
	require.ErrorIs(t, err, allocator.ErrNotQueued)
}

// An entry whose expiry (qx) has passed is dropped by the next writer,
// without any entry being read: backdating its score is enough.
func TestQueueEntryPastItsExpiryIsDropped(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	_, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	for _, id := range []string{"bob-1", "carol-1"} {
		_, err := s.Enqueue(ctx, allocator.QueueEntry{ID: id, Kind: allocator.KindManual, User: "u" + id, Count: 1}, time.Minute)
		require.NoError(t, err)
	}
	c := srv.Client()
	defer c.Close()
	require.NoError(t, c.ZAdd(ctx, s.keys.qx, redis.Z{Score: 1, Member: "bob-1"}).Err())
	_, err = s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "ucarol-1", Count: 1, Lease: time.Minute, QueueEntry: "carol-1"})
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short)
	require.Equal(t, 0, short.Waiting, "carol heads the queue once bob's entry expired")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Queue, 1)
	require.Equal(t, "carol-1", snap.Queue[0].ID)
}
