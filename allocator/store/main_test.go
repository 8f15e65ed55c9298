package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

var nodeSeq atomic.Int64

// newNode gives each test its own node, so tests share one server safely.
func newNode(t testing.TB, gpus int) *Store {
	t.Helper()
	return newNodeWith(t, gpus, allocator.Policy{})
}

// newNodeWith is newNode registering the node with a policy.
func newNodeWith(t testing.TB, gpus int, policy allocator.Policy) *Store {
	t.Helper()
	node := fmt.Sprintf("node%d", nodeSeq.Add(1))
	s, err := Open(context.Background(), Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, node, Options{Policy: policy})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	if gpus > 0 {
		_, err := s.Register(context.Background(), fakeGPUs(gpus), false)
		require.NoError(t, err)
	}
	return s
}

func fakeGPUs(n int) []allocator.GPU {
	out := make([]allocator.GPU, n)
	for i := range out {
		out[i] = allocator.GPU{UUID: uuid(i), Index: i, Minor: i, Name: "Test GPU"}
	}
	return out
}

func uuid(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

func manual(user string, count int) allocator.Request {
	return allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: user,
		UID: 1000, Count: count, Lease: time.Hour}
}

// The store takes time from the server's clock, so tests age what it
// stored instead of waiting: each helper moves stored times back by `by`.

// ageReservations makes every reservation of the node older: its start,
// expiry, heartbeat and idle clock (those that are set) move back by `by`.
func ageReservations(t testing.TB, s *Store, by time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	for _, hash := range []string{s.keys.res, s.keys.bres} {
		all, err := c.HGetAll(ctx, hash).Result()
		require.NoError(t, err)
		for id, stored := range all {
			var r map[string]any
			require.NoError(t, json.Unmarshal([]byte(stored), &r))
			for _, f := range []string{"s", "e", "h", "a", "w"} {
				if v, ok := r[f].(float64); ok && v != 0 {
					r[f] = int64(v) - by.Milliseconds()
				}
			}
			b, err := json.Marshal(r)
			require.NoError(t, err)
			require.NoError(t, c.HSet(ctx, hash, id, b).Err())
		}
	}
}

// ageReleases makes every release the node remembers older, so that the
// next release is strictly the newest without a pause between them.
func ageReleases(t testing.TB, s *Store, by time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	all, err := c.HGetAll(ctx, s.keys.mru).Result()
	require.NoError(t, err)
	for f, v := range all {
		ms, err := strconv.ParseInt(v, 10, 64)
		require.NoError(t, err)
		require.NoError(t, c.HSet(ctx, s.keys.mru, f, ms-by.Milliseconds()).Err())
	}
}

// ageQueueEntry makes a queue entry's last heartbeat older, in the entry
// and in the expiry set.
func ageQueueEntry(t testing.TB, s *Store, id string, by time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	stored, err := c.HGet(ctx, s.keys.qe, id).Result()
	require.NoError(t, err)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(stored), &e))
	e["h"] = int64(e["h"].(float64)) - by.Milliseconds()
	b, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, c.HSet(ctx, s.keys.qe, id, b).Err())
	require.NoError(t, c.ZIncrBy(ctx, s.keys.qx, -float64(by.Milliseconds()), id).Err())
}
