package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/store"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/accounttest"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/testreq"
)

// The first day's node, its GPUs and its two users.
const (
	dayNode  = "chgday"
	dayGPUs  = 4
	dayAlice = "chgdaya"
	dayBob   = "chgdayb"
)

func dayUUID(i int) string { return fmt.Sprintf("GPU-da1da1da-0000-4000-8000-%012d", i) }

// GPU i has minor i+1 (mod 4): Slurm's index k (device file nvidia<k>) is
// GPU k-1, so the Prolog has indices to translate.
func dayMinor(i int) int { return (i + 1) % dayGPUs }

// dayReserved is the GPU reserved interactively: minor 3, which Slurm
// gives out last.
const dayReserved = 2

// TestAdminFirstDay follows docs/install.md on a Slurm node as a new site
// admin does: the .deb installed with dpkg, its config file pointed at the
// store, the slurm.conf lines taken from the guide itself (so the guide
// cannot drift from what works), scontrol reconfigure, two users' jobs
// beside an interactive reservation; then removal in the documented order,
// slurm.conf first, then purge, after which jobs run without canhazgpu.
func TestAdminFirstDay(t *testing.T) {
	testreq.Need(t, testreq.Root, testreq.Dpkg)
	testreq.NoError(t, slurmtest.Available())
	needDeb(t)
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "canhazgpu").Output(); err == nil && !strings.HasSuffix(string(out), " not-installed") {
		t.Fatalf("canhazgpu is already on this machine (%s): this test installs and purges it, so remove it first with dpkg --purge canhazgpu", out)
	}
	lines := guideSlurmLines(t)
	accounttest.Ensure(t, dayAlice)
	accounttest.Ensure(t, dayBob)

	srv, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	c, err := slurmtest.Start(slurmtest.Options{Node: dayNode, GPUs: dayGPUs, PrologFlags: "-"})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
		if !t.Failed() {
			os.RemoveAll(c.Dir)
		}
	})
	// The jobs' users read the GPU file: not under t.TempDir, whose parent
	// only root may enter.
	dir, err := os.MkdirTemp("", "canhazgpu-day-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	fake := writeDayGPUs(t, dir)

	// 1. Install.
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "canhazgpu").Run() })
	dpkgOK(t, "-i", debFile)

	// 2. Point it at the store (and, on this box without GPUs, at the
	// fake GPU file and the cluster's device files), check the file,
	// register the GPUs.
	const etc = "/etc/canhazgpu/config.toml"
	installed, err := os.ReadFile(etc)
	require.NoError(t, err)
	gres, err := json.Marshal(c.GresDevices)
	require.NoError(t, err)
	conf := string(installed)
	for _, edit := range [][2]string{
		{"\nnode = \"\"\n", fmt.Sprintf("\nnode = %q\n", dayNode)},
		{"\nurl = \"redis://127.0.0.1:6379/0\"\n", fmt.Sprintf("\nurl = %q\n", srv.URL())},
		{"\nprovider = \"auto\"\n", "\nprovider = \"fake\"\n"},
		{"\nfake_file = \"\"\n", fmt.Sprintf("\nfake_file = %q\n", fake)},
		{"\ngres_devices = []\n", fmt.Sprintf("\ngres_devices = %s\n", gres)},
	} {
		require.Equal(t, 1, strings.Count(conf, edit[0]), "the installed config has %q once", edit[0])
		conf = strings.Replace(conf, edit[0], edit[1], 1)
	}
	require.NoError(t, os.WriteFile(etc, []byte(conf), 0o644))
	require.Contains(t, runOK(t, "/usr/bin/canhazgpu", "admin", "--check-config"), "config OK: "+etc)
	runOK(t, "/usr/bin/canhazgpu", "admin", "--register")

	// 3. and 4. The guide's slurm.conf lines, then scontrol reconfigure.
	require.NoError(t, c.AppendConf(lines...))
	require.NoError(t, c.Reconfigure())
	require.Equal(t, map[string]string{"Prolog": "/usr/libexec/canhazgpu/canhazgpu-prolog",
		"TaskProlog": "/usr/libexec/canhazgpu/canhazgpu-prolog", "Epilog": "/usr/libexec/canhazgpu/canhazgpu-epilog"}, dayHooks(t, c))

	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second},
		dayNode, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	holders := func() map[string]string {
		snap, err := st.Snapshot(context.Background())
		require.NoError(t, err)
		out := map[string]string{}
		for uuid, r := range snap.Reservations {
			out[uuid] = fmt.Sprintf("%s %s %s", r.Kind, r.User, r.JobID)
		}
		return out
	}

	// A user reserves a GPU interactively; Slurm gives its indices 0 and 1
	// to the two users' jobs, which wait for the test's go-ahead.
	out, err := accounttest.Run(dayAlice, "/usr/bin/canhazgpu", "reserve", "--gpu-ids", strconv.Itoa(dayReserved), "--duration", "1h")
	require.NoError(t, err, out)
	goAhead := filepath.Join(c.OutDir, "go")
	script := `echo "gpus=${SLURM_JOB_GPUS:-none} cvd=${CUDA_VISIBLE_DEVICES-unset} order=${CUDA_DEVICE_ORDER-unset}"` + "\n" +
		`while [ ! -e ` + goAhead + ` ]; do sleep 0.1; done` + "\n"
	ids := map[string]string{}
	for _, user := range []string{dayAlice, dayBob} {
		id, err := c.Submit(user, "--gres=gpu:1", "--wrap", script)
		require.NoError(t, err)
		ids[user] = id
	}
	for _, id := range ids {
		_, err := c.WaitJob(id, 60*time.Second, c.ScriptBegun(id))
		require.NoError(t, err, "job %s: %s", id, c.Output(id))
	}
	held := holders()
	require.Equal(t, "manual "+dayAlice+" ", held[dayUUID(dayReserved)], "the interactive reservation")
	jobs, jobGPUs := map[string]bool{}, []string{}
	for uuid, h := range held {
		if uuid != dayUUID(dayReserved) {
			jobs[h] = true
			jobGPUs = append(jobGPUs, uuid)
		}
	}
	require.ElementsMatch(t, []string{dayUUID(3), dayUUID(0)}, jobGPUs, "Slurm's indices 0 and 1, through the minor numbers")
	require.Equal(t, map[string]bool{"slurm " + dayAlice + " " + ids[dayAlice]: true, "slurm " + dayBob + " " + ids[dayBob]: true}, jobs,
		"the Prolog reserved each job's GPU: %v", held)
	status := runOK(t, "/usr/bin/canhazgpu", "status")
	require.Contains(t, status, "job "+ids[dayAlice])
	require.Contains(t, status, "job "+ids[dayBob])

	require.NoError(t, os.WriteFile(goAhead, nil, 0o644))
	for user, id := range ids {
		_, err := c.WaitJob(id, 60*time.Second, slurmtest.JobState("COMPLETED"))
		require.NoError(t, err, "job %s: %s", id, c.Output(id))
		// [slurm] export = "auto": Slurm's own variable names the job's
		// GPU, so the TaskProlog leaves it.
		require.Regexp(t, `^gpus=([01]) cvd=([01]) order=unset\n$`, c.Output(id), "job %s of %s", id, user)
	}
	require.Equal(t, map[string]string{dayUUID(dayReserved): "manual " + dayAlice + " "}, holders(), "the Epilog released the jobs' GPUs")

	// Removing: the slurm.conf lines first, then scontrol reconfigure,
	// then the package.
	slurmConf, err := os.ReadFile(c.Conf)
	require.NoError(t, err)
	var kept []string
	for line := range strings.Lines(string(slurmConf)) {
		if !slices.Contains(lines, strings.TrimSuffix(line, "\n")) {
			kept = append(kept, line)
		}
	}
	require.Len(t, kept, strings.Count(string(slurmConf), "\n")-len(lines), "each guide line was in slurm.conf once")
	require.NoError(t, os.WriteFile(c.Conf, []byte(strings.Join(kept, "")), 0o644))
	require.NoError(t, c.Reconfigure())
	require.Equal(t, map[string]string{"Prolog": "(null)", "TaskProlog": "(null)", "Epilog": "(null)"}, dayHooks(t, c))
	dpkgOK(t, "--purge", "canhazgpu")
	_, err = os.Stat("/usr/libexec/canhazgpu/canhazgpu-prolog")
	require.ErrorIs(t, err, os.ErrNotExist)

	// The next job runs without canhazgpu, and the node stays in service.
	id, err := c.Submit(dayBob, "--gres=gpu:1", "--wrap", `echo "cvd=${CUDA_VISIBLE_DEVICES-unset} order=${CUDA_DEVICE_ORDER-unset}"`)
	require.NoError(t, err)
	_, err = c.WaitJob(id, 60*time.Second, slurmtest.JobState("COMPLETED"))
	require.NoError(t, err, "job %s: %s", id, c.Output(id))
	require.Equal(t, "cvd=0 order=unset\n", c.Output(id))
	_, err = os.Stat("/run/canhazgpu/slurm/" + id)
	require.ErrorIs(t, err, os.ErrNotExist, "no Prolog wrote a job file")
	state, reason, err := c.NodeState()
	require.NoError(t, err)
	require.True(t, slurmtest.Ready(state), "node %s: %s", state, reason)
}

// dayHooks is what slurmd runs around jobs, as scontrol shows it.
func dayHooks(t *testing.T, c *slurmtest.Cluster) map[string]string {
	t.Helper()
	out, err := c.Run("scontrol", "show", "config")
	require.NoError(t, err)
	hooks := map[string]string{}
	for line := range strings.Lines(out) {
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if ok && (key == "Prolog" || key == "TaskProlog" || key == "Epilog") {
			hooks[key] = strings.TrimSpace(value)
		}
	}
	return hooks
}

// guideSlurmLines reads the slurm.conf lines of docs/install.md: the
// indented block after its "slurm.conf lines" marker.
func guideSlurmLines(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../docs/install.md")
	require.NoError(t, err)
	const marker = "<!-- slurm.conf lines:"
	_, after, ok := strings.Cut(string(data), marker)
	require.True(t, ok, "docs/install.md has no %q marker", marker)
	var lines []string
	for i, line := range strings.Split(after, "\n")[1:] {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" && len(lines) == 0 && i < 2:
			continue // the blank line after the marker
		case trimmed == "":
			require.NotEmpty(t, lines, "docs/install.md: no lines after the marker")
			return lines
		case !strings.HasPrefix(line, "       "):
			t.Fatalf("docs/install.md: %q after the marker is not an indented line", line)
		}
		lines = append(lines, trimmed)
	}
	t.Fatal("docs/install.md: the slurm.conf block does not end")
	return nil
}

// writeDayGPUs writes the fake GPU file (see dayMinor).
func writeDayGPUs(t *testing.T, dir string) string {
	t.Helper()
	type fake struct {
		Index     int    `json:"index"`
		UUID      string `json:"uuid"`
		Minor     int    `json:"minor"`
		Processes []any  `json:"processes"`
	}
	var gpus []fake
	for i := range dayGPUs {
		gpus = append(gpus, fake{Index: i, UUID: dayUUID(i), Minor: dayMinor(i), Processes: []any{}})
	}
	data, err := json.Marshal(map[string]any{"gpus": gpus})
	require.NoError(t, err)
	path := filepath.Join(dir, "gpus.json")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

func dpkgOK(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("dpkg", args...).CombinedOutput()
	require.NoError(t, err, "dpkg %s: %s", strings.Join(args, " "), out)
}

// runOK runs a program as root with a login shell's variables and no
// CANHAZGPU_* of whoever runs the test.
func runOK(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root", "LC_ALL=C.UTF-8"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}
