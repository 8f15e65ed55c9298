package health

import (
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/gpu/amdsmitest"
)

// The health check runs unchanged on an AMD node: the GPUs come from
// amd-smi (a stub printing its JSON), and use without a reservation is
// found from amd-smi's process list.
func TestRunOnAMDNode(t *testing.T) {
	dir := t.TempDir()
	gpus := []amdsmitest.GPU{
		{Index: 0, UUID: "1aff74a1-0000-1000-8000-0000000000a0", Node: 2},
		{Index: 1, UUID: "1aff74a1-0000-1000-8000-0000000000a1", Node: 3, UsedMB: 6000,
			Procs: []amdsmitest.Proc{{PID: 3999999, Name: "python3", VRAMMB: 6000}}},
	}
	amdsmitest.Write(t, dir, gpus)
	n := newTestNode(t, map[string]string{"gpu.provider": "amdsmi", "gpu.amdsmi_path": amdsmitest.Stub(t, dir)})
	n.register()
	snap := n.snapshot()
	require.Len(t, snap.GPUs, 2, "registered from amd-smi")
	require.Equal(t, "GPU-1aff74a1-0000-1000-8000-0000000000a1", snap.GPUs[1].UUID)
	require.Equal(t, "AMD Instinct MI300X", snap.GPUs[1].Name)

	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, StatusViolations, r.Status)
	require.Len(t, r.GPUs, 2)
	require.Equal(t, GPUState{Index: 1, UUID: "GPU-1aff74a1-0000-1000-8000-0000000000a1", State: "unreserved",
		Busy: true, MemoryUsedMB: 6000, Processes: 1, Violations: 1}, r.GPUs[1])
	require.Len(t, r.Violations, 1)
	require.Equal(t, 1, r.Violations[0].GPU)
	require.Equal(t, 3999999, r.Violations[0].Processes[0].PID)
}
