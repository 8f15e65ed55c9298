// Package accounttest creates the machine's test accounts and runs
// commands as them, for tests that check what an ordinary user can and
// cannot do. It needs root, as useradd and runuser do.
package accounttest

import (
	"bufio"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"canhazgpu/internal/testreq"
)

// Ensure creates an account (and its supplementary groups) once; later
// runs find it and add any missing group. The accounts have no home
// directory and no password.
func Ensure(t testing.TB, name string, groups ...string) {
	t.Helper()
	testreq.Need(t, testreq.Root, testreq.Useradd, testreq.Runuser)
	for _, g := range groups {
		if exec.Command("getent", "group", g).Run() != nil {
			out, err := exec.Command("groupadd", g).CombinedOutput()
			require.NoError(t, err, "groupadd %s: %s", g, out)
		}
	}
	if exec.Command("id", "-u", name).Run() != nil {
		args := []string{"-M", "-s", "/bin/sh"}
		if len(groups) > 0 {
			args = append(args, "-G", strings.Join(groups, ","))
		}
		out, err := exec.Command("useradd", append(args, name)...).CombinedOutput()
		require.NoError(t, err, "useradd %s: %s", name, out)
	} else if len(groups) > 0 {
		out, err := exec.Command("usermod", "-aG", strings.Join(groups, ","), name).CombinedOutput()
		require.NoError(t, err, "usermod %s: %s", name, out)
	}
}

// Run runs a program as the account and returns its output, stdout and
// stderr together.
func Run(account, name string, args ...string) (string, error) {
	out, err := exec.Command("runuser", append([]string{"-u", account, "--", name}, args...)...).CombinedOutput()
	return string(out), err
}

// Output is Run for a program that must succeed.
func Output(t testing.TB, account, name string, args ...string) string {
	t.Helper()
	out, err := Run(account, name, args...)
	require.NoError(t, err, "%s as %s: %s", name, account, out)
	return out
}

// StartWaiting runs a process of the account that waits for a signal
// (python3; ignoring SIGTERM if told to) and returns its PID once it
// runs. It is killed at the end of the test if it still runs.
func StartWaiting(t testing.TB, account string, ignoreTerm bool) int {
	t.Helper()
	testreq.Need(t, testreq.Python3)
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
	// Held by a pidfd, so that the cleanup cannot signal another process
	// that has taken the PID once a test stopped this one.
	fd, err := unix.PidfdOpen(pid, 0)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return pid
}

// UID is the account's user id.
func UID(t testing.TB, account string) int {
	t.Helper()
	u, err := user.Lookup(account)
	require.NoError(t, err)
	uid, err := strconv.Atoi(u.Uid)
	require.NoError(t, err)
	return uid
}
