package gpu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeFakeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

// openFake returns a fake provider over a new file holding content, reading
// processes from procRoot.
func openFake(t *testing.T, content, procRoot string) (Provider, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gpus.json")
	writeFakeFile(t, path, content)
	p, err := Open(Options{Provider: "fake", FakeFile: path, ProcRoot: procRoot})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p, path
}

func TestFakeDevices(t *testing.T) {
	procRoot := t.TempDir()
	writeFixtureProc(t, procRoot, 4242, fixtureProc{
		comm:    "python3",
		uid:     0,
		cmdline: []string{"python3", "-m", "vllm.entrypoints.openai.api_server"},
		cgroup:  "0::/system.slice/slurmstepd.scope/job_42/step_0\n",
	})

	tests := []struct {
		name string
		file string
		want []Device
	}{
		{
			name: "defaults",
			file: `{"gpus": [{"index": 1}, {"index": 0}]}`,
			want: []Device{
				{Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", Minor: 0, MemoryTotalMB: 81920},
				{Index: 1, UUID: "GPU-fa4e0000-0000-4000-8000-000000000001", Name: "Fake GPU", Minor: 1, MemoryTotalMB: 81920},
			},
		},
		{
			name: "no gpus",
			file: `{"gpus": []}`,
			want: []Device{},
		},
		{
			name: "overrides",
			file: `{"gpus": [{
				"index": 3, "uuid": "GPU-6f2b3c1e-0000-4000-8000-000000000000", "name": "NVIDIA H100 80GB HBM3",
				"minor": 7, "memory_total_mb": 81559, "memory_used_mb": 45,
				"processes": [
					{"pid": 12345, "name": "python3", "user": "bob", "used_memory_mb": 1024,
					 "cmdline": ["python3", "-m", "vllm"], "uid": 1234, "job_id": "9"}
				]}]}`,
			want: []Device{{
				Index: 3, UUID: "GPU-6f2b3c1e-0000-4000-8000-000000000000", Name: "NVIDIA H100 80GB HBM3",
				Minor: 7, MemoryUsedMB: 45, MemoryTotalMB: 81559,
				Processes: []Process{{PID: 12345, Name: "python3", User: "bob", UID: 1234, UsedMemoryMB: 1024,
					Cmdline: []string{"python3", "-m", "vllm"}, JobID: "9"}},
			}},
		},
		{
			name: "used memory is the sum of known process memory",
			file: `{"gpus": [{"index": 0, "processes": [
				{"pid": 30, "name": "c", "user": "u", "cmdline": [], "job_id": "", "used_memory_mb": 100},
				{"pid": 10, "name": "a", "user": "u", "cmdline": [], "job_id": "", "used_memory_mb": 50},
				{"pid": 20, "name": "b", "user": "u", "cmdline": [], "job_id": ""}
			]}]}`,
			want: []Device{{
				Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", MemoryUsedMB: 150, MemoryTotalMB: 81920,
				Processes: []Process{
					{PID: 10, Name: "a", User: "u", UID: -1, UsedMemoryMB: 50, Cmdline: []string{}},
					{PID: 20, Name: "b", User: "u", UID: -1, UsedMemoryMB: -1, Cmdline: []string{}},
					{PID: 30, Name: "c", User: "u", UID: -1, UsedMemoryMB: 100, Cmdline: []string{}},
				},
			}},
		},
		{
			name: "absent fields come from /proc",
			file: `{"gpus": [{"index": 0, "processes": [{"pid": 4242, "used_memory_mb": 2048}]}]}`,
			want: []Device{{
				Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", MemoryUsedMB: 2048, MemoryTotalMB: 81920,
				Processes: []Process{{PID: 4242, Name: "python3", User: "root", UID: 0, UsedMemoryMB: 2048,
					Cmdline: []string{"python3", "-m", "vllm.entrypoints.openai.api_server"}, JobID: "42"}},
			}},
		},
		{
			name: "present fields win over /proc",
			file: `{"gpus": [{"index": 0, "processes": [{"pid": 4242, "name": "train", "user": "bob", "job_id": "7"}]}]}`,
			want: []Device{{
				Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", MemoryTotalMB: 81920,
				Processes: []Process{{PID: 4242, Name: "train", User: "bob", UID: -1, UsedMemoryMB: -1,
					Cmdline: []string{"python3", "-m", "vllm.entrypoints.openai.api_server"}, JobID: "7"}},
			}},
		},
		{
			name: "uid without user is named",
			file: `{"gpus": [{"index": 0, "processes": [{"pid": 31, "uid": 0}]}]}`,
			want: []Device{{
				Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", MemoryTotalMB: 81920,
				Processes: []Process{{PID: 31, User: "root", UID: 0, UsedMemoryMB: -1}},
			}},
		},
		{
			name: "pid missing from /proc keeps empty fields",
			file: `{"gpus": [{"index": 0, "processes": [{"pid": 999, "used_memory_mb": 1}]}]}`,
			want: []Device{{
				Index: 0, UUID: "GPU-fa4e0000-0000-4000-8000-000000000000", Name: "Fake GPU", MemoryUsedMB: 1, MemoryTotalMB: 81920,
				Processes: []Process{{PID: 999, UID: -1, UsedMemoryMB: 1}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := openFake(t, tt.file, procRoot)
			got, err := p.Devices(context.Background())
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestFakeRereadsFile(t *testing.T) {
	p, path := openFake(t, `{"gpus": [{"index": 0}]}`, t.TempDir())
	ctx := context.Background()

	got, err := p.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Empty(t, got[0].Processes)

	writeFakeFile(t, path, `{"gpus": [{"index": 0, "processes": [{"pid": 7, "name": "x", "user": "bob", "cmdline": ["x"], "job_id": "", "used_memory_mb": 4096}]}, {"index": 1}]}`)
	got, err = p.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, int64(4096), got[0].MemoryUsedMB)
	require.Equal(t, []Process{{PID: 7, Name: "x", User: "bob", UID: -1, UsedMemoryMB: 4096, Cmdline: []string{"x"}}}, got[0].Processes)

	require.NoError(t, os.Remove(path))
	_, err = p.Devices(ctx)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, path)
}

func TestFakeErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr string
	}{
		{name: "empty file", file: "", wantErr: "empty file"},
		{name: "malformed", file: `{"gpus": [{"index": 0,}]}`, wantErr: "line 1: invalid character"},
		{name: "malformed later line", file: "{\"gpus\": [\n{\"index\": 0},\n{\"index\": 1\n]}", wantErr: "line 4: invalid character"},
		{name: "wrong type", file: "{\"gpus\": [\n{\"index\": \"0\"}]}", wantErr: "line 2: json: cannot unmarshal"},
		{name: "trailing data", file: `{"gpus": []} {"gpus": []}`, wantErr: "data after the JSON object"},
		{name: "missing gpus", file: `{}`, wantErr: `missing "gpus" list`},
		{name: "gpus null", file: `{"gpus": null}`, wantErr: `missing "gpus" list`},
		{name: "unknown top-level field", file: `{"gpus": [], "gpu": []}`, wantErr: `unknown field "gpu"`},
		{name: "unknown gpu field", file: `{"gpus": [{"index": 0, "memory_mb": 1}]}`, wantErr: `unknown field "memory_mb"`},
		{name: "unknown process field", file: `{"gpus": [{"index": 0, "processes": [{"pid": 1, "mem": 1}]}]}`, wantErr: `unknown field "mem"`},
		{name: "missing index", file: `{"gpus": [{"uuid": "GPU-1"}]}`, wantErr: `gpus[0]: missing "index"`},
		{name: "mig pid not the gpu's", file: `{"gpus": [{"index": 0, "mig": [{"slot": 1, "pids": [5]}]}]}`,
			wantErr: "gpus[0]: gpu 0: mig slot 1: pid 5 is not among the GPU's processes"},
		{name: "mig negative memory", file: `{"gpus": [{"index": 0, "mig": [{"memory_used_mb": -1, "memory_total_mb": 5}]}]}`,
			wantErr: "gpus[0]: gpu 0: mig slot 0: negative memory"},
		{name: "duplicate index", file: `{"gpus": [{"index": 1}, {"index": 1}]}`, wantErr: "gpus[1]: duplicate index 1"},
		{
			name:    "duplicate uuid",
			file:    `{"gpus": [{"index": 0, "uuid": "GPU-x"}, {"index": 1, "uuid": "GPU-x"}]}`,
			wantErr: `gpus[1]: duplicate uuid "GPU-x" (also gpu 0)`,
		},
		{
			name:    "uuid clashes with a default one",
			file:    `{"gpus": [{"index": 0}, {"index": 1, "uuid": "GPU-fa4e0000-0000-4000-8000-000000000000"}]}`,
			wantErr: "duplicate uuid",
		},
		{name: "negative index", file: `{"gpus": [{"index": -1}]}`, wantErr: "negative index -1"},
		{name: "negative minor", file: `{"gpus": [{"index": 0, "minor": -2}]}`, wantErr: "gpu 0: negative minor -2"},
		{name: "negative total", file: `{"gpus": [{"index": 0, "memory_total_mb": -5}]}`, wantErr: "gpu 0: negative memory_total_mb -5"},
		{name: "utilization above 100", file: `{"gpus": [{"index": 1, "utilization": 101}]}`, wantErr: "gpu 1: utilization 101: want a percentage from 0 to 100"},
		{name: "negative utilization", file: `{"gpus": [{"index": 0, "utilization": -1}]}`, wantErr: "gpu 0: utilization -1: want a percentage from 0 to 100"},
		{name: "utilization not a number", file: `{"gpus": [{"index": 0, "utilization": "5%"}]}`, wantErr: "line 1"},
		{name: "negative used", file: `{"gpus": [{"index": 0, "memory_used_mb": -5}]}`, wantErr: "gpu 0: negative memory_used_mb -5"},
		{name: "zero pid", file: `{"gpus": [{"index": 0, "processes": [{"pid": 0}]}]}`, wantErr: "gpu 0: bad pid 0"},
		{name: "missing pid", file: `{"gpus": [{"index": 0, "processes": [{"name": "x"}]}]}`, wantErr: "gpu 0: bad pid 0"},
		{name: "negative pid", file: `{"gpus": [{"index": 0, "processes": [{"pid": -3}]}]}`, wantErr: "gpu 0: bad pid -3"},
		{
			name:    "negative process memory",
			file:    `{"gpus": [{"index": 2, "processes": [{"pid": 5, "used_memory_mb": -1}]}]}`,
			wantErr: "gpu 2: pid 5: negative used_memory_mb -1",
		},
		{name: "negative uid", file: `{"gpus": [{"index": 0, "processes": [{"pid": 5, "uid": -1}]}]}`, wantErr: "gpu 0: pid 5: negative uid -1"},
		{name: "duplicate pid", file: `{"gpus": [{"index": 0, "processes": [{"pid": 5}, {"pid": 5}]}]}`, wantErr: "gpu 0: duplicate pid 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, path := openFake(t, tt.file, t.TempDir())
			devs, err := p.Devices(context.Background())
			require.ErrorContains(t, err, "fake gpu file "+path+": ")
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, devs)
		})
	}
}

func TestFakeUnreadableFile(t *testing.T) {
	// A directory fails to read for every user, root included.
	dir := t.TempDir()
	p, err := Open(Options{Provider: "fake", FakeFile: dir})
	require.NoError(t, err)
	_, err = p.Devices(context.Background())
	require.ErrorContains(t, err, dir)
}

func TestFakeCanceledContext(t *testing.T) {
	p, _ := openFake(t, `{"gpus": [{"index": 0}]}`, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Devices(ctx)
	require.ErrorIs(t, err, context.Canceled)
}

func TestOpen(t *testing.T) {
	fakeFile := filepath.Join(t.TempDir(), "gpus.json")
	tests := []struct {
		name    string
		opts    Options
		wantErr []string
	}{
		{name: "fake", opts: Options{Provider: "fake", FakeFile: fakeFile}},
		{name: "fake without file", opts: Options{Provider: "fake"}, wantErr: []string{"gpu.fake_file"}},
		{name: "unknown provider", opts: Options{Provider: "cuda"}, wantErr: []string{`"cuda"`, `"auto"`, `"nvml"`, `"fake"`}},
		{name: "case matters", opts: Options{Provider: "Fake", FakeFile: fakeFile}, wantErr: []string{`"Fake"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Open(tt.opts)
			if tt.wantErr != nil {
				for _, s := range tt.wantErr {
					require.ErrorContains(t, err, s)
				}
				require.Nil(t, p)
				return
			}
			require.NoError(t, err)
			require.NoError(t, p.Close())
		})
	}
}

func TestOpenAutoWithoutDriver(t *testing.T) {
	for _, provider := range []string{"", "auto", "nvml"} {
		p, err := Open(Options{Provider: provider})
		if err == nil {
			require.NoError(t, p.Close())
			t.Skip("NVML works on this machine")
		}
		require.ErrorContains(t, err, `use gpu provider "fake"`)
	}
}

// TestFakeFileDocExampleLoads loads the example of docs/fake-gpus.md
// through the provider, so that the page cannot drift from the code.
func TestFakeFileDocExampleLoads(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "fake-gpus.md"))
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(doc), "```json\n")
	require.True(t, ok, "docs/fake-gpus.md has a json example")
	example, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)

	p, _ := openFake(t, example, t.TempDir())
	devs, err := p.Devices(context.Background(), ReadUtilization)
	require.NoError(t, err)
	require.Len(t, devs, 4)
	for i, minor := range []int{3, 2, 1, 0} {
		require.Equal(t, i, devs[i].Index)
		require.Equal(t, minor, devs[i].Minor, "gpu %d", i)
	}
	require.Equal(t, "NVIDIA A100-SXM4-80GB", devs[0].Name)
	require.Equal(t, fakeUUID(0), devs[0].UUID)
	require.Equal(t, int64(0), devs[0].MemoryUsedMB)
	require.Equal(t, Percent(0), devs[0].Utilization, "idle, as the file says")
	require.Equal(t, Percent(87), devs[1].Utilization)
	require.Equal(t, Utilization{}, devs[2].Utilization, "absent: unknown, not 0")
	require.Equal(t, []Process{{PID: 4242, Name: "python3", User: "alice", UID: 2001, UsedMemoryMB: 30000,
		Cmdline: []string{"python3", "train.py"}, JobID: "42"}}, devs[1].Processes)
	require.Equal(t, int64(30000), devs[1].MemoryUsedMB, "the processes' sum")
	require.Equal(t, "GPU-4d1c2a7e-0000-4000-8000-000000000002", devs[2].UUID)
	require.Equal(t, "Fake GPU", devs[2].Name)
	require.Equal(t, int64(81920), devs[2].MemoryTotalMB)
	require.Equal(t, int64(40960), devs[3].MemoryTotalMB)
	require.Equal(t, int64(20480), devs[3].MemoryUsedMB, "given, not the sum")
	require.Equal(t, []Process{{PID: 4711, Name: "jupyter", User: "bob", UID: -1, UsedMemoryMB: -1,
		Cmdline: []string{"jupyter", "lab"}}}, devs[3].Processes)

	// As NVML: a scan that does not ask for utilisation leaves it unknown.
	plain, err := p.Devices(context.Background())
	require.NoError(t, err)
	for i := range devs {
		devs[i].Utilization = Utilization{}
	}
	require.Equal(t, devs, plain)
}
