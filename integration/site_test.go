package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/testreq"
)

// site is one Slurm node running canhazgpu: the cluster, the config file
// the programs read, wrappers that point them at it, and a store view.
type site struct {
	t      testing.TB
	c      *slurmtest.Cluster
	dir    string // world-readable: the TaskProlog reads the config as the job user
	cfg    string
	state  string // [slurm] state_dir
	ctl    string // go.<job>.<restart> files let waiting jobs finish
	events string // one line per Prolog and Epilog run, written by the wrappers
	fake   string
	amdSMI string // with an amd-smi (a stub), the node is an AMD node
	st     *store.Store
	user   string
	uid    int
	// keepsReason: this Slurm keeps a node's reason when it is resumed
	// (24.11 does, 22.05 clears it), so an idle node may show one.
	keepsReason bool
}

const (
	siteNode = "chgnode"
	siteGPUs = 8
	jobUser  = "chgjob"
)

// The fake GPUs: NVML index i has minor (3i+1) mod 8, so Slurm's index k
// (device file nvidia<k>, minor k) is a different NVML index, as on boards
// where PCI order and minor numbers disagree.
func siteMinor(i int) int { return (3*i + 1) % siteGPUs }

func siteUUID(i int) string { return fmt.Sprintf("GPU-c1a55e00-0000-4000-8000-%012d", i) }

// nvmlOf is the NVML index behind Slurm's index k.
func nvmlOf(k int) int {
	for i := range siteGPUs {
		if siteMinor(i) == k {
			return i
		}
	}
	panic("no GPU with minor " + fmt.Sprint(k))
}

func slurmUUID(k int) string { return siteUUID(nvmlOf(k)) }

// newSite starts the site's cluster with the options tweak changes (a
// Slurm root, other PrologFlags, cgroups).
func newSite(t testing.TB, tweak ...func(*slurmtest.Options)) *site {
	t.Helper()
	testreq.NoError(t, slurmtest.Available())
	uid, err := slurmtest.EnsureUser(jobUser)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "canhazgpu-site-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	s := &site{t: t, dir: dir, cfg: filepath.Join(dir, "config.toml"), state: filepath.Join(dir, "state"),
		ctl: filepath.Join(dir, "ctl"), events: filepath.Join(dir, "events.log"), fake: filepath.Join(dir, "gpus.json"),
		user: jobUser, uid: uid}
	require.NoError(t, os.Mkdir(s.ctl, 0o755))
	s.writeFakeGPUs(nil)

	// Slurm runs Prolog, Epilog and TaskProlog with an environment of its
	// own: wrappers name the config file. The Prolog and Epilog wrappers
	// also log each run and its exit status for the tests.
	logged := func(name, program string) string {
		p := filepath.Join(dir, name+".sh")
		// The cgroups it ran in go to <name>.cgroup.<job>.
		script := fmt.Sprintf("#!/bin/sh\ncat /proc/self/cgroup > %s/%s.cgroup.$SLURM_JOB_ID\nout=$(CANHAZGPU_CONFIG=%s %s 2>&1)\nrc=$?\n"+
			"echo \"%s job=$SLURM_JOB_ID restart=$SLURM_JOB_RESTART_COUNT rc=$rc out=$out\" >> %s\n"+
			"[ -z \"$out\" ] || echo \"$out\"\nexit $rc\n", dir, name, s.cfg, bin(program), name, s.events)
		require.NoError(t, os.WriteFile(p, []byte(script), 0o755))
		return p
	}
	taskProlog := filepath.Join(dir, "taskprolog.sh")
	require.NoError(t, os.WriteFile(taskProlog,
		[]byte(fmt.Sprintf("#!/bin/sh\nCANHAZGPU_CONFIG=%s exec %s\n", s.cfg, bin("canhazgpu-prolog"))), 0o755))

	// The slurm.conf lines admins are told to use, with the wrappers in
	// place of the installed programs.
	opts := slurmtest.Options{Node: siteNode, GPUs: siteGPUs, CPUs: 8, PrologFlags: "-"}
	wrappers := map[string]struct{ installed, wrapper string }{
		"Prolog":     {"/usr/libexec/canhazgpu/canhazgpu-prolog", logged("prolog", "canhazgpu-prolog")},
		"TaskProlog": {"/usr/libexec/canhazgpu/canhazgpu-prolog", taskProlog},
		"Epilog":     {"/usr/libexec/canhazgpu/canhazgpu-epilog", logged("epilog", "canhazgpu-epilog")},
	}
	for _, line := range contribSlurmConf(t) {
		key, value, _ := strings.Cut(line, "=")
		w, ok := wrappers[key]
		if !ok {
			opts.Extra = append(opts.Extra, line)
			continue
		}
		require.Equal(t, w.installed, value, "contrib/slurm/slurm.conf: %s", key)
		switch key {
		case "Prolog":
			opts.Prolog = w.wrapper
		case "TaskProlog":
			opts.TaskProlog = w.wrapper
		case "Epilog":
			opts.Epilog = w.wrapper
		}
		delete(wrappers, key)
	}
	require.Empty(t, wrappers, "contrib/slurm/slurm.conf lacks these settings")
	for _, f := range tweak {
		f(&opts)
	}

	s.c = startCluster(t, opts)
	s.configure()
	v, err := s.c.Version()
	require.NoError(t, err)
	s.keepsReason = !strings.HasPrefix(v, "slurm-wlm 22.")

	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second},
		siteNode, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	s.st = st
	return s
}

// contribSlurmConf reads the settings of contrib/slurm/slurm.conf.
func contribSlurmConf(t testing.TB) []string {
	data, err := os.ReadFile(filepath.Join("..", "contrib", "slurm", "slurm.conf"))
	require.NoError(t, err)
	var lines []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return lines
}

// writeFakeGPUs describes the node's GPUs. busy maps a GPU's UUID to the
// Slurm job whose process, run by the site's job user, uses 4 GB of it.
// The file is replaced atomically: programs of running jobs read it.
func (s *site) writeFakeGPUs(busy map[string]string) {
	type proc struct {
		PID     int      `json:"pid"`
		Name    string   `json:"name"`
		User    string   `json:"user"`
		UID     int      `json:"uid"`
		MB      int64    `json:"used_memory_mb"`
		Cmdline []string `json:"cmdline"`
		JobID   string   `json:"job_id"`
	}
	type fake struct {
		Index     int    `json:"index"`
		UUID      string `json:"uuid"`
		Minor     int    `json:"minor"`
		Name      string `json:"name"`
		Processes []proc `json:"processes"`
	}
	var gpus []fake
	for i := range siteGPUs {
		g := fake{Index: i, UUID: siteUUID(i), Minor: siteMinor(i), Name: "NVIDIA H100 80GB HBM3", Processes: []proc{}}
		if job, ok := busy[g.UUID]; ok {
			g.Processes = append(g.Processes, proc{PID: 7000 + i, Name: "python3", User: s.user, UID: s.uid, MB: 4096,
				Cmdline: []string{"python3", "train.py"}, JobID: job})
		}
		gpus = append(gpus, g)
	}
	data, err := json.Marshal(map[string]any{"gpus": gpus})
	require.NoError(s.t, err)
	tmp := s.fake + ".tmp"
	require.NoError(s.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(s.t, os.Rename(tmp, s.fake))
}

// configure writes the config file the programs read at every run, with
// [slurm] settings such as `placement = "canhazgpu"` on top of the site's.
func (s *site) configure(slurm ...string) {
	s.t.Helper()
	devices, provider := s.c.GresDevices, fmt.Sprintf("provider = \"fake\"\nfake_file = %q", s.fake)
	if s.amdSMI != "" {
		// Render nodes in gres.conf's order; gres.conf's own files stand
		// in for them, as only the numbers in the names are read.
		devices = nil
		for k := range s.c.GresDevices {
			devices = append(devices, fmt.Sprintf("/dev/dri/renderD%d", 128+k))
		}
		provider = fmt.Sprintf("provider = \"amdsmi\"\namdsmi_path = %q", s.amdSMI)
	}
	gres, err := json.Marshal(devices)
	require.NoError(s.t, err)
	text := fmt.Sprintf("node = %q\n\n[redis]\nurl = %q\n\n[gpu]\n%s\n\n"+
		"[slurm]\ngres_devices = %s\nstate_dir = %q\ndeadline = \"3s\"\n%s\n",
		siteNode, srv.URL(), provider, gres, s.state, strings.Join(slurm, "\n"))
	tmp := s.cfg + ".tmp"
	require.NoError(s.t, os.WriteFile(tmp, []byte(text), 0o644))
	require.NoError(s.t, os.Rename(tmp, s.cfg))
}

// jobScript prints what the batch step and an srun step see, then waits
// for the test's go-ahead (ctl/go.<job>.<restart>).
func (s *site) jobScript(steps ...string) string {
	if len(steps) == 0 {
		steps = []string{"srun"}
	}
	var b strings.Builder
	b.WriteString(`echo "BATCH restart=${SLURM_RESTART_COUNT:-0} gpus=${SLURM_JOB_GPUS:-none} cvd=${CUDA_VISIBLE_DEVICES-unset} order=${CUDA_DEVICE_ORDER-unset}"` + "\n")
	for i, srun := range steps {
		fmt.Fprintf(&b, `%s sh -c 'echo "STEP%d gpus=${SLURM_STEP_GPUS:-none} cvd=${CUDA_VISIBLE_DEVICES-unset} order=${CUDA_DEVICE_ORDER-unset}"'`+"\n", srun, i)
	}
	fmt.Fprintf(&b, `while [ ! -e %s/go.$SLURM_JOB_ID.${SLURM_RESTART_COUNT:-0} ]; do sleep 0.1; done`+"\n", s.ctl)
	b.WriteString("echo END\n")
	return b.String()
}

func (s *site) submit(args ...string) string {
	s.t.Helper()
	id, err := s.c.Submit(s.user, args...)
	require.NoError(s.t, err)
	return id
}

// letGo lets a waiting job attempt finish.
func (s *site) letGo(id string, restart int) {
	s.t.Helper()
	require.NoError(s.t, os.WriteFile(filepath.Join(s.ctl, fmt.Sprintf("go.%s.%d", id, restart)), nil, 0o644))
}

var outLine = regexp.MustCompile(`^(BATCH|STEP\d) (.*)$`)

// seen waits until the job printed every line named (BATCH, STEP0, …) and
// returns each line's fields.
func (s *site) seen(id string, names ...string) map[string]map[string]string {
	s.t.Helper()
	var got map[string]map[string]string
	require.Eventually(s.t, func() bool {
		got = parseOutput(s.c.Output(id))
		for _, n := range names {
			if got[n] == nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "job %s output: %q", id, s.c.Output(id))
	return got
}

func parseOutput(out string) map[string]map[string]string {
	got := map[string]map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		m := outLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fields := map[string]string{}
		for kv := range strings.FieldsSeq(m[2]) {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		got[m[1]] = fields
	}
	return got
}

// finish waits for the job to end and the Epilog of its last attempt to
// have run.
func (s *site) finish(id string, state string) {
	s.t.Helper()
	job, err := s.c.WaitJob(id, 60*time.Second, slurmtest.JobState("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"))
	require.NoError(s.t, err)
	require.Equal(s.t, state, job["JobState"], "job %s: %v\noutput:\n%s", id, job, s.c.Output(id))
	attempts, err := strconv.Atoi(job["Restarts"])
	require.NoError(s.t, err, "Restarts=%q", job["Restarts"])
	require.Eventually(s.t, func() bool { return len(s.eventsOf("epilog", id)) > attempts },
		60*time.Second, 50*time.Millisecond, "Epilog of job %s attempt %d", id, attempts)
}

// event is one logged Prolog or Epilog run.
type event struct {
	Program, Job, Restart, RC, Out string
}

var eventLine = regexp.MustCompile(`^(prolog|epilog) job=(\S*) restart=(\S*) rc=(\S*) out=(.*)$`)

func (s *site) eventsOf(program, job string) []event {
	data, _ := os.ReadFile(s.events)
	var out []event
	for line := range strings.SplitSeq(string(data), "\n") {
		if m := eventLine.FindStringSubmatch(line); m != nil && m[1] == program && m[2] == job {
			out = append(out, event{m[1], m[2], m[3], m[4], m[5]})
		}
	}
	return out
}

// waitEvent waits for the program's first logged run for the job (the
// Epilog ends after slurmctld already shows the job done).
func (s *site) waitEvent(program, job string) event {
	s.t.Helper()
	var evs []event
	require.Eventually(s.t, func() bool {
		evs = s.eventsOf(program, job)
		return len(evs) > 0
	}, 60*time.Second, 50*time.Millisecond, "no %s run for job %s", program, job)
	return evs[len(evs)-1]
}

// jobGPUs are the store's reservations of a Slurm job.
func (s *site) jobGPUs(job string) map[string]allocator.Reservation {
	s.t.Helper()
	snap, err := s.st.Snapshot(context.Background())
	require.NoError(s.t, err)
	out := map[string]allocator.Reservation{}
	for uuid, r := range snap.Reservations {
		if r.Kind == allocator.KindSlurm && r.JobID == job {
			out[uuid] = r
		}
	}
	return out
}

func keys(m map[string]allocator.Reservation) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// requireClean checks what every case must leave: the node in service,
// no Slurm reservation, no job file, no pending marker.
func (s *site) requireClean() {
	s.t.Helper()
	_, _, err := s.c.WaitNode(30*time.Second, func(st, reason string) bool { return st == "idle" && (reason == "none" || s.keepsReason) })
	require.NoError(s.t, err)
	snap, err := s.st.Snapshot(context.Background())
	require.NoError(s.t, err)
	for uuid, r := range snap.Reservations {
		require.NotEqual(s.t, allocator.KindSlurm, r.Kind, "left over: %s %+v", uuid, r)
	}
	ids, err := jobstate.Jobs(s.state, allocator.KindSlurm)
	require.NoError(s.t, err)
	require.Empty(s.t, ids, "job files left over")
	markers, err := jobstate.Markers(s.state)
	require.NoError(s.t, err)
	require.Empty(s.t, markers)
}

// reserveInteractive holds GPUs as another user would with
// `canhazgpu reserve`, through the same store call.
func (s *site) reserveInteractive(user string, uuids ...string) {
	s.t.Helper()
	_, err := s.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: user, UID: 4242, GPUs: uuids, Lease: time.Hour, Note: "interactive"})
	require.NoError(s.t, err)
}

func (s *site) releaseInteractive(user string) {
	s.t.Helper()
	_, err := s.st.Release(context.Background(), allocator.Release{RequestID: allocator.NewRequestID(), User: user})
	require.NoError(s.t, err)
}

// on is the site as seen from a subtest: failures belong to it.
func (s *site) on(t *testing.T) *site {
	c := *s
	c.t = t
	return &c
}

// startCluster starts a Slurm cluster for the test and stops it at the
// end, keeping its directory (logs, job output) when the test failed.
func startCluster(t testing.TB, opts slurmtest.Options) *slurmtest.Cluster {
	t.Helper()
	c, err := slurmtest.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		if !t.Failed() {
			os.RemoveAll(c.Dir)
		} else {
			t.Logf("cluster directory kept: %s", c.Dir)
		}
	})
	return c
}
