package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/integration/slurmtest"
)

// The accounts of the state directory tests: one plants things where it
// can, the other runs a job whose TaskProlog must not be fooled.
const (
	squatterUser = "chgsquatter"
	victimUser   = "chgvictim"
)

// asUser runs a shell command as an unprivileged user, as an attacker on
// the node would.
func asUser(t *testing.T, user, script string) string {
	t.Helper()
	out, err := exec.Command("runuser", "-u", user, "--", "/bin/sh", "-ec", script).CombinedOutput()
	require.NoError(t, err, "as %s: %s: %s", user, script, out)
	return string(out)
}

// attackHost is a node whose state directory sits in a directory every
// user may write (sticky, like /tmp), so a user can create it first.
type attackHost struct {
	dir, cfg, shared, state, outside, node string
	st                                     *store.Store
}

func newAttackHost(t *testing.T) *attackHost {
	t.Helper()
	dir, err := os.MkdirTemp("", "canhazgpu-statedir-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755)) // the victim reads the config file here
	h := &attackHost{dir: dir, cfg: filepath.Join(dir, "config.toml"), shared: filepath.Join(dir, "shared"),
		outside: filepath.Join(dir, "outside"), node: fmt.Sprintf("statedir%d", hostSeq.Add(1))}
	h.state = filepath.Join(h.shared, "canhazgpu")
	require.NoError(t, os.Mkdir(h.shared, 0o755))
	require.NoError(t, os.Chmod(h.shared, 0o777|os.ModeSticky))
	// Root's files the attacks aim at.
	require.NoError(t, os.Mkdir(h.outside, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(h.outside, "7"), []byte("precious\n"), 0o644))

	fake := filepath.Join(dir, "gpus.json")
	require.NoError(t, os.WriteFile(fake, []byte(`{"gpus": [{"index": 0}, {"index": 1}]}`), 0o644))
	cfg := fmt.Sprintf("node = %q\n[redis]\nurl = %q\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n"+
		"[slurm]\nstate_dir = %q\ndeadline = \"3s\"\n"+
		"[health]\naction = \"none\"\nslurmd_spool_dir = %q\ntimeout = \"10s\"\n",
		h.node, srv.URL(), fake, h.state, filepath.Join(dir, "no-spool"))
	require.NoError(t, os.WriteFile(h.cfg, []byte(cfg), 0o644))
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL()}, h.node, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	h.st = st
	return h
}

func (h *attackHost) slurmEnv(context, id string, extra ...string) []string {
	return append([]string{"CANHAZGPU_CONFIG=" + h.cfg, "SLURM_SCRIPT_CONTEXT=" + context, "SLURM_JOB_ID=" + id,
		"SLURM_JOB_USER=" + victimUser, "SLURM_JOB_RESTART_COUNT=0", "SLURM_JOB_GPUS=0", "CUDA_VISIBLE_DEVICES=0"}, extra...)
}

// taskProlog runs the TaskProlog as the victim, as slurmstepd does.
func (h *attackHost) taskProlog(t *testing.T, id string) string {
	t.Helper()
	env := strings.Join(h.slurmEnv("prolog_task", id, "CANHAZGPU_SLURM_EXPORT=uuid"), " ")
	return asUser(t, victimUser, "exec env -i "+env+" "+bin("canhazgpu-prolog"))
}

func (h *attackHost) held() map[string]string {
	snap, err := h.st.Snapshot(context.Background())
	if err != nil {
		return nil // not registered yet: nothing held
	}
	out := map[string]string{}
	for uuid, r := range snap.Reservations {
		out[uuid] = string(r.Kind) + " " + r.JobID
	}
	return out
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestStateDirAttacks: an unprivileged user prepares the state directory
// before root's programs run. Every root program refuses it with one line
// naming it; none writes through the user's link, removes a file outside,
// applies the user's marker, and the victim's TaskProlog prints nothing.
func TestStateDirAttacks(t *testing.T) {
	squatterUID, err := slurmtest.EnsureUser(squatterUser)
	require.NoError(t, err)
	_, err = slurmtest.EnsureUser(victimUser)
	require.NoError(t, err)

	// The programs on a good host first: the same TaskProlog, run as the
	// victim, prints the job's GPU, so an empty output below means refusal.
	good := newAttackHost(t)
	r := runProgram(t, "canhazgpu-prolog", good.slurmEnv("prolog_slurmd", "9"))
	require.Equal(t, 0, r.rc, r.stdout)
	require.Equal(t, "export CUDA_VISIBLE_DEVICES=GPU-fa4e0000-0000-4000-8000-000000000000\n", good.taskProlog(t, "9"))

	for _, tc := range []struct {
		name string
		// prepare runs as the squatter, STATE and OUTSIDE being the paths.
		prepare string
		// asRoot finishes what a careless admin would have done.
		asRoot  func(h *attackHost)
		problem string
	}{
		{
			name: "created first by a user",
			prepare: `mkdir -m 755 STATE STATE/pending
ln -s OUTSIDE STATE/slurm`,
			problem: "is owned by uid " + strconv.Itoa(squatterUID),
		},
		{
			name: "made writable by everyone",
			asRoot: func(h *attackHost) {
				require.NoError(t, os.Mkdir(h.state, 0o755))
				require.NoError(t, os.Chmod(h.state, 0o777))
			},
			prepare: `mkdir -m 755 STATE/pending; ln -s OUTSIDE STATE/slurm`,
			problem: "has mode 0777, which lets group or others write in it",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newAttackHost(t)
			if tc.asRoot != nil {
				tc.asRoot(h)
			}
			subst := strings.NewReplacer("STATE", h.state, "OUTSIDE", h.outside)
			asUser(t, squatterUser, subst.Replace(tc.prepare))
			// A forged release of the victim's running job 10.
			asUser(t, squatterUser, subst.Replace(`printf '%s\n' '{"op":"release","kind":"slurm","job_id":"10"}' > STATE/pending/slurm-10-release`))
			_, err := h.st.Register(context.Background(), []allocator.GPU{
				{UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Index: 0, Name: "Fake GPU"},
				{UUID: "GPU-fa4e0000-0000-4000-8000-000000000001", Index: 1, Minor: 1, Name: "Fake GPU"}}, false)
			require.NoError(t, err)
			_, err = h.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
				Kind: allocator.KindSlurm, User: victimUser, JobID: "10", GPUs: []string{"GPU-fa4e0000-0000-4000-8000-000000000001"}})
			require.NoError(t, err)
			want := "state dir " + h.state + " " + tc.problem +
				"; want a directory owned by root and writable by root only (such as mode 0755)"

			prolog := runProgram(t, "canhazgpu-prolog", h.slurmEnv("prolog_slurmd", "8"))
			require.Equal(t, result{1, "canhazgpu-prolog: job 8: " + want + "\n", ""}, prolog)
			require.Equal(t, []string{"7"}, listDir(t, h.outside), "nothing written through the link")

			epilog := runProgram(t, "canhazgpu-epilog", h.slurmEnv("epilog_slurmd", "7"))
			require.Equal(t, result{1, "canhazgpu-epilog: job 7: " + want + "\n", ""}, epilog)
			data, err := os.ReadFile(filepath.Join(h.outside, "7"))
			require.NoError(t, err)
			require.Equal(t, "precious\n", string(data), "nothing removed outside the state directory")

			hc := exec.Command(bin("canhazgpu-healthcheck"))
			hc.Env = []string{"CANHAZGPU_CONFIG=" + h.cfg}
			out, _ := hc.CombinedOutput()
			require.Contains(t, string(out), "not applied yet: "+want)
			require.Equal(t, map[string]string{"GPU-fa4e0000-0000-4000-8000-000000000001": "slurm 10"}, h.held(),
				"the forged release is not applied, and nothing was reserved")

			// A forged job file with a variable that would run the
			// squatter's code in the victim's tasks.
			asUser(t, squatterUser, subst.Replace(`rm STATE/slurm; mkdir -m 755 STATE/slurm
printf '%s\n' '{"kind":"slurm","job_id":"11","gpus":[{"uuid":"GPU-a\nexport LD_PRELOAD=/tmp/evil.so","index":0,"sched_index":0}]}' > STATE/slurm/11`))
			require.Empty(t, h.taskProlog(t, "11"), "the forged job file prints nothing")
		})
	}
}

// TestStateDirCreatedRight: the first root program creates a missing state
// directory owned by root with mode 0755 whatever the umask, so the
// victim's TaskProlog can read it and nobody else can write it.
func TestStateDirCreatedRight(t *testing.T) {
	_, err := slurmtest.EnsureUser(victimUser)
	require.NoError(t, err)
	h := newAttackHost(t)
	cmd := exec.Command("/bin/sh", "-c", "umask 077; exec "+bin("canhazgpu-prolog"))
	cmd.Env = h.slurmEnv("prolog_slurmd", "12")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	for _, p := range []string{h.state, filepath.Join(h.state, "slurm")} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.ModeDir|0o755, fi.Mode(), p)
	}
	require.Equal(t, "export CUDA_VISIBLE_DEVICES=GPU-fa4e0000-0000-4000-8000-000000000000\n", h.taskProlog(t, "12"))
}
