package localnode

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/config"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

// openNode writes a fake GPU file and opens the node on the test server.
func openNode(t *testing.T, node, fake string) (*Node, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "gpus.json")
	require.NoError(t, os.WriteFile(file, []byte(fake), 0o644))
	cfg, err := config.Load(config.Options{Env: []string{
		"CANHAZGPU_NODE=" + node, "CANHAZGPU_REDIS_URL=" + srv.SocketURL(),
		"CANHAZGPU_GPU_PROVIDER=fake", "CANHAZGPU_GPU_FAKE_FILE=" + file,
	}, DefaultFile: filepath.Join(t.TempDir(), "none.toml"), MayOverride: true})
	require.NoError(t, err)
	n, err := Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n, file
}

const twoGPUs = `{"gpus": [
  {"index": 0, "uuid": "GPU-a", "memory_used_mb": 45},
  {"index": 1, "uuid": "GPU-b", "processes": [{"pid": 4242, "name": "python3", "user": "bob", "used_memory_mb": 2048}]}
]}`

func TestLookRegistersOnFirstUse(t *testing.T) {
	n, _ := openNode(t, "look1", twoGPUs)
	snap, devs, err := n.Look(context.Background())
	require.NoError(t, err)
	require.Len(t, devs, 2)
	require.Equal(t, []allocator.GPU{{UUID: "GPU-a", Index: 0, Minor: 0, Name: "Fake GPU"}, {UUID: "GPU-b", Index: 1, Minor: 1, Name: "Fake GPU"}}, snap.GPUs)
	nodes, err := n.Store.Nodes(context.Background())
	require.NoError(t, err)
	require.Contains(t, nodes, "look1")
}

func TestAllocateExcludesUnreservedUseAndRegisters(t *testing.T) {
	n, _ := openNode(t, "alloc1", twoGPUs)
	ctx := context.Background()
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: "alice", Count: 2, Lease: time.Hour}
	_, err := n.Allocate(ctx, req, nil)
	var short *allocator.ShortageError
	require.ErrorAs(t, err, &short, "the node registered itself, then GPU-b's unreserved use blocked the request")
	require.Equal(t, 1, short.Available)
	require.Equal(t, 1, short.Unreserved)

	req.Count, req.RequestID = 1, allocator.NewRequestID()
	g, err := n.Allocate(ctx, req, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-a"}, g.GPUs)

	_, classes, err := n.Classify(ctx)
	require.NoError(t, err)
	require.Equal(t, "in_use", string(classes[0].State))
	require.Equal(t, "unreserved", string(classes[1].State))
}

func TestBrokenFakeFileIsAnError(t *testing.T) {
	n, file := openNode(t, "broken1", twoGPUs)
	require.NoError(t, os.WriteFile(file, []byte("{"), 0o644))
	_, _, err := n.Look(context.Background())
	require.Error(t, err)
	require.Contains(t, err.Error(), file)
}

func TestAllocateLetsUsersReserveTheGPUTheyAlreadyUse(t *testing.T) {
	n, _ := openNode(t, "own1", twoGPUs)
	ctx := context.Background()
	bob := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: "bob", GPUs: []string{"GPU-b"}, Lease: time.Hour}
	g, err := n.Allocate(ctx, bob, nil)
	require.NoError(t, err, "every process on GPU-b is bob's")
	require.Equal(t, []string{"GPU-b"}, g.GPUs)

	_, classes, err := n.Classify(ctx)
	require.NoError(t, err)
	require.Equal(t, "in_use", string(classes[1].State))
	require.Empty(t, classes[1].Foreign)
}

func TestLookAllRegistersThisNodeAmongOthers(t *testing.T) {
	ctx := context.Background()
	other, _ := openNode(t, "lookall-a", twoGPUs)
	_, _, err := other.Look(ctx)
	require.NoError(t, err)
	n, _ := openNode(t, "lookall-b", twoGPUs)
	n.MayRegister = true

	devs, err := n.Devices(ctx)
	require.NoError(t, err)
	snaps, err := n.LookAll(ctx, devs)
	require.NoError(t, err)
	var names []string
	for _, s := range snaps {
		names = append(names, s.Node)
	}
	require.Contains(t, names, "lookall-a")
	require.Contains(t, names, "lookall-b", "this node was registered on first look")
	require.True(t, slices.IsSorted(names))
	for _, s := range snaps {
		if s.Node == "lookall-b" {
			require.Len(t, s.GPUs, 2)
		}
	}
}

func TestRootRegistersTheSitePolicyAndUpdatesIt(t *testing.T) {
	n, _ := openNode(t, "policy1", twoGPUs)
	n.MayRegister = true
	snap, _, err := n.Look(context.Background())
	require.NoError(t, err)
	require.Equal(t, Policy(n.Config).WithDefaults(), snap.Policy)
	require.Equal(t, n.Config.Run.HeartbeatTimeout, snap.Policy.RunLease)

	// Root edits the config: root's next look writes the new policy.
	n.Config.Reserve.MaxDuration = 2 * time.Hour
	n.Store.Close()
	again, err := Open(context.Background(), n.Config)
	require.NoError(t, err)
	t.Cleanup(func() { again.Close() })
	again.MayRegister = true
	snap, _, err = again.Look(context.Background())
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, snap.Policy.MaxDuration)
}

// configFor loads the settings of a node on the test server with the
// given GPU settings.
func configFor(t *testing.T, node string, gpuEnv ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Env: append([]string{"CANHAZGPU_NODE=" + node, "CANHAZGPU_REDIS_URL=" + srv.SocketURL()}, gpuEnv...),
		DefaultFile: filepath.Join(t.TempDir(), "none.toml"), MayOverride: true})
	require.NoError(t, err)
	return cfg
}

// TestOpenNeedsNoGPUs: opening the node starts no provider, so what only
// the store answers works where GPUs cannot be scanned; the first scan
// reports why it cannot.
func TestOpenNeedsNoGPUs(t *testing.T) {
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "no-such-gpus.json")
	for name, env := range map[string][]string{
		"nvml":             {"CANHAZGPU_GPU_PROVIDER=nvml"},
		"unreadable scans": {"CANHAZGPU_GPU_PROVIDER=fake", "CANHAZGPU_GPU_FAKE_FILE=" + missing},
	} {
		t.Run(name, func(t *testing.T) {
			n, err := Open(ctx, configFor(t, "nogpus-"+name[:4], env...))
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, n.Close()) })
			snap, err := n.Store.Snapshot(ctx)
			require.NoError(t, err)
			require.Empty(t, snap.GPUs)
			snaps, err := n.LookAll(ctx, nil)
			require.NoError(t, err)
			require.NotContains(t, nodeNames(snaps), n.Store.Node(), "nothing scanned, nothing registered")
			if name != "nvml" { // NVML is there on GPU machines
				_, err = n.Devices(ctx)
				require.ErrorContains(t, err, missing)
			}
		})
	}
}

func nodeNames(snaps []*allocator.Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.Node)
	}
	return out
}

const oneGPU = `{"gpus": [{"index": 0, "uuid": "GPU-a"}]}`

// TestRootRegistersAGPUTheStoreLacksAndRetries: a request naming a GPU
// added since the node was registered is granted once root's call has
// registered it; anyone else is told who registers, and nothing changes.
func TestRootRegistersAGPUTheStoreLacksAndRetries(t *testing.T) {
	ctx := context.Background()
	n, file := openNode(t, "grow1", oneGPU)
	n.MayRegister = true
	_, _, err := n.Look(ctx)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, []byte(twoGPUs), 0o644))
	// GPU-b's processes are bob's, so bob may reserve it.
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: "bob", GPUs: []string{"GPU-b"}, Lease: time.Hour}

	n.MayRegister = false
	_, err = n.Allocate(ctx, req, nil)
	require.ErrorIs(t, err, allocator.ErrUnknownGPU)
	require.ErrorIs(t, err, ErrNeedsRoot)
	var input *allocator.InputError
	require.ErrorAs(t, err, &input, "still a bad value of the request")
	snap, err := n.Store.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 1, "a user's scan is never registered")

	n.MayRegister = true
	g, err := n.Allocate(ctx, req, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-b"}, g.GPUs)
	snap, err = n.Store.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 2)
}

func TestUnregisteredNodeNeedsRoot(t *testing.T) {
	ctx := context.Background()
	n, _ := openNode(t, "unreg1", twoGPUs)
	n.MayRegister = false
	req := allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: "alice", Count: 1, Lease: time.Hour}
	_, err := n.Allocate(ctx, req, nil)
	require.ErrorIs(t, err, allocator.ErrNotRegistered)
	require.ErrorIs(t, err, ErrNeedsRoot)

	devs, err := n.Devices(ctx)
	require.NoError(t, err)
	snaps, err := n.LookAll(ctx, devs)
	require.NoError(t, err)
	require.NotContains(t, nodeNames(snaps), "unreg1")
	snap, _, err := n.Look(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.GPUs)
	require.Empty(t, n.Drift(snap, devs), "not registered at all: Allocate says so")
}

// Utilisation costs NVML calls on every GPU, so only a caller that asks
// gets it: the hooks' Classify and a grant's scan do not ask.
func TestUtilizationOnlyWhenAsked(t *testing.T) {
	n, _ := openNode(t, "util1", `{"gpus": [{"index": 0, "uuid": "GPU-a", "utilization": 61}]}`)
	ctx := context.Background()
	_, devs, err := n.Look(ctx)
	require.NoError(t, err)
	require.Equal(t, gpu.Utilization{}, devs[0].Utilization, "not asked: unknown")
	_, gpus, err := n.Classify(ctx)
	require.NoError(t, err)
	require.Equal(t, gpu.Utilization{}, gpus[0].Utilization, "the hooks' Classify does not ask")
	_, devs, err = n.Look(ctx, gpu.ReadUtilization)
	require.NoError(t, err)
	require.Equal(t, gpu.Percent(61), devs[0].Utilization)
	devs, err = n.Devices(ctx, gpu.ReadUtilization)
	require.NoError(t, err)
	require.Equal(t, gpu.Percent(61), devs[0].Utilization)
}
