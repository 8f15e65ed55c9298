package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/proctest"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

// privateServer is a Redis of the test's own, which it may restart.
func privateServer(t *testing.T) *redistest.Server {
	t.Helper()
	s, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	return s
}

// restartEmpty restarts the server without its data (redistest) and
// checks that the data is really gone.
func restartEmpty(t *testing.T, s *redistest.Server) {
	t.Helper()
	require.NoError(t, s.RestartEmpty())
	c := s.Client()
	defer c.Close()
	keys, err := c.DBSize(context.Background()).Result()
	require.NoError(t, err)
	require.Zero(t, keys, "the data is gone")
}

// runHeld starts `canhazgpu run` with script and waits until it holds GPU
// 0; it returns the store's state then.
func runHeld(t *testing.T, n *node, stdout, stderr *proctest.SyncBuffer, args ...string) (*allocator.Snapshot, func() int) {
	t.Helper()
	cmd := n.command("", append([]string{"run", "--"}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	require.NoError(t, cmd.Start())
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	var snap *allocator.Snapshot
	require.Eventually(t, func() bool {
		var err error
		snap, err = n.store().Snapshot(context.Background())
		return err == nil && len(snap.Reservations) == 1
	}, 5*time.Second, 20*time.Millisecond, stderr.String())
	wait := func() int {
		_ = cmd.Wait()
		waited = true
		return cmd.ProcessState.ExitCode()
	}
	return snap, wait
}

func TestRunReassertsItsHoldWhenTheStoreLostItsData(t *testing.T) {
	ctx := context.Background()
	own := privateServer(t)
	n := newNodeOn(t, own, idleGPUs(1), "CANHAZGPU_RUN_HEARTBEAT_INTERVAL=100ms", "CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=1m", "CANHAZGPU_RUN_KILL_GRACE=500ms")
	var out, errw proctest.SyncBuffer
	before, wait := runHeld(t, n, &out, &errw, "sh", "-c",
		`trap 'echo TERM > signalled' TERM; echo $$ > cmd; while [ ! -e stop ]; do sleep 0.05; done; echo finished`)
	pid := proctest.PIDs(t, n.dir, "cmd")[0]
	uuid := before.GPUs[0].UUID

	restartEmpty(t, own)
	// Registration is for root's programs: until one runs, canhazgpu says
	// why it cannot take the GPU again and keeps trying.
	require.Eventually(t, func() bool {
		return strings.Contains(errw.String(), "node "+n.name+": node has no GPUs registered; retrying")
	}, 10*time.Second, 20*time.Millisecond, errw.String())
	require.True(t, alive(pid), "the command runs on")

	_, err := n.store().Register(ctx, before.GPUs, false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		snap, err := n.store().Snapshot(ctx)
		r, ok := snap.Reservations[uuid]
		return err == nil && ok && r.User == "root" && r.Kind == allocator.KindRun && !r.HeartbeatAt.IsZero()
	}, 10*time.Second, 20*time.Millisecond, errw.String())
	require.Eventually(t, func() bool {
		return strings.Contains(errw.String(), "canhazgpu: the store had lost the reservation of GPU 0; it is held again\n")
	}, 10*time.Second, 20*time.Millisecond, errw.String())
	require.True(t, alive(pid), "the command runs on")

	require.NoError(t, os.WriteFile(filepath.Join(n.dir, "stop"), nil, 0o644))
	require.Equal(t, 0, wait(), errw.String())
	require.Equal(t, "finished\n", out.String())
	require.NoFileExists(t, filepath.Join(n.dir, "signalled"), "never stopped")
	require.NotContains(t, errw.String(), "stopping the command")
	snap, err := n.store().Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "released at the end")
}

func TestRunStopsWhenTheNodeIsNotRegisteredAgainInTime(t *testing.T) {
	own := privateServer(t)
	n := newNodeOn(t, own, idleGPUs(1), "CANHAZGPU_RUN_HEARTBEAT_INTERVAL=100ms", "CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=1s", "CANHAZGPU_RUN_KILL_GRACE=500ms")
	var out, errw proctest.SyncBuffer
	_, wait := runHeld(t, n, &out, &errw, "sleep", "300")
	defer func() { require.Empty(t, out.String()) }()

	restartEmpty(t, own)
	require.Equal(t, 143, wait(), errw.String())
	lost := "the store lost the reservation of GPU 0 and it could not be taken again within run.heartbeat_timeout (1s): node " +
		n.name + ": node has no GPUs registered"
	require.Contains(t, errw.String(), "canhazgpu: warning: "+lost+"; stopping the command (TERM, then KILL after 500ms)")
	require.True(t, strings.HasSuffix(errw.String(), "Error: the command was stopped because its reservation was lost: "+lost+"\n"), errw.String())
}

func TestRunStopsWhenSomeoneElseHoldsItsGPUAfterTheStoreLostItsData(t *testing.T) {
	ctx := context.Background()
	own := privateServer(t)
	n := newNodeOn(t, own, idleGPUs(1), "CANHAZGPU_RUN_HEARTBEAT_INTERVAL=100ms", "CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=1m", "CANHAZGPU_RUN_KILL_GRACE=500ms")
	var errw proctest.SyncBuffer
	cmd := n.command("", "run", "--", "sleep", "300")
	cmd.Stderr = &errw
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill() }()
	var before *allocator.Snapshot
	require.Eventually(t, func() bool {
		var err error
		before, err = n.store().Snapshot(ctx)
		return err == nil && len(before.Reservations) == 1
	}, 5*time.Second, 20*time.Millisecond)
	uuid := before.GPUs[0].UUID

	// Stopped, canhazgpu cannot take the GPU again before zoe does.
	require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
	restartEmpty(t, own)
	_, err := n.store().Register(ctx, before.GPUs, false)
	require.NoError(t, err)
	_, err = n.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "zoe", GPUs: []string{uuid}, Lease: time.Hour})
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(syscall.SIGCONT))

	require.Error(t, cmd.Wait())
	require.Equal(t, 143, cmd.ProcessState.ExitCode(), errw.String())
	require.Contains(t, errw.String(), "canhazgpu: warning: reservation of GPU "+uuid+" was lost: now held by zoe (manual); stopping the command")
	snap, err := n.store().Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "zoe", snap.Reservations[uuid].User, "zoe keeps the GPU")
}
