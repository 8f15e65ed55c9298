package jobstate

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

var nodeSeq atomic.Int64

func uuid(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

// newStore gives each test its own node with 4 registered GPUs.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: time.Second},
		fmt.Sprintf("settle%d", nodeSeq.Add(1)), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	var gpus []allocator.GPU
	for i := range 4 {
		gpus = append(gpus, allocator.GPU{UUID: uuid(i), Index: i, Minor: i, Name: "Test GPU"})
	}
	_, err = st.Register(context.Background(), gpus, false)
	require.NoError(t, err)
	return st
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func held(t *testing.T, st *store.Store) map[string]allocator.Reservation {
	t.Helper()
	snap, err := st.Snapshot(context.Background())
	require.NoError(t, err)
	return snap.Reservations
}

func TestSettleReserve(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	m := Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "7", User: "bob", UID: 1001,
		GPUs: []string{uuid(0), uuid(1)}, Restart: 1, BootID: "boot-a", At: time.Now()}
	require.NoError(t, Settle(ctx, st, m))
	require.NoError(t, Settle(ctx, st, m), "settling twice changes nothing")
	res := held(t, st)
	require.Len(t, res, 2)
	for _, u := range m.GPUs {
		r := res[u]
		require.Equal(t, allocator.KindSlurm, r.Kind)
		require.Equal(t, "7", r.JobID)
		require.Equal(t, "bob", r.User)
		require.Equal(t, 1001, r.UID)
		require.Equal(t, 1, r.Restart)
		require.Equal(t, "boot-a", r.BootID)
	}

	// A GPU someone reserved meanwhile: nothing is applied, the conflict
	// comes back.
	_, err := st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "alice", GPUs: []string{uuid(2)}, Lease: time.Hour})
	require.NoError(t, err)
	m2 := Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "8", User: "eve", GPUs: []string{uuid(2), uuid(3)}, At: time.Now()}
	var short *allocator.ShortageError
	require.ErrorAs(t, Settle(ctx, st, m2), &short)
	require.Equal(t, uuid(2), short.Conflicts[0].GPU)
	require.NotContains(t, held(t, st), uuid(3))
}

func TestSettleReleaseKeepsLaterAttempt(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	grant := func(job string, restart int, gpus ...string) {
		_, err := st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
			User: "bob", JobID: job, GPUs: gpus, Restart: restart})
		require.NoError(t, err)
	}
	// Attempt 0 of job 7 held GPU 0; its Epilog could not reach the store.
	// The requeued attempt 1 got GPU 1 before the marker was settled.
	grant("7", 0, uuid(0))
	grant("7", 1, uuid(1))
	grant("8", 0, uuid(2))
	m := Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: "7", Restart: 0, At: time.Now()}
	require.NoError(t, Settle(ctx, st, m))
	res := held(t, st)
	require.NotContains(t, res, uuid(0))
	require.Contains(t, res, uuid(1))
	require.Contains(t, res, uuid(2))

	require.NoError(t, Settle(ctx, st, Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: "9", At: time.Now()}),
		"nothing to release is fine")
}

func TestSettleAll(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	dir := t.TempDir()
	_, err := st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "bob", JobID: "5", GPUs: []string{uuid(3)}})
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, WriteMarker(dir, Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "6", User: "eve",
		GPUs: []string{uuid(0)}, At: now}))
	require.NoError(t, WriteMarker(dir, Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: "5", At: now.Add(time.Millisecond)}))

	// An unreachable store: nothing is removed.
	down, err := store.Open(ctx, store.Conn{URL: "redis://127.0.0.1:1/0", DialTimeout: 100 * time.Millisecond,
		OpTimeout: 100 * time.Millisecond}, st.Node(), store.Options{})
	require.NoError(t, err)
	defer down.Close()
	done, err := SettleAll(ctx, down, dir)
	require.ErrorIs(t, err, allocator.ErrUnavailable)
	require.Empty(t, done)
	left, err := Markers(dir)
	require.NoError(t, err)
	require.Len(t, left, 2)

	done, err = SettleAll(ctx, st, dir)
	require.NoError(t, err)
	require.Len(t, done, 2)
	left, err = Markers(dir)
	require.NoError(t, err)
	require.Empty(t, left)
	res := held(t, st)
	require.Equal(t, "6", res[uuid(0)].JobID)
	require.NotContains(t, res, uuid(3))
}

// TestSettleAllIgnoresForeignMarkers: a marker root did not write is never
// applied to the store nor removed; the error names it.
func TestSettleAllIgnoresForeignMarkers(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	dir := t.TempDir()
	_, err := st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "alice", JobID: "5", GPUs: []string{uuid(1)}})
	require.NoError(t, err)
	// Someone else's release of alice's job, and a grant of all GPUs to eve.
	require.NoError(t, WriteMarker(dir, Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: "5", At: time.Now()}))
	require.NoError(t, WriteMarker(dir, Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "6", User: "eve",
		GPUs: []string{uuid(0), uuid(2), uuid(3)}, At: time.Now()}))
	for _, op := range []Op{OpRelease, OpReserve} {
		job := map[Op]string{OpRelease: "5", OpReserve: "6"}[op]
		require.NoError(t, os.Lchown(MarkerPath(dir, allocator.KindSlurm, job, op), otherUID, otherUID))
	}
	done, err := SettleAll(ctx, st, dir)
	require.Empty(t, done)
	require.ErrorContains(t, err, MarkerPath(dir, allocator.KindSlurm, "5", OpRelease)+" is owned by uid 12345")
	require.ErrorContains(t, err, MarkerPath(dir, allocator.KindSlurm, "6", OpReserve)+" is owned by uid 12345")
	res := held(t, st)
	require.Len(t, res, 1)
	require.Equal(t, "alice", res[uuid(1)].User)
	require.FileExists(t, MarkerPath(dir, allocator.KindSlurm, "5", OpRelease), "left for an admin to look at")
}
