package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/testreq"
)

func init() {
	programs["canhazgpu-healthcheck"] = "canhazgpu/cmd/canhazgpu-healthcheck"
}

const (
	hcNode    = "hcnode"
	hcJobUser = "hcjob"
	hcReason  = "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"
)

func hcUUID(i int) string { return fmt.Sprintf("GPU-4ea17400-0000-4000-8000-%012d", i) }

// hcSite is a Slurm node checked by canhazgpu-healthcheck: the cluster,
// the config file the check reads, the fake GPU file, and a store view.
type hcSite struct {
	t     *testing.T
	c     *slurmtest.Cluster
	dir   string
	cfg   string
	fake  string
	state string
	// confFile holds the cluster's slurm.conf path for the
	// HealthCheckProgram wrapper, which is written before the cluster is.
	confFile string
	hcLog    string // one line per run of the wrapper
	st       *store.Store
	// checkEnv is added to check's environment.
	checkEnv []string
}

// newHCSite starts a cluster. With interval > 0, slurmd itself runs the
// check as HealthCheckProgram every interval seconds, through a wrapper
// that adds what Slurm 22.05 does not give it: the config file and
// SLURM_CONF.
func newHCSite(t *testing.T, interval int) *hcSite {
	t.Helper()
	testreq.NoError(t, slurmtest.Available())
	dir, err := os.MkdirTemp("", "canhazgpu-hc-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	h := &hcSite{t: t, dir: dir, cfg: filepath.Join(dir, "config.toml"), fake: filepath.Join(dir, "gpus.json"),
		state: filepath.Join(dir, "state"), confFile: filepath.Join(dir, "slurm-conf-path"), hcLog: filepath.Join(dir, "hc.log")}
	h.gpus(nil)
	// Where Debian's slurmd package spools: the check finds it by asking
	// Slurm, as [health] slurmd_spool_dir is left to its default.
	opts := slurmtest.Options{Node: hcNode, GPUs: 4, CPUs: 4, SpoolDir: "var/lib/slurm/slurmd"}
	if interval > 0 {
		wrapper := filepath.Join(dir, "healthcheck.sh")
		script := fmt.Sprintf("#!/bin/sh\n[ -r %[1]s ] && export SLURM_CONF=\"$(cat %[1]s)\"\n"+
			"out=$(CANHAZGPU_CONFIG=%[2]s %[3]s 2>&1)\n"+
			"echo \"rc=$? node=$SLURMD_NODENAME out=$(echo \"$out\" | tr '\\n' '|')\" >> %[4]s\n",
			h.confFile, h.cfg, bin("canhazgpu-healthcheck"), h.hcLog)
		require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o755))
		opts.HealthCheckProgram, opts.HealthCheckInterval = wrapper, interval
	}
	c := startCluster(t, opts)
	h.c = c
	require.NoError(t, os.WriteFile(h.confFile, []byte(c.Conf), 0o644))
	h.configure()
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second},
		hcNode, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	h.st = st
	return h
}

func (h *hcSite) configure() {
	h.t.Helper()
	scontrol, err := exec.LookPath("scontrol")
	require.NoError(h.t, err)
	text := fmt.Sprintf("node = %q\n\n[redis]\nurl = %q\n\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n\n"+
		"[slurm]\nstate_dir = %q\ndeadline = \"1s\"\n\n"+
		"[health]\naction = \"drain\"\nscontrol = %q\nscontrol_timeout = \"2s\"\ntimeout = \"10s\"\n",
		hcNode, srv.URL(), h.fake, h.state, scontrol)
	tmp := h.cfg + ".tmp"
	require.NoError(h.t, os.WriteFile(tmp, []byte(text), 0o644))
	require.NoError(h.t, os.Rename(tmp, h.cfg))
}

// gpus writes the fake GPU file: 4 GPUs, processes by index.
func (h *hcSite) gpus(procs map[int][]map[string]any) {
	h.t.Helper()
	var list []map[string]any
	for i := range 4 {
		p := procs[i]
		if p == nil {
			p = []map[string]any{}
		}
		list = append(list, map[string]any{"index": i, "uuid": hcUUID(i), "processes": p})
	}
	data, err := json.Marshal(map[string]any{"gpus": list})
	require.NoError(h.t, err)
	tmp := h.fake + ".tmp"
	require.NoError(h.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(h.t, os.Rename(tmp, h.fake))
}

// bobOnGPU1 is unreserved use: bob's process holds 2 GB of GPU 1.
func (h *hcSite) bobOnGPU1() {
	h.gpus(map[int][]map[string]any{1: {{"pid": 4242, "name": "python3", "user": "bob", "uid": 1001,
		"used_memory_mb": 2048, "cmdline": []string{"python3", "train.py"}, "job_id": ""}}})
}

// check runs the program with the environment Slurm's HealthCheckProgram
// gets (SLURMD_NODENAME only) plus what a site's wrapper adds.
func (h *hcSite) check(args ...string) (code int, out string, took time.Duration) {
	h.t.Helper()
	return runHealthCheck(h.t, append([]string{"SLURMD_NODENAME=" + hcNode, "CANHAZGPU_CONFIG=" + h.cfg, "SLURM_CONF=" + h.c.Conf}, h.checkEnv...), args...)
}

// runHealthCheck runs canhazgpu-healthcheck with exactly env and returns
// its exit status, its output (stdout and stderr) and how long it took.
func runHealthCheck(t testing.TB, env []string, args ...string) (code int, out string, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("canhazgpu-healthcheck"), args...)
	cmd.Env = env
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	code = cmd.ProcessState.ExitCode()
	if code < 0 {
		require.NoError(t, err)
	}
	return code, b.String(), took
}

// runs counts the wrapper's runs so far.
func (h *hcSite) runs() []string {
	data, _ := os.ReadFile(h.hcLog)
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitRuns waits until slurmd ran the check n more times than before.
func (h *hcSite) waitRuns(before, n int) []string {
	h.t.Helper()
	var got []string
	require.Eventually(h.t, func() bool {
		got = h.runs()
		return len(got) >= before+n
	}, 60*time.Second, 100*time.Millisecond, "slurmd did not run the health check (runs: %q)", got)
	return got[before:]
}

func (h *hcSite) reserve(kind allocator.Kind, user, job, boot string, gpu int) {
	h.t.Helper()
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: kind, User: user, UID: 4300, JobID: job,
		BootID: boot, GPUs: []string{hcUUID(gpu)}}
	if !kind.Batch() {
		req.Lease = time.Hour
	}
	_, err := h.st.Allocate(context.Background(), req)
	require.NoError(h.t, err)
}

// holders maps GPU index to "kind user job" of its reservation.
func (h *hcSite) holders() map[int]string {
	h.t.Helper()
	snap, err := h.st.Snapshot(context.Background())
	require.NoError(h.t, err)
	out := map[int]string{}
	for uuid, r := range snap.Reservations {
		g, ok := snap.GPUByUUID(uuid)
		require.True(h.t, ok)
		out[g.Index] = fmt.Sprintf("%s %s %s", r.Kind, r.User, r.JobID)
	}
	return out
}

// TestHealthCheckProgram lets slurmd run canhazgpu-healthcheck as its
// HealthCheckProgram: unreserved use drains the node with a canhazgpu:
// reason, ending it undrains the node, and a node drained by hand for
// another reason stays drained either way.
func TestHealthCheckProgram(t *testing.T) {
	h := newHCSite(t, 1)
	first := h.waitRuns(len(h.runs()), 1)
	require.Contains(t, first[0], "node="+hcNode, "slurmd names the node")

	// The wrapper's runs begin before the config exists: wait for a clean one.
	require.Eventually(t, func() bool {
		r := h.runs()
		return len(r) > 0 && strings.HasPrefix(r[len(r)-1], "rc=0 ")
	}, 60*time.Second, 100*time.Millisecond, "no healthy run: %q", h.runs())

	h.bobOnGPU1()
	st, reason, err := h.c.WaitNode(60*time.Second, func(st, reason string) bool { return strings.HasPrefix(st, "drain") })
	require.NoError(t, err)
	require.Equal(t, hcReason, reason)
	require.Equal(t, "drained", st)
	snap, err := h.st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Flags, 1, "the store records the finding")

	h.gpus(nil)
	_, _, err = h.c.WaitNode(60*time.Second, func(st, reason string) bool { return st == "idle" && reason == "none" })
	require.NoError(t, err, "undrained once clean")

	_, err = h.c.Run("scontrol", "update", "NodeName="+hcNode, "State=DRAIN", "Reason=maintenance")
	require.NoError(t, err)
	h.bobOnGPU1()
	for _, run := range h.waitRuns(len(h.runs()), 3) {
		require.True(t, strings.HasPrefix(run, "rc=1 "), run)
	}
	_, reason, err = h.c.NodeState()
	require.NoError(t, err)
	require.Equal(t, "maintenance", reason, "another drain reason is never overwritten")
	require.Contains(t, h.runs()[len(h.runs())-1], `skip: node already has reason "maintenance": left as it is`)

	h.gpus(nil)
	for _, run := range h.waitRuns(len(h.runs()), 3) {
		require.True(t, strings.HasPrefix(run, "rc=0 "), run)
	}
	st, reason, err = h.c.NodeState()
	require.NoError(t, err)
	require.Equal(t, "drained", st, "another drain is never undrained")
	require.Equal(t, "maintenance", reason)
	require.NoError(t, h.c.Resume())
}

// TestHealthCheckSettlesAndOutlivesSlurm runs the check by hand on a live
// node whose slurmd spools where Debian's package does (found by asking
// Slurm): Slurm reservations of gone jobs are released, running jobs and
// interactive reservations kept; with slurmctld stopped it still finishes
// within its timeout and leaves nothing running.
func TestHealthCheckSettlesAndOutlivesSlurm(t *testing.T) {
	h := newHCSite(t, 0)
	_, err := slurmtest.EnsureUser(hcJobUser)
	require.NoError(t, err)
	boot, err := jobstate.BootID("")
	require.NoError(t, err)
	code, out, _ := h.check()
	require.Equal(t, 0, code, out)

	running, err := h.c.Submit(hcJobUser, "--wrap", "sleep 300")
	require.NoError(t, err)
	_, err = h.c.WaitJob(running, 60*time.Second, slurmtest.JobState("RUNNING"))
	require.NoError(t, err)
	// slurmstepd's socket for the batch step, as the check looks for it.
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.c.Spool, hcNode+"_"+running+".4294967291"))
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)
	finished, err := h.c.Submit(hcJobUser, "--wrap", "true")
	require.NoError(t, err)
	_, err = h.c.WaitJob(finished, 60*time.Second, slurmtest.JobState("COMPLETED"))
	require.NoError(t, err)

	// As the Prolog leaves them: reservation and job file. No Epilog runs
	// on this cluster, so the finished job's are left over.
	for gpu, job := range map[int]string{0: running, 2: finished} {
		h.reserve(allocator.KindSlurm, hcJobUser, job, boot, gpu)
		require.NoError(t, jobstate.WriteJob(h.state, allocator.KindSlurm, job, jobstate.JobFile{User: hcJobUser}))
	}
	h.reserve(allocator.KindSlurm, hcJobUser, "999999", boot, 1) // a job this node never ran
	h.reserve(allocator.KindManual, "alice", "", "", 3)

	// No Prolog is still at work: with [slurm] deadline at its least, every
	// reservation made before a check's process started is old enough to
	// judge, without waiting for the configured deadline to pass.
	h.checkEnv = []string{"CANHAZGPU_SLURM_DEADLINE=1ms"}
	code, out, _ = h.check()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "settled: released GPU 1 of slurm job 999999: the job no longer runs on this node\n")
	require.Contains(t, out, "settled: released GPU 2 of slurm job "+finished+": the job is COMPLETED in Slurm\n")
	require.Equal(t, map[int]string{0: "slurm " + hcJobUser + " " + running, 3: "manual alice "}, h.holders())

	// A spool dir that is not slurmd's: the check cannot see the job's
	// steps and says so, never "healthy"; the running job keeps its GPU.
	code, out, _ = runHealthCheck(t, []string{"SLURMD_NODENAME=" + hcNode, "CANHAZGPU_CONFIG=" + h.cfg,
		"SLURM_CONF=" + h.c.Conf, "CANHAZGPU_HEALTH_SLURMD_SPOOL_DIR=/nonexistent/slurmd"})
	require.Equal(t, 2, code, out)
	require.Contains(t, out, "Error: could not check node "+hcNode+": cannot judge slurm jobs: the slurmd spool directory "+
		"/nonexistent/slurmd does not exist: set [health] slurmd_spool_dir to the SlurmdSpoolDir of slurm.conf\n")
	require.NotContains(t, out, "healthy")
	require.Equal(t, map[int]string{0: "slurm " + hcJobUser + " " + running, 3: "manual alice "}, h.holders())

	_, err = h.c.Run("scancel", running)
	require.NoError(t, err)
	_, err = h.c.WaitJob(running, 60*time.Second, slurmtest.JobState("CANCELLED"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(h.c.Spool, hcNode+"_"+running+".*"))
		return len(m) == 0
	}, 30*time.Second, 50*time.Millisecond, "the step sockets go with the job")
	code, out, _ = h.check()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "settled: released GPU 0 of slurm job "+running+": the job is CANCELLED in Slurm\n")
	require.Equal(t, map[int]string{3: "manual alice "}, h.holders(), "the interactive reservation stays")

	// slurmctld stops: scontrol cannot answer, the check skips its Slurm
	// actions, reports the violation and ends within its timeout.
	stopController(t, h.c)
	h.bobOnGPU1()
	code, out, took := h.check()
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "problem: GPU 1 used by bob (pid 4242) without reservation\n")
	require.Contains(t, out, "skip: Slurm actions skipped this round: scontrol show: no answer within 2s\n")
	require.Less(t, took, 10*time.Second, "[health] timeout")
	require.Empty(t, processesWithEnv("CANHAZGPU_CONFIG="+h.cfg), "no scontrol left running")
}

// stopController stops the cluster's slurmctld by the pid in its pid file,
// after checking the pid is that program.
func stopController(t *testing.T, c *slurmtest.Cluster) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.Dir, "run", "slurmctld.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	require.NoError(t, err)
	want, err := exec.LookPath("slurmctld")
	require.NoError(t, err)
	want, err = filepath.EvalSymlinks(want) // Debian links it to slurmctld-wlm
	require.NoError(t, err)
	require.Equal(t, want, exe)
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	require.Eventually(t, func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		_, rest, _ := strings.Cut(string(stat), ") ")
		return strings.HasPrefix(rest, "Z")
	}, 30*time.Second, 50*time.Millisecond, "slurmctld did not stop")
}

// processesWithEnv lists live processes whose environment holds kv.
func processesWithEnv(kv string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), []byte("\x00"+kv+"\x00")) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err == nil {
			if _, rest, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(rest, "Z") {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}
