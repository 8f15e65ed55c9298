package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

var benchClients = []int{1, 8, 64}

// runClients spreads b.N operations over n goroutines and reports ops/s.
func runClients(b *testing.B, n int, op func(ctx context.Context, client int) error) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(ctx, c); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
}

// BenchmarkTrivialEvalSha and BenchmarkTrivialFCall are the yardsticks:
// the cheapest script and function calls the same server can serve.
func BenchmarkTrivialEvalSha(b *testing.B) {
	trivial := redis.NewScript("return 1")
	s := newNode(b, 0)
	for _, n := range benchClients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			runClients(b, n, func(ctx context.Context, _ int) error {
				return trivial.Run(ctx, s.rdb, []string{s.keys.meta}).Err()
			})
		})
	}
}

func BenchmarkTrivialFCall(b *testing.B) {
	s := newNode(b, 0)
	ctx := context.Background()
	lib := "#!lua name=chg_bench\nredis.register_function('chg_bench_trivial', function() return 1 end)"
	if err := s.rdb.FunctionLoadReplace(ctx, lib).Err(); err != nil {
		b.Fatal(err)
	}
	for _, n := range benchClients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			runClients(b, n, func(ctx context.Context, _ int) error {
				return s.rdb.FCall(ctx, "chg_bench_trivial", []string{s.keys.meta}).Err()
			})
		})
	}
}

// BenchmarkAllocateRelease: one op is a grant of one GPU out of 8 and its
// release (two function calls). Refusals (all 8 busy) are retried and not counted.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range benchClients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			allocateRelease(b, n, newNode(b, 8))
		})
	}
}

// BenchmarkAllocateReleaseWait is BenchmarkAllocateRelease against a
// primary with one replica on loopback, without and with
// redis.wait_replicas = 1: what waiting for the replica costs.
func BenchmarkAllocateReleaseWait(b *testing.B) {
	primary, _ := replicated(b)
	for _, wait := range []int{0, 1} {
		for _, n := range []int{1, 8} {
			b.Run(fmt.Sprintf("wait_replicas=%d/clients=%d", wait, n), func(b *testing.B) {
				s, err := Open(context.Background(), Conn{URL: primary.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second,
					WaitReplicas: wait, WaitTimeout: time.Second}, fmt.Sprintf("node%d", nodeSeq.Add(1)), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if _, err := s.Register(context.Background(), fakeGPUs(8), false); err != nil {
					b.Fatal(err)
				}
				allocateRelease(b, n, s)
			})
		}
	}
}

// allocateRelease runs grant-and-release cycles on s from n clients.
func allocateRelease(b *testing.B, n int, s *Store) {
	var refusals atomic.Int64
	runClients(b, n, func(ctx context.Context, c int) error {
		user := fmt.Sprintf("u%d", c)
		for {
			g, err := s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(),
				Kind: allocator.KindRun, User: user, Count: 1, Lease: time.Minute})
			if _, short := err.(*allocator.ShortageError); short {
				refusals.Add(1)
				continue
			}
			if err != nil {
				return err
			}
			// As `canhazgpu run` releases its lease: its GPUs, fenced by its token.
			_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: user, GPUs: g.GPUs, Token: g.Token})
			return err
		}
	})
	b.ReportMetric(float64(refusals.Load())/float64(b.N), "refusals/op")
}

// BenchmarkSnapshot: one status read of an 8-GPU node with reservations.
func BenchmarkSnapshot(b *testing.B) {
	s := newNode(b, 8)
	ctx := context.Background()
	for range 4 {
		if _, err := s.Allocate(ctx, manual("alice", 1)); err != nil {
			b.Fatal(err)
		}
	}
	runClients(b, 1, func(ctx context.Context, _ int) error {
		_, err := s.Snapshot(ctx)
		return err
	})
}

// BenchmarkMemory reports what one idle 8-GPU node and one reservation
// cost in Redis memory (MEMORY USAGE of the node's keys). The loop only
// repeats the measurement.
func BenchmarkMemory(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		s := newNode(b, 8)
		idle := nodeMemory(b, s)
		for i := range 8 {
			r := manual(fmt.Sprintf("user%d", i), 1)
			r.Note = "training run"
			if _, err := s.Allocate(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		// The stored replies of the grants expire after replyTTL; count
		// what stays: the reservations themselves.
		withRes := nodeMemory(b, s)
		b.ReportMetric(float64(idle), "B/idle-node")
		b.ReportMetric(float64(withRes-idle)/8, "B/reservation")
	}
}

func nodeMemory(b *testing.B, s *Store) int64 {
	ctx := context.Background()
	k := s.keys
	var total int64
	for _, key := range []string{k.gpus, k.res, k.bres, k.mru, k.hist, k.meta, k.q, k.qe, k.qx, k.flags, k.policy} {
		n, err := s.rdb.MemoryUsage(ctx, key).Result()
		if err != nil && err != redis.Nil {
			b.Fatal(err)
		}
		total += n
	}
	return total
}

// BenchmarkServerTime reports the server's own time per call (INFO
// commandstats, read before and after each call) for a grant of one GPU
// out of 8, its release and the trivial function: unlike the rates above,
// it does not move with the load of the machine the clients run on.
func BenchmarkServerTime(b *testing.B) {
	s := newNode(b, 8)
	ctx := context.Background()
	lib := "#!lua name=chg_bench\nredis.register_function('chg_bench_trivial', function() return 1 end)"
	if err := s.rdb.FunctionLoadReplace(ctx, lib).Err(); err != nil {
		b.Fatal(err)
	}
	var allocUS, releaseUS, trivialUS int64
	timed := func(sum *int64, call func() error) {
		before := fcallUsec(b, s)
		if err := call(); err != nil {
			b.Fatal(err)
		}
		*sum += fcallUsec(b, s) - before
	}
	for range b.N {
		var g allocator.Grant
		timed(&allocUS, func() (err error) {
			g, err = s.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
				User: "alice", Count: 1, Lease: time.Minute})
			return err
		})
		timed(&releaseUS, func() error {
			_, err := s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", GPUs: g.GPUs, Token: g.Token})
			return err
		})
		timed(&trivialUS, func() error { return s.rdb.FCall(ctx, "chg_bench_trivial", []string{s.keys.meta}).Err() })
	}
	b.ReportMetric(float64(allocUS)/float64(b.N), "µs/allocate")
	b.ReportMetric(float64(releaseUS)/float64(b.N), "µs/release")
	b.ReportMetric(float64(trivialUS)/float64(b.N), "µs/trivial")
}

// fcallUsec is the server's total time in FCALL so far, in µs.
func fcallUsec(b *testing.B, s *Store) int64 {
	info, err := s.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_fcall:"); ok {
			for _, kv := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "usec="); ok {
					n, err := strconv.ParseInt(v, 10, 64)
					if err != nil {
						b.Fatal(err)
					}
					return n
				}
			}
		}
	}
	return 0
}

// BenchmarkQueueHeartbeatServerTime reports the server's time per queue
// heartbeat with 100 entries waiting, the last one beating.
func BenchmarkQueueHeartbeatServerTime(b *testing.B) {
	s := newNode(b, 8)
	ctx := context.Background()
	for i := range 100 {
		e := allocator.QueueEntry{ID: fmt.Sprintf("e%d", i), Kind: allocator.KindRun, User: fmt.Sprintf("u%d", i), Count: 1}
		if _, err := s.Enqueue(ctx, e, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	var us int64
	for range b.N {
		before := fcallUsec(b, s)
		if _, err := s.QueueHeartbeat(ctx, "e99"); err != nil {
			b.Fatal(err)
		}
		us += fcallUsec(b, s) - before
	}
	b.ReportMetric(float64(us)/float64(b.N), "µs/heartbeat")
}

// BenchmarkAllViolations: violations --all-nodes over 100 nodes with a
// violation record each (run alone: it reads every node in the store).
func BenchmarkAllViolations(b *testing.B) {
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	var s *Store
	for range 100 {
		s = newNode(b, 1)
		if _, err := s.RecordViolations(ctx, violationRun(t0, 10)); err != nil {
			b.Fatal(err)
		}
	}
	trips := countRoundTrips(s)
	ops := 0
	for b.Loop() { // the setup runs once: b.Loop calls the function once
		if _, err := s.AllViolations(ctx, time.Time{}); err != nil {
			b.Fatal(err)
		}
		ops++
	}
	b.ReportMetric(float64(trips.Load())/float64(ops), "roundtrips/op")
}
