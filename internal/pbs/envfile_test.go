package pbs

import (
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/gpu"
)

// The env file carries the vendor's variables: UUIDs for CUDA, indices for
// ROCm, whose runtime takes no UUID amd-smi reports.
func TestEnvLinesPerVendor(t *testing.T) {
	held := gpu.NewSet(gpu.ID{UUID: "GPU-b", Index: 3}, gpu.ID{UUID: "GPU-a", Index: 1})
	require.Equal(t, "CUDA_VISIBLE_DEVICES=GPU-a,GPU-b\nCANHAZGPU_GPU_INDICES=1,3\n", envLines(gpu.VendorOf(gpu.ProviderNVML), held))
	require.Equal(t, "ROCR_VISIBLE_DEVICES=1,3\nHIP_VISIBLE_DEVICES=0,1\nCANHAZGPU_GPU_INDICES=1,3\n",
		envLines(gpu.VendorOf(gpu.ProviderAMDSMI), held))
}
