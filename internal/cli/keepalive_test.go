package cli

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReserveKeepAlive(t *testing.T) {
	f := registered(t, idleGPUs(4))
	ctx := context.Background()
	require.Equal(t, 0, f.run(alice, "reserve", "--gpu-ids", "0,1").code)
	require.Equal(t, 0, f.run(bob, "reserve", "--gpu-ids", "2").code)
	activeAt := func(index int) bool {
		snap, err := f.store().Snapshot(ctx)
		require.NoError(t, err)
		g, ok := snap.GPUByIndex(index)
		require.True(t, ok)
		return !snap.Reservations[g.UUID].ActiveAt.IsZero()
	}

	r := f.run(alice, "reserve", "--keep-alive", "--gpu-ids", "1,2")
	require.Equal(t, 2, r.code)
	require.Equal(t, `Error: invalid --gpu-ids "1,2": want GPUs of manual reservations of alice on node `+f.node+
		" (not GPU 2); nothing was kept alive\n", r.stderr)
	require.False(t, activeAt(1), "nothing changed")

	r = f.run(alice, "reserve", "--keep-alive", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Kept 1 GPU of alice on node "+f.node+" alive: 1; the idle clock starts again now\n", r.stdout)
	require.True(t, activeAt(1))
	require.False(t, activeAt(0))

	r = f.run(alice, "reserve", "--keep-alive")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Kept 2 GPUs of alice on node "+f.node+" alive: 0,1; the idle clock starts again now\n", r.stdout)
	require.False(t, activeAt(2), "bob's is his own")

	r = f.run(Identity{Name: "carol", UID: 2003}, "reserve", "--keep-alive")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: no manual reservation of carol on node "+f.node+" to keep alive\n", r.stderr)

	for _, flag := range [][]string{{"--gpus", "2"}, {"--duration", "1h"}, {"--wait"}, {"--note", "x"}, {"--short"}} {
		r = f.run(alice, append([]string{"reserve", "--keep-alive"}, flag...)...)
		require.Equal(t, 2, r.code, flag)
		require.Contains(t, r.stderr, "Error: --keep-alive and "+flag[0]+" conflict: --keep-alive reserves nothing, it keeps your manual reservations\n")
	}
	r = f.run(bob, "reserve", "--keep-alive", "--user", "alice")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: --user alice: only root may (no admin.group is configured) act for another user; you are bob\n", r.stderr)
}
