package e2e

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/proctest"
)

// descendants lists the live processes below pid, from /proc.
func descendants(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || !alive(p) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	for next := []int{pid}; len(next) > 0; {
		p := next[0]
		next = next[1:]
		out = append(out, children[p]...)
		next = append(next, children[p]...)
	}
	return out
}

// daemon is shell that leaves a process in a session of its own, as
// daemons escape their parent's process group, writing its pid to file.
func daemon(file string) string {
	return `setsid sh -c 'echo $$ > ` + file + `; exec sleep 300' &`
}

// TestRunKilledWithSIGKILLTakesItsWholeTreeDown: `kill -9` of canhazgpu
// leaves nothing it started running on GPUs whose reservation lapses.
func TestRunKilledWithSIGKILLTakesItsWholeTreeDown(t *testing.T) {
	for _, c := range []struct {
		name, script string
		files        []string // pid files the script writes
	}{
		{"background child", `sleep 300 & echo $! > bg; wait`, []string{"bg"}},
		{"setsid child", daemon("sid") + ` wait`, []string{"sid"}},
		{"double-forked daemon", `(` + daemon("orphan") + `); sleep 300`, []string{"orphan"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, idleGPUs(1), shortLease...)
			cmd := n.command("", "run", "--", "sh", "-c", "echo $$ > cmd; "+c.script)
			require.NoError(t, cmd.Start())
			waited := false
			defer func() {
				if !waited {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			}()
			pids := proctest.PIDs(t, n.dir, append([]string{"cmd"}, c.files...)...)
			require.Eventually(t, func() bool { return n.reservations()[0] == "root" }, 5*time.Second, 20*time.Millisecond)
			tree := descendants(t, cmd.Process.Pid)
			require.Subset(t, tree, pids)
			require.Greater(t, len(tree), len(pids), "the keeper, and whatever the script runs in the foreground")

			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()
			waited = true
			require.Eventually(t, func() bool {
				for _, p := range tree {
					if alive(p) {
						return false
					}
				}
				return true
			}, 10*time.Second, 20*time.Millisecond, "every process canhazgpu started is gone: %v", tree)
		})
	}
}

// TestRunStopsProcessesThatLeftItsProcessGroup: a setsid'd grandchild
// is stopped before the GPUs are released, whether the command ends by
// itself or by a signal sent to canhazgpu.
func TestRunStopsProcessesThatLeftItsProcessGroup(t *testing.T) {
	for _, c := range []struct {
		name   string
		script string
		term   bool // TERM canhazgpu once the processes run
	}{
		{"the command ends", daemon("sid") + ` while [ ! -s sid ]; do sleep 0.01; done; echo $$ > cmd`, false},
		{"TERM to canhazgpu", `trap 'exit 0' TERM; ` + daemon("sid") + ` echo $$ > cmd; wait`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, idleGPUs(1), shortLease...)
			cmd := n.command("", "run", "--", "sh", "-c", c.script)
			var errw bytes.Buffer
			cmd.Stderr = &errw
			// A process left running would hold stderr open for good.
			cmd.WaitDelay = 10 * time.Second
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill() }()
			pids := proctest.PIDs(t, n.dir, "cmd", "sid")
			if c.term {
				require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			}
			require.NoError(t, cmd.Wait(), errw.String())
			require.False(t, alive(pids[1]), "the setsid'd process is gone when canhazgpu returns")
			require.Equal(t, "canhazgpu: stopping the processes the command left running\n", errw.String())
			require.Empty(t, n.reservations())
		})
	}
}
