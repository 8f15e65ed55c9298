package gpu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"canhazgpu/allocator/gpu/amdsmitest"
	"github.com/stretchr/testify/require"
)

// openAMDFixture runs the provider over the fixture files of one ROCm
// version, with render nodes for KFD nodes 2 (renderD128) and 3
// (renderD129) and no processes in /proc.
func openAMDFixture(t *testing.T, version string) Provider {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "amdsmi", version))
	require.NoError(t, err)
	stubDir := t.TempDir()
	for _, name := range []string{"list", "static", "metric", "process"} {
		data, err := os.ReadFile(filepath.Join(dir, name+".json"))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(stubDir, name+".json"), data, 0o644))
	}
	sys := t.TempDir()
	amdsmitest.WriteRenderNodes(t, sys, []amdsmitest.GPU{{Node: 2}, {Node: 3}})
	p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: amdsmitest.Stub(t, stubDir), ProcRoot: t.TempDir(), SysRoot: sys})
	require.NoError(t, err)
	return p
}

func TestAMDSMIROCm6(t *testing.T) {
	devs, err := openAMDFixture(t, "rocm6").Devices(context.Background())
	require.NoError(t, err)
	require.Equal(t, []Device{
		{Index: 0, UUID: "GPU-5fff74a1-0000-1000-80c3-41e8b3d2a07c", Name: "AMD Instinct MI300X", Minor: 128,
			MemoryUsedMB: 281, MemoryTotalMB: 196592},
		{Index: 1, UUID: "GPU-e2ff74a1-0000-1000-8046-9c1d0f5e6b21", Name: "AMD Instinct MI300X", Minor: 129,
			MemoryUsedMB: 48473, MemoryTotalMB: 196592, Processes: []Process{
				{PID: 41873, UID: -1, UsedMemoryMB: 48000},
				{PID: 41920, UID: -1, UsedMemoryMB: 0},
			}},
	}, devs)
}

// ROCm 7 wraps each list in "gpu_data", may print a warning first and
// list processes bare; amd-smi's numbering here is not the runtime's, and
// list -e gives the HIP index and the render node (renderD136, not the
// KFD topology's 129).
func TestAMDSMIROCm7(t *testing.T) {
	devs, err := openAMDFixture(t, "rocm7").Devices(context.Background())
	require.NoError(t, err)
	require.Equal(t, []Device{
		{Index: 0, UUID: "GPU-91ff74a5-0000-1000-80aa-e6f21c4b8d37", Name: "AMD Instinct MI325X", Minor: 128,
			MemoryUsedMB: 1, MemoryTotalMB: 262128, Processes: []Process{
				{PID: 7702, UID: -1, UsedMemoryMB: 1},
				{PID: 7810, UID: -1, UsedMemoryMB: -1},
			}},
		{Index: 1, UUID: "GPU-c4ff74a5-0000-1000-8012-7a3b5c9d1e04", Name: "AMD Instinct MI325X", Minor: 136,
			MemoryUsedMB: 20515, MemoryTotalMB: 262128, Processes: []Process{
				{PID: 7702, UID: -1, UsedMemoryMB: 20480},
			}},
	}, devs, "HIP's device 0 is amd-smi's GPU 1; used_vram N/A sums the processes")
}

// An amd-smi before ROCm 6.4 refuses list -e: the provider runs plain
// list, once it knows, and reads render nodes from the KFD topology.
func TestAMDSMIWithoutEnumeration(t *testing.T) {
	dir := t.TempDir()
	gpus := []amdsmitest.GPU{{Index: 0, UUID: "ab-0", Node: 3}, {Index: 1, UUID: "ab-1", Node: 2}}
	amdsmitest.Write(t, dir, gpus)
	stub := amdsmitest.Stub(t, dir)
	old := filepath.Join(dir, "old-amd-smi")
	require.NoError(t, os.WriteFile(old, []byte("#!/bin/sh\necho \"$*\" >> '"+dir+"/calls'\n"+
		"case \"$2\" in -e) echo 'amd-smi list: error: unrecognized arguments: -e' >&2; exit 2 ;; esac\n"+
		"exec '"+stub+"' \"$@\"\n"), 0o755))
	sys := t.TempDir()
	amdsmitest.WriteRenderNodes(t, sys, gpus)
	p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: old, SysRoot: sys})
	require.NoError(t, err)
	for range 2 {
		devs, err := p.Devices(context.Background())
		require.NoError(t, err)
		require.Equal(t, []ID{{"GPU-ab-1", 0}, {"GPU-ab-0", 1}}, SetOf(devs).IDs(), "KFD node order")
		require.Equal(t, []int{129, 128}, []int{devs[0].Minor, devs[1].Minor})
	}
	calls, err := os.ReadFile(filepath.Join(dir, "calls"))
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(calls), "list -e"), string(calls))
	require.Equal(t, 2, strings.Count(string(calls), "list --json"), string(calls))
}

func TestAMDSMIErrors(t *testing.T) {
	cases := []struct {
		name, file, content, want string
	}{
		{"not JSON", "list", "amd-smi failed to initialise\n", "amd-smi list -e: no JSON in the output"},
		{"broken JSON", "list", "[{\"gpu\": 0,", "amd-smi list -e: bad JSON"},
		{"object without gpu_data", "list", `{"gpus": []}`, `a JSON object without "gpu_data"`},
		{"no gpu field", "list", `[{"uuid": "ab-cd"}]`, `entry 0: bad or missing "gpu"`},
		{"no uuid", "list", `[{"gpu": 0, "uuid": "N/A"}]`, "gpu 0: no uuid"},
		{"hostile uuid", "list", `[{"gpu": 0, "uuid": "ab\u001b[2J"}]`, `bad uuid "ab\x1b[2J" (accepted: letters, digits and '-')`},
		{"duplicate uuid", "list", `[{"gpu": 0, "uuid": "ab"}, {"gpu": 1, "uuid": "ab"}]`, `duplicate uuid "GPU-ab"`},
		{"bad pid", "process", `[{"gpu": 0, "process_list": [{"process_info": {"pid": -3}}]}]`, "gpu 0: process_list[0]: bad pid -3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			amdsmitest.Write(t, dir, []amdsmitest.GPU{{Index: 0, UUID: "ab", Node: 1}})
			require.NoError(t, os.WriteFile(filepath.Join(dir, c.file+".json"), []byte(c.content), 0o644))
			p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: amdsmitest.Stub(t, dir), SysRoot: t.TempDir()})
			require.NoError(t, err)
			_, err = p.Devices(context.Background())
			require.ErrorContains(t, err, c.want)
		})
	}

	t.Run("amd-smi failing", func(t *testing.T) {
		dir := t.TempDir() // no files: the stub's cat fails
		p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: amdsmitest.Stub(t, dir)})
		require.NoError(t, err)
		_, err = p.Devices(context.Background())
		require.ErrorContains(t, err, "amd-smi list: exit status 1: ")
		require.ErrorContains(t, err, "list.json: No such file")
	})

	t.Run("amd-smi missing", func(t *testing.T) {
		p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: filepath.Join(t.TempDir(), "amd-smi")})
		require.NoError(t, err)
		_, err = p.Devices(context.Background())
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "set gpu.amdsmi_path")
	})

	t.Run("no render node", func(t *testing.T) {
		dir := t.TempDir()
		amdsmitest.Write(t, dir, []amdsmitest.GPU{{Index: 0, UUID: "ab", Node: 1}})
		p, err := Open(Options{Provider: ProviderAMDSMI, AMDSMIPath: amdsmitest.Stub(t, dir), SysRoot: t.TempDir()})
		require.NoError(t, err)
		devs, err := p.Devices(context.Background())
		require.NoError(t, err)
		require.Equal(t, 0, devs[0].Minor, "unknown: no render node has minor 0")
	})
}

func TestAMDSMIMegabytes(t *testing.T) {
	for _, c := range []struct {
		v    any
		unit string
		want int64
		ok   bool
	}{
		{map[string]any{"value": float64(3 << 20), "unit": "B"}, "MB", 3, true},
		{map[string]any{"value": float64(2048), "unit": "KiB"}, "B", 2, true},
		{map[string]any{"value": float64(1.5), "unit": "GB"}, "B", 1536, true},
		{float64(7), "MB", 7, true},
		{map[string]any{"value": "N/A", "unit": "MB"}, "MB", 0, false},
		{map[string]any{"value": float64(1), "unit": "W"}, "MB", 0, false},
		{float64(-1), "MB", 0, false},
	} {
		got, ok := megabytes(c.v, c.unit)
		require.Equal(t, c.ok, ok, "%v", c.v)
		require.Equal(t, c.want, got, "%v", c.v)
	}
}
