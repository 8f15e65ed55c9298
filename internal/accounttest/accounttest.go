// Package accounttest creates the machine's test accounts and runs
// commands as them, for tests that check what an ordinary user can and
// cannot do. It needs root, as useradd and runuser do.
package accounttest

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

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
