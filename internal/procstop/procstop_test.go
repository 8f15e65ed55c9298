package procstop

import (
	"bufio"
	"context"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/accounttest"
	"canhazgpu/internal/testreq"
)

const account = "chgstop"

// start runs a Python process as the test account that waits for a
// signal, ignoring SIGTERM if told to, and returns its PID, which it
// prints once it runs.
func start(t *testing.T, ignoreTerm bool) int {
	t.Helper()
	testreq.Need(t, testreq.Python3)
	accounttest.Ensure(t, account)
	script := "import os, signal\n"
	if ignoreTerm {
		script += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
	}
	script += "print(os.getpid(), flush=True)\nsignal.pause()\n"
	cmd := exec.Command("runuser", "-u", account, "--", "python3", "-c", script)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)
	t.Cleanup(func() { exec.Command("kill", "-9", strconv.Itoa(pid)).Run() })
	return pid
}

func accountUID(t *testing.T) int {
	u, err := user.Lookup(account)
	require.NoError(t, err)
	uid, err := strconv.Atoi(u.Uid)
	require.NoError(t, err)
	return uid
}

func TestIdentify(t *testing.T) {
	pid := start(t, false)
	id, err := Procs{}.Identify(pid)
	require.NoError(t, err)
	require.Equal(t, accountUID(t), id.UID)
	require.False(t, id.Root)
	require.NotZero(t, id.Start)
	require.Contains(t, id.Exe, "python3")
	_, err = Procs{}.Identify(1 << 30)
	require.Error(t, err)
}

// TestStop: SIGTERM ends a process that heeds it; one that ignores it gets
// SIGKILL after the wait; a process whose identity changed, and root's, get
// nothing.
func TestStop(t *testing.T) {
	ctx := context.Background()
	p := Procs{}
	heeds := start(t, false)
	id, err := p.Identify(heeds)
	require.NoError(t, err)
	how, err := p.Stop(ctx, heeds, id, time.Minute)
	require.NoError(t, err)
	require.Equal(t, "term", how)
	_, err = p.Identify(heeds)
	require.Error(t, err, "ended")

	ignores := start(t, true)
	id, err = p.Identify(ignores)
	require.NoError(t, err)
	how, err = p.Stop(ctx, ignores, id, 200*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, "kill", how)
	_, err = p.Identify(ignores)
	require.Error(t, err, "ended")

	other := start(t, false)
	id, err = p.Identify(other)
	require.NoError(t, err)
	changed := id
	changed.Start++
	_, err = p.Stop(ctx, other, changed, time.Minute)
	require.ErrorIs(t, err, ErrChanged)
	changed = id
	changed.Exe = "/usr/bin/python3"
	_, err = p.Stop(ctx, other, changed, time.Minute)
	require.ErrorIs(t, err, ErrChanged)
	_, err = p.Identify(other)
	require.NoError(t, err, "still running")

	self, err := p.Identify(1) // init: root's
	require.NoError(t, err)
	_, err = p.Stop(ctx, 1, self, time.Minute)
	require.ErrorIs(t, err, ErrRoot)
}
