package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

func TestRegisterKeepsAbsentGPUsUnlessReplacedOrForced(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	_, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "alice", GPUs: []string{uuid(1)}, Lease: time.Hour})
	require.NoError(t, err)

	n, err := s.Register(ctx, fakeGPUs(3), false)
	require.NoError(t, err)
	require.Zero(t, n, "the same GPUs change nothing")

	// GPU 2 vanished: kept (it may be off the bus for a moment).
	n, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	require.Zero(t, n)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 3)

	// GPU 1 was replaced by a new board at the same index: its reservation ends.
	gpus := fakeGPUs(3)
	gpus[1].UUID = "GPU-replacement"
	n, err = s.Register(ctx, gpus, false)
	require.NoError(t, err)
	require.Equal(t, 2, n, "one dropped, one added")
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
	g, ok := snap.GPUByIndex(1)
	require.True(t, ok)
	require.Equal(t, "GPU-replacement", g.UUID)
	hist, err := s.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 1)
	require.Equal(t, "alice", hist[0].User)

	// Forced: exactly the list given.
	n, err = s.Register(ctx, gpus[:1], true)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 1)
	require.Equal(t, "Test GPU", snap.GPUs[0].Name, "names with spaces survive the encoding")
}

// TestSnapshotsIsOneRoundTrip: the registry and every node known from
// the last call in one pipeline, however many nodes; nodes that joined
// since cost one more round trip, once, and a node that left is dropped.
func TestSnapshotsIsOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	first := newNode(t, 2)
	trips := countRoundTrips(first)
	measure := func() ([]string, int64) {
		t.Helper()
		trips.Reset()
		snaps, err := first.Snapshots(ctx)
		require.NoError(t, err)
		var nodes []string
		for _, s := range snaps {
			nodes = append(nodes, s.Node)
		}
		return nodes, trips.Load()
	}
	_, err := first.Snapshots(ctx) // a warm connection, functions loaded
	require.NoError(t, err)
	nodesBefore, tripsBefore := measure()
	require.Equal(t, int64(1), tripsBefore, "the registry and every node in one pipeline")
	require.Contains(t, nodesBefore, first.Node())
	var joined []*Store
	for i := range 20 {
		s, err := first.ForNode(fmt.Sprintf("%s-many%02d", first.Node(), i)) // unique to this run of the test
		require.NoError(t, err)
		_, err = s.Register(ctx, fakeGPUs(8), false)
		require.NoError(t, err)
		joined = append(joined, s)
	}
	nodesJoined, tripsJoined := measure()
	require.Len(t, nodesJoined, len(nodesBefore)+20)
	require.True(t, slices.IsSorted(nodesJoined))
	require.Equal(t, int64(2), tripsJoined, "the nodes that joined since, in a second pipeline")
	nodesAfter, tripsAfter := measure()
	require.Equal(t, nodesJoined, nodesAfter)
	require.Equal(t, int64(1), tripsAfter, "20 more nodes, still one round trip")

	_, forgot, err := joined[3].Forget(ctx, false)
	require.NoError(t, err)
	require.True(t, forgot)
	nodesLeft, tripsLeft := measure()
	require.Equal(t, int64(1), tripsLeft)
	require.Equal(t, slices.DeleteFunc(slices.Clone(nodesAfter), func(n string) bool { return n == joined[3].Node() }), nodesLeft)

	trips.Reset()
	_, err = first.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), trips.Load(), "one node: one round trip")
}

// A prolog's grant on a node the store does not know yet, as localnode
// makes it: the grant (not registered), the registration (FCALL, SADD) and
// the grant again. With the connection's HELLO, five round trips.
func TestFirstGrantOnANewNodeRoundTrips(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 0)
	require.NoError(t, s.rdb.Ping(ctx).Err()) // connect first: the handshake is not an operation's round trip
	trips := countRoundTrips(s)
	req := allocator.Request{RequestID: "slurm-prolog-9-0", Kind: allocator.KindSlurm, User: "alice", JobID: "9", Count: 1}
	_, err := s.Allocate(ctx, req)
	require.ErrorIs(t, err, allocator.ErrNotRegistered)
	_, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	_, err = s.Allocate(ctx, req)
	require.NoError(t, err)
	require.Equal(t, int64(4), trips.Load(), "FCALL allocate, FCALL register, SADD, FCALL allocate")
}

// countRoundTrips counts the client's exchanges with the server: a single
// command or a whole pipeline is one round trip.
func countRoundTrips(s *Store) *redistest.RoundTrips { return redistest.CountRoundTrips(s.rdb) }

func TestQueueAndFlagsBadInput(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	_, err := s.Enqueue(ctx, allocator.QueueEntry{Kind: allocator.KindManual, User: "a", Count: 1}, time.Minute)
	require.Error(t, err, "no id")
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "x", Kind: allocator.KindSlurm, User: "a", Count: 1}, time.Minute)
	require.Error(t, err, "batch jobs never queue")
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "x", Kind: allocator.KindManual, User: "a", Count: 1}, 0)
	require.Error(t, err, "no heartbeat timeout")
	_, err = s.QueueHeartbeat(ctx, "")
	require.Error(t, err)
	require.Error(t, s.LeaveQueue(ctx, ""))
	require.Error(t, s.SetFlags(ctx, []allocator.Flag{{GPU: "g", Message: ""}}))
	require.Error(t, s.SetFlags(ctx, []allocator.Flag{{GPU: "g", Message: "a"}, {GPU: "g", Message: "b"}}))
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Queue)
	require.Empty(t, snap.Flags)

	require.NoError(t, s.SetFlags(ctx, []allocator.Flag{{Message: "node-level"}, {GPU: uuid(0), Message: "gpu-level"}}))
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Flags, 2)
	require.Equal(t, "", snap.Flags[0].GPU)
	require.Equal(t, "node-level", snap.Flags[0].Message)
	require.NoError(t, s.SetFlags(ctx, nil))
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Flags, "an empty list clears")
}

func TestAllocateAndReleaseAreOneRoundTripEach(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	// A warm connection with the functions loaded: on a server that lacks
	// them, the first call costs two more trips (FUNCTION LOAD, the call
	// again; see TestFunctionsAreLoadedWhenMissing).
	_, err := s.Allocate(ctx, manual("warm", 1))
	require.NoError(t, err)
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "warm"})
	require.NoError(t, err)
	trips := countRoundTrips(s)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	require.Equal(t, int64(1), trips.Load())
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", Token: g.Token})
	require.NoError(t, err)
	require.Equal(t, int64(2), trips.Load())
}

func TestHistoriesIsOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	a := newNode(t, 2)
	b, err := a.ForNode(a.Node() + "-b")
	require.NoError(t, err)
	_, err = b.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	for _, s := range []*Store{a, b, b} {
		g, err := s.Allocate(ctx, manual("alice", 1))
		require.NoError(t, err)
		_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Token: g.Token})
		require.NoError(t, err)
	}
	_, err = a.Histories(ctx, []string{a.Node()}, time.Time{}) // a warm connection: no HELLO counted
	require.NoError(t, err)
	trips := countRoundTrips(a)
	h, err := a.Histories(ctx, []string{a.Node(), b.Node()}, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(1), trips.Load())
	require.Len(t, h[a.Node()], 1)
	require.Len(t, h[b.Node()], 2)
	require.Equal(t, "alice", h[b.Node()][0].User)
	_, err = a.Histories(ctx, []string{"bad node"}, time.Time{})
	require.Error(t, err)
}

func TestRegisterBoundsGPUsPerNode(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 0)
	for _, n := range []int{allocator.MaxGPUsPerNode + 1, 10000} {
		_, err := s.Register(ctx, fakeGPUs(n), false)
		var in *allocator.InputError
		require.ErrorAs(t, err, &in, "%d GPUs", n)
		require.Equal(t, fmt.Sprintf(`invalid gpu list "%d GPUs": want 1 to 256 GPUs`, n), err.Error())
	}
	// Sent past the Go checks, the operation refuses with its own message
	// (no Lua unpack error) and writes nothing.
	k := s.keys
	args := append([]any{"0"}, policyArgs(s.Policy())...)
	for _, g := range fakeGPUs(10000) {
		args = append(args, g.UUID, g.Index, g.Minor, g.Name)
	}
	err := s.rdb.FCall(ctx, registerOp.function, []string{k.gpus, k.res, k.bres, k.mru, k.hist, k.policy}, args...).Err()
	require.ErrorContains(t, err, "register: 40000 arguments after the policy: want groups of four for at most 256 GPUs")
	require.NotContains(t, err.Error(), "unpack")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.GPUs)
	require.Zero(t, snap.Policy)

	// The whole node is bounded too: GPUs kept from before count.
	_, err = s.Register(ctx, fakeGPUs(200), false)
	require.NoError(t, err)
	more := fakeGPUs(300)[200:]
	_, err = s.Register(ctx, more, false)
	require.ErrorContains(t, err, "the node would have 300 GPUs: at most 256 are accepted")
	snap, err = s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 200, "nothing changed")
	_, err = s.Register(ctx, more, true)
	require.NoError(t, err, "replacing is fine")
}

func TestLargestNodeWorks(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, allocator.MaxGPUsPerNode)
	// One user's release history on every GPU: the most-recently-used
	// lookup reads 2 fields per GPU, more than one HMGET's share.
	g, err := s.Allocate(ctx, manual("alice", allocator.MaxGPUsPerNode))
	require.NoError(t, err)
	require.Len(t, g.GPUs, allocator.MaxGPUsPerNode)
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", GPUs: g.GPUs})
	require.NoError(t, err)
	g, err = s.Allocate(ctx, manual("alice", allocator.MaxGPUsPerNode))
	require.NoError(t, err)
	require.Len(t, g.GPUs, allocator.MaxGPUsPerNode)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, allocator.MaxGPUsPerNode)
	require.Len(t, snap.LastReleased, allocator.MaxGPUsPerNode)

	// A release naming 10,000 GPUs, sent past the Go checks, reads them in
	// bounded steps.
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = uuid(i)
	}
	k := s.keys
	v, err := s.rdb.FCall(ctx, releaseOp.function, []string{k.res, k.mru, k.hist, k.q, k.qe, k.qx, k.reply("big", false)},
		"alice", "", joinList(ids), "", 0, "0", 60000).Result()
	require.NoError(t, err)
	rep := readReply("release", v)
	require.Contains(t, splitList(rep.str(1)), uuid(255))
	require.NoError(t, rep.err)

	_, err = s.Release(ctx, allocator.Release{RequestID: "r", GPUs: ids[:allocator.MaxGPUsPerNode+1]})
	require.ErrorContains(t, err, "at most 256 GPUs")
}
