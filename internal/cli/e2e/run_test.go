package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// shortLease makes leases end quickly, so tests can watch them lapse.
var shortLease = []string{"CANHAZGPU_RUN_HEARTBEAT_INTERVAL=200ms", "CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=1500ms", "CANHAZGPU_RUN_KILL_GRACE=500ms"}

func TestRunExitStatusAndRelease(t *testing.T) {
	n := newNode(t, idleGPUs(2), shortLease...)
	notExec := filepath.Join(n.dir, "not-executable.sh")
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644))
	badInterp := filepath.Join(n.dir, "bad-interpreter.sh")
	require.NoError(t, os.WriteFile(badInterp, []byte("#!/nonexistent/interpreter\n"), 0o755))

	for _, c := range []struct {
		name    string
		args    []string
		code    int
		stderr  string
		granted bool // the GPUs were reserved, then released
	}{
		{"exit status", []string{"sh", "-c", "exit 3"}, 3, "", true},
		{"killed by a signal", []string{"sh", "-c", "kill -KILL $$"}, 137, "", true},
		{"terminated", []string{"sh", "-c", "kill -TERM $$"}, 143, "", true},
		{"not found", []string{"no-such-command-xyz"}, 127, "Error: no-such-command-xyz: command not found\n", false},
		{"missing path", []string{"/nonexistent/tool"}, 127, "Error: /nonexistent/tool: no such file or directory\n", false},
		{"not executable", []string{notExec}, 126, "Error: " + notExec + ": permission denied\n", false},
		{"directory", []string{n.dir}, 126, "Error: " + n.dir + ": is a directory\n", false},
		// Found, but exec fails after the GPUs were reserved: released.
		{"bad interpreter", []string{badInterp}, 127, "Error: " + badInterp + ": fork/exec " + badInterp + ": no such file or directory\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			hist, err := n.store().History(context.Background(), time.Now().Add(-time.Hour))
			require.NoError(t, err)
			r := n.run(append([]string{"run", "--gpus", "2", "--"}, c.args...)...)
			require.Equal(t, c.code, r.code, r.stderr)
			require.Equal(t, c.stderr, r.stderr)
			require.Empty(t, n.reservations(), "released at exit")
			after, err := n.store().History(context.Background(), time.Now().Add(-time.Hour))
			require.NoError(t, err)
			if c.granted {
				require.Len(t, after, len(hist)+2, "two GPUs reserved and released")
				require.Equal(t, "released", after[len(after)-1].End)
			} else {
				require.Len(t, after, len(hist), "a command that is not there costs no reservation")
			}
		})
	}
}

func TestRunWaitsForBusyGPUs(t *testing.T) {
	n := newNode(t, idleGPUs(1), `queue.poll_interval = "50ms"`)
	require.Equal(t, 0, n.run("reserve", "--user", "zoe").code)
	cmd := n.command("", "run", "--wait", "1m", "--", "sh", "-c", "echo got $CUDA_VISIBLE_DEVICES")
	var out, errw bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errw
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return strings.Contains(n.run("queue").stdout, "1 request waiting") }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, 0, n.run("release", "--user", "zoe").code)
	require.NoError(t, cmd.Wait(), errw.String())
	require.Equal(t, "got 0\n", out.String())
	require.Equal(t, "Waiting for 1 GPU on node "+n.name+": position 1 in the queue (Ctrl-C to give up)\n", errw.String())
	require.Empty(t, n.reservations())
}

func TestRunTimeoutKillsACommandIgnoringTerm(t *testing.T) {
	n := newNode(t, idleGPUs(1), shortLease...)
	start := time.Now()
	r := n.run("run", "--timeout", "300ms", "--", "sh", "-c", `trap "" TERM; echo ready; sleep 30`)
	require.Equal(t, 137, r.code, r.stderr)
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, "ready\n", r.stdout)
	require.Equal(t, "canhazgpu: --timeout 300ms reached: stopping the command (TERM, then KILL after 500ms)\n", r.stderr)
	require.Empty(t, n.reservations())
}

func TestRunForwardsSignalsToTheProcessGroup(t *testing.T) {
	n := newNode(t, idleGPUs(1), shortLease...)
	pids := filepath.Join(n.dir, "pids")
	cmd := n.command("", "run", "--", "sh", "-c",
		`sleep 30 & echo $! > `+pids+`; trap 'echo got TERM; exit 7' TERM; wait`)
	var out bytes.Buffer
	cmd.Stdout = &out
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill() }()
	var sleepPID int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pids)
		if err != nil {
			return false
		}
		sleepPID, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && n.reservations()[0] == "root"
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err := cmd.Wait()
	require.Error(t, err)
	require.Equal(t, 7, cmd.ProcessState.ExitCode(), "the command's own status")
	require.Equal(t, "got TERM\n", out.String())
	require.Eventually(t, func() bool { return !alive(sleepPID) }, 5*time.Second, 20*time.Millisecond, "the background child got the signal too")
	require.Empty(t, n.reservations())
}

func TestRunKilledWithSIGKILLLeavesAReservationThatLapses(t *testing.T) {
	n := newNode(t, idleGPUs(1), shortLease...)
	pidFile := filepath.Join(n.dir, "pid")
	cmd := n.command("", "run", "--", "sh", "-c", `echo $$ > `+pidFile+`; exec sleep 30`)
	require.NoError(t, cmd.Start())
	var child int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && n.reservations()[0] == "root"
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	killedAt := time.Now()

	// The command dies with canhazgpu, rather than run on a GPU whose
	// reservation is about to lapse.
	require.Eventually(t, func() bool { return !alive(child) }, 5*time.Second, 20*time.Millisecond)
	// Nobody released it: held until the heartbeat times out, then free.
	require.Equal(t, map[int]string{0: "root"}, n.reservations())
	require.Equal(t, 1, n.runAs("", "reserve", "--user", "someone-else").code)
	require.Eventually(t, func() bool {
		var doc struct {
			GPUs []struct {
				Status string `json:"status"`
			} `json:"gpus"`
		}
		r := n.run("status", "--json")
		return json.Unmarshal([]byte(r.stdout), &doc) == nil && doc.GPUs[0].Status == "available"
	}, 10*time.Second, 50*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(killedAt), time.Second, "not before heartbeat_timeout (1.5s after the last heartbeat)")
	r := n.run("reserve", "--user", "someone-else", "--short")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "0\n", r.stdout)
}

func TestRunStopsWhenTheLeaseIsLost(t *testing.T) {
	n := newNode(t, idleGPUs(1), shortLease...)
	cmd := n.command("", "run", "--", "sleep", "30")
	var errw bytes.Buffer
	cmd.Stderr = &errw
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill() }()
	require.Eventually(t, func() bool { return n.reservations()[0] == "root" }, 5*time.Second, 20*time.Millisecond)
	// An administrator takes the GPU away; someone else gets it.
	require.Equal(t, 0, n.run("admin", "--release", "--gpu-ids", "0").code)
	require.Equal(t, 0, n.run("reserve", "--user", "zoe", "--gpu-ids", "0").code)
	err := cmd.Wait()
	require.Error(t, err)
	require.Equal(t, 143, cmd.ProcessState.ExitCode())
	require.Contains(t, errw.String(), "canhazgpu: warning: reservation of GPU GPU-fa4e0000-0000-4000-8000-000000000000 was lost: now held by zoe (manual); stopping the command")
	require.Contains(t, errw.String(), "Error: the command was stopped because its reservation was lost")
	require.Equal(t, map[int]string{0: "zoe"}, n.reservations(), "the new owner keeps the GPU")
}

// TestRunGivesTheCommandTheTerminal runs canhazgpu on a pseudo-terminal
// (script(1)): the command's process group must be the terminal's
// foreground group.
func TestRunGivesTheCommandTheTerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("script(1) is needed (Debian package bsdutils): ", err)
	}
	n := newNode(t, idleGPUs(1))
	cmd := exec.Command("script", "-qec", bin+` run -- sh -c 'ps -o pgid=,tpgid= -p $$'`, "/dev/null")
	cmd.Env, cmd.Dir = n.environ, n.dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	f := strings.Fields(string(out))
	require.Len(t, f, 2, "%q", out)
	require.Equal(t, f[0], f[1], "foreground group of the terminal is the command's")
}

// TestRunFollowsJobControl suspends `run` with Ctrl-Z in an interactive
// bash on a pseudo-terminal, checks that the command is stopped too, and
// resumes it with fg (testdata/jobcontrol.py drives the terminal).
func TestRunFollowsJobControl(t *testing.T) {
	n := newNode(t, idleGPUs(1))
	cmd := exec.Command("python3", filepath.Join("testdata", "jobcontrol.py"), bin)
	cmd.Env = n.environ
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var res struct {
		TicksWhileStopped int    `json:"ticks_while_stopped"`
		TicksAfterFg      int    `json:"ticks_after_fg"`
		Stopped           bool   `json:"stopped"`
		Finished          bool   `json:"finished"`
		Transcript        string `json:"transcript"`
	}
	require.NoError(t, json.Unmarshal(out, &res), "%s", out)
	require.True(t, res.Stopped, res.Transcript)
	require.Zero(t, res.TicksWhileStopped, res.Transcript)
	require.Positive(t, res.TicksAfterFg, res.Transcript)
	require.True(t, res.Finished, res.Transcript)
	require.Empty(t, n.reservations())
}

// alive reports whether pid runs: not gone and not a zombie (orphans may
// stay zombies here, where nobody reaps them).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
