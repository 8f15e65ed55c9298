package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/slurm/scontroltest"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
	"canhazgpu/internal/pbs"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/slurm"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	code := redistest.Run(m, &srv)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var nodeSeq atomic.Int64

// testNode is one node of the shared test server with its own fake GPU
// file, spool dir, state dir and stand-in scontrol.
type testNode struct {
	t        testing.TB
	name     string
	dir      string
	fake     string
	spool    string
	stateDir string
	sc       *scontroltest.StandIn
	qstat    string // the stand-in qstat of the PBS adapter
	cfgFile  string
	settings map[string]string
	// util is each GPU's utilisation in the fake file, by index; absent:
	// unknown.
	util map[int]int
}

// fakeProc is a process line of the fake GPU file.
type fakeProc struct {
	PID   int
	User  string
	UID   int
	JobID string
	MB    int64
}

func newTestNode(t testing.TB, settings map[string]string) *testNode {
	t.Helper()
	n := &testNode{t: t, name: fmt.Sprintf("hc%d", nodeSeq.Add(1)), dir: t.TempDir(), sc: scontroltest.New(t)}
	n.fake = filepath.Join(n.dir, "gpus.json")
	// Unix socket paths are short (108 bytes): keep the spool dir near /.
	spool, err := os.MkdirTemp("", "hcspool")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(spool) })
	n.spool = spool
	n.stateDir = filepath.Join(n.dir, "state")
	n.settings = map[string]string{
		"node": n.name, "redis.url": srv.URL(),
		"gpu.provider": "fake", "gpu.fake_file": n.fake,
		"slurm.state_dir": n.stateDir, "pbs.state_dir": n.stateDir, "slurm.deadline": "1ms",
		"health.action": "none", "health.scontrol": n.sc.Path, "health.scontrol_timeout": "5s",
		"health.slurmd_spool_dir": n.spool, "health.timeout": "20s",
	}
	for k, v := range settings {
		n.settings[k] = v
	}
	n.writeConfig()
	n.gpus(4, nil)
	n.qstat = filepath.Join(n.dir, "qstat")
	n.qstatSays(0, "Job Id: 1.srv\n    job_state = R\n", "")
	return n
}

// qstatSays makes the stand-in qstat answer every job so.
func (n *testNode) qstatSays(code int, stdout, stderr string) {
	n.t.Helper()
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s' %s\nprintf '%%s' %s >&2\nexit %d\n",
		shellQuote(stdout), shellQuote(stderr), code)
	require.NoError(n.t, os.WriteFile(n.qstat, []byte(script), 0o755))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// writeConfig writes the settings as a config file, the way a site would.
func (n *testNode) writeConfig() {
	n.t.Helper()
	sections := map[string]map[string]string{}
	top := ""
	for k, v := range n.settings {
		sec, key, ok := strings.Cut(k, ".")
		if !ok {
			top += k + " = " + tomlValue(v) + "\n"
			continue
		}
		if sections[sec] == nil {
			sections[sec] = map[string]string{}
		}
		sections[sec][key] = v
	}
	text := top
	for sec, kv := range sections {
		text += "[" + sec + "]\n"
		for k, v := range kv {
			text += k + " = " + tomlValue(v) + "\n"
		}
	}
	n.cfgFile = filepath.Join(n.dir, "config.toml")
	require.NoError(n.t, os.WriteFile(n.cfgFile, []byte(text), 0o644))
}

func (n *testNode) config() *config.Config {
	n.t.Helper()
	cfg, err := config.Load(config.Options{System: true, ConfigFile: n.cfgFile, MayOverride: true})
	require.NoError(n.t, err)
	return cfg
}

// gpus writes the fake GPU file atomically: count GPUs, processes by
// index. A GPU's memory use is the sum of its processes'.
func (n *testNode) gpus(count int, procs map[int][]fakeProc) {
	n.t.Helper()
	type proc struct {
		PID     int      `json:"pid"`
		Name    string   `json:"name"`
		User    string   `json:"user"`
		UID     *int     `json:"uid,omitempty"` // nil: unknown (a fakeProc's -1)
		MB      int64    `json:"used_memory_mb"`
		Cmdline []string `json:"cmdline"`
		JobID   string   `json:"job_id"`
	}
	type dev struct {
		Index       int    `json:"index"`
		UUID        string `json:"uuid"`
		Utilization *int   `json:"utilization,omitempty"`
		Processes   []proc `json:"processes"`
	}
	var file struct {
		GPUs []dev `json:"gpus"`
	}
	for i := range count {
		d := dev{Index: i, UUID: testUUID(i), Processes: []proc{}}
		if u, ok := n.util[i]; ok {
			d.Utilization = &u
		}
		for _, p := range procs[i] {
			var uid *int
			if p.UID >= 0 {
				uid = &p.UID
			}
			d.Processes = append(d.Processes, proc{PID: p.PID, Name: "python3", User: p.User, UID: uid, MB: p.MB,
				Cmdline: []string{"python3", "train.py"}, JobID: p.JobID})
		}
		file.GPUs = append(file.GPUs, d)
	}
	data, err := json.Marshal(file)
	require.NoError(n.t, err)
	tmp := n.fake + ".tmp"
	require.NoError(n.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(n.t, os.Rename(tmp, n.fake))
}

// open gives the store and provider a run uses, closed at cleanup.
func (n *testNode) open() *localnode.Node {
	n.t.Helper()
	node, err := localnode.Open(context.Background(), n.config())
	require.NoError(n.t, err)
	n.t.Cleanup(func() { node.Close() })
	return node
}

func (n *testNode) store() *store.Store { return n.open().Store }

// deps is what one run gets: Slurm node "n1", boot "boot-now".
func (n *testNode) deps() *Deps {
	node := n.open()
	return &Deps{Config: node.Config, Store: node.Store, GPUs: node.GPUs(), SlurmNode: "n1", Env: n.sc.Env(),
		BootID: "boot-now", Schedulers: []batch.Scheduler{slurm.Scheduler{}, pbs.Scheduler{Qstat: n.qstat}}}
}

func (n *testNode) run() *Report {
	n.t.Helper()
	return Run(context.Background(), n.deps())
}

func (n *testNode) snapshot() *allocator.Snapshot {
	n.t.Helper()
	snap, err := n.store().Snapshot(context.Background())
	require.NoError(n.t, err)
	return snap
}

// register makes the store know the node's GPUs, as any first use does.
func (n *testNode) register() {
	n.t.Helper()
	node := n.open()
	_, _, err := node.Look(context.Background())
	require.NoError(n.t, err)
}

func (n *testNode) reserve(kind allocator.Kind, user string, uid int, job, boot string, gpus ...int) {
	n.t.Helper()
	n.register()
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: kind, User: user, UID: uid, JobID: job, BootID: boot}
	for _, g := range gpus {
		req.GPUs = append(req.GPUs, testUUID(g))
	}
	if !kind.Batch() {
		req.Lease = time.Hour
	}
	_, err := n.store().Allocate(context.Background(), req)
	require.NoError(n.t, err)
}

// reserveFor is reserve for an interactive kind with a lease of its own.
func (n *testNode) reserveFor(kind allocator.Kind, user string, uid int, lease time.Duration, gpus ...int) allocator.Grant {
	n.t.Helper()
	n.register()
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: kind, User: user, UID: uid, Lease: lease}
	for _, g := range gpus {
		req.GPUs = append(req.GPUs, testUUID(g))
	}
	g, err := n.store().Allocate(context.Background(), req)
	require.NoError(n.t, err)
	return g
}

// stepSocket makes slurmd's socket of a running step of job.
func (n *testNode) stepSocket(job, step string) {
	n.t.Helper()
	l, err := net.Listen("unix", filepath.Join(n.spool, "n1_"+job+"."+step))
	require.NoError(n.t, err)
	n.t.Cleanup(func() { l.Close() })
}

// holders maps GPU index to "kind user job" of its reservation.
func (n *testNode) holders() map[int]string {
	n.t.Helper()
	snap := n.snapshot()
	out := map[int]string{}
	for uuid, r := range snap.Reservations {
		g, ok := snap.GPUByUUID(uuid)
		require.True(n.t, ok)
		out[g.Index] = fmt.Sprintf("%s %s %s", r.Kind, r.User, r.JobID)
	}
	return out
}

// tomlValue writes numbers and lists as they are, everything else quoted.
func tomlValue(v string) string {
	if _, err := strconv.Atoi(v); err == nil || strings.HasPrefix(v, "[") {
		return v
	}
	return strconv.Quote(v)
}
