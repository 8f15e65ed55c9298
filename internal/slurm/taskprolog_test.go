package slurm

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

func TestTaskProlog(t *testing.T) {
	f := newFixture(t)
	// Job 5 got Slurm's GPUs 0 and 1; job 6's slot 0 was moved to NVML 1.
	require.NoError(t, jobstate.WriteJob(f.stateDir(), allocator.KindSlurm, "5", jobstate.JobFile{
		GPUs: []jobstate.GPU{{UUID: "GPU-a", Index: 2, SchedIndex: 0}, {UUID: "GPU-b", Index: 3, SchedIndex: 1}}}))
	require.NoError(t, jobstate.WriteJob(f.stateDir(), allocator.KindSlurm, "6", jobstate.JobFile{
		GPUs: []jobstate.GPU{{UUID: "GPU-x", Index: 1, SchedIndex: 0, Moved: true}, {UUID: "GPU-b", Index: 3, SchedIndex: 1}}}))

	batch5 := []string{"SLURM_JOB_ID=5", "SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=0,1"}
	batch6 := []string{"SLURM_JOB_ID=6", "SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=0,1"}
	for _, tc := range []struct {
		name, mode string
		env        []string
		want       string
	}{
		{"auto keeps Slurm's value", "auto", batch5, ""},
		{"auto when Slurm set nothing", "auto", []string{"SLURM_JOB_ID=5", "SLURM_JOB_GPUS=0,1"}, "export CUDA_VISIBLE_DEVICES=GPU-a,GPU-b\n"},
		{"auto after a move", "auto", batch6, "export CUDA_VISIBLE_DEVICES=GPU-x,GPU-b\n"},
		{"auto, step on the unmoved GPU", "auto", append(batch6, "SLURM_STEP_GPUS=1"), ""},
		{"auto, step on the moved GPU", "auto", append(batch6, "SLURM_STEP_GPUS=0"), "export CUDA_VISIBLE_DEVICES=GPU-x\n"},
		{"uuid", "uuid", batch5, "export CUDA_VISIBLE_DEVICES=GPU-a,GPU-b\n"},
		{"uuid, srun step", "uuid", append(batch5, "SLURM_STEP_GPUS=1"), "export CUDA_VISIBLE_DEVICES=GPU-b\n"},
		{"uuid, direct srun (no SLURM_JOB_GPUS)", "uuid", []string{"SLURM_JOB_ID=5", "SLURM_STEP_GPUS=1,0"}, "export CUDA_VISIBLE_DEVICES=GPU-b,GPU-a\n"},
		{"index", "index", batch5, "export CUDA_VISIBLE_DEVICES=2,3\nexport CUDA_DEVICE_ORDER=PCI_BUS_ID\n"},
		{"index after a move", "index", batch6, "export CUDA_VISIBLE_DEVICES=1,3\nexport CUDA_DEVICE_ORDER=PCI_BUS_ID\n"},
		{"none", "none", batch6, ""},
		{"step without GPUs", "uuid", []string{"SLURM_JOB_ID=5", "SLURM_STEP_ID=0"}, ""},
		{"no job file", "uuid", []string{"SLURM_JOB_ID=7", "SLURM_JOB_GPUS=0"}, ""},
		{"no job id", "uuid", []string{"SLURM_JOB_GPUS=0"}, ""},
		{"bad job id", "uuid", []string{"SLURM_JOB_ID=../5", "SLURM_JOB_GPUS=0"}, ""},
		{"bad list", "uuid", []string{"SLURM_JOB_ID=5", "SLURM_JOB_GPUS=0-1"}, ""},
		{"index not in the job", "uuid", []string{"SLURM_JOB_ID=5", "SLURM_STEP_GPUS=4"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.configure(`export = "` + tc.mode + `"`)
			var out bytes.Buffer
			f.hook(tc.env...).TaskProlog(&out)
			require.Equal(t, tc.want, out.String())
		})
	}
}

// On an AMD node the TaskProlog exports the ROCm variables from the same
// job file: indices in Slurm's slot order for ROCR_VISIBLE_DEVICES (amd-smi
// gives no UUID the runtime takes), 0..n-1 for HIP_VISIBLE_DEVICES.
func TestTaskPrologAMD(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, jobstate.WriteJob(f.stateDir(), allocator.KindSlurm, "6", jobstate.JobFile{
		GPUs: []jobstate.GPU{{UUID: "GPU-x", Index: 3, SchedIndex: 0, Moved: true}, {UUID: "GPU-b", Index: 1, SchedIndex: 1}}}))
	batch6 := []string{"SLURM_JOB_ID=6", "SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=0,1", "ROCR_VISIBLE_DEVICES=0,1"}
	for _, tc := range []struct {
		name, mode string
		env        []string
		want       string
	}{
		{"uuid", "uuid", batch6, "export ROCR_VISIBLE_DEVICES=3,1\nexport HIP_VISIBLE_DEVICES=0,1\n"},
		{"index", "index", batch6, "export ROCR_VISIBLE_DEVICES=3,1\nexport HIP_VISIBLE_DEVICES=0,1\n"},
		{"auto after a move", "auto", batch6, "export ROCR_VISIBLE_DEVICES=3,1\nexport HIP_VISIBLE_DEVICES=0,1\n"},
		{"auto keeps Slurm's ROCR value", "auto", append(batch6, "SLURM_STEP_GPUS=1"), ""},
		{"auto when Slurm set only CUDA's", "auto", []string{"SLURM_JOB_ID=6", "SLURM_STEP_GPUS=1", "CUDA_VISIBLE_DEVICES=1"},
			"export ROCR_VISIBLE_DEVICES=1\nexport HIP_VISIBLE_DEVICES=0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.configure(`export = "` + tc.mode + `"`)
			f.cfg.GPU.Provider = "amdsmi"
			var out bytes.Buffer
			f.hook(tc.env...).TaskProlog(&out)
			require.Equal(t, tc.want, out.String())
		})
	}
}
