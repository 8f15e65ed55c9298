package health

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/buildtest"
	"canhazgpu/internal/jobstate"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

// healthcheckBinary builds the program once per test binary.
func healthcheckBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = buildtest.Build(map[string]string{"canhazgpu-healthcheck": "canhazgpu/cmd/canhazgpu-healthcheck"})
		binPath = filepath.Join(binDir, "canhazgpu-healthcheck")
	})
	require.NoError(t, buildErr)
	return binPath
}

// nhcDriver runs contrib/nhc/canhazgpu.nhc the way NHC does, through
// testdata/nhc/nhc (NHC's calling convention, its die and its
// node-mark-offline/online helpers for Slurm) with stand-in sinfo and
// scontrol that keep the node's state and record every call.
type nhcDriver struct {
	t      *testing.T
	dir    string
	bin    string
	script string
}

func newNHCDriver(t *testing.T) *nhcDriver {
	t.Helper()
	script, err := filepath.Abs("../../contrib/nhc/canhazgpu.nhc")
	require.NoError(t, err)
	d := &nhcDriver{t: t, dir: t.TempDir(), bin: healthcheckBinary(t), script: script}
	d.setNode("idle none")
	return d
}

// setNode sets the node's state and reason as sinfo -o '%t %E' prints them.
func (d *nhcDriver) setNode(line string) {
	require.NoError(d.t, os.WriteFile(filepath.Join(d.dir, "node"), []byte(line+"\n"), 0o644))
}

func (d *nhcDriver) node() string {
	data, err := os.ReadFile(filepath.Join(d.dir, "node"))
	require.NoError(d.t, err)
	return strings.TrimSuffix(string(data), "\n")
}

// nhcRun is one NHC run: its exit status, its log, and the scontrol
// updates it made (each one's arguments), which are then forgotten.
type nhcRun struct {
	code    int
	log     string
	updates [][]string
}

// run runs NHC with the check lines (default "check_canhazgpu") and env
// added to NHC's environment (NHC_RM=slurm, as the sysconfig file sets it).
func (d *nhcDriver) run(env []string, checks ...string) nhcRun {
	d.t.Helper()
	if len(checks) == 0 {
		checks = []string{"check_canhazgpu"}
	}
	testdata, err := filepath.Abs("testdata/nhc")
	require.NoError(d.t, err)
	logFile, calls := filepath.Join(d.dir, "nhc.log"), filepath.Join(d.dir, "calls")
	os.Remove(logFile)
	os.Remove(calls)
	cmd := exec.Command(filepath.Join(testdata, "nhc"), append([]string{d.script}, checks...)...)
	cmd.Env = append([]string{"HOSTNAME=node7", "NHC_RM=slurm", "HELPERDIR=" + testdata, "LOGFILE=" + logFile,
		"SLURM_SINFO=" + filepath.Join(testdata, "sinfo"), "SLURM_SCONTROL=" + filepath.Join(testdata, "scontrol"),
		"NHC_NODE=" + filepath.Join(d.dir, "node"), "NHC_CALLS=" + calls, "CANHAZGPU_HEALTHCHECK=" + d.bin}, env...)
	out, err := cmd.CombinedOutput()
	require.Empty(d.t, string(out), "NHC's output goes to its log")
	r := nhcRun{}
	if err != nil {
		var exit *exec.ExitError
		require.ErrorAs(d.t, err, &exit)
		r.code = exit.ExitCode()
	}
	data, err := os.ReadFile(logFile)
	require.NoError(d.t, err)
	r.log = string(data)
	data, err = os.ReadFile(calls)
	if !os.IsNotExist(err) {
		require.NoError(d.t, err)
	}
	for _, call := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(call, "sinfo ") || call == "" {
			continue
		}
		if call == "update" {
			r.updates = append(r.updates, nil)
		}
		r.updates[len(r.updates)-1] = append(r.updates[len(r.updates)-1], call)
	}
	return r
}

// The node's whole life under NHC: clean, drained for every violation with
// any character in the names, kept drained while the check cannot run,
// resumed when clean.
func TestNHCCheckDrainsKeepsAndResumes(t *testing.T) {
	d := newNHCDriver(t)
	n := newTestNode(t, nil)
	cfg := []string{"CANHAZGPU_CONFIG=" + n.cfgFile}

	r := d.run(cfg)
	require.Equal(t, 0, r.code, r.log)
	require.Empty(t, r.updates)
	require.Contains(t, r.log, "Node node7 is already online.")

	// Names a user can choose: a quote ends NHC's single-quoted eval, the
	// rest would run or break the line if they reached a shell.
	marker := filepath.Join(t.TempDir(), "ran")
	n.gpus(4, map[int][]fakeProc{
		1: {{PID: 4242, User: "o'brien", UID: 1001, MB: 2048}},
		2: {{PID: 4243, User: `b"ob$(touch ` + marker + ")", UID: 1002, MB: 2048}},
		3: {{PID: 4244, User: "jürgen`touch " + marker + "`\nx", UID: 1003, MB: 2048}},
	})
	reason := `NHC: check_canhazgpu:  GPU 1 used by o\x27brien (pid 4242) without reservation (+2 more)`
	r = d.run(cfg)
	require.Equal(t, 1, r.code, r.log)
	require.Equal(t, [][]string{{"update", "State=DRAIN", "NodeName=node7", "Reason=" + reason}}, r.updates)
	require.Equal(t, "drain "+reason, d.node())
	require.Contains(t, r.log, `check_canhazgpu:  also:  GPU 2 used by b\x22ob\x24(touch `+marker+`) (pid 4243) without reservation`)
	require.Contains(t, r.log, "check_canhazgpu:  also:  GPU 3 used by jürgen\\x60touch "+marker+"\\x60 x (pid 4244) without reservation")
	require.NoFileExists(t, marker)
	require.Empty(t, n.sc.Calls(), "NHC marks the node, not the check")

	// Could not check, the violation still there: the drain stays, and
	// NHC's log says why.
	down := newTestNode(t, map[string]string{"redis.url": "redis://127.0.0.1:1/0", "redis.dial_timeout": "200ms"})
	for _, tc := range []struct {
		name, status string
		env          []string
	}{
		{"store down", "2", []string{"CANHAZGPU_CONFIG=" + down.cfgFile}},
		{"no config", "2", []string{"CANHAZGPU_CONFIG=" + filepath.Join(t.TempDir(), "missing.toml")}},
		{"no program", "127", []string{"CANHAZGPU_CONFIG=" + n.cfgFile, "CANHAZGPU_HEALTHCHECK=/nonexistent/canhazgpu-healthcheck"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(tc.env)
			require.Equal(t, 0, r.code, r.log)
			require.Empty(t, r.updates, r.log)
			require.Equal(t, "drain "+reason, d.node())
			require.Regexp(t, `check_canhazgpu:  \S+ could not check \(exit status `+tc.status+`\):  .+; node left as it is\n`, r.log)
		})
	}

	// A node in service stays in service through an outage, and a later
	// check that fails still drains it.
	d.setNode("idle none")
	r = d.run([]string{"CANHAZGPU_CONFIG=" + down.cfgFile})
	require.Equal(t, 0, r.code, r.log)
	require.Empty(t, r.updates)
	r = d.run([]string{"CANHAZGPU_CONFIG=" + down.cfgFile}, "check_canhazgpu", "false")
	require.Equal(t, 1, r.code, r.log)
	require.Equal(t, [][]string{{"update", "State=DRAIN", "NodeName=node7", "Reason=NHC: Check false returned 1"}}, r.updates)

	// Clean again: NHC resumes the node it drained.
	d.setNode("drain " + reason)
	n.gpus(4, nil)
	r = d.run(cfg)
	require.Equal(t, 0, r.code, r.log)
	require.Equal(t, [][]string{{"update", "State=RESUME", "NodeName=node7"}}, r.updates)
	require.Equal(t, "idle none", d.node())
}

// The check's time limit: [health] timeout, but at most half of NHC's
// TIMEOUT, so that a frozen store ends the check before NHC's watchdog;
// CANHAZGPU_HEALTHCHECK_TIMEOUT overrides both. The NHC check hands the
// program its share; a stand-in program records what it was given, and
// says it could not check, as the real one does when its limit passes.
func TestNHCCheckTimeLimit(t *testing.T) {
	d := newNHCDriver(t)
	got := filepath.Join(d.dir, "got")
	stub := filepath.Join(d.dir, "healthcheck")
	require.NoError(t, os.WriteFile(stub, []byte("#!/bin/sh\n"+
		"echo \"args=$* limit=${CANHAZGPU_HEALTH_TIMEOUT:-unset}\" > "+got+"\n"+
		"echo 'ERROR:  canhazgpu:  could not check: store: i/o timeout'\nexit 2\n"), 0o755))
	d.setNode("drain NHC: check_canhazgpu:  GPU 1 used by bob (pid 4242) without reservation")

	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"half of NHC's", []string{"TIMEOUT=6"}, "args=--nhc --nhc-timeout 6 limit=unset"},
		{"none without NHC's", []string{"TIMEOUT=0"}, "args=--nhc limit=unset"},
		{"the explicit one", []string{"TIMEOUT=120", "CANHAZGPU_HEALTHCHECK_TIMEOUT=1s"}, "args=--nhc limit=1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(append([]string{"CANHAZGPU_HEALTHCHECK=" + stub}, tc.env...))
			data, err := os.ReadFile(got)
			require.NoError(t, err)
			require.Equal(t, tc.want+"\n", string(data))
			require.Equal(t, 0, r.code, r.log)
			require.Contains(t, r.log, "could not check (exit status 2):  could not check: store: i/o timeout; node left as it is")
			require.Empty(t, r.updates, "the drained node stays drained")
		})
	}

	// The program takes the smaller of its own limit and half of NHC's.
	for _, tc := range []struct{ configured, nhc, want time.Duration }{
		{120 * time.Second, 6 * time.Second, 3 * time.Second},
		{time.Second, 120 * time.Second, time.Second},
		{120 * time.Second, 0, 120 * time.Second},
	} {
		require.Equal(t, tc.want, timeLimit(tc.configured, tc.nhc), "[health] timeout %s, NHC's %s", tc.configured, tc.nhc)
	}
}

// A check that could not see everything (slurmd's spool directory is
// unknown) still reports what it found: the violation drains the node,
// and NHC's log says what could not be checked. It is never healthy.
func TestNHCCheckDrainsWhatABlindCheckFound(t *testing.T) {
	d := newNHCDriver(t)
	n := newTestNode(t, map[string]string{"health.slurmd_spool_dir": "/nonexistent/spool"})
	boot, err := jobstate.BootID("") // the program's, run as NHC runs it
	require.NoError(t, err)
	n.reserve(allocator.KindSlurm, "alice", 1002, "18", boot, 1) // a job to judge
	cfg := []string{"CANHAZGPU_CONFIG=" + n.cfgFile}

	r := d.run(cfg)
	require.Equal(t, 0, r.code, r.log)
	require.Empty(t, r.updates, "nothing found: the node is left as it is")
	require.Contains(t, r.log, "could not check (exit status 2):  could not check: cannot judge slurm jobs: "+
		"the slurmd spool directory /nonexistent/spool does not exist")
	require.NotContains(t, r.log, "no GPU used without its reservation")

	n.gpus(4, map[int][]fakeProc{3: {{PID: 70, User: "eve", UID: 1005, MB: 4096}}})
	r = d.run(cfg)
	require.Equal(t, 1, r.code, r.log)
	reason := "NHC: check_canhazgpu:  GPU 3 used by eve (pid 70) without reservation"
	require.Equal(t, [][]string{{"update", "State=DRAIN", "NodeName=node7", "Reason=" + reason}}, r.updates)
	require.Contains(t, r.log, "check_canhazgpu:  also:  could not check: cannot judge slurm jobs: the slurmd spool directory /nonexistent/spool does not exist")
}
