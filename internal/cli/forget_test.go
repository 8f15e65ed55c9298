package cli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdminForgetNodeRemovesItFromEveryView(t *testing.T) {
	stays := registered(t, idleGPUs(1))
	gone := registered(t, idleGPUs(2))
	r := gone.run(alice, "reserve", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	uuid1 := gone.registered(2)[1]

	r = stays.run(alice, "admin", "--forget-node", gone.node)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: canhazgpu admin --forget-node: only root may remove a node from the store; you are alice\n", r.stderr)

	r = stays.run(root, "admin", "--forget-node", gone.node)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: node "+gone.node+" holds 1 reservation (GPU 1 ("+uuid1+"): alice, manual): release it first, or end it with the node: "+
		"canhazgpu admin --forget-node "+gone.node+" --force\n", r.stderr)
	require.Contains(t, stays.run(root, "status", "--all-nodes").stdout, gone.node, "refused: nothing changed")

	r = stays.run(root, "admin", "--forget-node", gone.node, "--force")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Forgot node "+gone.node+" (2 GPUs registered; ended GPU 1 ("+uuid1+"): alice, manual). "+
		"If canhazgpu still runs there, its root programs register it again.\n", r.stdout)
	all := stays.run(root, "status", "--all-nodes")
	require.Equal(t, 0, all.code, all.stderr)
	require.NotContains(t, all.stdout, gone.node)
	require.Contains(t, all.stdout, stays.node)

	r = stays.run(root, "admin", "--forget-node", gone.node)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `Error: invalid --forget-node "`+gone.node+`": want a node in the store: `)
}
