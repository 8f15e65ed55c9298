package slurm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

func TestParseGPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{in: "", want: nil},
		{in: "0", want: []int{0}},
		{in: "0,1", want: []int{0, 1}},
		{in: "3,1,7", want: []int{3, 1, 7}},
		{in: "10,11", want: []int{10, 11}},
		{in: "0-3", bad: true},
		{in: "0,,1", bad: true},
		{in: "0,", bad: true},
		{in: " 0", bad: true},
		{in: "-1", bad: true},
		{in: "1,1", bad: true},
		{in: "gpu0", bad: true},
		{in: "0x1", bad: true},
		{in: "1234567", bad: true},
		// Slurm 25.11 may put UUIDs in CUDA_VISIBLE_DEVICES, never here.
		{in: "GPU-6f2b3c1e-0000-4000-8000-000000000000", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseGPUList("SLURM_JOB_GPUS", tc.in)
			if tc.bad {
				var in *allocator.InputError
				require.ErrorAs(t, err, &in)
				require.Equal(t, tc.in, in.Value)
				require.Contains(t, err.Error(), "SLURM_JOB_GPUS")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestJobFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want Job
		bad  bool
	}{
		{name: "no job", env: []string{"SLURM_JOB_GPUS=0"}, want: Job{}},
		{name: "full", env: []string{"SLURM_JOB_ID=12", "SLURM_JOB_USER=bob", "SLURM_JOB_UID=1001",
			"SLURM_JOB_RESTART_COUNT=2", "SLURM_JOB_GPUS=1,0"},
			want: Job{ID: "12", User: "bob", UID: 1001, Restart: 2, GPUs: []int{1, 0}}},
		{name: "no gpus", env: []string{"SLURM_JOB_ID=12", "SLURM_JOB_USER=bob", "SLURM_JOB_UID=1001"},
			want: Job{ID: "12", User: "bob", UID: 1001}},
		{name: "no user", env: []string{"SLURM_JOB_ID=12", "SLURM_JOB_UID=1001"},
			want: Job{ID: "12", User: "uid:1001", UID: 1001}},
		{name: "nothing but the id", env: []string{"SLURM_JOB_ID=12", "SLURM_JOB_UID=x", "SLURM_JOB_RESTART_COUNT=-1"},
			want: Job{ID: "12", User: "uid:-1", UID: -1}},
		{name: "bad gpus", env: []string{"SLURM_JOB_ID=12", "SLURM_JOB_USER=bob", "SLURM_JOB_GPUS=0-1"},
			want: Job{ID: "12", User: "bob", UID: -1}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := JobFromEnv(ParseEnv(tc.env))
			if tc.bad {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDevicePath(t *testing.T) {
	p, err := DevicePath(nil, 5)
	require.NoError(t, err)
	require.Equal(t, "/dev/nvidia5", p)
	p, err = DevicePath([]string{"/dev/nvidia2", "/dev/nvidia0"}, 1)
	require.NoError(t, err)
	require.Equal(t, "/dev/nvidia0", p)
	_, err = DevicePath([]string{"/dev/nvidia2", "/dev/nvidia0"}, 2)
	require.ErrorContains(t, err, `invalid slurm gpu index "2": want 0-1`)
	_, err = DevicePath(nil, -1)
	require.Error(t, err)
}

func TestMinor(t *testing.T) {
	dir := t.TempDir()
	// No digits in the name: the character device's own minor. /dev/null
	// is char 1:3 on every Linux.
	named := filepath.Join(dir, "gpu-a")
	require.NoError(t, os.Symlink("/dev/null", named))
	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	for _, tc := range []struct {
		path string
		want int
		err  string
	}{
		{path: "/dev/nvidia0", want: 0},
		{path: "/dev/nvidia13", want: 13},
		{path: "/srv/gpus/tty7", want: 7},
		{path: named, want: 3},
		{path: plain, err: "not a character device"},
		{path: filepath.Join(dir, "missing"), err: "no such file"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, err := Minor(tc.path)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestResolve(t *testing.T) {
	// NVML order differs from the minor numbers, as on many real boards.
	devs := []gpu.Device{{Index: 0, UUID: "GPU-a", Minor: 2}, {Index: 1, UUID: "GPU-b", Minor: 3},
		{Index: 2, UUID: "GPU-c", Minor: 0}, {Index: 3, UUID: "GPU-d", Minor: 1}}
	uuids := func(ds []gpu.Device) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.UUID
		}
		return out
	}

	got, err := Resolve(nil, []int{0, 1}, devs)
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-c", "GPU-d"}, uuids(got))

	// gres.conf in NVML order rather than minor order.
	gres := []string{"/dev/nvidia2", "/dev/nvidia3", "/dev/nvidia0", "/dev/nvidia1"}
	got, err = Resolve(gres, []int{3, 0}, devs)
	require.NoError(t, err)
	require.Equal(t, []string{"GPU-d", "GPU-a"}, uuids(got))

	_, err = Resolve(nil, []int{4}, devs)
	require.ErrorContains(t, err, "slurm GPU 4: /dev/nvidia4 (minor 4) is no GPU of this node (minors 2,3,0,1)")
	_, err = Resolve(gres, []int{4}, devs)
	require.ErrorContains(t, err, "slurm gpu index")
}
