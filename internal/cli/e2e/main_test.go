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
	"slices"
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
	// healthcheck is canhazgpu-healthcheck, built beside bin; the demo
	// script runs both.
	healthcheck string
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
	dir, err := buildtest.Build(map[string]string{
		"canhazgpu":             "canhazgpu/cmd/canhazgpu",
		"canhazgpu-healthcheck": "canhazgpu/cmd/canhazgpu-healthcheck",
	})
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	shared, bin, healthcheck = dir, filepath.Join(dir, "canhazgpu"), filepath.Join(dir, "canhazgpu-healthcheck")
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
	cfgFile  string // the node's system config, root's alone
	redisURL string
	environ  []string
	userBin  string // canhazgpu with cfgFile compiled in, built on first use
}

// newNode makes a node whose system config names the test server and the
// fake GPU file, and registers its GPUs as root. Each extra item is a
// config line when it contains " = " (`run.heartbeat_timeout = "3s"`),
// else an environment variable. A gpu.provider line replaces the fake
// provider's lines.
func newNode(t testing.TB, gpusJSON string, extra ...string) *node {
	t.Helper()
	return newNodeOn(t, srv, gpusJSON, extra...)
}

// newNodeOn is newNode in the given server, for tests that restart it.
func newNodeOn(t testing.TB, server *redistest.Server, gpusJSON string, extra ...string) *node {
	t.Helper()
	dir, err := os.MkdirTemp(shared, "node-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	n := &node{t: t, name: fmt.Sprintf("e2e%d", nodeSeq.Add(1)), dir: dir, gpuFile: filepath.Join(dir, "gpus.json"),
		cfgFile: filepath.Join(dir, "config.toml"), redisURL: server.URL()}
	n.setGPUs(gpusJSON)
	lines := []string{
		fmt.Sprintf("node = %q", n.name),
		// TCP rather than the socket: the socket's directory is private.
		fmt.Sprintf("redis.url = %q", n.redisURL),
	}
	gpuLines := []string{`gpu.provider = "fake"`, fmt.Sprintf("gpu.fake_file = %q", n.gpuFile)}
	// Root's commands name the node's config; users' have it compiled in.
	n.environ = []string{"PATH=" + shared + ":/usr/local/bin:/usr/bin:/bin", "CANHAZGPU_CONFIG=" + n.cfgFile}
	for _, e := range extra {
		switch {
		case strings.HasPrefix(e, "gpu.provider = "):
			gpuLines = []string{e}
		case strings.Contains(e, " = "):
			lines = append(lines, e)
		default:
			n.environ = append(n.environ, e)
		}
	}
	lines = append(lines, gpuLines...)
	require.NoError(t, os.WriteFile(n.cfgFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	r := n.run("admin", "--register")
	require.Equal(t, 0, r.code, r.stderr)
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

// command prepares canhazgpu as root (user "", naming the node's config
// with CANHAZGPU_CONFIG, as only root may) or, through runuser, as a test
// account (with the node's config compiled in, as a package installs it).
func (n *node) command(user string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if user == "" {
		cmd = exec.Command(bin, args...)
		cmd.Env = n.environ
	} else {
		cmd = exec.Command("runuser", append([]string{"-u", user, "--", n.userBinary()}, args...)...)
		cmd.Env = n.userEnviron()
	}
	cmd.Dir = n.dir
	return cmd
}

// userEnviron is the environment of a test account's command: without
// CANHAZGPU_CONFIG, which only root may set.
func (n *node) userEnviron() []string {
	return slices.DeleteFunc(slices.Clone(n.environ), func(e string) bool { return strings.HasPrefix(e, "CANHAZGPU_CONFIG=") })
}

// userBinary is canhazgpu built with this node's config as its system
// file: what test accounts run.
func (n *node) userBinary() string {
	n.t.Helper()
	if n.userBin == "" {
		dir, err := buildtest.BuildWithSystemFile(map[string]string{"canhazgpu": "canhazgpu/cmd/canhazgpu"}, n.cfgFile)
		require.NoError(n.t, err)
		n.t.Cleanup(func() { os.RemoveAll(dir) })
		n.userBin = filepath.Join(dir, "canhazgpu")
	}
	return n.userBin
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
