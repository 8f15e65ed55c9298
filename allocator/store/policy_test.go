package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

const thousandDays = 1000 * 24 * time.Hour

// storedQueueTimeout reads the heartbeat timeout kept with a queue entry.
func storedQueueTimeout(t *testing.T, s *Store, id string) time.Duration {
	t.Helper()
	c := srv.Client()
	defer c.Close()
	raw, err := c.HGet(context.Background(), s.keys.qe, id).Result()
	require.NoError(t, err)
	var w wireQueueEntry
	require.NoError(t, json.Unmarshal([]byte(raw), &w))
	return time.Duration(w.To) * time.Millisecond
}

func TestPolicyBoundsWhatClientsAskFor(t *testing.T) {
	ctx := context.Background()
	policy := allocator.Policy{RunLease: 2 * time.Minute, QueueTimeout: 45 * time.Second, MaxDuration: time.Hour}
	s := newNodeWith(t, 3, policy)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, policy.WithDefaults(), snap.Policy, "Register stored the policy")
	require.Equal(t, s.Policy(), snap.Policy)

	long := manual("alice", 1)
	long.Lease = thousandDays
	g, err := s.Allocate(ctx, long)
	require.NoError(t, err)
	run, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
		User: "bob", Count: 1, Lease: thousandDays})
	require.NoError(t, err)
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	m := snap.Reservations[g.GPUs[0]]
	require.Equal(t, time.Hour, m.ExpiresAt.Sub(m.StartedAt), "a manual reservation lasts at most max_duration")
	require.Equal(t, m.ExpiresAt, g.ExpiresAt, "the grant says what was granted")
	r := snap.Reservations[run.GPUs[0]]
	require.Equal(t, 2*time.Minute, r.ExpiresAt.Sub(r.HeartbeatAt), "a run lease lasts at most run_lease")

	expires, err := s.Renew(ctx, "bob", run.Token, run.GPUs, thousandDays)
	require.NoError(t, err)
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	r = snap.Reservations[run.GPUs[0]]
	require.Equal(t, expires, r.ExpiresAt)
	require.Equal(t, 2*time.Minute, r.ExpiresAt.Sub(r.HeartbeatAt), "so does a renewal")

	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "w", Kind: allocator.KindManual, User: "carol", Count: 3}, thousandDays)
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, storedQueueTimeout(t, s, "w"), "a queue entry waits at most queue_timeout without heartbeat")
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "v", Kind: allocator.KindManual, User: "dave", Count: 1}, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, 10*time.Second, storedQueueTimeout(t, s, "v"), "shorter than the bound: kept")
}

func TestMissingPolicyMeansTheDefaults(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	c := srv.Client()
	defer c.Close()
	require.NoError(t, c.Del(ctx, s.keys.policy).Err())
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Zero(t, snap.Policy, "no stored policy: a root program sees it differs")
	require.NotEqual(t, s.Policy(), snap.Policy)

	long := manual("alice", 1)
	long.Lease = thousandDays
	g, err := s.Allocate(ctx, long)
	require.NoError(t, err)
	run, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
		User: "bob", Count: 1, Lease: thousandDays})
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "w", Kind: allocator.KindManual, User: "carol", Count: 1}, thousandDays)
	require.NoError(t, err)
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	m, r := snap.Reservations[g.GPUs[0]], snap.Reservations[run.GPUs[0]]
	require.Equal(t, allocator.DefaultMaxDuration, m.ExpiresAt.Sub(m.StartedAt))
	require.Equal(t, allocator.DefaultRunLease, r.ExpiresAt.Sub(r.HeartbeatAt))
	require.Equal(t, allocator.DefaultQueueTimeout, storedQueueTimeout(t, s, "w"))
}

func TestHistoryCapsComeFromTheStoredPolicy(t *testing.T) {
	ctx := context.Background()
	s := newNodeWith(t, 1, allocator.Policy{HistoryMaxRecords: 3})
	// A client configured otherwise changes nothing: the stored policy rules.
	other, err := New(s.rdb, s.addr, s.node, Options{Policy: allocator.Policy{HistoryMaxRecords: 1000}})
	require.NoError(t, err)
	for range 5 {
		g, err := other.Allocate(ctx, manual("alice", 1))
		require.NoError(t, err)
		_, err = other.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Token: g.Token})
		require.NoError(t, err)
	}
	hist, err := s.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 3)
}

func TestBadPolicyIsRefused(t *testing.T) {
	c := srv.Client()
	defer c.Close()
	_, err := New(c, srv.URL(), "n", Options{Policy: allocator.Policy{RunLease: time.Microsecond}})
	var in *allocator.InputError
	require.ErrorAs(t, err, &in)
	require.Equal(t, `invalid run lease "1µs": want a duration of at least 1ms, or zero for the default`, err.Error())
	_, err = New(c, srv.URL(), "n", Options{Policy: allocator.Policy{HistoryMaxRecords: -1}})
	require.ErrorAs(t, err, &in)
}
