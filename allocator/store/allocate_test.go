package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

func TestAllocatePrefersMostRecentThenLeastRecentlyReleased(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	grab := func(user string, n int) []string {
		g, err := s.Allocate(ctx, manual(user, n))
		require.NoError(t, err)
		return g.GPUs
	}
	free := func(user string) {
		_, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: user})
		require.NoError(t, err)
	}
	require.Equal(t, []string{uuid(0)}, grab("alice", 1), "never-used GPUs tie: lowest index")
	free("alice")
	time.Sleep(5 * time.Millisecond)
	require.Equal(t, []string{uuid(1)}, grab("bob", 1), "GPU 0 was just released: never-used GPU 1 is older")
	free("bob")
	time.Sleep(5 * time.Millisecond)
	require.Equal(t, []string{uuid(0)}, grab("alice", 1), "alice's most recently used GPU comes first")
	require.Equal(t, []string{uuid(2), uuid(3)}, grab("carol", 2))
	free("alice")
	free("carol")
	time.Sleep(5 * time.Millisecond)
	// bob used GPU 1; then the rest by release time: 0 (released first), 2, 3.
	require.Equal(t, []string{uuid(1), uuid(0), uuid(2)}, grab("bob", 3))
}

func TestAllocateMRUOrdersNewestFirst(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	for _, i := range []int{2, 0} {
		_, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
			User: "dave", GPUs: []string{uuid(i)}, Lease: time.Hour})
		require.NoError(t, err)
		_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "dave"})
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
	g, err := s.Allocate(ctx, manual("dave", 3))
	require.NoError(t, err)
	require.Equal(t, []string{uuid(0), uuid(2), uuid(1)}, g.GPUs)
}

func TestAllocateExcludesUnreservedUseAtomically(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	_, err := s.Allocate(ctx, manual("alice", 1)) // GPU 0
	require.NoError(t, err)
	req := manual("bob", 3)
	req.Exclude = []string{uuid(1), uuid(2), uuid(0)} // 0 is reserved, so only 1 and 2 count as unreserved
	_, err = s.Allocate(ctx, req)
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short)
	require.Equal(t, allocator.ShortageError{Requested: 3, Available: 1, Unreserved: 2}, *short)
	require.Equal(t, "Not enough GPUs available. Requested: 3, Available: 1 (2 GPUs in use without reservation - run 'canhazgpu status' for details)", short.Error())

	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1, "a refused request writes nothing")

	req.Count = 1
	g, err := s.Allocate(ctx, req)
	require.NoError(t, err)
	require.Equal(t, []string{uuid(3)}, g.GPUs)
}

func TestAllocateByIDsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	req := manual("alice", 0)
	req.GPUs = []string{uuid(2)}
	_, err := s.Allocate(ctx, req)
	require.NoError(t, err)

	bob := manual("bob", 0)
	bob.GPUs = []string{uuid(1), uuid(2), uuid(3)}
	_, err = s.Allocate(ctx, bob)
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short)
	require.Equal(t, 3, short.Requested)
	require.Equal(t, 2, short.Available)
	require.Len(t, short.Conflicts, 1)
	require.Equal(t, uuid(2), short.Conflicts[0].GPU)
	require.Equal(t, "alice", short.Conflicts[0].Holder.User)

	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1, "nothing partial was written")

	bob.GPUs = []string{uuid(3), uuid(1)}
	g, err := s.Allocate(ctx, bob)
	require.NoError(t, err)
	require.Equal(t, []string{uuid(3), uuid(1)}, g.GPUs, "ids are granted in the order asked")
}

func TestAllocateUnknownGPUChangesNothing(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	req := manual("alice", 0)
	req.GPUs = []string{uuid(0), uuid(7)}
	_, err := s.Allocate(ctx, req)
	var in *allocator.InputError
	require.ErrorAs(t, err, &in)
	require.Equal(t, uuid(7), in.Value)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
}

func TestAllocateNotRegistered(t *testing.T) {
	s := newNode(t, 0)
	_, err := s.Allocate(context.Background(), manual("alice", 1))
	require.ErrorIs(t, err, allocator.ErrNotRegistered)
}

func TestExpiredManualAndStaleRunCountAsFree(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	short := manual("alice", 1)
	short.Lease = 30 * time.Millisecond
	_, err := s.Allocate(ctx, short)
	require.NoError(t, err)
	run := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun, User: "bob", Count: 1, Lease: 30 * time.Millisecond}
	_, err = s.Allocate(ctx, run)
	require.NoError(t, err)

	_, err = s.Allocate(ctx, manual("carol", 2))
	require.Error(t, err, "both still held")
	time.Sleep(60 * time.Millisecond)

	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "snapshot hides expired reservations")
	require.Len(t, snap.LastReleased, 2, "and dates their release at expiry")

	g, err := s.Allocate(ctx, manual("carol", 2))
	require.NoError(t, err)
	require.Len(t, g.GPUs, 2)

	hist, err := s.History(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Len(t, hist, 2)
	for _, h := range hist {
		require.Equal(t, "expired", h.End)
	}
}

func TestRetryWithSameRequestIDAppliesOnce(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	req := manual("alice", 2)
	g1, err := s.Allocate(ctx, req)
	require.NoError(t, err)
	g2, err := s.Allocate(ctx, req)
	require.NoError(t, err)
	require.Equal(t, g1, g2)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2)

	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"}
	r1, err := s.Release(ctx, rel)
	require.NoError(t, err)
	require.Len(t, r1.GPUs, 2)
	r2, err := s.Release(ctx, rel)
	require.NoError(t, err)
	require.Equal(t, r1, r2)
	hist, err := s.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 2, "the retried release recorded nothing twice")
}

func TestReleaseOnlyOwnAndRefusesNamedOthers(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	_, err := s.Allocate(ctx, manual("alice", 2)) // 0,1
	require.NoError(t, err)
	_, err = s.Allocate(ctx, manual("bob", 1)) // 2
	require.NoError(t, err)

	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob", GPUs: []string{uuid(0), uuid(2)}})
	require.NoError(t, err)
	require.Equal(t, []string{uuid(2)}, r.GPUs)
	require.Len(t, r.Refused, 1)
	require.Equal(t, "alice", r.Refused[0].User)
	require.Equal(t, uuid(0), r.Refused[0].GPU)
	require.Equal(t, map[string]int{uuid(0): 0, uuid(2): 2}, r.Indices, "the reply names released and refused GPUs by index")

	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob"})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "nothing left for bob")
	require.Empty(t, r.Refused, "unnamed GPUs of others are not reported")

	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindRun}})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "kind filter: alice's are manual")
	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID()})
	require.NoError(t, err)
	require.Len(t, r.GPUs, 2, "admin release of anyone's")
	require.Equal(t, map[string]int{uuid(0): 0, uuid(1): 1}, r.Indices)
}

// A named GPU of someone else is refused whatever holds it: a batch job or
// a hold for a waiting request, which a release of manual and run
// reservations would otherwise pass over as "nothing to release".
func TestReleaseRefusesNamedBatchAndQueueHoldsOfOthers(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	_, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "alice", JobID: "42", GPUs: []string{uuid(0)}})
	require.NoError(t, err)
	_, err = s.Allocate(ctx, manual("alice", 1)) // 1
	require.NoError(t, err)
	_, err = s.Enqueue(ctx, allocator.QueueEntry{ID: "carol-1", Kind: allocator.KindManual, User: "carol", Count: 2}, time.Minute)
	require.NoError(t, err)
	waiting := manual("carol", 2)
	waiting.QueueEntry = "carol-1"
	_, err = s.Allocate(ctx, waiting)
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending, "carol holds GPU 2 while she waits")
	require.Equal(t, []string{uuid(2)}, pending.Allocated)

	mine := []allocator.Kind{allocator.KindManual, allocator.KindRun}
	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob", Kinds: mine,
		GPUs: []string{uuid(0), uuid(2)}})
	require.NoError(t, err)
	require.Empty(t, r.GPUs)
	require.Len(t, r.Refused, 2)
	require.Equal(t, uuid(0), r.Refused[0].GPU)
	require.Equal(t, "alice", r.Refused[0].User)
	require.Equal(t, allocator.KindSlurm, r.Refused[0].Kind)
	require.Equal(t, "42", r.Refused[0].JobID)
	require.Equal(t, uuid(2), r.Refused[1].GPU)
	require.Equal(t, "carol", r.Refused[1].User)
	require.True(t, r.Refused[1].Queued)

	// The owner's own batch GPU is not refused: it is simply not a kind
	// this release ends.
	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", Kinds: mine, GPUs: []string{uuid(0)}})
	require.NoError(t, err)
	require.Empty(t, r.GPUs)
	require.Empty(t, r.Refused)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 3, "nothing was released")
}

func TestRenewNeedsOwnerAndToken(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	run := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun, User: "alice", Count: 2, Lease: 50 * time.Millisecond}
	g, err := s.Allocate(ctx, run)
	require.NoError(t, err)
	require.Positive(t, g.Token)

	for range 4 {
		time.Sleep(25 * time.Millisecond)
		_, err = s.Renew(ctx, "alice", g.Token, g.GPUs, 50*time.Millisecond)
		require.NoError(t, err, "renewing in time keeps the lease past its first expiry")
	}
	_, err = s.Allocate(ctx, manual("bob", 1))
	require.Error(t, err)

	var lost *allocator.LeaseLostError
	_, err = s.Renew(ctx, "bob", g.Token, g.GPUs, time.Second)
	require.ErrorAs(t, err, &lost, "another user cannot renew")
	_, err = s.Renew(ctx, "alice", g.Token+1, g.GPUs, time.Second)
	require.ErrorAs(t, err, &lost, "a stale token cannot renew")

	time.Sleep(80 * time.Millisecond)
	bob, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err, "the stale lease was reclaimed")
	_, err = s.Renew(ctx, "alice", g.Token, g.GPUs, time.Second)
	require.ErrorAs(t, err, &lost)
	require.Equal(t, "bob", lost.Holder.User)
	require.Equal(t, bob.GPUs[0], lost.GPU)

	// A release fenced by the old token cannot free bob's GPU.
	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", Token: g.Token})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "alice's other GPU was reclaimed with the stale lease")
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "bob", snap.Reservations[bob.GPUs[0]].User)
}

func TestBatchJobIdempotentAndTakesOverStaleJob(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	job := func(id string, restart int, gpus ...int) allocator.Request {
		r := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm, User: "alice", JobID: id, Restart: restart}
		for _, g := range gpus {
			r.GPUs = append(r.GPUs, uuid(g))
		}
		return r
	}
	g1, err := s.Allocate(ctx, job("41", 0, 0, 1))
	require.NoError(t, err)
	g2, err := s.Allocate(ctx, job("41", 1, 0, 1))
	require.NoError(t, err, "a requeued prolog of the same job keeps its GPUs")
	require.Equal(t, g1.GPUs, g2.GPUs)
	require.Empty(t, g2.TakenOver)

	g3, err := s.Allocate(ctx, job("42", 0, 1, 2))
	require.NoError(t, err, "job 41's hold on GPU 1 is stale")
	require.Len(t, g3.TakenOver, 1)
	require.Equal(t, "41", g3.TakenOver[0].JobID)
	require.Equal(t, uuid(1), g3.TakenOver[0].GPU)

	_, err = s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err) // GPU 3
	_, err = s.Allocate(ctx, job("43", 0, 3))
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short, "an interactive reservation is a conflict, never taken over")
	require.Equal(t, "bob", short.Conflicts[0].Holder.User)

	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: "41"})
	require.NoError(t, err)
	require.Equal(t, []string{uuid(0)}, r.GPUs)
	r, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: "41"})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "nothing to release is fine")
}

func TestBatchByCountPrefersSchedulerChoice(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 4)
	held := manual("bob", 0)
	held.GPUs = []string{uuid(1)}
	_, err := s.Allocate(ctx, held)
	require.NoError(t, err)
	g, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "alice", JobID: "7", Count: 2, Prefer: []string{uuid(1), uuid(3)}})
	require.NoError(t, err)
	require.Equal(t, []string{uuid(3), uuid(0)}, g.GPUs, "the free preferred GPU first, then others")
}

func TestBatchJobsIgnoreTheQueue(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	_, err := s.Enqueue(ctx, allocator.QueueEntry{ID: "w1", Kind: allocator.KindManual, User: "bob", Count: 2}, time.Minute)
	require.NoError(t, err)
	_, err = s.Allocate(ctx, manual("carol", 1))
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short)
	require.Equal(t, 1, short.Waiting)
	require.Zero(t, short.Available)

	_, err = s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm, User: "alice", JobID: "9", Count: 1})
	require.NoError(t, err)
}

func TestBadInputWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	ok := manual("alice", 1)
	cases := map[string]func(*allocator.Request){
		"negative count":   func(r *allocator.Request) { r.Count = -1 },
		"zero count":       func(r *allocator.Request) { r.Count = 0 },
		"count and ids":    func(r *allocator.Request) { r.GPUs = []string{uuid(0)} },
		"duplicate ids":    func(r *allocator.Request) { r.Count = 0; r.GPUs = []string{uuid(0), uuid(0)} },
		"empty user":       func(r *allocator.Request) { r.User = "" },
		"malformed kind":   func(r *allocator.Request) { r.Kind = "Batch job" },
		"zero duration":    func(r *allocator.Request) { r.Lease = 0 },
		"negative lease":   func(r *allocator.Request) { r.Lease = -time.Second },
		"no request id":    func(r *allocator.Request) { r.RequestID = "" },
		"batch no job":     func(r *allocator.Request) { r.Kind = allocator.KindSlurm; r.Lease = 0 },
		"batch lease":      func(r *allocator.Request) { r.Kind = allocator.KindSlurm; r.JobID = "1" },
		"comma in user":    func(r *allocator.Request) { r.User = "a,b" },
		"comma in id":      func(r *allocator.Request) { r.Count = 0; r.GPUs = []string{"GPU-1,GPU-2"} },
		"negative restart": func(r *allocator.Request) { r.Restart = -2 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			r := ok
			r.GPUs = nil
			mutate(&r)
			_, err := s.Allocate(ctx, r)
			var in *allocator.InputError
			require.ErrorAs(t, err, &in)
			require.Contains(t, err.Error(), in.Value)
		})
	}
	_, err := s.Renew(ctx, "alice", 0, []string{uuid(0)}, time.Second)
	require.Error(t, err)
	_, err = s.Renew(ctx, "alice", 1, nil, time.Second)
	require.Error(t, err)
	_, err = s.Renew(ctx, "alice", 1, []string{uuid(0)}, 0)
	require.Error(t, err)
	_, err = s.Release(ctx, allocator.Release{RequestID: "x", Kinds: []allocator.Kind{"no pe"}})
	require.Error(t, err)
	_, err = s.Register(ctx, []allocator.GPU{{UUID: uuid(0), Index: 0}, {UUID: uuid(0), Index: 1}}, false)
	require.Error(t, err)
	_, err = s.Register(ctx, []allocator.GPU{{UUID: uuid(0), Index: -1}}, false)
	require.Error(t, err)
	_, err = s.ForNode("bad{node}")
	require.Error(t, err)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
	require.Len(t, snap.GPUs, 2)
}

func TestNamedReleaseOfExpiredReservationRecordsExpiry(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	short := manual("alice", 2)
	short.Lease = 20 * time.Millisecond
	g, err := s.Allocate(ctx, short)
	require.NoError(t, err)
	time.Sleep(40 * time.Millisecond)
	r, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", GPUs: g.GPUs[:1]})
	require.NoError(t, err)
	require.Empty(t, r.GPUs, "it had already expired")
	hist, err := s.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 1, "only the named GPU was read and reclaimed")
	require.Equal(t, "expired", hist[0].End)
	require.Equal(t, g.GPUs[0], hist[0].GPU)
}

func TestBatchReservationsAndRepliesLiveApart(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 3)
	c := srv.Client()
	defer c.Close()
	k := s.keys
	batch := allocator.Request{RequestID: "slurm-prolog-5-0", Kind: allocator.KindSlurm, User: "alice", JobID: "5", Count: 1}
	bg, err := s.Allocate(ctx, batch)
	require.NoError(t, err)
	require.Zero(t, bg.ExpiresAt)
	ig, err := s.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	require.Equal(t, []string{bg.GPUs[0]}, c.HKeys(ctx, k.bres).Val())
	require.Equal(t, []string{ig.GPUs[0]}, c.HKeys(ctx, k.res).Val())
	require.Equal(t, int64(1), c.Exists(ctx, k.reply(batch.RequestID, true)).Val())
	require.Zero(t, c.Exists(ctx, k.reply(batch.RequestID, false)).Val())

	// An entry in res that claims a batch kind (only the CLI's credential
	// could write one there) is not believed, by the operations nor by
	// the snapshot.
	forged := `{"k":"slurm","u":"mallory","id":0,"j":"666","n":"","t":1,"s":1,"e":0,"h":0,"r":0,"b":"","q":""}`
	free := uuid(2)
	require.NoError(t, c.HSet(ctx, k.res, free, forged).Err())
	require.NoError(t, c.HSet(ctx, k.res, bg.GPUs[0], `{"k":"manual","u":"mallory","id":0,"j":"","n":"","t":1,"s":1,"e":0,"h":0,"r":0,"b":"","q":""}`).Err())
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.NotContains(t, snap.Reservations, free)
	require.Equal(t, "alice", snap.Reservations[bg.GPUs[0]].User, "the batch hash wins")
	g, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "carol", GPUs: []string{free}, Lease: time.Hour})
	require.NoError(t, err, "the forged entry does not hold the GPU")
	require.Equal(t, []string{free}, g.GPUs)

	r, err := s.Release(ctx, allocator.Release{RequestID: "slurm-epilog-5", Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: "5"})
	require.NoError(t, err)
	require.Equal(t, bg.GPUs, r.GPUs)
	require.Zero(t, c.HLen(ctx, k.bres).Val())
	require.Equal(t, int64(1), c.Exists(ctx, k.reply("slurm-epilog-5", true)).Val())
}

// A batch kind is whatever a scheduler package names: the store keeps a
// kind it has never heard of with the batch reservations, because the
// request says it is batch, and refuses a flag that contradicts the kind
// before writing anything.
func TestBatchIsTheRequestsFlagNotASchedulerName(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 2)
	c := srv.Client()
	defer c.Close()
	k := s.keys
	g, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: "lsf", User: "alice", JobID: "77", Count: 1})
	require.NoError(t, err)
	require.Equal(t, g.GPUs, c.HKeys(ctx, k.bres).Val())
	require.Zero(t, c.HLen(ctx, k.res).Val())
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, allocator.Kind("lsf"), snap.Reservations[g.GPUs[0]].Kind, "status and report still show the scheduler's name")

	for _, tc := range []struct {
		kind, batch string
	}{{"manual", "1"}, {"lsf", "0"}} {
		args := []any{tc.kind, "bob", 1001, "78", 1, "", "", "", int64(0), "", 0, "", "", int64(60000), "0", tc.batch}
		if tc.kind == "manual" {
			args[4], args[8] = 1, int64(3600000)
		}
		raw, err := s.run.run(ctx, allocateOp, []string{k.res, k.mru, k.hist, k.meta, k.q, k.qe,
			k.reply(allocator.NewRequestID(), tc.batch == "1")}, args...).Text()
		require.NoError(t, err)
		require.JSONEq(t, `{"ok":0,"err":"bad_kind","value":"`+tc.kind+`"}`, raw)
	}
	require.Equal(t, g.GPUs, c.HKeys(ctx, k.bres).Val(), "nothing written")
	require.Zero(t, c.HLen(ctx, k.res).Val())
}

func TestRequestIDsCannotFormOtherKeys(t *testing.T) {
	ctx := context.Background()
	s := newNode(t, 1)
	for _, id := range []string{"a}:bres", "x*", "a b", "a\nb", "ü", strings.Repeat("a", allocator.MaxIDLen+1)} {
		r := manual("alice", 1)
		r.RequestID = id
		_, err := s.Allocate(ctx, r)
		var in *allocator.InputError
		require.ErrorAs(t, err, &in, "%q", id)
		require.Equal(t, "request id", in.Field)
		_, err = s.Release(ctx, allocator.Release{RequestID: id})
		require.ErrorAs(t, err, &in, "%q", id)
		_, err = s.QueueHeartbeat(ctx, id)
		require.ErrorAs(t, err, &in, "%q", id)
		require.Equal(t, "queue entry id", in.Field)
	}
	for _, id := range []string{"pbs-12[3].server-0a1b", "settle-release-slurm-77_3-0-k2x", allocator.NewRequestID()} {
		r := manual("alice", 1)
		r.RequestID = id
		g, err := s.Allocate(ctx, r)
		require.NoError(t, err, id)
		_, err = s.Release(ctx, allocator.Release{RequestID: id + ":r", Token: g.Token})
		require.NoError(t, err, id)
	}
}
