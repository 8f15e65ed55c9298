package pbs

import (
	"bytes"
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
	"canhazgpu/internal/jobstate"
)

var nodeSeq atomic.Int64

// testNode is one node of the test server with its own config file, fake
// GPU file and state directory.
type testNode struct {
	t        testing.TB
	name     string
	dir      string
	config   string
	fake     string
	stateDir string
	st       *store.Store
}

type nodeOpts struct {
	gpus         int
	onConflict   string // default fail
	onStoreError string // default allow
	redisURL     string // default: the test server
}

func newTestNode(t testing.TB, o nodeOpts) *testNode {
	t.Helper()
	n := &testNode{t: t, name: fmt.Sprintf("pbsnode%d", nodeSeq.Add(1)), dir: t.TempDir()}
	n.fake = filepath.Join(n.dir, "gpus.json")
	n.stateDir = filepath.Join(n.dir, "state")
	n.config = filepath.Join(n.dir, "config.toml")
	if o.onConflict == "" {
		o.onConflict = "fail"
	}
	if o.onStoreError == "" {
		o.onStoreError = "allow"
	}
	if o.redisURL == "" {
		o.redisURL = srv.URL()
	}
	n.setUsed(o.gpus, nil)
	cfg := fmt.Sprintf(`node = %q
[redis]
url = %q
dial_timeout = "200ms"
op_timeout = "500ms"
[gpu]
provider = "fake"
fake_file = %q
[pbs]
on_conflict = %q
on_store_error = %q
state_dir = %q
`, n.name, o.redisURL, n.fake, o.onConflict, o.onStoreError, n.stateDir)
	require.NoError(t, os.WriteFile(n.config, []byte(cfg), 0o644))
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, n.name, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	n.st = st
	return n
}

func uuid(i int) string { return fmt.Sprintf("GPU-7e57%04d-0000-4000-8000-000000000000", i) }

// setUsed rewrites the fake GPU file atomically: gpus GPUs, with the given
// memory use in MB by index.
func (n *testNode) setUsed(gpus int, usedMB map[int]int) {
	type fakeGPU struct {
		Index        int    `json:"index"`
		UUID         string `json:"uuid"`
		MemoryUsedMB int    `json:"memory_used_mb"`
	}
	var list []fakeGPU
	for i := range gpus {
		list = append(list, fakeGPU{Index: i, UUID: uuid(i), MemoryUsedMB: usedMB[i]})
	}
	data, err := json.Marshal(map[string]any{"gpus": list})
	require.NoError(n.t, err)
	tmp := n.fake + ".tmp"
	require.NoError(n.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(n.t, os.Rename(tmp, n.fake))
}

// register writes the node's GPUs to the store as the programs would on
// first use, for tests that reserve before any program ran.
func (n *testNode) register(gpus int) {
	var list []allocator.GPU
	for i := range gpus {
		list = append(list, allocator.GPU{UUID: uuid(i), Index: i, Minor: i, Name: "Fake GPU"})
	}
	_, err := n.st.Register(context.Background(), list, false)
	require.NoError(n.t, err)
}

type result struct {
	code           int
	stdout, stderr string
}

func (n *testNode) prolog(args ...string) result {
	var out, errb bytes.Buffer
	code := RunProlog(context.Background(), append([]string{"--config", n.config}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (n *testNode) epilog(args ...string) result {
	var out, errb bytes.Buffer
	code := RunEpilog(context.Background(), append([]string{"--config", n.config}, args...), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// held returns the node's reservations as GPU index -> "kind job user".
func (n *testNode) held() map[int]string {
	snap, err := n.st.Snapshot(context.Background())
	require.NoError(n.t, err)
	out := map[int]string{}
	for uuid, r := range snap.Reservations {
		g, ok := snap.GPUByUUID(uuid)
		require.True(n.t, ok)
		out[g.Index] = fmt.Sprintf("%s %s %s", r.Kind, r.JobID, r.User)
	}
	return out
}

func envText(indices ...int) string {
	var u, ix []string
	for _, i := range indices {
		u = append(u, uuid(i))
		ix = append(ix, fmt.Sprint(i))
	}
	return "CUDA_VISIBLE_DEVICES=" + strings.Join(u, ",") + "\nCANHAZGPU_GPU_INDICES=" + strings.Join(ix, ",") + "\n"
}

func TestPrologReservesPrintsAndRecords(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 4})
	envFile := filepath.Join(n.dir, "env", "12.srv.env")
	r := n.prolog("--job", "12.srv", "--user", "alice", "--uid", "1000", "--ngpus", "2", "--run-count", "3", "--env-file", envFile)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, envText(0, 1), r.stdout)
	require.Equal(t, "canhazgpu: pbs job 12.srv of alice: reserved GPUs 0,1\n", r.stderr)
	require.Equal(t, map[int]string{0: "pbs 12.srv alice", 1: "pbs 12.srv alice"}, n.held())

	data, err := os.ReadFile(envFile)
	require.NoError(t, err)
	require.Equal(t, r.stdout, string(data))
	fi, err := os.Stat(envFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "the job's user reads it")

	f, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "12.srv")
	require.NoError(t, err)
	require.Equal(t, "alice", f.User)
	require.Equal(t, 1000, f.UID)
	require.Equal(t, 3, f.Restart)
	require.False(t, f.Pending)
	require.Equal(t, []jobstate.GPU{{UUID: uuid(0), Index: 0, SchedIndex: -1}, {UUID: uuid(1), Index: 1, SchedIndex: -1}}, f.GPUs)
	boot, err := jobstate.BootID("")
	require.NoError(t, err)
	require.Equal(t, boot, f.BootID, "the health check restores only jobs of this boot")

	snap, err := n.st.Snapshot(context.Background())
	require.NoError(t, err)
	res := snap.Reservations[uuid(0)]
	require.Equal(t, 1000, res.UID)
	require.Equal(t, 3, res.Restart)
	require.NotEmpty(t, res.BootID)
	require.True(t, res.ExpiresAt.IsZero(), "batch reservations end with the job, not by expiry")
}

func TestPrologIsIdempotentForTheSameJob(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 4})
	first := n.prolog("--job", "7.srv", "--user", "alice", "--uid", "1000", "--ngpus", "2")
	require.Equal(t, ExitOK, first.code, first.stderr)
	// Another user's job in between changes the free GPUs, not this job's.
	other := n.prolog("--job", "8.srv", "--user", "bob", "--uid", "1001", "--ngpus", "1")
	require.Equal(t, ExitOK, other.code, other.stderr)
	again := n.prolog("--job", "7.srv", "--user", "alice", "--uid", "1000", "--ngpus", "2", "--run-count", "1")
	require.Equal(t, ExitOK, again.code, again.stderr)
	require.Equal(t, first.stdout, again.stdout)
	require.Equal(t, map[int]string{0: "pbs 7.srv alice", 1: "pbs 7.srv alice", 2: "pbs 8.srv bob"}, n.held())
}

func TestPrologSkipsGPUsInUnreservedUse(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 3})
	n.setUsed(3, map[int]int{0: 4096})
	r := n.prolog("--job", "9", "--user", "alice", "--uid", "1000", "--ngpus", "2")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, envText(1, 2), r.stdout)
}

func TestPrologShortage(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 4})
	require.Equal(t, ExitOK, n.prolog("--job", "1.srv", "--user", "alice", "--uid", "1000", "--ngpus", "3").code)
	envFile := filepath.Join(n.dir, "2.srv.env")
	r := n.prolog("--job", "2.srv", "--user", "bob", "--uid", "1001", "--ngpus", "2", "--env-file", envFile)
	require.Equal(t, ExitShortage, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "canhazgpu: pbs job 2.srv of bob: Not enough GPUs available. Requested: 2, Available: 1\n", r.stderr)
	require.Len(t, n.held(), 3, "nothing reserved for the refused job")
	require.NoFileExists(t, envFile)
	_, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "2.srv")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestPrologWarnRunsOnChosenGPUsAndRecordsConflicts(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 2, onConflict: "warn"})
	ctx := context.Background()
	// alice holds GPU 0 interactively.
	n.register(2)
	_, err := n.st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "alice", UID: 1000, GPUs: []string{uuid(0)}, Lease: time.Hour})
	require.NoError(t, err)

	r := n.prolog("--job", "5.srv", "--user", "bob", "--uid", "1001", "--ngpus", "2")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, envText(0, 1), r.stdout, "the job runs on both GPUs")
	require.Contains(t, r.stderr, "warning: pbs job 5.srv of bob runs on GPUs 0,1 without holding all of them")
	require.Equal(t, map[int]string{0: "manual  alice", 1: "pbs 5.srv bob"}, n.held())
	f, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "5.srv")
	require.NoError(t, err)
	require.Len(t, f.Conflicts, 1)
	require.Equal(t, uuid(0), f.Conflicts[0].GPU)
	require.True(t, strings.HasPrefix(f.Conflicts[0].Reason, "reserved by alice (manual since "), f.Conflicts[0].Reason)
}

// deadURL is a Redis URL nobody listens on: a socket path in an empty
// directory.
func deadURL(t *testing.T) string {
	t.Helper()
	return "unix://" + filepath.Join(t.TempDir(), "nobody-listens.sock")
}

func TestStoreDown(t *testing.T) {
	t.Run("prolog allow: runs on idle GPUs, pending marker", func(t *testing.T) {
		n := newTestNode(t, nodeOpts{gpus: 3, redisURL: deadURL(t)})
		n.setUsed(3, map[int]int{0: 4096})
		r := n.prolog("--job", "3.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1", "--run-count", "2")
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Equal(t, envText(1), r.stdout)
		require.Contains(t, r.stderr, "pending marker written")
		ms, err := jobstate.Markers(n.stateDir)
		require.NoError(t, err)
		require.Len(t, ms, 1)
		require.Equal(t, jobstate.OpReserve, ms[0].Op)
		require.Equal(t, allocator.KindPBS, ms[0].Kind)
		require.Equal(t, "3.srv", ms[0].JobID)
		require.Equal(t, []string{uuid(1)}, ms[0].GPUs)
		require.Equal(t, 2, ms[0].Restart)
		f, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "3.srv")
		require.NoError(t, err)
		require.True(t, f.Pending)

		e := n.epilog("--job", "3.srv")
		require.Equal(t, ExitOK, e.code, e.stderr)
		ms, err = jobstate.Markers(n.stateDir)
		require.NoError(t, err)
		require.Len(t, ms, 1, "the release supersedes the reserve")
		require.Equal(t, jobstate.OpRelease, ms[0].Op)
		_, err = jobstate.ReadJob(n.stateDir, allocator.KindPBS, "3.srv")
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("fail", func(t *testing.T) {
		n := newTestNode(t, nodeOpts{gpus: 2, redisURL: deadURL(t), onStoreError: "fail"})
		r := n.prolog("--job", "4.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1")
		require.Equal(t, ExitStoreDown, r.code)
		require.Empty(t, r.stdout)
		require.Contains(t, r.stderr, "reservation store unavailable")
		e := n.epilog("--job", "4.srv")
		require.Equal(t, ExitStoreDown, e.code)
		ms, err := jobstate.Markers(n.stateDir)
		require.NoError(t, err)
		require.Empty(t, ms)
	})
}

func TestEpilogReleasesTwiceFine(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 2})
	envFile := filepath.Join(n.dir, "6.env")
	require.Equal(t, ExitOK, n.prolog("--job", "6.srv", "--user", "alice", "--uid", "1000", "--ngpus", "2", "--env-file", envFile).code)
	require.Equal(t, ExitOK, n.prolog("--job", "60.srv", "--user", "bob", "--uid", "1001", "--ngpus", "0").code)

	r := n.epilog("--job", "6.srv", "--env-file", envFile)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "canhazgpu: pbs job 6.srv: released GPUs 0,1\n", r.stderr, "named by index, as the prolog names them")
	require.Empty(t, n.held())
	require.NoFileExists(t, envFile)
	_, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "6.srv")
	require.ErrorIs(t, err, os.ErrNotExist)

	again := n.epilog("--job", "6.srv", "--env-file", envFile)
	require.Equal(t, ExitOK, again.code, again.stderr)
	require.Equal(t, "canhazgpu: pbs job 6.srv held no GPUs on this host\n", again.stderr)

	hist, err := n.st.History(context.Background(), time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 2, "both GPUs are in the usage history")
	require.Equal(t, "6.srv", hist[0].JobID)
}

func TestEpilogReleasesOnlyItsJob(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 3})
	require.Equal(t, ExitOK, n.prolog("--job", "1", "--user", "alice", "--uid", "1000", "--ngpus", "1").code)
	require.Equal(t, ExitOK, n.prolog("--job", "2", "--user", "alice", "--uid", "1000", "--ngpus", "1").code)
	require.Equal(t, ExitOK, n.epilog("--job", "1").code)
	require.Equal(t, map[int]string{1: "pbs 2 alice"}, n.held())

	// A job file lost (the state directory is on tmpfs): the line names
	// the GPU by UUID, the one name left.
	require.NoError(t, jobstate.RemoveJob(n.stateDir, allocator.KindPBS, "2"))
	r := n.epilog("--job", "2")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "canhazgpu: pbs job 2: released GPUs "+uuid(1)+"\n", r.stderr)
}

func TestNoGPUsHereIsNothingToDo(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 2})
	envFile := filepath.Join(n.dir, "stale.env")
	require.NoError(t, os.WriteFile(envFile, []byte("CUDA_VISIBLE_DEVICES=GPU-old\n"), 0o644))
	r := n.prolog("--job", "11", "--user", "nobody", "--ngpus", "0", "--env-file", envFile)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Empty(t, r.stdout)
	require.Equal(t, "canhazgpu: pbs job 11 has no GPUs on this host: nothing to reserve\n", r.stderr)
	require.NoFileExists(t, envFile, "an earlier run's environment must not leak into this one")
}

func TestPrologLooksUpTheUID(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 1})
	r := n.prolog("--job", "13", "--user", "nobody", "--ngpus", "1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	snap, err := n.st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Equal(t, 65534, snap.Reservations[uuid(0)].UID)
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no job", []string{"--user", "alice", "--ngpus", "1"}, `canhazgpu-prolog: invalid --job "": want a PBS job id`},
		{"job with slash", []string{"--job", "../x", "--user", "alice", "--ngpus", "1"}, `invalid --job "../x"`},
		{"no user", []string{"--job", "1", "--ngpus", "1"}, `invalid user "": want a non-empty account name`},
		{"bad count", []string{"--job", "1", "--user", "alice", "--ngpus", "two"}, `invalid --ngpus "two": want a whole number of GPUs, 0 or more`},
		{"negative count", []string{"--job", "1", "--user", "alice", "--ngpus", "-1"}, `invalid --ngpus "-1"`},
		{"no count", []string{"--job", "1", "--user", "alice"}, `invalid gpu count flags "neither": want exactly one of --ngpus N and --torque-resources LIST`},
		{"both counts", []string{"--job", "1", "--user", "alice", "--ngpus", "1", "--torque-resources", "gpus=1"}, `invalid gpu count flags "both"`},
		{"bad uid", []string{"--job", "1", "--user", "alice", "--uid", "x", "--ngpus", "1"}, `invalid --uid "x": want a numeric uid, 0 or more`},
		{"relative env file", []string{"--job", "1", "--user", "alice", "--ngpus", "1", "--env-file", "x.env"}, `invalid --env-file "x.env": want an absolute path`},
		{"stray argument", []string{"--job", "1", "--user", "alice", "--ngpus", "1", "extra"}, `invalid argument "extra": want flags only`},
		{"unknown flag", []string{"--job", "1", "--gpus", "1"}, `canhazgpu-prolog: unknown flag: --gpus`},
		{"unknown user", []string{"--job", "1", "--user", "no-such-user-here", "--ngpus", "1"}, `canhazgpu: error: pbs job 1: invalid --user "no-such-user-here": want a user of this host, or pass --uid`},
		{"torque ambiguous", []string{"--job", "1", "--user", "alice", "--uid", "1", "--torque-resources", "nodes=1:gpus=1+1:gpus=2"}, `invalid --torque-resources "nodes=1:gpus=1+1:gpus=2"`},
		{"available with a job", []string{"--available", "--job", "1"}, `invalid --available "with --job": want --available alone, or with --config and the setting flags`},
	}
	n := newTestNode(t, nodeOpts{gpus: 2})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := n.prolog(c.args...)
			require.Equal(t, ExitError, r.code)
			require.Empty(t, r.stdout)
			require.Contains(t, r.stderr, c.want)
			require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		})
	}
	require.Empty(t, n.held(), "bad input changes nothing")

	r := n.epilog("--job", "")
	require.Equal(t, ExitError, r.code)
	require.Equal(t, "canhazgpu-epilog: invalid --job \"\": want a PBS job id such as 1234.server or 12[3].server (no '/', ',' or spaces)\n", r.stderr)
}

func TestBadConfigNamesTheFile(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 1})
	require.NoError(t, os.WriteFile(n.config, []byte("[pbs]\non_conflict = \"maybe\"\n"), 0o644))
	r := n.prolog("--job", "1", "--user", "alice", "--uid", "1", "--ngpus", "1")
	require.Equal(t, ExitError, r.code)
	require.Contains(t, r.stderr, n.config+":2")
	require.Contains(t, r.stderr, "pbs.on_conflict")
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, ExitOK, RunProlog(context.Background(), []string{"--help"}, &out, &errb))
	require.Contains(t, out.String(), "Usage: canhazgpu-prolog --pbs [flags]")
	require.Contains(t, out.String(), "--ngpus")
	out.Reset()
	require.Equal(t, ExitOK, RunEpilog(context.Background(), []string{"--help"}, &out, &errb))
	require.Contains(t, out.String(), "--env-file")
	require.Empty(t, errb.String())
}

func TestTorqueShare(t *testing.T) {
	cases := []struct {
		list  string
		hosts []string
		want  int
		err   string
	}{
		{"neednodes=1:ppn=2:gpus=2,nodes=1:ppn=2:gpus=2,walltime=01:00:00", nil, 2, ""},
		{"nodes=2:ppn=4:gpus=1,walltime=00:10:00", nil, 1, ""},
		{"nodes=n1:ppn=2:gpus=1+n2.example.org:ppn=2:gpus=3", []string{"n2"}, 3, ""},
		{"nodes=n1.example.org:gpus=2+n2:gpus=3", []string{"", "n1"}, 2, ""},
		{"nodes=1:ppn=4,walltime=1:00:00", nil, 0, ""},
		{"ncpus=1,ngpus=2,walltime=1:00:00", nil, 2, ""},
		{"gpus=1", nil, 1, ""},
		{"walltime=1:00:00", nil, 0, ""},
		{"", nil, 0, ""},
		{"nodes=1:gpus=x", nil, 0, `invalid --torque-resources gpus "x"`},
		{"nodes=n1:gpus=1+n2:gpus=2", []string{"n3"}, 0, "nodes= naming this host (n3)"},
	}
	for _, c := range cases {
		t.Run(c.list, func(t *testing.T) {
			got, err := torqueShare(c.list, c.hosts)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestTorqueResourcesReserveThisHostsShare(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 4})
	r := n.prolog("--job", "77.torque", "--user", "alice", "--uid", "1000",
		"--torque-resources", "neednodes=1:ppn=2:gpus=3,nodes=1:ppn=2:gpus=3,walltime=01:00:00")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, envText(0, 1, 2), r.stdout)
}

// TestUnsafeStateDirStopsThePrograms: a state directory another user owns
// stops the prolog and the epilog before anything changes.
func TestUnsafeStateDirStopsThePrograms(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 2})
	require.Equal(t, ExitOK, n.prolog("--job", "1.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1").code)
	require.NoError(t, os.Lchown(n.stateDir, 12345, 12345))
	want := "state dir " + n.stateDir + " is owned by uid 12345; want a directory owned by root and writable by root only (such as mode 0755)"

	r := n.prolog("--job", "2.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1")
	require.Equal(t, result{ExitError, "", "canhazgpu: error: pbs job 2.srv: " + want + "\n"}, r)
	envFile := filepath.Join(n.dir, "1.env")
	require.NoError(t, os.WriteFile(envFile, []byte(envText(0)), 0o644))
	e := n.epilog("--job", "1.srv", "--env-file", envFile)
	require.Equal(t, result{ExitError, "", "canhazgpu: error: pbs job 1.srv: " + want + "\n"}, e)
	require.Equal(t, map[int]string{0: "pbs 1.srv alice"}, n.held(), "nothing reserved or released")
	require.FileExists(t, envFile, "nothing removed")
}

// TestLeftoverMarkersSettled: a release recorded while the store was down
// is applied by the next prolog or epilog that reaches the store.
func TestLeftoverMarkersSettled(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 3})
	require.Equal(t, ExitOK, n.prolog("--job", "3.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1").code)
	require.Equal(t, ExitOK, n.prolog("--job", "4.srv", "--user", "alice", "--uid", "1000", "--ngpus", "1").code)
	// As the epilogs left them during an outage.
	for _, job := range []string{"3.srv", "4.srv"} {
		require.NoError(t, jobstate.WriteMarker(n.stateDir, jobstate.Marker{Op: jobstate.OpRelease, Kind: allocator.KindPBS,
			JobID: job, At: time.Now()}))
	}
	require.NoError(t, jobstate.RemoveJob(n.stateDir, allocator.KindPBS, "3.srv"))

	r := n.prolog("--job", "5.srv", "--user", "bob", "--uid", "1001", "--ngpus", "1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stderr, "canhazgpu: settled the pending release of pbs job 3.srv, release of pbs job 4.srv\n")
	require.Equal(t, map[int]string{2: "pbs 5.srv bob"}, n.held(), "the prolog settles after its own grant")
	ms, err := jobstate.Markers(n.stateDir)
	require.NoError(t, err)
	require.Empty(t, ms)

	require.NoError(t, jobstate.WriteMarker(n.stateDir, jobstate.Marker{Op: jobstate.OpRelease, Kind: allocator.KindPBS,
		JobID: "5.srv", At: time.Now()}))
	e := n.epilog("--job", "6.srv")
	require.Equal(t, ExitOK, e.code, e.stderr)
	require.Equal(t, "canhazgpu: pbs job 6.srv held no GPUs on this host\ncanhazgpu: settled the pending release of pbs job 5.srv\n", e.stderr)
	require.Empty(t, n.held())
}
