package slurm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/jobstate"
)

// squatterUID owns what an unprivileged user could have made.
const squatterUID = 12345

// TestHooksRefuseUnsafeStateDir: a state directory another user owns, or
// may write, stops the Prolog and the Epilog with one line naming it,
// before the store is touched.
func TestHooksRefuseUnsafeStateDir(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		spoil func(state string) error
		want  string
	}{
		{"owned by a user", func(state string) error { return os.Lchown(state, squatterUID, squatterUID) },
			"is owned by uid 12345; want a directory owned by root and writable by root only (such as mode 0755)"},
		{"writable by all", func(state string) error { return os.Chmod(state, 0o777) },
			"has mode 0777, which lets group or others write in it; want a directory owned by root and writable by root only (such as mode 0755)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			_, err := f.hook(jobEnv("21", "0")...).Prolog(ctx)
			require.NoError(t, err)
			require.NoError(t, tc.spoil(f.stateDir()))
			before := f.reservations()
			f.calls.Reset()

			_, err = f.hook(jobEnv("22", "1")...).Prolog(ctx)
			require.EqualError(t, err, "job 22: state dir "+f.stateDir()+" "+tc.want)
			_, err = f.hook(jobEnv("21", "0")...).Epilog(ctx)
			require.EqualError(t, err, "job 21: state dir "+f.stateDir()+" "+tc.want)
			require.Zero(t, f.calls.Load(), "the store is not touched")
			require.Equal(t, before, f.reservations())
			require.FileExists(t, jobstate.JobPath(f.stateDir(), allocator.KindSlurm, "21"))
			require.NoFileExists(t, jobstate.JobPath(f.stateDir(), allocator.KindSlurm, "22"))

			var out bytes.Buffer
			f.configure(`export = "uuid"`)
			f.hook("SLURM_JOB_ID=21", "SLURM_JOB_GPUS=0").TaskProlog(&out)
			require.Empty(t, out.String(), "the TaskProlog trusts nothing there")
		})
	}
}

// TestTaskPrologPrintsOnlyWhatItOwns: whatever a job file holds, only
// canhazgpu's variables with values of canhazgpu's form are printed.
func TestTaskPrologPrintsOnlyWhatItOwns(t *testing.T) {
	f := newFixture(t, `export = "uuid"`)
	require.NoError(t, jobstate.Prepare(f.stateDir()))
	slurmDir := filepath.Join(f.stateDir(), "slurm")
	require.NoError(t, os.Mkdir(slurmDir, 0o755))
	write := func(job, content string) {
		require.NoError(t, os.WriteFile(filepath.Join(slurmDir, job), []byte(content), 0o644))
	}
	good := `{"kind":"slurm","job_id":"%s","gpus":[{"uuid":"GPU-5e570000-0000-4000-8000-000000000002","index":2,"sched_index":0}]}`
	write("31", fmt.Sprintf(good, "31"))
	write("32", `{"kind":"slurm","job_id":"32","gpus":[{"uuid":"GPU-a\nexport LD_PRELOAD=/tmp/evil.so","index":2,"sched_index":0}]}`)
	write("33", `{"kind":"slurm","job_id":"33","gpus":[{"uuid":"GPU-a","index":2,"sched_index":0}],"env":{"LD_PRELOAD":"/tmp/evil.so"}}`)
	write("34", fmt.Sprintf(good, "34"))
	require.NoError(t, os.Lchown(filepath.Join(slurmDir, "34"), squatterUID, squatterUID))
	write("35", `{"kind":"slurm","job_id":"35","gpus":[{"uuid":"GPU-a","index":-1,"sched_index":0}]}`)

	for _, tc := range []struct {
		job, mode, want string
	}{
		{"31", "uuid", "export CUDA_VISIBLE_DEVICES=GPU-5e570000-0000-4000-8000-000000000002\n"},
		{"31", "index", "export CUDA_VISIBLE_DEVICES=2\nexport CUDA_DEVICE_ORDER=PCI_BUS_ID\n"},
		{"32", "uuid", ""}, // a line break smuggled into an id
		{"33", "uuid", ""}, // a field the Prolog never writes
		{"34", "uuid", ""}, // not root's file
		{"35", "uuid", "export CUDA_VISIBLE_DEVICES=GPU-a\n"},
		{"35", "index", ""}, // an index the Prolog could not know
	} {
		t.Run(tc.job+"/"+tc.mode, func(t *testing.T) {
			f.configure(`export = "` + tc.mode + `"`)
			var out bytes.Buffer
			f.hook("SLURM_JOB_ID="+tc.job, "SLURM_JOB_GPUS=0").TaskProlog(&out)
			require.Equal(t, tc.want, out.String())
		})
	}
}

func TestExportValid(t *testing.T) {
	for _, tc := range []struct {
		e    export
		want bool
	}{
		{export{"CUDA_VISIBLE_DEVICES", "GPU-5e570000-0000-4000-8000-000000000002"}, true},
		{export{"CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b"}, true},
		{export{"CUDA_VISIBLE_DEVICES", "MIG-GPU-a/1/0"}, true},
		{export{"CUDA_VISIBLE_DEVICES", "0,3,12"}, true},
		{export{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, true},
		{export{"CUDA_DEVICE_ORDER", "FASTEST_FIRST"}, false},
		{export{"LD_PRELOAD", "/tmp/evil.so"}, false},
		{export{"CUDA_VISIBLE_DEVICES", ""}, false},
		{export{"CUDA_VISIBLE_DEVICES", "GPU-a\nexport LD_PRELOAD=/tmp/evil.so"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "GPU-a LD_PRELOAD=/tmp/evil.so"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "GPU-a,,GPU-b"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "-1"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "01"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "GPU-"}, false},
		{export{"CUDA_VISIBLE_DEVICES", "$(id)"}, false},
		{export{"ROCR_VISIBLE_DEVICES", "0,2"}, false}, // not NVIDIA's
	} {
		t.Run(tc.e.name+"="+tc.e.value, func(t *testing.T) {
			require.Equal(t, tc.want, tc.e.valid(gpu.VendorOf("")))
		})
	}
	amd := gpu.VendorOf(gpu.ProviderAMDSMI)
	for _, tc := range []struct {
		e    export
		want bool
	}{
		{export{"ROCR_VISIBLE_DEVICES", "0,2"}, true},
		{export{"HIP_VISIBLE_DEVICES", "0,1"}, true},
		{export{"HIP_VISIBLE_DEVICES", "0;id"}, false},
		{export{"ROCR_VISIBLE_DEVICES", ""}, false},
		{export{"CUDA_VISIBLE_DEVICES", "0"}, false},
		{export{"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}, false},
	} {
		t.Run("amd "+tc.e.name+"="+tc.e.value, func(t *testing.T) {
			require.Equal(t, tc.want, tc.e.valid(amd))
		})
	}
}
