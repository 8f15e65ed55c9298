package keeper

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/proctest"
)

// Start re-executes this test binary as the keeper, which reads the
// command's environment from its own memory, as the installed set-group-ID
// keeper does.
func TestMain(m *testing.M) {
	if Invoked(os.Args) {
		os.Exit(Main(os.Args, true))
	}
	os.Exit(m.Run())
}

// warnings collects what the keeper says.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) add(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// start runs sh -c script under a keeper, in dir, with output discarded.
func start(t *testing.T, dir, script string, w *warnings) *Tree {
	t.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	tree, err := Start(Options{Path: "/bin/sh", Argv: []string{"sh", "-c", "cd " + dir + " || exit 99; " + script},
		Environ: os.Environ(), Stdin: null, Stdout: null, Stderr: null, Grace: 5 * time.Second, Warn: w.add})
	require.NoError(t, err)
	return tree
}

// alive reports a process that exists and is not a zombie.
func alive(pid int) bool {
	p, err := readProc(pid)
	return err == nil && !p.gone()
}

// daemon is a shell command that leaves a process in a session of its
// own, the way daemons escape their parent's process group, writing its
// pid to file.
func daemon(file string) string {
	return `setsid sh -c 'echo $$ > ` + file + `; exec sleep 300' &`
}

func TestFinishStopsWhatTheCommandLeftRunning(t *testing.T) {
	dir := t.TempDir()
	var w warnings
	// A background child, a setsid'd one, and one that double-forked so
	// that its parent is gone: all outlive the command.
	tree := start(t, dir, `sleep 300 & echo $! > bg; `+daemon("sid")+` (`+daemon("orphan")+`); exit 3`, &w)
	left := proctest.PIDs(t, dir, "bg", "sid", "orphan")
	ws := <-tree.Events
	require.True(t, ws.Exited(), "%v", ws)
	require.Equal(t, 3, ws.ExitStatus())
	for _, pid := range left {
		require.True(t, alive(pid), "pid %d runs after the command ended", pid)
	}

	require.NoError(t, tree.Finish())
	for _, pid := range left {
		require.False(t, alive(pid), "pid %d is gone once Finish returns", pid)
	}
	require.Equal(t, []string{"stopping the processes the command left running"}, w.all())
}

func TestFinishSaysNothingWhenNothingIsLeft(t *testing.T) {
	var w warnings
	tree := start(t, t.TempDir(), `kill -TERM $$`, &w)
	ws := <-tree.Events
	require.True(t, ws.Signaled())
	require.Equal(t, syscall.SIGTERM, ws.Signal())
	require.NoError(t, tree.Finish())
	require.Empty(t, w.all())
}

// TestTheTreeDiesWithRun: the end of the control pipe is what the keeper
// sees when run dies, even by SIGKILL; every process below the keeper is
// killed then, while the command still runs.
func TestTheTreeDiesWithRun(t *testing.T) {
	dir := t.TempDir()
	var w warnings
	tree := start(t, dir, `echo $$ > cmd; sleep 300 & echo $! > bg; `+daemon("sid")+` wait`, &w)
	procs := proctest.PIDs(t, dir, "cmd", "bg", "sid")
	keeperPid := tree.keeper.Pid
	below, err := descendants(keeperPid)
	require.NoError(t, err)
	var found []int
	for _, p := range below {
		found = append(found, p.pid)
	}
	require.Subset(t, found, procs, "the keeper is the ancestor of every process")

	require.NoError(t, tree.control.Close())
	ws := <-tree.Events
	require.True(t, ws.Signaled(), "%v", ws)
	require.Equal(t, syscall.SIGKILL, ws.Signal())
	_, err = tree.keeper.Wait()
	require.NoError(t, err)
	for _, pid := range procs {
		require.False(t, alive(pid), "pid %d outlived run", pid)
	}
}

// TestALostKeeperTakesTheCommandWithIt: someone kills the keeper; the
// command's process group goes with it and Finish says so.
func TestALostKeeperTakesTheCommandWithIt(t *testing.T) {
	dir := t.TempDir()
	var w warnings
	tree := start(t, dir, `echo $$ > cmd; sleep 300 & echo $! > bg; wait`, &w)
	procs := proctest.PIDs(t, dir, "cmd", "bg")
	require.NoError(t, tree.keeper.Kill())
	ws := <-tree.Events
	require.Equal(t, syscall.SIGKILL, ws.Signal())
	err := tree.Finish()
	require.ErrorContains(t, err, "the keeper of the command's processes ended before the command")
	require.Eventually(t, func() bool { return !alive(procs[0]) && !alive(procs[1]) }, 10*time.Second, 10*time.Millisecond)
}

func TestStartFailsLikeStartProcess(t *testing.T) {
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	_, err = Start(Options{Path: "/nonexistent/tool", Argv: []string{"tool"}, Stdin: null, Stdout: null, Stderr: null,
		Warn: func(string) {}})
	var pe *os.PathError
	require.True(t, errors.As(err, &pe), "%v", err)
	require.Equal(t, "fork/exec /nonexistent/tool: no such file or directory", err.Error())
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestParseStat(t *testing.T) {
	// comm is the process's choice: spaces and parentheses included.
	line := "4242 (a) b (c) S 17 4242 4242 0 -1 4194308 0 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3 4 5 6 7 8 256 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	p, err := parseStat([]byte(line))
	require.NoError(t, err)
	require.Equal(t, proc{pid: 4242, ppid: 17, state: 'S', start: 987654, dying: true}, p, "flags 4194308 has PF_EXITING")
	p, err = parseStat([]byte(strings.Replace(line, "4194308", "4194304", 1)))
	require.NoError(t, err)
	require.True(t, p.dying, "SIGKILL pending (256)")
	p, err = parseStat([]byte(strings.Replace(strings.Replace(line, "4194308", "4194304", 1), " 256 ", " 0 ", 1)))
	require.NoError(t, err)
	require.False(t, p.dying)
	for _, bad := range []string{"", "12 (x", "12 (x) S 1", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29"} {
		_, err := parseStat([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

// TestTheCommandGetsTheEnvironmentRunGave: the keeper hands the command
// exactly the environment Start was given, read back from the keeper's
// memory as the installed set-group-ID keeper reads it (TestMain), so
// nothing the loader may take from the keeper's own view is lost.
func TestTheCommandGetsTheEnvironmentRunGave(t *testing.T) {
	dir := t.TempDir()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	defer null.Close()
	environ := []string{"PATH=/usr/bin:/bin", "LD_LIBRARY_PATH=/opt/x", "TMPDIR=/tmp/y", "CUDA_VISIBLE_DEVICES=1"}
	tree, err := Start(Options{Path: "/bin/sh", Argv: []string{"sh", "-c", "env > " + dir + "/env"},
		Environ: environ, Stdin: null, Stdout: null, Stderr: null, Grace: time.Second, Warn: func(string) {}})
	require.NoError(t, err)
	ws := <-tree.Events
	require.True(t, ws.Exited() && ws.ExitStatus() == 0, "%v", ws)
	require.NoError(t, tree.Finish())
	out, err := os.ReadFile(dir + "/env")
	require.NoError(t, err)
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	// sh adds PWD, SHLVL and _ of its own.
	require.Subset(t, got, environ)
}
