package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

func TestStoreSurvivesRedisRestart(t *testing.T) {
	ctx := context.Background()
	own, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	s, err := Open(ctx, Conn{URL: own.SocketURL(), DialTimeout: time.Second, OpTimeout: time.Second}, "restart", Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)

	require.NoError(t, own.Restart())
	// Functions are data: the AOF brings them back with the reservations.
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "alice", snap.Reservations[g.GPUs[0]].User, "the reservation survived (AOF)")
	g2, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	require.NotEqual(t, g.GPUs, g2.GPUs)

	own.Halt()
	_, err = s.Allocate(ctx, manual("carol", 1))
	require.ErrorIs(t, err, allocator.ErrUnavailable)
	require.Contains(t, err.Error(), own.Socket, "the error names the address")
	require.NoError(t, own.Restart())
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2)
}

func TestUnreachableErrorNamesAddress(t *testing.T) {
	s, err := Open(context.Background(), Conn{URL: "redis://127.0.0.1:1/0", DialTimeout: 200 * time.Millisecond, OpTimeout: 200 * time.Millisecond}, "x", Options{})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Snapshot(context.Background())
	require.ErrorIs(t, err, allocator.ErrUnavailable)
	require.Contains(t, err.Error(), "redis://127.0.0.1:1/0")
}

func TestOperationsRunOnRedisClusterWithRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-master Redis Cluster; skipped in -short runs")
	}
	ctx := context.Background()
	cl, err := redistest.StartCluster(3, redistest.Options{Users: roleUsers(t)})
	require.NoError(t, err)
	t.Cleanup(cl.Stop)
	conn := func(r Role) Conn {
		return Conn{ClusterAddrs: cl.Addrs(), Username: string(r), Password: string(r) + "-pw",
			DialTimeout: time.Second, OpTimeout: 2 * time.Second}
	}
	open := func(r Role, node string) *Store {
		s, err := Open(ctx, conn(r), node, Options{})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		return s
	}
	// The admin role loads the library on every primary; the CLI role
	// finds it wherever its node's slot lives.
	require.NoError(t, open(RoleAdmin, "cnode0").LoadFunctions(ctx))
	// Nodes whose names hash to different slots exercise every master.
	var stores []*Store
	for i := range 6 {
		node := fmt.Sprintf("cnode%d", i)
		admin := open(RoleAdmin, node)
		_, err := admin.Register(ctx, fakeGPUs(3), false)
		require.NoError(t, err)
		_, err = admin.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
			User: "dave", JobID: "1", Count: 1})
		require.NoError(t, err)
		require.NoError(t, admin.SetFlags(ctx, []allocator.Flag{{Message: "test"}}))
		stores = append(stores, open(RoleCLI, node))
	}
	for _, s := range stores {
		g, err := s.Allocate(ctx, manual("alice", 1))
		require.NoError(t, err)
		run := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun, User: "bob", Count: 1, Lease: time.Minute}
		rg, err := s.Allocate(ctx, run)
		require.NoError(t, err)
		_, err = s.Renew(ctx, "bob", rg.Token, rg.GPUs, time.Minute)
		require.NoError(t, err)
		_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "q", Kind: allocator.KindManual, User: "carol", Count: 1}, time.Minute)
		require.NoError(t, err)
		_, err = s.QueueHeartbeat(ctx, "q")
		require.NoError(t, err)
		require.NoError(t, s.LeaveQueue(ctx, "q"))
		r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"})
		require.NoError(t, err)
		require.Equal(t, g.GPUs, r.GPUs)
		_, err = s.History(ctx, time.Time{})
		require.NoError(t, err)
		_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID()})
		require.ErrorIs(t, err, allocator.ErrNotPermitted, "the batch job's GPU is not the CLI's to free")
	}
	snaps, err := open(RoleMonitor, "cnode0").Snapshots(ctx)
	require.NoError(t, err)
	require.Len(t, snaps, 6)
	for _, snap := range snaps {
		require.Len(t, snap.Reservations, 2, "the batch job's and bob's run")
		require.Len(t, snap.Flags, 1)
	}
}

// TestConcurrentAllocateNeverDoubleGrants runs many clients allocating and
// releasing a few GPUs, checking after every grant that no GPU has two
// owners, and that nothing is left at the end.
func TestConcurrentAllocateNeverDoubleGrants(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 8)
	workers, cycles := 64, 50
	if testing.Short() {
		cycles = 10
	}
	var owners [8]atomic.Int64 // worker+1 holding each GPU
	index := map[string]int{}
	for i := range 8 {
		index[uuid(i)] = i
	}
	var grants, refusals atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user%d", w%16)
			for c := range cycles {
				n := 1 + (w+c)%3
				kind := allocator.KindManual
				if c%2 == 0 {
					kind = allocator.KindRun
				}
				g, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: kind,
					User: user, Count: n, Lease: time.Minute})
				if err != nil {
					if _, ok := err.(*allocator.ShortageError); !ok {
						errs <- err
						return
					}
					refusals.Add(1)
					continue
				}
				grants.Add(1)
				for _, u := range g.GPUs {
					if !owners[index[u]].CompareAndSwap(0, int64(w+1)) {
						errs <- fmt.Errorf("GPU %s granted twice", u)
						return
					}
				}
				for _, u := range g.GPUs {
					owners[index[u]].Store(0)
				}
				r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: user, Token: g.Token})
				if err != nil {
					errs <- err
					return
				}
				if len(r.GPUs) != len(g.GPUs) {
					errs <- fmt.Errorf("released %v, granted %v", r.GPUs, g.GPUs)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Positive(t, grants.Load())
	t.Logf("%d grants, %d refusals", grants.Load(), refusals.Load())
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "nothing leaked")
}
