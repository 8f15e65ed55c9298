package batch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

// The engine's tests run a scheduler the store has never heard of: its
// kind is only a name, so nothing outside this package knows it.
const testKind allocator.Kind = "testsched"

var nodeSeq atomic.Int64

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func uuid(i int) string { return fmt.Sprintf("GPU-ba7c0000-0000-4000-8000-%012d", i) }

// node is one fake node of 3 GPUs and an engine for the test scheduler.
type node struct {
	t        *testing.T
	dir      string
	engine   *Engine
	st       *store.Store
	exported [][]jobstate.GPU
}

func newNode(t *testing.T, pol Policy, busy ...int) *node {
	t.Helper()
	n := &node{t: t, dir: t.TempDir()}
	fake := `{"gpus":[`
	for i := range 3 {
		mem := 0
		for _, b := range busy {
			if b == i {
				mem = 4096
			}
		}
		if i > 0 {
			fake += ","
		}
		fake += fmt.Sprintf(`{"index":%d,"uuid":%q,"minor":%d,"memory_used_mb":%d}`, i, uuid(i), i, mem)
	}
	fake += "]}"
	fakeFile := filepath.Join(n.dir, "gpus.json")
	require.NoError(t, os.WriteFile(fakeFile, []byte(fake), 0o644))
	name := fmt.Sprintf("batchnode%d", nodeSeq.Add(1))
	cfgFile := filepath.Join(n.dir, "config.toml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf("node = %q\n[redis]\nurl = %q\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n",
		name, srv.URL(), fakeFile)), 0o644))
	cfg, err := config.Load(config.Options{System: true, Env: []string{"CANHAZGPU_CONFIG=" + cfgFile}, MayOverride: true})
	require.NoError(t, err)
	bootFile := filepath.Join(n.dir, "boot_id")
	require.NoError(t, os.WriteFile(bootFile, []byte("boot-1\n"), 0o644))
	pol.Kind, pol.StateDir, pol.Deadline = testKind, filepath.Join(n.dir, "state"), 2*time.Second
	n.engine = &Engine{Config: cfg, Policy: pol, BootIDPath: bootFile, Now: func() time.Time { return testNow }}
	n.st, err = store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: time.Second},
		name, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { n.st.Close() })
	return n
}

// storeDown points the engine at a port where no store answers.
func (n *node) storeDown() { n.engine.Config.Redis.URL = "redis://127.0.0.1:1/0" }

// job is a job of the test scheduler that wants count GPUs and names none.
func (n *node) job(id string, count int) Job {
	return Job{ID: id, User: "bob", UID: 1001, Restart: 1, Count: count,
		Export: func(g []jobstate.GPU) error { n.exported = append(n.exported, g); return nil }}
}

// named is a job whose scheduler chose the GPUs of these indices, which it
// numbers 10 and up.
func (n *node) named(id string, indices ...int) Job {
	j := n.job(id, len(indices))
	j.Slots = func(devs []gpu.Device) ([]Slot, error) {
		var out []Slot
		for k, i := range indices {
			out = append(out, Slot{Device: devs[i], SchedIndex: 10 + k})
		}
		return out, nil
	}
	return j
}

func (n *node) held() map[string]string {
	n.t.Helper()
	snap, err := n.st.Snapshot(context.Background())
	if errors.Is(err, allocator.ErrNotRegistered) {
		return map[string]string{}
	}
	require.NoError(n.t, err)
	out := map[string]string{}
	for u, r := range snap.Reservations {
		out[u] = string(r.Kind) + " " + r.JobID
	}
	return out
}

func (n *node) manual(i int) {
	n.t.Helper()
	var gpus []allocator.GPU
	for k := range 3 {
		gpus = append(gpus, allocator.GPU{UUID: uuid(k), Index: k, Minor: k, Name: "Fake GPU"})
	}
	_, err := n.st.Register(context.Background(), gpus, false)
	require.NoError(n.t, err)
	_, err = n.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: "alice", UID: 1002, GPUs: []string{uuid(i)}, Lease: time.Hour})
	require.NoError(n.t, err)
}

func (n *node) jobFile(id string) jobstate.JobFile {
	n.t.Helper()
	f, err := jobstate.ReadJob(n.engine.Policy.StateDir, testKind, id)
	require.NoError(n.t, err)
	return f
}

func (n *node) noJobFile(id string) {
	n.t.Helper()
	_, err := jobstate.ReadJob(n.engine.Policy.StateDir, testKind, id)
	require.ErrorIs(n.t, err, os.ErrNotExist)
}

func TestReserveByCountThenRelease(t *testing.T) {
	ctx := context.Background()
	n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "allow"}, 0)
	p, err := n.engine.Reserve(ctx, n.job("1", 2))
	require.NoError(t, err)
	want := []jobstate.GPU{{UUID: uuid(1), Index: 1, SchedIndex: -1}, {UUID: uuid(2), Index: 2, SchedIndex: -1}}
	require.Equal(t, want, p.GPUs, "the busy GPU is skipped; index order")
	require.Equal(t, []string{uuid(1), uuid(2)}, p.Held)
	require.Equal(t, [][]jobstate.GPU{want}, n.exported)
	require.Equal(t, map[string]string{uuid(1): "testsched 1", uuid(2): "testsched 1"}, n.held())
	f := n.jobFile("1")
	require.Equal(t, want, f.GPUs)
	require.Equal(t, "boot-1", f.BootID)
	require.Equal(t, 1, f.Restart)

	rel, err := n.engine.Release(ctx, Job{ID: "1", UID: -1})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{uuid(1), uuid(2)}, rel.GPUs)
	require.Empty(t, n.held())
	n.noJobFile("1")
}

func TestReserveKeepsTheSchedulersSlots(t *testing.T) {
	n := newNode(t, Policy{OnConflict: "fail", OnStoreError: "fail"})
	p, err := n.engine.Reserve(context.Background(), n.named("2", 2, 0))
	require.NoError(t, err)
	require.Equal(t, []jobstate.GPU{{UUID: uuid(2), Index: 2, SchedIndex: 10}, {UUID: uuid(0), Index: 0, SchedIndex: 11}}, p.GPUs)
}

func TestPlaceByCountMovesOffTakenSlots(t *testing.T) {
	n := newNode(t, Policy{OnConflict: "fail", OnStoreError: "fail", Placement: PlaceByCount})
	n.manual(0)
	p, err := n.engine.Reserve(context.Background(), n.named("3", 0, 1))
	require.NoError(t, err)
	require.Equal(t, []jobstate.GPU{{UUID: uuid(2), Index: 2, SchedIndex: 10, Moved: true}, {UUID: uuid(1), Index: 1, SchedIndex: 11}}, p.GPUs)
}

func TestOnConflictFailReservesNothing(t *testing.T) {
	n := newNode(t, Policy{OnConflict: "fail", OnStoreError: "allow"})
	n.manual(1)
	_, err := n.engine.Reserve(context.Background(), n.named("4", 0, 1))
	var refused *Refused
	require.ErrorAs(t, err, &refused)
	require.Equal(t, "on_conflict", refused.Setting)
	require.Contains(t, err.Error(), "GPU 1 ("+uuid(1)+") reserved by alice (manual since ")
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short)
	require.Equal(t, map[string]string{uuid(1): "manual "}, n.held())
	n.noJobFile("4")
	require.Empty(t, n.exported)
}

func TestOnConflictWarnHoldsTheFreeAndRecordsTheRest(t *testing.T) {
	for _, tc := range []struct {
		name string
		job  func(n *node) Job
	}{
		{"named", func(n *node) Job { return n.named("5", 0, 1) }},
		{"by count", func(n *node) Job { return n.job("5", 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "fail"})
			n.manual(1)
			p, err := n.engine.Reserve(context.Background(), tc.job(n))
			require.NoError(t, err)
			require.NotNil(t, p.Shortage)
			require.NotContains(t, p.Held, uuid(1))
			require.Contains(t, p.Held, uuid(0))
			require.Equal(t, "manual ", n.held()[uuid(1)])
			require.Equal(t, "testsched 5", n.held()[uuid(0)])
			f := n.jobFile("5")
			require.Len(t, f.Conflicts, 1)
			require.Equal(t, uuid(1), f.Conflicts[0].GPU)
			require.Contains(t, f.Conflicts[0].Reason, "reserved by alice (manual since ")
			var runs []string
			for _, g := range f.GPUs {
				runs = append(runs, g.UUID)
			}
			require.Equal(t, []string{uuid(0), uuid(1)}, runs[:2], "the job runs on the taken GPU too")
		})
	}
}

func TestUnusableSchedulerAccount(t *testing.T) {
	bad := errors.New("the scheduler's GPU list makes no sense")
	t.Run("warn", func(t *testing.T) {
		n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "fail"})
		j := n.job("6", 0)
		j.Unusable = bad
		p, err := n.engine.Reserve(context.Background(), j)
		require.NoError(t, err)
		require.Equal(t, bad, p.Unusable)
		require.Equal(t, []jobstate.Conflict{{Reason: bad.Error()}}, n.jobFile("6").Conflicts)
		require.Empty(t, n.held(), "the store is not asked")
	})
	t.Run("fail", func(t *testing.T) {
		n := newNode(t, Policy{OnConflict: "fail", OnStoreError: "fail"})
		j := n.named("6", 0)
		inner := j.Slots
		j.Slots = func(devs []gpu.Device) ([]Slot, error) {
			if _, err := inner(devs); err != nil {
				return nil, err
			}
			return nil, bad
		}
		_, err := n.engine.Reserve(context.Background(), j)
		require.ErrorIs(t, err, bad)
		var refused *Refused
		require.ErrorAs(t, err, &refused)
		require.Equal(t, "on_conflict", refused.Setting)
		n.noJobFile("6")
	})
}

func TestOnStoreError(t *testing.T) {
	t.Run("fail", func(t *testing.T) {
		n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "fail"})
		n.storeDown()
		_, err := n.engine.Reserve(context.Background(), n.job("7", 1))
		var refused *Refused
		require.ErrorAs(t, err, &refused)
		require.Equal(t, "on_store_error", refused.Setting)
		require.True(t, Unreachable(err))
		n.noJobFile("7")
		_, err = n.engine.Release(context.Background(), Job{ID: "7", UID: -1})
		require.ErrorAs(t, err, &refused)
		ms, err := jobstate.Markers(n.engine.Policy.StateDir)
		require.NoError(t, err)
		require.Empty(t, ms)
	})
	t.Run("allow", func(t *testing.T) {
		n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "allow"}, 0)
		n.storeDown()
		p, err := n.engine.Reserve(context.Background(), n.job("8", 1))
		require.NoError(t, err)
		require.True(t, Unreachable(p.StoreDown))
		want := []jobstate.GPU{{UUID: uuid(1), Index: 1, SchedIndex: -1}}
		require.Equal(t, want, p.GPUs, "an idle GPU, chosen from the scan alone")
		require.Equal(t, [][]jobstate.GPU{want}, n.exported)
		f := n.jobFile("8")
		require.True(t, f.Pending)
		ms, err := jobstate.Markers(n.engine.Policy.StateDir)
		require.NoError(t, err)
		require.Equal(t, []jobstate.Marker{{Op: jobstate.OpReserve, Kind: testKind, JobID: "8", User: "bob", UID: 1001,
			GPUs: []string{uuid(1)}, Restart: 1, BootID: "boot-1", At: testNow}}, ms)

		// The epilog, requeued meanwhile, releases what the prolog's
		// attempt held: its restart count comes from the job file.
		rel, err := n.engine.Release(context.Background(), Job{ID: "8", UID: -1, Restart: 2})
		require.NoError(t, err)
		require.True(t, Unreachable(rel.StoreDown))
		n.noJobFile("8")
		ms, err = jobstate.Markers(n.engine.Policy.StateDir)
		require.NoError(t, err)
		require.Equal(t, []jobstate.Marker{{Op: jobstate.OpRelease, Kind: testKind, JobID: "8", User: "bob", UID: 1001,
			GPUs: []string{uuid(1)}, Restart: 1, At: testNow}}, ms, "the release stands for the reserve the store never saw")
	})
}

// A prolog that cannot hand the GPUs to the job gives them back.
func TestFailedExportIsUndone(t *testing.T) {
	n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "allow"})
	j := n.job("9", 2)
	j.Export = func([]jobstate.GPU) error { return errors.New("env file: disk full") }
	_, err := n.engine.Reserve(context.Background(), j)
	require.EqualError(t, err, "env file: disk full")
	require.Empty(t, n.held())
	n.noJobFile("9")
}

// The epilog withdraws the job's GPUs only once the state directory is
// safe, and even when the store is down.
func TestReleaseWithdraws(t *testing.T) {
	n := newNode(t, Policy{OnConflict: "warn", OnStoreError: "allow"})
	withdrawn := 0
	n.storeDown()
	rel, err := n.engine.Release(context.Background(), Job{ID: "10", UID: -1, Withdraw: func() error { withdrawn++; return nil }})
	require.NoError(t, err)
	require.NotNil(t, rel.StoreDown)
	require.Equal(t, 1, withdrawn)

	require.NoError(t, os.Chmod(n.engine.Policy.StateDir, 0o777))
	_, err = n.engine.Release(context.Background(), Job{ID: "10", UID: -1, Withdraw: func() error { withdrawn++; return nil }})
	require.ErrorContains(t, err, "state dir")
	require.Equal(t, 1, withdrawn)
}

func TestUnreachable(t *testing.T) {
	require.True(t, Unreachable(fmt.Errorf("x: %w", allocator.ErrUnavailable)))
	require.True(t, Unreachable(context.DeadlineExceeded))
	require.True(t, Unreachable(context.Canceled))
	require.False(t, Unreachable(allocator.ErrNotRegistered))
	require.False(t, Unreachable(&allocator.ShortageError{}))
}
