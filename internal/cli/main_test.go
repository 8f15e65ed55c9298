package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/store"
	"canhazgpu/internal/keeper"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	// run re-executes this binary as the keeper of its command.
	if keeper.Invoked(os.Args) {
		os.Exit(keeper.Main(os.Args))
	}
	os.Exit(redistest.Run(m, &srv))
}

var nodeSeq atomic.Int64

// fixture is one node of fake GPUs in the test server, with its own name
// so that tests share the server safely.
type fixture struct {
	t       *testing.T
	node    string
	gpuFile string
	environ []string
}

// The identities commands run as: in-process tests set them directly
// (the end-to-end tests use real accounts).
var (
	alice = Identity{Name: "alice", UID: 2001}
	bob   = Identity{Name: "bob", UID: 2002}
	root  = Identity{Name: "root", UID: 0}
)

func newFixture(t *testing.T, gpusJSON string, extraEnv ...string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, node: fmt.Sprintf("cli%d", nodeSeq.Add(1)), gpuFile: filepath.Join(dir, "gpus.json")}
	f.setGPUs(gpusJSON)
	cfg := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(cfg, nil, 0o644))
	f.environ = append([]string{
		"CANHAZGPU_CONFIG=" + cfg,
		"CANHAZGPU_REDIS_URL=" + srv.SocketURL(),
		"CANHAZGPU_NODE=" + f.node,
		"CANHAZGPU_GPU_PROVIDER=fake",
		"CANHAZGPU_GPU_FAKE_FILE=" + f.gpuFile,
		"PATH=" + os.Getenv("PATH"),
	}, extraEnv...)
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

// syncBuffer lets a command's output be read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (f *fixture) env(id Identity) (*Env, *syncBuffer, *syncBuffer) {
	var out, errw syncBuffer
	return &Env{Stdout: &out, Stderr: &errw, Environ: f.environ, User: id}, &out, &errw
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
	st, err := store.Open(context.Background(), store.Conn{URL: srv.SocketURL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, f.node, store.Options{})
	require.NoError(f.t, err)
	f.t.Cleanup(func() { st.Close() })
	return st
}
