package procstop

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/accounttest"
)

const account = "chgstop"

// start runs a process of the test account that waits for a signal,
// ignoring SIGTERM if told to, and returns its PID.
func start(t *testing.T, ignoreTerm bool) int {
	t.Helper()
	accounttest.Ensure(t, account)
	return accounttest.StartWaiting(t, account, ignoreTerm)
}

func TestIdentify(t *testing.T) {
	pid := start(t, false)
	id, err := Procs{}.Identify(pid)
	require.NoError(t, err)
	require.Equal(t, accounttest.UID(t, account), id.UID)
	require.False(t, id.Root)
	require.NotZero(t, id.Start)
	require.Contains(t, id.Exe, "python3")
	require.True(t, id.IsFile(id.Exe), "it runs the file its exe link names")
	require.False(t, id.IsFile("/bin/sh"))
	require.False(t, id.IsFile("/nonexistent"))
	_, err = Procs{}.Identify(1 << 30)
	require.Error(t, err)

	// The name is not the file: an identity whose name is right but whose
	// file is another (a program bind-mounted over the name in a mount
	// namespace of its user's) is not that command.
	spoofed := id
	spoofed.ExeFile.Ino++
	require.False(t, spoofed.IsFile(id.Exe))
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
