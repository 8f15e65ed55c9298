package e2e

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStoreCommandsNeedNoGPUs: report, queue, release, admin --release and
// status --all-nodes answer from the store alone, so they work where the
// GPUs cannot be scanned: with NVML on this machine, which has none, and
// with a GPU file that is not there, as on any machine. status, which
// shows this node's usage, says why it cannot.
func TestStoreCommandsNeedNoGPUs(t *testing.T) {
	n := newNode(t, idleGPUs(2))
	missing := filepath.Join(n.dir, "no-such-gpus.json")
	for _, c := range []struct {
		name     string
		provider []string
	}{
		{"nvml", []string{"--gpu-provider", "nvml"}},
		{"unreadable fake file", []string{"--gpu-provider", "fake", "--fake-file", missing}},
	} {
		t.Run(c.name, func(t *testing.T) {
			without := func(args ...string) result { t.Helper(); return n.run(append(c.provider, args...)...) }
			r := n.run("reserve", "--gpus", "2")
			require.Equal(t, 0, r.code, r.stderr)

			r = without("report", "--days", "1")
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "\nroot ")

			r = without("queue")
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, "No requests waiting on node "+n.name+".\n", r.stdout)

			r = without("status", "--all-nodes")
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, n.name+" (")
			require.Contains(t, r.stdout, " manual ")

			r = without("release", "--gpu-ids", "1")
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, "Released 1 GPU on node "+n.name+": 1\n", r.stdout)
			r = without("release")
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, "Released 1 GPU on node "+n.name+": 0\n", r.stdout)

			r = n.run("reserve", "--gpu-ids", "1")
			require.Equal(t, 0, r.code, r.stderr)
			r = without("admin", "--release", "--user", "root")
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, "Released GPU 1 on node "+n.name+" (held by root, manual).\n", r.stdout)
			require.Empty(t, n.reservations())
		})
	}

	// The same provider, asked for this node's usage, says why it has none.
	r := n.run("--gpu-provider", "fake", "--fake-file", missing, "status")
	require.Equal(t, 1, r.code, r.stdout)
	require.Contains(t, r.stderr, "Error: scan GPUs: ")
	require.Contains(t, r.stderr, missing)
	r = n.run("--gpu-provider", "fake", "--fake-file", missing, "status", "--all-nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "canhazgpu: note: scan GPUs: ")
	require.Contains(t, r.stdout, n.name+" (reservations from the store; GPU usage is seen only on "+n.name+" itself)\n")
}
