package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/gpu/amdsmitest"
	"canhazgpu/internal/accounttest"
)

// newAMDNode is a node with gpu.provider = "amdsmi" whose amd-smi is a stub
// printing JSON files: three MI300X GPUs, the third used by a process
// without a reservation. The files are world-readable, since a user's
// canhazgpu runs amd-smi as that user.
func newAMDNode(t *testing.T) *node {
	t.Helper()
	dir, err := os.MkdirTemp(shared, "amd-smi-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	amdsmitest.Write(t, dir, []amdsmitest.GPU{
		{Index: 0, UUID: "2bff74a1-0000-1000-8000-0000000000b0", Node: 2},
		{Index: 1, UUID: "2bff74a1-0000-1000-8000-0000000000b1", Node: 3},
		{Index: 2, UUID: "2bff74a1-0000-1000-8000-0000000000b2", Node: 4, UsedMB: 9000,
			Procs: []amdsmitest.Proc{{PID: 3999998, Name: "python3", VRAMMB: 9000}}},
	})
	return newNode(t, idleGPUs(0), `gpu.provider = "amdsmi"`, fmt.Sprintf("gpu.amdsmi_path = %q", amdsmitest.Stub(t, dir)))
}

// run and reserve work unchanged on an AMD node and hand out GPUs through
// ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES, never CUDA_VISIBLE_DEVICES.
func TestAMDNode(t *testing.T) {
	n := newAMDNode(t)
	show := `echo "ROCR=$ROCR_VISIBLE_DEVICES HIP=$HIP_VISIBLE_DEVICES CUDA=${CUDA_VISIBLE_DEVICES-unset}"`

	r := n.run("run", "--gpus", "2", "--", "sh", "-c", show)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "ROCR=0,1 HIP=0,1 CUDA=unset\n", r.stdout)

	r = n.run("run", "--gpus", "3", "--", "true")
	require.Equal(t, 1, r.code, "GPU 2 is used without a reservation")
	require.Contains(t, r.stderr, "Available: 2 (1 GPUs in use without reservation")

	r = n.run("reserve", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Use it with: export ROCR_VISIBLE_DEVICES=1 HIP_VISIBLE_DEVICES=0\n")
	require.NotContains(t, r.stdout, "CUDA")

	r = n.run("run", "--gpus", "1", "--", "sh", "-c", show)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "ROCR=0 HIP=0 CUDA=unset\n", r.stdout, "GPU 1 is reserved, GPU 2 in use")

	r = n.run("reserve", "--short", "--gpus", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "0\n", r.stdout)

	r = n.run("status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(r.stdout, "\n")
	require.Contains(t, collapseSpaces(lines[4]), "2 in use WITHOUT RESERVATION 9000MB used by PID 3999998")
}

// An ordinary user's canhazgpu runs amd-smi as that user, and gets the
// same exports.
func TestAMDNodeAsUser(t *testing.T) {
	accounttest.Ensure(t, userA)
	n := newAMDNode(t)
	r := n.runAs(userA, "run", "--gpus", "1", "--", "sh", "-c", `echo "$ROCR_VISIBLE_DEVICES $HIP_VISIBLE_DEVICES"`)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "0 0\n", r.stdout)
}

func collapseSpaces(s string) string { return strings.Join(strings.Fields(s), " ") }
