package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/proctest"

	"canhazgpu/allocator/store"
	"canhazgpu/internal/callerenv"
	"canhazgpu/internal/keeper"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	// run re-executes this binary as the keeper of its command.
	if keeper.Invoked(os.Args) {
		os.Exit(keeper.Main(os.Args, callerenv.Secure()))
	}
	os.Exit(redistest.Run(m, &srv))
}

var nodeSeq atomic.Int64

// fixture is one node of fake GPUs in the test server, with its own name
// so that tests share the server safely.
type fixture struct {
	t        testing.TB
	node     string
	gpuFile  string
	cfgFile  string // the system config file: site settings come from here
	redisURL string
	environ  []string
}

// The identities commands run as: in-process tests set them directly
// (the end-to-end tests use real accounts).
var (
	alice = Identity{Name: "alice", UID: 2001}
	bob   = Identity{Name: "bob", UID: 2002}
	root  = Identity{Name: "root", UID: 0}
)

// newFixture makes a node whose system config names the test server and
// the fake GPU file. Each extra item is a config line when it contains
// " = " (`queue.poll_interval = "50ms"`), else an environment variable.
func newFixture(t testing.TB, gpusJSON string, extra ...string) *fixture {
	t.Helper()
	return newFixtureAt(t, srv.SocketURL(), gpusJSON, extra...)
}

// newFixtureAt is newFixture on another Redis server than the shared one.
func newFixtureAt(t testing.TB, redisURL, gpusJSON string, extra ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, node: fmt.Sprintf("cli%d", nodeSeq.Add(1)), gpuFile: filepath.Join(dir, "gpus.json"),
		cfgFile: filepath.Join(dir, "config.toml"), redisURL: redisURL}
	f.setGPUs(gpusJSON)
	lines := []string{
		fmt.Sprintf("node = %q", f.node),
		fmt.Sprintf("redis.url = %q", redisURL),
		`gpu.provider = "fake"`,
		fmt.Sprintf("gpu.fake_file = %q", f.gpuFile),
	}
	f.environ = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range extra {
		if strings.Contains(e, " = ") {
			lines = append(lines, e)
		} else {
			f.environ = append(f.environ, e)
		}
	}
	require.NoError(t, os.WriteFile(f.cfgFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return f
}

// registered is newFixture for tests that act as ordinary users: root
// registers the node's GPUs first, as the boot unit does on a real node.
func registered(t *testing.T, gpusJSON string, extra ...string) *fixture {
	t.Helper()
	f := newFixture(t, gpusJSON, extra...)
	r := f.run(root, "admin", "--register")
	require.Equal(t, 0, r.code, r.stderr)
	return f
}

// setGPUs replaces the fake GPU file atomically, as the provider rereads
// it at every scan.
func (f *fixture) setGPUs(gpusJSON string) {
	tmp := f.gpuFile + ".tmp"
	require.NoError(f.t, os.WriteFile(tmp, []byte(gpusJSON), 0o644))
	require.NoError(f.t, os.Rename(tmp, f.gpuFile))
}

// idleGPUs is a fake GPU file with n idle GPUs.
func idleGPUs(n int) string {
	s := `{"gpus": [`
	for i := range n {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf(`{"index": %d, "memory_used_mb": 0}`, i)
	}
	return s + "]}"
}

type result struct {
	stdout, stderr string
	code           int
	err            error
}

func (f *fixture) env(id Identity) (*Env, *proctest.SyncBuffer, *proctest.SyncBuffer) {
	var out, errw proctest.SyncBuffer
	return &Env{Stdout: &out, Stderr: &errw, Environ: f.environ, User: id, SystemFile: f.cfgFile}, &out, &errw
}

// run runs one command line as id and returns what main would print.
func (f *fixture) run(id Identity, args ...string) result {
	f.t.Helper()
	env, out, errw := f.env(id)
	err := Run(context.Background(), args, env)
	r := result{stdout: out.String(), stderr: errw.String(), code: ExitCode(err), err: err}
	if line := ErrorLine(err); line != "" {
		r.stderr += line + "\n"
	}
	return r
}

// store opens the fixture's node in the store, for checks.
func (f *fixture) store() *store.Store {
	f.t.Helper()
	st, err := store.Open(context.Background(), store.Conn{URL: f.redisURL, DialTimeout: time.Second, OpTimeout: 2 * time.Second}, f.node, store.Options{})
	require.NoError(f.t, err)
	f.t.Cleanup(func() { st.Close() })
	return st
}
