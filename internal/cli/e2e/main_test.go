// Package e2e runs the built canhazgpu binary against a private
// redis-server and the fake GPU provider, as users and shells run it.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/store"
	"canhazgpu/internal/buildtest"
	"canhazgpu/internal/redistest"
)

var (
	srv *redistest.Server
	// bin is the canhazgpu binary, built once for the test binary in a
	// world-readable directory so that the test accounts can run it.
	bin string
	// shared holds bin and the fixtures the test accounts must read.
	shared string
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := buildtest.Build(map[string]string{"canhazgpu": "canhazgpu/cmd/canhazgpu"})
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	shared, bin = dir, filepath.Join(dir, "canhazgpu")
	srv, err = redistest.Start(redistest.Options{})
	if err != nil {
		return 1, err
	}
	defer srv.Stop()
	return m.Run(), nil
}

var nodeSeq atomic.Int64

// node is one fake node in the shared server, named after its test so
// that tests never see each other's reservations.
type node struct {
	t        testing.TB
	name     string
	dir      string // world-readable: fake GPU file and config
	gpuFile  string
	redisURL string
	environ  []string
}

func newNode(t testing.TB, gpusJSON string, env ...string) *node {
	t.Helper()
	return newNodeOn(t, srv, gpusJSON, env...)
}

// newNodeOn is newNode in the given server, for tests that restart it.
func newNodeOn(t testing.TB, server *redistest.Server, gpusJSON string, env ...string) *node {
	t.Helper()
	dir, err := os.MkdirTemp(shared, "node-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	n := &node{t: t, name: fmt.Sprintf("e2e%d", nodeSeq.Add(1)), dir: dir, gpuFile: filepath.Join(dir, "gpus.json"), redisURL: server.URL()}
	n.setGPUs(gpusJSON)
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, nil, 0o644))
	n.environ = append([]string{
		"PATH=" + shared + ":/usr/local/bin:/usr/bin:/bin",
		"CANHAZGPU_CONFIG=" + cfg,
		// TCP rather than the socket: the socket's directory is private.
		"CANHAZGPU_REDIS_URL=" + n.redisURL,
		"CANHAZGPU_NODE=" + n.name,
		"CANHAZGPU_GPU_PROVIDER=fake",
		"CANHAZGPU_GPU_FAKE_FILE=" + n.gpuFile,
	}, env...)
	return n
}

// setGPUs replaces the fake GPU file atomically.
func (n *node) setGPUs(gpusJSON string) {
	tmp := n.gpuFile + ".tmp"
	require.NoError(n.t, os.WriteFile(tmp, []byte(gpusJSON), 0o644))
	require.NoError(n.t, os.Rename(tmp, n.gpuFile))
}

func idleGPUs(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"index": %d, "memory_used_mb": 0}`, i)
	}
	return `{"gpus": [` + strings.Join(parts, ",") + `]}`
}

type result struct {
	stdout, stderr string
	code           int
}

// command prepares canhazgpu as root (user "") or, through runuser, as a
// test account.
func (n *node) command(user string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if user == "" {
		cmd = exec.Command(bin, args...)
	} else {
		cmd = exec.Command("runuser", append([]string{"-u", user, "--", bin}, args...)...)
	}
	cmd.Env = n.environ
	cmd.Dir = n.dir
	return cmd
}

func (n *node) run(args ...string) result { n.t.Helper(); return n.runAs("", args...) }

func (n *node) runAs(user string, args ...string) result {
	n.t.Helper()
	return runCmd(n.t, n.command(user, args...))
}

func runCmd(t testing.TB, cmd *exec.Cmd) result {
	t.Helper()
	var out, errw bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errw
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	case err != nil:
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return result{stdout: out.String(), stderr: errw.String(), code: code}
}

// store opens the node in the store, for checks behind the binary's back.
func (n *node) store() *store.Store {
	n.t.Helper()
	st, err := store.Open(context.Background(), store.Conn{URL: n.redisURL, DialTimeout: time.Second, OpTimeout: 2 * time.Second}, n.name, store.Options{})
	require.NoError(n.t, err)
	n.t.Cleanup(func() { st.Close() })
	return st
}

// reservations maps GPU index to the holder's user, from the store.
func (n *node) reservations() map[int]string {
	n.t.Helper()
	snap, err := n.store().Snapshot(context.Background())
	require.NoError(n.t, err)
	out := map[int]string{}
	for _, g := range snap.GPUs {
		if r, ok := snap.Reservations[g.UUID]; ok {
			out[g.Index] = r.User
		}
	}
	return out
}

// oneErrorLine checks that stderr is exactly one line starting "Error: ".
func oneErrorLine(t testing.TB, r result) string {
	t.Helper()
	require.True(t, strings.HasPrefix(r.stderr, "Error: "), "stderr %q", r.stderr)
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
	return strings.TrimSuffix(r.stderr, "\n")
}

// ensureAccount creates a test account (and its groups) once; later runs
// find it. The accounts have no home directory and no password.
func ensureAccount(t testing.TB, name string, groups ...string) {
	t.Helper()
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
