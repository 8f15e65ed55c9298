package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/testreq"
)

func init() {
	programs["canhazgpu"] = "canhazgpu/cmd/canhazgpu"
}

const (
	mnGPUs  = 4
	mnLogin = "login" // a host without GPUs and without slurmd
)

var mnNodes = []string{"mn1", "mn2", "mn3"}

// mnUUID is GPU i of node n (1-based, as in the node's name).
func mnUUID(n, i int) string { return fmt.Sprintf("GPU-3c1a5700-%04d-4000-8000-%012d", n, i) }

// mnNum is the number in a node's name.
func mnNum(node string) int { n, _ := strconv.Atoi(strings.TrimPrefix(node, "mn")); return n }

// mnCluster is three Slurm nodes and a login host, each in its own network
// and UTS namespace, sharing one Redis on the bridge. Every node has its
// own config file, fake GPU file and state directory, as separate
// machines would; the Prolog, Epilog and TaskProlog wrappers pick the
// node's config by SLURMD_NODENAME.
type mnCluster struct {
	t      *testing.T
	c      *slurmtest.Cluster
	redis  *redistest.Server
	url    string // Redis as the hosts reach it
	dir    string
	ctl    string
	events string
	stores map[string]*store.Store
}

func (m *mnCluster) nodeDir(node string) string { return filepath.Join(m.dir, node) }
func (m *mnCluster) cfg(node string) string     { return filepath.Join(m.nodeDir(node), "config.toml") }
func (m *mnCluster) state(node string) string   { return filepath.Join(m.nodeDir(node), "state") }
func (m *mnCluster) fake(node string) string    { return filepath.Join(m.nodeDir(node), "gpus.json") }

func newMNCluster(t *testing.T) *mnCluster {
	t.Helper()
	testreq.NoError(t, slurmtest.Available())
	testreq.NoError(t, slurmtest.NetAvailable())
	_, err := slurmtest.EnsureUser(jobUser)
	require.NoError(t, err)
	net, err := slurmtest.NewNet(append(slices.Clone(mnNodes), mnLogin)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, net.Remove()) })

	// One Redis for the whole cluster, reachable on the bridge.
	rs, err := redistest.Start(redistest.Options{Args: []string{"--bind", "127.0.0.1", net.Gateway, "--protected-mode", "no"}})
	require.NoError(t, err)
	t.Cleanup(rs.Stop)

	dir, err := os.MkdirTemp("", "canhazgpu-mn-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	m := &mnCluster{t: t, redis: rs, url: fmt.Sprintf("redis://%s:%d/0", net.Gateway, rs.Port), dir: dir,
		ctl: filepath.Join(dir, "ctl"), events: filepath.Join(dir, "events.log"), stores: map[string]*store.Store{}}
	require.NoError(t, os.Mkdir(m.ctl, 0o755))
	for _, h := range append(slices.Clone(mnNodes), mnLogin) {
		require.NoError(t, os.Mkdir(m.nodeDir(h), 0o755))
		m.writeGPUs(h, nil)
	}

	logged := func(name, program string) string {
		p := filepath.Join(dir, name+".sh")
		script := fmt.Sprintf("#!/bin/sh\nout=$(CANHAZGPU_CONFIG=%s/$SLURMD_NODENAME/config.toml %s 2>&1)\nrc=$?\n"+
			"echo \"%s node=$SLURMD_NODENAME host=$(hostname) job=$SLURM_JOB_ID rc=$rc out=$out\" >> %s\n"+
			"[ -z \"$out\" ] || echo \"$out\"\nexit $rc\n", dir, bin(program), name, m.events)
		require.NoError(t, os.WriteFile(p, []byte(script), 0o755))
		return p
	}
	taskProlog := filepath.Join(dir, "taskprolog.sh")
	require.NoError(t, os.WriteFile(taskProlog,
		[]byte(fmt.Sprintf("#!/bin/sh\nCANHAZGPU_CONFIG=%s/$SLURMD_NODENAME/config.toml exec %s\n", dir, bin("canhazgpu-prolog"))), 0o755))
	opts := slurmtest.Options{Net: net, Nodes: mnNodes, GPUs: mnGPUs, CPUs: 8, PrologFlags: "-", SpoolDir: "spool/%n",
		Prolog: logged("prolog", "canhazgpu-prolog"), Epilog: logged("epilog", "canhazgpu-epilog"), TaskProlog: taskProlog}
	for _, line := range contribSlurmConf(t) {
		if key, _, _ := strings.Cut(line, "="); key != "Prolog" && key != "Epilog" && key != "TaskProlog" {
			opts.Extra = append(opts.Extra, line)
		}
	}
	m.c = startCluster(t, opts)

	scontrol, err := exec.LookPath("scontrol")
	require.NoError(t, err)
	for _, h := range append(slices.Clone(mnNodes), mnLogin) {
		gres, err := json.Marshal(m.c.GresDevices)
		require.NoError(t, err)
		text := fmt.Sprintf("node = %q\n\n[redis]\nurl = %q\n\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n\n"+
			"[slurm]\ngres_devices = %s\nstate_dir = %q\ndeadline = \"3s\"\n\n"+
			"[health]\naction = \"drain\"\nscontrol = %q\nscontrol_timeout = \"5s\"\ntimeout = \"20s\"\n",
			h, m.url, m.fake(h), gres, m.state(h), scontrol)
		require.NoError(t, os.WriteFile(m.cfg(h), []byte(text), 0o644))
	}
	// Each node registers itself from its own host, as the package does at
	// installation.
	for _, n := range mnNodes {
		r := m.onHost(n, nil, bin("canhazgpu"), "admin", "--register")
		require.Equal(t, 0, r.rc, "%s: %s%s", n, r.stdout, r.stderr)
		st, err := store.Open(context.Background(), store.Conn{URL: rs.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second},
			n, store.Options{})
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		m.stores[n] = st
	}
	return m
}

// onHost runs a program on a host with that host's config file.
func (m *mnCluster) onHost(host string, env []string, argv ...string) result {
	m.t.Helper()
	cmd := m.c.OnHost(host, append([]string{"CANHAZGPU_CONFIG=" + m.cfg(host), "SLURMD_NODENAME=" + host}, env...), argv...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	require.NoError(m.t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		m.t.Fatalf("%v on %s did not finish", argv, host)
	}
	rc := 0
	if ee, ok := err.(*exec.ExitError); ok {
		rc = ee.ExitCode()
	} else {
		require.NoError(m.t, err)
	}
	return result{rc, out.String(), errOut.String()}
}

// healthCheck runs canhazgpu-healthcheck on a node's host, as slurmd's
// HealthCheckProgram would there.
func (m *mnCluster) healthCheck(node string) result {
	m.t.Helper()
	return m.onHost(node, nil, bin("canhazgpu-healthcheck"))
}

// writeGPUs describes a host's GPUs (none on the login host); busy maps a
// GPU's index to a process using 2 GB of it without a reservation.
func (m *mnCluster) writeGPUs(host string, busy map[int]string) {
	m.t.Helper()
	gpus := []map[string]any{}
	if host != mnLogin {
		for i := range mnGPUs {
			procs := []map[string]any{}
			if user, ok := busy[i]; ok {
				procs = append(procs, map[string]any{"pid": 4242, "name": "python3", "user": user, "uid": 1001,
					"used_memory_mb": 2048, "cmdline": []string{"python3", "train.py"}, "job_id": ""})
			}
			gpus = append(gpus, map[string]any{"index": i, "uuid": mnUUID(mnNum(host), i), "processes": procs})
		}
	}
	data, err := json.Marshal(map[string]any{"gpus": gpus})
	require.NoError(m.t, err)
	tmp := m.fake(host) + ".tmp"
	require.NoError(m.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(m.t, os.Rename(tmp, m.fake(host)))
}

// on is the cluster as seen from a subtest.
func (m *mnCluster) on(t *testing.T) *mnCluster {
	c := *m
	c.t = t
	return &c
}

func (m *mnCluster) submit(args ...string) string {
	m.t.Helper()
	id, err := m.c.Submit(jobUser, args...)
	require.NoError(m.t, err)
	return id
}

// waitScript waits for the test's go-ahead (ctl/go.<job>).
func (m *mnCluster) waitScript(before string) string {
	return fmt.Sprintf("%s\nwhile [ ! -e %s/go.$SLURM_JOB_ID ]; do sleep 0.1; done\necho END\n", before, m.ctl)
}

func (m *mnCluster) letGo(id string) {
	m.t.Helper()
	require.NoError(m.t, os.WriteFile(filepath.Join(m.ctl, "go."+id), nil, 0o644))
}

type mnEvent struct{ Program, Node, Host, Job, RC, Out string }

var mnEventLine = regexp.MustCompile(`^(prolog|epilog) node=(\S*) host=(\S*) job=(\S*) rc=(\S*) out=(.*)$`)

func (m *mnCluster) eventsOf(program, job string) []mnEvent {
	data, _ := os.ReadFile(m.events)
	var out []mnEvent
	for line := range strings.SplitSeq(string(data), "\n") {
		if e := mnEventLine.FindStringSubmatch(line); e != nil && e[1] == program && e[4] == job {
			out = append(out, mnEvent{e[1], e[2], e[3], e[4], e[5], e[6]})
		}
	}
	return out
}

// waitEvents waits until the program ran for the job on n nodes.
func (m *mnCluster) waitEvents(program, job string, n int) []mnEvent {
	m.t.Helper()
	var evs []mnEvent
	require.Eventually(m.t, func() bool { evs = m.eventsOf(program, job); return len(evs) >= n },
		60*time.Second, 50*time.Millisecond, "%s of job %s ran on fewer than %d nodes", program, job, n)
	return evs
}

// finish waits for the job to end as state and its Epilog on n nodes.
func (m *mnCluster) finish(id, state string, n int) {
	m.t.Helper()
	job, err := m.c.WaitJob(id, 60*time.Second, slurmtest.JobState("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"))
	require.NoError(m.t, err)
	require.Equal(m.t, state, job["JobState"], "job %s: %v\n%s", id, job, m.c.Output(id))
	m.waitEvents("epilog", id, n)
}

// jobNodes are the nodes Slurm gave the job.
func (m *mnCluster) jobNodes(id string) []string {
	m.t.Helper()
	job, err := m.c.Job(id)
	require.NoError(m.t, err)
	out, err := m.c.Run("scontrol", "show", "hostnames", job["NodeList"])
	require.NoError(m.t, err)
	return strings.Fields(out)
}

// held maps each node to the GPUs (UUIDs) the store holds for the Slurm job.
func (m *mnCluster) held(job string) map[string][]string {
	m.t.Helper()
	out := map[string][]string{}
	for _, n := range mnNodes {
		snap, err := m.stores[n].Snapshot(context.Background())
		require.NoError(m.t, err)
		for uuid, r := range snap.Reservations {
			if r.Kind == allocator.KindSlurm && r.JobID == job {
				out[n] = append(out[n], uuid)
			}
		}
		slices.Sort(out[n])
	}
	return out
}

// requireClean: every node in service, no Slurm reservation, job file or
// pending marker anywhere.
func (m *mnCluster) requireClean() {
	m.t.Helper()
	for _, n := range mnNodes {
		_, _, err := m.c.WaitNodeOf(n, 30*time.Second, func(st, reason string) bool { return st == "idle" && reason == "none" })
		require.NoError(m.t, err)
		snap, err := m.stores[n].Snapshot(context.Background())
		require.NoError(m.t, err)
		for uuid, r := range snap.Reservations {
			require.NotEqual(m.t, allocator.KindSlurm, r.Kind, "%s: left over: %s %+v", n, uuid, r)
		}
		ids, err := jobstate.Jobs(m.state(n), allocator.KindSlurm)
		require.NoError(m.t, err)
		require.Empty(m.t, ids, "%s: job files left over", n)
		markers, err := jobstate.Markers(m.state(n))
		require.NoError(m.t, err)
		require.Empty(m.t, markers, "%s: pending markers", n)
	}
}

// TestMultiNode runs canhazgpu on a cluster of three Slurm nodes, each a
// host of its own (network and UTS namespace, address on a private
// bridge), with one shared Redis, plus a login host without GPUs. One
// cluster serves every case; each leaves it clean for the next.
func TestMultiNode(t *testing.T) {
	m := newMNCluster(t)

	t.Run("nodes", func(t *testing.T) {
		out, err := m.c.Run("sinfo", "-h", "-N", "-o", "%N %T %G")
		require.NoError(t, err)
		require.Equal(t, "mn1 idle gpu:4\nmn2 idle gpu:4\nmn3 idle gpu:4", strings.TrimSpace(out))
	})

	t.Run("two-node job", func(t *testing.T) {
		m := m.on(t)
		id := m.submit("-N2", "--gres=gpu:2", "--wrap", m.waitScript(
			`srun -l sh -c 'echo "STEP node=$SLURMD_NODENAME host=$(hostname) cvd=$CUDA_VISIBLE_DEVICES"'`))
		evs := m.waitEvents("prolog", id, 2)
		nodes := m.jobNodes(id)
		require.Len(t, nodes, 2)
		var ran []string
		for _, e := range evs {
			require.Equal(t, "0", e.RC, "%+v", e)
			require.Equal(t, e.Node, e.Host, "the Prolog runs on the node's own host")
			ran = append(ran, e.Node)
		}
		slices.Sort(ran)
		require.Equal(t, nodes, ran, "one Prolog per node")
		require.Eventually(t, func() bool { return strings.Count(m.c.Output(id), "STEP ") == 2 },
			60*time.Second, 50*time.Millisecond, "output: %q", m.c.Output(id))
		for _, n := range nodes {
			require.Contains(t, m.c.Output(id), fmt.Sprintf("STEP node=%s host=%s cvd=0,1", n, n))
		}
		want := map[string][]string{}
		for _, n := range nodes {
			want[n] = []string{mnUUID(mnNum(n), 0), mnUUID(mnNum(n), 1)}
		}
		require.Equal(t, want, m.held(id), "two GPUs on each node, each node's own")

		m.letGo(id)
		m.finish(id, "COMPLETED", 2)
		for _, e := range m.eventsOf("epilog", id) {
			require.Equal(t, "0", e.RC, "%+v", e)
			require.Contains(t, e.Out, "released")
		}
		require.Empty(t, m.held(id))
		m.requireClean()
	})

	t.Run("concurrent jobs across nodes never share a GPU", func(t *testing.T) {
		m := m.on(t)
		mnConcurrent(t, m)
	})

	t.Run("unreserved use drains that node only", func(t *testing.T) {
		m := m.on(t)
		m.writeGPUs("mn2", map[int]string{1: "bob"})
		r := m.healthCheck("mn2")
		require.Equal(t, 1, r.rc, r.stdout+r.stderr)
		require.Contains(t, r.stdout, "problem: GPU 1 used by bob (pid 4242) without reservation")
		st, reason, err := m.c.NodeStateOf("mn2")
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(st, "drain"), st)
		require.Equal(t, "canhazgpu: GPU 1 used by bob (pid 4242) without reservation", reason)
		for _, n := range []string{"mn1", "mn3"} {
			r := m.healthCheck(n)
			require.Equal(t, 0, r.rc, r.stdout+r.stderr)
			st, reason, err := m.c.NodeStateOf(n)
			require.NoError(t, err)
			require.Equal(t, "idle", st, n)
			require.Equal(t, "none", reason, n)
		}
		// Slurm keeps the drained node out: a job for every node's GPUs
		// runs on the other two.
		id := m.submit("-N2", "--gres=gpu:1", "--wrap", "true")
		m.finish(id, "COMPLETED", 2)
		require.Equal(t, []string{"mn1", "mn3"}, m.jobNodes(id))

		m.writeGPUs("mn2", nil)
		r = m.healthCheck("mn2")
		require.Equal(t, 0, r.rc, r.stdout+r.stderr)
		m.requireClean()
	})

	t.Run("status --all-nodes from the login host", func(t *testing.T) {
		m := m.on(t)
		_, err := m.stores["mn3"].Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
			Kind: allocator.KindManual, User: "alice", UID: 4242, GPUs: []string{mnUUID(3, 2)}, Lease: time.Hour, Note: "interactive"})
		require.NoError(t, err)
		defer func() {
			_, err := m.stores["mn3"].Release(context.Background(), allocator.Release{RequestID: allocator.NewRequestID(), User: "alice"})
			require.NoError(t, err)
		}()
		r := m.onHost(mnLogin, nil, bin("canhazgpu"), "status", "--all-nodes")
		require.Equal(t, 0, r.rc, r.stderr)
		var headers []string
		for line := range strings.SplitSeq(r.stdout, "\n") {
			if strings.HasPrefix(line, "mn") || strings.HasPrefix(line, mnLogin) {
				headers = append(headers, line)
			}
		}
		require.Equal(t, []string{
			"mn1 (reservations from the store; GPU usage is seen only on mn1 itself)",
			"mn2 (reservations from the store; GPU usage is seen only on mn2 itself)",
			"mn3 (reservations from the store; GPU usage is seen only on mn3 itself)",
		}, headers, r.stdout)
		require.Regexp(t, `(?m)^2 .* alice .* manual`, r.stdout, "mn3's reservation")

		// On a node itself, that node is "this node".
		r = m.onHost("mn2", nil, bin("canhazgpu"), "status", "--all-nodes")
		require.Equal(t, 0, r.rc, r.stderr)
		require.Contains(t, r.stdout, "mn2 (this node)\n")
	})

	t.Run("slurmd killed mid-job and restarted", func(t *testing.T) {
		m := m.on(t)
		id := m.submit("-w", "mn3", "--gres=gpu:2", "--wrap", m.waitScript(""))
		m.waitEvents("prolog", id, 1)
		_, err := m.c.WaitJob(id, 60*time.Second, slurmtest.JobState("RUNNING"))
		require.NoError(t, err)
		require.Equal(t, map[string][]string{"mn3": {mnUUID(3, 0), mnUUID(3, 1)}}, m.held(id))

		require.NoError(t, m.c.KillSlurmd("mn3"))
		// The job's step daemon outlives slurmd and finishes the job; its
		// Epilog cannot run while slurmd is gone.
		m.letGo(id)
		_, err = m.c.WaitJob(id, 60*time.Second, slurmtest.JobState("COMPLETING", "COMPLETED"))
		require.NoError(t, err)
		require.NotEmpty(t, m.held(id))

		require.NoError(t, m.c.StartSlurmd("mn3"))
		_, _, err = m.c.WaitNodeOf("mn3", 60*time.Second, func(st, _ string) bool { return slurmtest.Ready(st) })
		require.NoError(t, err)
		// Whatever the Epilog did not release, the health check settles.
		require.Eventually(t, func() bool {
			r := m.healthCheck("mn3")
			return r.rc == 0 && len(m.held(id)) == 0
		}, 90*time.Second, time.Second, "GPUs of job %s still held on mn3: %v", id, m.held(id))
		m.finish(id, "COMPLETED", 1)
		m.requireClean()
	})
}

// mnConcurrent runs rounds of two-GPU jobs on all nodes at once (six at a
// time fill the cluster) while watching the store: each job holds
// exactly its Slurm GPUs on its own node, jobs that overlap on a node
// never hold the same GPU, and every grant is released once.
func mnConcurrent(t *testing.T, m *mnCluster) {
	const rounds, perRound = 4, 6
	start := time.Now()
	script := `echo "BATCH node=$SLURMD_NODENAME gpus=$SLURM_JOB_GPUS start=$(date +%s%N)"; sleep 1; echo "STEP0 end=$(date +%s%N)"`

	var mu sync.Mutex
	observed := map[string]map[string]bool{} // job → node/GPU seen held for it
	stop, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for _, n := range mnNodes {
				snap, err := m.stores[n].Snapshot(context.Background())
				if err != nil {
					continue
				}
				mu.Lock()
				for uuid, r := range snap.Reservations {
					if observed[r.JobID] == nil {
						observed[r.JobID] = map[string]bool{}
					}
					observed[r.JobID][n+"/"+uuid] = true
				}
				mu.Unlock()
			}
		}
	}()

	var ids []string
	for range rounds {
		var round []string
		for range perRound {
			round = append(round, m.submit("--gres=gpu:2", "--wrap", script))
		}
		for _, id := range round {
			m.finish(id, "COMPLETED", 1)
		}
		ids = append(ids, round...)
	}
	close(stop)
	<-watched

	spans := map[string]jobSpan{}
	perNode := map[string]int{}
	for _, id := range ids {
		out := parseOutput(m.c.Output(id))
		require.NotNil(t, out["STEP0"], "job %s output: %q", id, m.c.Output(id))
		sp := jobSpan{node: out["BATCH"]["node"], gpus: map[string]bool{}}
		perNode[sp.node]++
		for k := range strings.SplitSeq(out["BATCH"]["gpus"], ",") {
			i, err := strconv.Atoi(k)
			require.NoError(t, err)
			sp.gpus[sp.node+"/"+mnUUID(mnNum(sp.node), i)] = true
		}
		require.Len(t, sp.gpus, 2)
		sp.start, _ = strconv.ParseInt(out["BATCH"]["start"], 10, 64)
		sp.end, _ = strconv.ParseInt(out["STEP0"]["end"], 10, 64)
		spans[id] = sp
		mu.Lock()
		require.Equal(t, sp.gpus, observed[id], "job %s: the store held exactly its GPUs on its node", id)
		mu.Unlock()
	}
	require.Len(t, perNode, len(mnNodes), "jobs ran on every node: %v", perNode)
	overlaps := requireNoSharedGPU(t, spans)
	total := 0
	for _, n := range mnNodes {
		hist, err := m.stores[n].History(context.Background(), start)
		require.NoError(t, err)
		for _, r := range hist {
			require.Equal(t, "released", r.End, "%s: %+v", n, r)
		}
		total += len(hist)
	}
	require.Equal(t, 2*len(ids), total, "every grant released once")
	m.requireClean()
	t.Logf("%d jobs on %v, %d overlapping pairs, %s", len(ids), perNode, overlaps, time.Since(start).Round(time.Millisecond))
}
