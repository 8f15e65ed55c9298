package cli

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/redistest"
)

// TestUnconfirmedGrantIsGivenBack: with redis.wait_replicas and no
// replica answering, reserve and run fail and leave nothing reserved (the
// primary's grant is given back, not left for its duration or lease);
// once the replica answers again, the same commands succeed.
func TestUnconfirmedGrantIsGivenBack(t *testing.T) {
	primary, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(primary.Stop)
	replica, err := redistest.StartReplica(primary, redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(replica.Stop)
	require.NoError(t, replica.WaitReplicaLinkUp(10*time.Second))

	// Waits as long as a loaded machine needs while the replica answers;
	// short ones while it is paused.
	f := newFixtureAt(t, primary.URL(), idleGPUs(2), `redis.wait_replicas = 1`, `redis.wait_timeout = "1500ms"`)
	setWait := func(from, to string) {
		cfg, err := os.ReadFile(f.cfgFile)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f.cfgFile, []byte(strings.Replace(string(cfg), from, to, 1)), 0o644))
	}
	r := f.run(root, "admin", "--register")
	require.Equal(t, 0, r.code, r.stderr)

	setWait(`"1500ms"`, `"200ms"`)
	cont := replica.Pause(t)

	for _, args := range [][]string{
		{"reserve", "--gpus", "2", "--duration", "1h"},
		{"run", "--gpus", "1", "--", "true"},
	} {
		r = f.run(alice, args...)
		require.Equal(t, 1, r.code, "%v: %s", args, r.stderr)
		require.Contains(t, r.stderr, "so a failover may lose it; the GPUs were given back, so nothing is reserved "+
			"(try again when the store's replicas answer)\n", args)
		snap, err := f.store().Snapshot(context.Background())
		require.NoError(t, err)
		require.Empty(t, snap.Reservations, "%v left a reservation behind", args)
	}

	cont()
	require.NoError(t, replica.WaitReplicaLinkUp(10*time.Second))
	setWait(`"200ms"`, `"1500ms"`)
	r = f.run(alice, "reserve", "--gpus", "2", "--duration", "1h")
	require.Equal(t, 0, r.code, r.stderr)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2)
}
