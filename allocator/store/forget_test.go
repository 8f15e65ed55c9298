package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// nodeKeysIn lists the keys of node's hash tag in a dump.
func nodeKeysIn(dump map[string]string, node string) []string {
	var out []string
	for k := range dump {
		if strings.Contains(k, "{"+node+"}") {
			out = append(out, k)
		}
	}
	return out
}

func TestForgetRefusesANodeWithReservationsUnlessForced(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	gone, _ := batchSetup(t, own, "gpu02") // alice's slurm job 7 holds GPU 0
	require.NoError(t, gone.SetFlags(ctx, []allocator.Flag{{Message: "drained"}}))
	stays := openAs(t, own, RoleAdmin, "gpu01", Options{})
	_, err := stays.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	_, err = stays.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)

	before := dumpAll(t, own)
	snap, forgot, err := gone.Forget(ctx, false)
	require.NoError(t, err)
	require.False(t, forgot)
	require.Equal(t, "alice", snap.Reservations[uuid(0)].User, "the refusal shows who holds what")
	require.Equal(t, "7", snap.Reservations[uuid(0)].JobID)
	require.Len(t, snap.GPUs, 4)
	require.Equal(t, before, dumpAll(t, own), "a refused forget changes nothing")

	snap, forgot, err = gone.Forget(ctx, true)
	require.NoError(t, err)
	require.True(t, forgot)
	require.Equal(t, "alice", snap.Reservations[uuid(0)].User, "what was dropped")
	nodes, err := gone.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"gpu01"}, nodes)
	after := dumpAll(t, own)
	raw := own.Client()
	defer raw.Close()
	for _, key := range nodeKeysIn(after, "gpu02") {
		if key == keysFor("gpu02").meta {
			continue // the fencing counter stays, so that a returning node never reuses a token
		}
		ttl, err := raw.PTTL(ctx, key).Result()
		require.NoError(t, err)
		require.True(t, ttl > 0 && ttl <= replyTTL, "%s stays only as a reply that expires (TTL %s)", key, ttl)
	}
	require.Contains(t, nodeKeysIn(after, "gpu02"), keysFor("gpu02").meta)
	require.Less(t, len(nodeKeysIn(after, "gpu02")), len(nodeKeysIn(before, "gpu02")))
	for k, v := range before {
		if strings.Contains(k, "{gpu01}") {
			require.Equal(t, v, after[k], "the other node is untouched: %s", k)
		}
	}
	snaps, err := stays.Snapshots(ctx)
	require.NoError(t, err)
	require.Len(t, snaps, 1)
	require.Equal(t, "gpu01", snaps[0].Node)
	require.Equal(t, "bob", snaps[0].Reservations[uuid(0)].User)

	// A node comes back by registering; its tokens continue.
	_, err = gone.Register(ctx, fakeGPUs(1), false)
	require.NoError(t, err)
	g, err := gone.Allocate(ctx, manual("carol", 1))
	require.NoError(t, err)
	require.Greater(t, g.Token, int64(1))
}

func TestForgetIgnoresExpiredReservations(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin := openAs(t, own, RoleAdmin, "gpu03", Options{})
	_, err := admin.Register(ctx, fakeGPUs(1), false)
	require.NoError(t, err)
	_, err = admin.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)

	_, forgot, err := admin.Forget(ctx, false)
	require.NoError(t, err)
	require.False(t, forgot, "alice's reservation runs for an hour")

	// Backdate its expiry: an expired reservation holds nothing.
	raw := own.Client()
	defer raw.Close()
	k := keysFor("gpu03")
	stored, err := raw.HGet(ctx, k.res, uuid(0)).Result()
	require.NoError(t, err)
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(stored), &r))
	r["e"] = time.Now().Add(-time.Minute).UnixMilli()
	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.NoError(t, raw.HSet(ctx, k.res, uuid(0), b).Err())

	snap, forgot, err := admin.Forget(ctx, false)
	require.NoError(t, err)
	require.True(t, forgot)
	require.Empty(t, snap.Reservations)
	nodes, err := admin.Nodes(ctx)
	require.NoError(t, err)
	require.Empty(t, nodes)
}

func TestOnlyTheAdminRoleForgetsNodes(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin := openAs(t, own, RoleAdmin, "gpu04", Options{})
	_, err := admin.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	before := dumpAll(t, own)
	for _, r := range []Role{RoleCLI, RoleMonitor} {
		s := openAs(t, own, r, "gpu04", Options{})
		_, forgot, err := s.Forget(ctx, true)
		require.ErrorIs(t, err, allocator.ErrNotPermitted, "%s role", r)
		require.False(t, forgot)
		raw := rawAs(t, own, r)
		requireNoPerm(t, raw.SRem(ctx, registryKey, "gpu04").Err(), string(r)+" SREM registry")
	}
	require.Equal(t, before, dumpAll(t, own))
}
