package health

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/syslogtest"
)

func idleConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Overrides: map[string]string{"node": "n1"}, MayOverride: true,
		DefaultFile: t.TempDir() + "/none.toml"})
	require.NoError(t, err)
	return cfg
}

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

// heldGPU is a GPU of a reservation started at t0 with token tok, in the
// state the scan saw.
func heldGPU(index int, kind allocator.Kind, tok int64, util gpu.Utilization, memMB int64) usage.GPU {
	r := allocator.Reservation{GPU: testUUID(index), Kind: kind, User: "alice", UID: 1002, Token: tok,
		StartedAt: t0, ExpiresAt: t0.Add(8 * time.Hour)}
	if kind.Batch() {
		r.ExpiresAt = time.Time{}
		r.JobID = "42"
	}
	return usage.GPU{GPU: allocator.GPU{UUID: testUUID(index), Index: index}, Reservation: &r, Seen: true,
		MemoryUsedMB: memMB, Busy: memMB >= 1024, Utilization: util}
}

func whats(fs []IdleFinding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.What+" "+string(f.Kind))
	}
	return out
}

// The idle clock, with time passed in: it starts with the reservation,
// a use or a keep-alive (ActiveAt) restarts it, the owner is warned once
// per spell, and a manual reservation is released at the limit.
func TestIdleClock(t *testing.T) {
	cfg := idleConfig(t) // defaults: under 5%, warn at 30m, release manual at 2h, warn run at 30m
	idleNow := func(g usage.GPU) usage.GPU { g.Utilization = gpu.Percent(0); return g }
	manual := func() []usage.GPU {
		return []usage.GPU{idleNow(heldGPU(0, allocator.KindManual, 7, gpu.Percent(0), 0)),
			idleNow(heldGPU(1, allocator.KindManual, 7, gpu.Percent(0), 0))}
	}

	t.Run("starts with the reservation", func(t *testing.T) {
		found, upd := judgeIdle(manual(), cfg, t0.Add(29*time.Minute))
		require.Empty(t, found)
		require.True(t, upd.Empty(), "nothing to write: no round trip")
		found, upd = judgeIdle(manual(), cfg, t0.Add(30*time.Minute))
		require.Equal(t, []string{"warned manual"}, whats(found))
		require.Equal(t, []int{0, 1}, found[0].GPUs, "one finding per grant")
		require.Equal(t, int64(1800), found[0].IdleSeconds)
		require.Equal(t, "manual reservation of GPUs 0, 1 by alice on n1 idle for 30m (no process above 1024 MB and under 5% utilisation): "+
			"released in 1h30m unless used or kept with 'canhazgpu reserve --keep-alive'", found[0].Message)
		require.Len(t, upd.Warned, 2)
		require.Empty(t, upd.Release)
	})
	t.Run("warned once per spell", func(t *testing.T) {
		gs := manual()
		for _, g := range gs {
			g.Reservation.IdleWarned = t0
		}
		found, upd := judgeIdle(gs, cfg, t0.Add(time.Hour))
		require.Empty(t, found)
		require.True(t, upd.Empty())
	})
	t.Run("reset by use on any GPU of the grant", func(t *testing.T) {
		for name, busy := range map[string]usage.GPU{
			"utilisation at the level":     heldGPU(1, allocator.KindManual, 7, gpu.Percent(5), 0),
			"memory over the threshold":    heldGPU(1, allocator.KindManual, 7, gpu.Percent(0), 2048),
			"utilisation the driver hides": heldGPU(1, allocator.KindManual, 7, gpu.Utilization{}, 0),
			"a GPU the scan did not see": func() usage.GPU {
				g := heldGPU(1, allocator.KindManual, 7, gpu.Percent(0), 0)
				g.Seen = false
				return g
			}(),
			"a process holding the memory": func() usage.GPU {
				g := heldGPU(1, allocator.KindManual, 7, gpu.Percent(0), 0)
				g.Processes = []gpu.Process{{PID: 9, UsedMemoryMB: 1024}}
				return g
			}(),
		} {
			t.Run(name, func(t *testing.T) {
				gs := manual()
				gs[1] = busy
				found, upd := judgeIdle(gs, cfg, t0.Add(3*time.Hour))
				require.Empty(t, found)
				require.True(t, upd.Empty(), "the run's snapshot restarted the clock")
			})
		}
		// The store then holds the use: the spell starts there.
		gs := manual()
		for _, g := range gs {
			g.Reservation.ActiveAt = t0.Add(2 * time.Hour)
		}
		found, _ := judgeIdle(gs, cfg, t0.Add(2*time.Hour+29*time.Minute))
		require.Empty(t, found, "idle 29m since the use")
		found, _ = judgeIdle(gs, cfg, t0.Add(2*time.Hour+30*time.Minute))
		require.Equal(t, []string{"warned manual"}, whats(found), "a new spell is warned again")
	})
	t.Run("reset by keep-alive", func(t *testing.T) {
		gs := manual()
		for _, g := range gs {
			g.Reservation.IdleWarned = t0
			g.Reservation.ActiveAt = t0.Add(100 * time.Minute) // canhazgpu reserve --keep-alive
		}
		found, upd := judgeIdle(gs, cfg, t0.Add(2*time.Hour))
		require.Empty(t, found, "20m since the keep-alive")
		require.True(t, upd.Empty())
	})
	t.Run("released at the limit", func(t *testing.T) {
		gs := manual()
		for _, g := range gs {
			g.Reservation.IdleWarned = t0
		}
		found, upd := judgeIdle(gs, cfg, t0.Add(2*time.Hour-time.Second))
		require.Empty(t, found)
		require.True(t, upd.Empty())
		found, upd = judgeIdle(gs, cfg, t0.Add(2*time.Hour))
		require.Equal(t, []string{"released manual"}, whats(found))
		require.Equal(t, "released manual reservation of GPUs 0, 1 by alice on n1: idle for 2h (no process above 1024 MB and under 5% utilisation), "+
			"longer than [idle] manual_release_after 2h", found[0].Message)
		require.Len(t, upd.Release, 2)
		require.Equal(t, t0, upd.Release[0].IdleSince(), "the store releases only if still idle since then")
	})
	t.Run("never released when the site says 0", func(t *testing.T) {
		never := *cfg
		never.Idle.ManualReleaseAfter = 0
		found, upd := judgeIdle(manual(), &never, t0.Add(7*time.Hour))
		require.Equal(t, []string{"warned manual"}, whats(found))
		require.Contains(t, found[0].Message, ": release it with 'canhazgpu release' when done")
		require.Empty(t, upd.Release)
	})
	t.Run("run leases are warned, never released", func(t *testing.T) {
		gs := []usage.GPU{heldGPU(2, allocator.KindRun, 8, gpu.Percent(1), 0)}
		found, upd := judgeIdle(gs, cfg, t0.Add(30*time.Minute))
		require.Equal(t, []string{"warned run"}, whats(found))
		require.Contains(t, found[0].Message, "end the command when done")
		gs[0].Reservation.ExpiresAt = t0.Add(49 * time.Hour) // renewed by its heartbeats
		found, upd = judgeIdle(gs, cfg, t0.Add(48*time.Hour))
		require.Equal(t, []string{"warned run"}, whats(found))
		require.Empty(t, upd.Release)
	})
	t.Run("batch reservations are never judged", func(t *testing.T) {
		gs := []usage.GPU{heldGPU(3, allocator.KindSlurm, 9, gpu.Percent(0), 0), heldGPU(3, allocator.KindPBS, 10, gpu.Percent(0), 0)}
		found, upd := judgeIdle(gs, cfg, t0.Add(48*time.Hour))
		require.Empty(t, found)
		require.True(t, upd.Empty(), "not even their clock is written")
	})
	t.Run("expired and queued holds are left to the store", func(t *testing.T) {
		queued := heldGPU(0, allocator.KindManual, 11, gpu.Percent(0), 0)
		queued.Reservation.Queued = true
		found, upd := judgeIdle([]usage.GPU{queued}, cfg, t0.Add(3*time.Hour))
		require.Empty(t, found)
		require.True(t, upd.Empty())
		found, upd = judgeIdle(manual(), cfg, t0.Add(9*time.Hour))
		require.Empty(t, found, "expired: the store reclaims it as expired")
		require.True(t, upd.Empty())
	})
}

// ageIdle moves a node's stored reservation times back by `by`, as if
// the reservations were that much older.
func (n *testNode) ageIdle(by time.Duration) {
	n.t.Helper()
	n.ageStored(by, "s", "e", "h", "a", "w")
}

// ageStored moves the given stored reservation times back by `by`.
func (n *testNode) ageStored(by time.Duration, fields ...string) {
	n.t.Helper()
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	key := "chg:{" + n.name + "}:res"
	all, err := c.HGetAll(ctx, key).Result()
	require.NoError(n.t, err)
	for id, stored := range all {
		var r map[string]any
		require.NoError(n.t, json.Unmarshal([]byte(stored), &r))
		for _, f := range fields {
			if v, ok := r[f].(float64); ok && v != 0 {
				r[f] = int64(v) - by.Milliseconds()
			}
		}
		b, err := json.Marshal(r)
		require.NoError(n.t, err)
		require.NoError(n.t, c.HSet(ctx, key, id, b).Err())
	}
}

// The whole round on a real store and the fake GPU file: an idle manual
// reservation is warned about once, kept by a use, then released and
// recorded as reclaimed; a run lease is only warned; a batch job's idle
// GPU is left alone.
func TestRunIdleReservations(t *testing.T) {
	n := newTestNode(t, map[string]string{"reserve.max_duration": "7d"})
	n.util = map[int]int{0: 0, 1: 0, 2: 1, 3: 0}
	n.gpus(4, nil)
	n.reserveFor(allocator.KindManual, "alice", 1002, 8*time.Hour, 0, 1)
	lease := n.reserveFor(allocator.KindRun, "bob", 1003, time.Minute, 2)
	// bob's command runs on: its keeper renews the lease, which is no
	// sign of use.
	beat := func() {
		_, err := n.store().Renew(context.Background(), "bob", lease.Token, lease.GPUs, time.Minute)
		require.NoError(t, err)
	}
	n.reserve(allocator.KindSlurm, "carol", 1004, "42", "boot-now", 3)
	n.stepSocket("42", "0")
	w := &notes{}
	run := func() *Report {
		deps := n.deps()
		deps.Notify = w.notify
		r := Run(context.Background(), deps)
		require.Empty(t, r.Error)
		return r
	}

	r := run()
	require.Empty(t, r.Idle, "just reserved")
	require.Equal(t, gpu.Percent(0), r.GPUs[0].Utilization)

	n.ageIdle(31 * time.Minute)
	beat()
	r = run()
	require.Equal(t, []string{"warned manual", "warned run"}, whats(r.Idle))
	told := w.seen()
	require.Len(t, told, 2)
	require.Regexp(t, `^alice: manual reservation of GPUs 0, 1 by alice on hc\d+ idle for 31m .*: released in 1h29m unless used`, told[0])
	require.Regexp(t, `^bob: run reservation of GPU 2 by bob on hc\d+ idle for 31m`, told[1])

	beat()
	r = run()
	require.Empty(t, r.Idle, "warned once per spell")
	require.Len(t, w.seen(), 2)

	// alice's notebook computes for a moment: her clock restarts.
	n.util[1] = 40
	n.gpus(4, nil)
	beat()
	r = run()
	require.Empty(t, r.Idle)
	n.util[1] = 0
	n.gpus(4, nil)
	n.ageIdle(119 * time.Minute)
	beat()
	r = run()
	require.Equal(t, []string{"warned manual"}, whats(r.Idle), "a new spell, warned again; 1h59m is not yet the limit")

	n.ageIdle(time.Minute)
	beat()
	r = run()
	require.Equal(t, []string{"released manual"}, whats(r.Idle))
	require.Equal(t, map[int]string{2: "run bob ", 3: "slurm carol 42"}, n.holders(), "only alice's GPUs went")
	recs, err := n.store().History(context.Background(), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, recs, 2)
	for _, rec := range recs {
		require.Equal(t, "reclaimed_idle", rec.End)
		require.Equal(t, "alice", rec.User)
	}
	require.Contains(t, w.seen()[len(w.seen())-1], "alice: released manual reservation of GPUs 0, 1 by alice")
}

// The GPUs whose grants' clocks the run's snapshot leaves alone are those
// the scan saw idle by gpuActive's rule.
func TestSeenIdle(t *testing.T) {
	cfg := idleConfig(t)
	devs := []gpu.Device{
		{UUID: "idle", Utilization: gpu.Percent(4), MemoryUsedMB: 1023},
		{UUID: "at the level", Utilization: gpu.Percent(5)},
		{UUID: "memory over the threshold", Utilization: gpu.Percent(0), MemoryUsedMB: 1024},
		{UUID: "utilisation the driver hides"},
		{UUID: "a process holding the memory", Utilization: gpu.Percent(0), Processes: []gpu.Process{{PID: 9, UsedMemoryMB: 1024}}},
		{UUID: "a process below it", Utilization: gpu.Percent(0), Processes: []gpu.Process{{PID: 9, UsedMemoryMB: 1023}}},
	}
	require.Equal(t, []string{"idle", "a process below it"}, seenIdle(devs, cfg))
}

// A busy node's runs cost one round trip each, however often its clocks
// are written: the snapshot writes them, once a minute at most.
func TestRunIdleStampIsCoarse(t *testing.T) {
	n := newTestNode(t, nil)
	n.util = map[int]int{0: 40, 1: 40}
	n.gpus(2, nil)
	n.reserveFor(allocator.KindManual, "alice", 1002, 8*time.Hour, 0)
	n.reserveFor(allocator.KindManual, "bob", 1003, 8*time.Hour, 1)
	deps := n.deps()
	hook := redistest.CountRoundTrips(deps.Store.Client())
	run := func() int64 {
		hook.Reset()
		r := Run(context.Background(), deps)
		require.Empty(t, r.Error)
		require.Empty(t, r.Idle)
		return hook.Load()
	}
	activeAt := func() []time.Time {
		var out []time.Time
		for _, r := range n.snapshot().Reservations {
			out = append(out, r.ActiveAt)
		}
		slices.SortFunc(out, time.Time.Compare)
		return out
	}

	for range 3 {
		require.Equal(t, int64(1), run(), "just granted: the start is the stamp, and it is fresh")
	}
	require.Equal(t, []time.Time{{}, {}}, activeAt(), "nothing written")

	n.ageIdle(idleStampEvery)
	require.Equal(t, int64(1), run(), "due: the stamps are written by the run's snapshot")
	stamped := activeAt()
	for _, at := range stamped {
		require.WithinDuration(t, time.Now(), at, 10*time.Second, "stamped by this run")
	}
	require.Equal(t, int64(1), run())
	require.Equal(t, stamped, activeAt(), "fresh: not written again")
}

// A warning whose delivery fails is reported; the run goes on.
func TestRunIdleNotifyFailureIsReported(t *testing.T) {
	n := newTestNode(t, nil)
	n.util = map[int]int{0: 0}
	n.gpus(4, nil)
	n.reserveFor(allocator.KindManual, "alice", 1002, 8*time.Hour, 0)
	n.ageIdle(45 * time.Minute)
	deps := n.deps()
	deps.Notify = func(string, string) (int, error) { return 0, errors.New("no terminal") }
	r := Run(context.Background(), deps)
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	require.Equal(t, []string{"warned manual"}, whats(r.Idle))
	require.Equal(t, []string{"error: telling alice: no terminal"}, actionsOf(r))
}

// The owner is told on their terminals, and syslog has the release once,
// at info, naming the owner.
func TestRunIdleWarnsOnTerminalsAndSyslog(t *testing.T) {
	l := syslogtest.Listen(t)
	n := newTestNode(t, nil)
	n.util = map[int]int{0: 0}
	n.gpus(4, nil)
	n.reserveFor(allocator.KindManual, "alice", 1002, 8*time.Hour, 0)
	n.ageIdle(2 * time.Hour)
	deps := n.deps()
	deps.SyslogPath = l.Path
	var told []string
	deps.Notify = func(user, message string) (int, error) {
		told = append(told, user+": "+message)
		return 1, nil
	}
	r := Run(context.Background(), deps)
	require.Equal(t, []string{"released manual"}, whats(r.Idle))
	require.Len(t, told, 1, "the owner's terminals get the warning too")
	require.Regexp(t, `^alice: released manual reservation of GPU 0 by alice on hc\d+: idle for 2h `, told[0])
	lines := l.Lines(1)
	require.Len(t, lines, 1)
	require.Regexp(t, `^<30>.* canhazgpu-healthcheck\[\d+\]: idle: released manual reservation of GPU 0 by alice on hc\d+: idle for 2h `, lines[0])
}
