package gpu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"canhazgpu/allocator/gpu/amdsmitest"
	"github.com/stretchr/testify/require"
)

// The provider contract: every provider, given the same node, reports it
// the same way. The node has two GPUs; GPU 1 is used by pid 100 (root,
// Slurm job 42 in the fixture /proc) with 2048 MB, GPU 0 is idle.
type contractProvider struct {
	name string
	// open describes the contract node to the provider, reading
	// processes from procRoot.
	open func(t *testing.T, procRoot string) Provider
}

const contractMemMB = 2048

// contractProviders lists the providers under contract; NVML's mock joins
// where cgo builds it (nvml_test.go).
var contractProviders = []contractProvider{
	{"fake", func(t *testing.T, procRoot string) Provider {
		p, _ := openFake(t, `{"gpus": [
			{"index": 0, "uuid": "GPU-c0000000-0000-4000-8000-000000000000"},
			{"index": 1, "uuid": "GPU-c0000000-0000-4000-8000-000000000001", "processes": [{"pid": 100, "used_memory_mb": 2048}]}
		]}`, procRoot)
		return p
	}},
	{"amdsmi", func(t *testing.T, procRoot string) Provider {
		dir, sys := t.TempDir(), t.TempDir()
		gpus := []amdsmitest.GPU{
			{Index: 0, UUID: "c0ff74a1-0000-1000-8000-000000000000", Node: 2},
			{Index: 1, UUID: "c0ff74a1-0000-1000-8000-000000000001", Node: 3, UsedMB: contractMemMB + 5,
				Procs: []amdsmitest.Proc{{PID: 100, Name: "python3", VRAMMB: contractMemMB}}},
		}
		amdsmitest.Write(t, dir, gpus)
		amdsmitest.WriteRenderNodes(t, sys, gpus)
		p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: amdsmitest.Stub(t, dir), ProcRoot: procRoot, SysRoot: sys})
		require.NoError(t, err)
		return p
	}},
}

func contractProcRoot(t *testing.T) string {
	root := t.TempDir()
	writeFixtureProc(t, root, 100, fixtureProc{
		comm:    "python3",
		uid:     0,
		cmdline: []string{"python3", "train.py"},
		cgroup:  "0::/system.slice/slurmstepd.scope/job_42/step_0\n",
	})
	dir := filepath.Join(root, "sys", "kernel")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pid_max"), []byte("32768\n"), 0o644))
	return root
}

func TestProviderContract(t *testing.T) {
	names := make([]string, len(contractProviders))
	for i, c := range contractProviders {
		names[i] = c.name
	}
	t.Logf("providers under contract: %s", strings.Join(names, ", "))
	for _, c := range contractProviders {
		t.Run(c.name, func(t *testing.T) {
			p := c.open(t, contractProcRoot(t))
			devs, err := p.Devices(context.Background())
			require.NoError(t, err)

			require.Len(t, devs, 2)
			require.Equal(t, []int{0, 1}, SetOf(devs).Indices(), "sorted by index, one index each")
			require.NotEqual(t, devs[0].UUID, devs[1].UUID)
			require.NotEqual(t, devs[0].Minor, devs[1].Minor, "one device file each")
			for _, d := range devs {
				require.True(t, strings.HasPrefix(d.UUID, "GPU-"), "the store keys GPUs by GPU- ids: %q", d.UUID)
				require.Positive(t, d.MemoryTotalMB)
				require.NotEmpty(t, d.Name)
				require.GreaterOrEqual(t, d.Minor, 0, "the store accepts no negative minor")
			}
			require.Empty(t, devs[0].Processes)
			require.Equal(t, []Process{{PID: 100, Name: "python3", User: "root", UID: 0, UsedMemoryMB: contractMemMB,
				Cmdline: []string{"python3", "train.py"}, JobID: "42"}}, devs[1].Processes)
			require.GreaterOrEqual(t, devs[1].MemoryUsedMB, int64(contractMemMB))
			require.Less(t, devs[0].MemoryUsedMB, int64(contractMemMB))

			again, err := p.Devices(context.Background())
			require.NoError(t, err)
			require.Equal(t, devs, again, "a second scan of an unchanged node")

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = p.Devices(ctx)
			require.ErrorIs(t, err, context.Canceled)

			require.NoError(t, p.Close())
			require.NoError(t, p.Close(), "Close twice")
		})
	}
	require.True(t, slices.Contains(names, "amdsmi"))
}
