package slurm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

var nodeSeq atomic.Int64

// The fake node: NVML index i has minor (i+2)%4, so Slurm index k (device
// /dev/nvidia<k>, minor k) is NVML index (k+2)%4.
const fakeGPUs = 4

func fakeUUID(i int) string { return fmt.Sprintf("GPU-5e570000-0000-4000-8000-%012d", i) }

// slurmUUID is the GPU behind Slurm's index k on the fake node.
func slurmUUID(k int) string { return fakeUUID((k + 2) % fakeGPUs) }

// fixture is one node: its config file, fake GPU file, state dir and a
// store view for assertions.
type fixture struct {
	t        *testing.T
	dir      string
	cfgFile  string
	fakeFile string
	node     string
	cfg      *config.Config
	st       *store.Store
	calls    redistest.RoundTrips // store round trips of the programs under test
}

func newFixture(t *testing.T, settings ...string) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), node: fmt.Sprintf("slurmnode%d", nodeSeq.Add(1))}
	f.fakeFile = filepath.Join(f.dir, "gpus.json")
	f.setBusy()
	f.cfgFile = filepath.Join(f.dir, "config.toml")
	f.configure(settings...)
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: time.Second},
		f.node, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	f.st = st
	return f
}

// configure writes the config file with [slurm] settings such as
// `placement = "canhazgpu"` and loads it as the programs do.
func (f *fixture) configure(settings ...string) {
	f.t.Helper()
	slurm := strings.Join(settings, "\n")
	if !strings.Contains(slurm, "deadline") {
		slurm += "\ndeadline = \"2s\""
	}
	text := fmt.Sprintf("node = %q\n[redis]\nurl = %q\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n[slurm]\nstate_dir = %q\n%s\n",
		f.node, srv.URL(), f.fakeFile, f.stateDir(), slurm)
	require.NoError(f.t, os.WriteFile(f.cfgFile, []byte(text), 0o644))
	cfg, err := LoadConfig([]string{"CANHAZGPU_CONFIG=" + f.cfgFile})
	require.NoError(f.t, err)
	f.cfg = cfg
}

func (f *fixture) stateDir() string { return filepath.Join(f.dir, "state") }

// setBusy writes the fake GPU file; the listed NVML indices use memory
// without a reservation.
func (f *fixture) setBusy(busy ...int) {
	f.t.Helper()
	type fake struct {
		Index        int    `json:"index"`
		UUID         string `json:"uuid"`
		Minor        int    `json:"minor"`
		MemoryUsedMB int64  `json:"memory_used_mb"`
	}
	var gpus []fake
	for i := range fakeGPUs {
		g := fake{Index: i, UUID: fakeUUID(i), Minor: (i + 2) % fakeGPUs}
		for _, b := range busy {
			if b == i {
				g.MemoryUsedMB = 4096
			}
		}
		gpus = append(gpus, g)
	}
	data, err := json.Marshal(map[string]any{"gpus": gpus})
	require.NoError(f.t, err)
	tmp := f.fakeFile + ".tmp"
	require.NoError(f.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(f.t, os.Rename(tmp, f.fakeFile))
}

func (f *fixture) openStore(_ context.Context, cfg *config.Config) (*store.Store, error) {
	rdb, err := store.Dial(localnode.Conn(cfg.Redis))
	if err != nil {
		return nil, err
	}
	rdb.AddHook(&f.calls)
	return store.New(rdb, cfg.Redis.URL, cfg.Node, store.Options{})
}

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// hook is a program run with a Slurm-like environment.
func (f *fixture) hook(env ...string) *Hook {
	bootFile := filepath.Join(f.dir, "boot_id")
	if _, err := os.Stat(bootFile); err != nil {
		require.NoError(f.t, os.WriteFile(bootFile, []byte("boot-1\n"), 0o644))
	}
	return &Hook{Config: f.cfg, Env: ParseEnv(env), OpenStore: f.openStore,
		BootIDPath: bootFile, Now: func() time.Time { return testNow }}
}

// jobEnv is what slurmd gives a Prolog or Epilog of job id with these GPUs.
func jobEnv(id, gpus string, extra ...string) []string {
	env := []string{"SLURM_JOB_ID=" + id, "SLURM_JOB_USER=bob", "SLURM_JOB_UID=1001",
		"SLURM_JOB_RESTART_COUNT=0", "SLURMD_NODENAME=n1"}
	if gpus != "" {
		env = append(env, "SLURM_JOB_GPUS="+gpus, "CUDA_VISIBLE_DEVICES="+gpus)
	}
	return append(env, extra...)
}

func (f *fixture) reservations() map[string]allocator.Reservation {
	f.t.Helper()
	snap, err := f.st.Snapshot(context.Background())
	if err != nil && strings.Contains(err.Error(), "not registered") {
		return nil
	}
	require.NoError(f.t, err)
	return snap.Reservations
}

// jobGPUs lists the GPUs the store holds for a Slurm job.
func (f *fixture) jobGPUs(job string) []string {
	var out []string
	for uuid, r := range f.reservations() {
		if r.Kind == allocator.KindSlurm && r.JobID == job {
			out = append(out, uuid)
		}
	}
	return out
}

// reserveManual makes an interactive reservation of the GPUs as alice.
func (f *fixture) reserveManual(uuids ...string) {
	f.t.Helper()
	f.register()
	_, err := f.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: "alice", UID: 1002, GPUs: uuids, Lease: time.Hour})
	require.NoError(f.t, err)
}

func (f *fixture) register() {
	f.t.Helper()
	var gpus []allocator.GPU
	for i := range fakeGPUs {
		gpus = append(gpus, allocator.GPU{UUID: fakeUUID(i), Index: i, Minor: (i + 2) % fakeGPUs, Name: "Fake GPU"})
	}
	_, err := f.st.Register(context.Background(), gpus, false)
	require.NoError(f.t, err)
}
