package usage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

func snapshot(n int) *allocator.Snapshot {
	s := &allocator.Snapshot{Node: "n1", Now: time.Unix(1_800_000_000, 0),
		Reservations: map[string]allocator.Reservation{}, LastReleased: map[string]time.Time{}}
	for i := range n {
		s.GPUs = append(s.GPUs, allocator.GPU{UUID: uuid(i), Index: i, Minor: i, Name: "GPU"})
	}
	return s
}

func uuid(i int) string { return "GPU-" + string(rune('a'+i)) }

func TestClassify(t *testing.T) {
	snap := snapshot(4)
	released := snap.Now.Add(-2 * time.Hour)
	snap.LastReleased[uuid(2)] = released
	snap.Reservations[uuid(0)] = allocator.Reservation{GPU: uuid(0), Kind: allocator.KindRun, User: "bob"}
	snap.Reservations[uuid(3)] = allocator.Reservation{GPU: uuid(3), Kind: allocator.KindManual, User: "charlie"}
	devs := []gpu.Device{
		{Index: 0, UUID: uuid(0), MemoryUsedMB: 8452, Processes: []gpu.Process{
			{PID: 500, User: "bob", Cmdline: []string{"python", "serve.py", "--model", "microsoft/DialoGPT-large"}},
			{PID: 400, User: "eve", Name: "python3"},
		}},
		{Index: 1, UUID: uuid(1), MemoryUsedMB: 1024, Processes: []gpu.Process{
			{PID: 67890, User: "bob", Name: "jupyter"},
			{PID: 12345, User: "alice", Name: "python3", Cmdline: []string{"vllm", "serve", "teknium/OpenHermes-2.5-Mistral-7B"}},
			{PID: 22222, User: "bob", Name: "python3"},
		}},
		{Index: 2, UUID: uuid(2), MemoryUsedMB: 45},
		// GPU 3 is registered but not reported by the provider.
	}
	got := Classify(snap, devs, 1024)
	require.Len(t, got, 4)

	require.Equal(t, InUse, got[0].State)
	require.Equal(t, "bob", got[0].Reservation.User)
	require.Equal(t, []int{400, 500}, pids(got[0].Processes), "processes by PID")
	require.Equal(t, []int{400}, pids(got[0].Foreign), "eve's process on bob's GPU")
	require.Equal(t, "microsoft/DialoGPT-large", got[0].Model)

	require.Equal(t, Unreserved, got[1].State, "1024 MB reaches the 1024 MB threshold")
	require.Equal(t, []string{"alice", "bob"}, got[1].Users, "users in order of their lowest PID")
	require.Equal(t, "teknium/OpenHermes-2.5-Mistral-7B", got[1].Model)

	require.Equal(t, Available, got[2].State)
	require.Equal(t, released, got[2].FreeSince)
	require.False(t, got[2].Busy)

	require.Equal(t, InUse, got[3].State)
	require.False(t, got[3].Seen)

	require.Equal(t, []string{uuid(0), uuid(1)}, Busy(devs, 1024))
	require.Equal(t, []string{uuid(0)}, Busy(devs, 1025))
}

func TestNeedsRegistration(t *testing.T) {
	snap := snapshot(2)
	devs := []gpu.Device{{Index: 0, UUID: uuid(0), Minor: 0, Name: "GPU"}, {Index: 1, UUID: uuid(1), Minor: 1, Name: "GPU"}}
	require.False(t, NeedsRegistration(snap, devs))
	devs[1].Name = "Other"
	require.True(t, NeedsRegistration(snap, devs), "a changed name")
	devs[1] = gpu.Device{Index: 1, UUID: "GPU-new", Minor: 1, Name: "GPU"}
	require.True(t, NeedsRegistration(snap, devs), "a replaced GPU")
	require.False(t, NeedsRegistration(snap, nil), "no devices seen: keep what is registered")
	require.Equal(t, []allocator.GPU{{UUID: uuid(0), Index: 0, Minor: 0, Name: "GPU"}, {UUID: "GPU-new", Index: 1, Minor: 1, Name: "GPU"}}, Registration(devs))
}

func TestGuessModel(t *testing.T) {
	cases := []struct {
		argv []string
		want string
	}{
		{[]string{"python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "mistralai/Mistral-7B-Instruct-v0.1"}, "mistralai/Mistral-7B-Instruct-v0.1"},
		{[]string{"python", "serve.py", "--model=meta-llama/Meta-Llama-3-8B-Instruct"}, "meta-llama/Meta-Llama-3-8B-Instruct"},
		{[]string{"/usr/bin/vllm", "serve", "NousResearch/Nous-Hermes-2-Yi-34B", "--port", "8000"}, "NousResearch/Nous-Hermes-2-Yi-34B"},
		{[]string{"lm_eval", "--model_name_or_path", "/models/local-llama"}, "/models/local-llama"},
		{[]string{"python", "finetune.py", "codellama/CodeLlama-7b-Instruct-hf"}, "codellama/CodeLlama-7b-Instruct-hf"},
		{[]string{"python", "scripts/train.py", "--epochs", "3"}, ""},
		{[]string{"python", "data/config.yaml"}, ""},
		{[]string{"jupyter", "notebook"}, ""},
		{[]string{"python", "--model"}, ""},
		{nil, ""},
	}
	for _, c := range cases {
		require.Equal(t, c.want, GuessModel(c.argv), "%q", c.argv)
	}
}

func pids(ps []gpu.Process) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

func TestBusyFor(t *testing.T) {
	devs := []gpu.Device{
		{UUID: "a", MemoryUsedMB: 2048, Processes: []gpu.Process{{PID: 1, User: "bob"}, {PID: 2, User: "bob"}}},
		{UUID: "b", MemoryUsedMB: 2048, Processes: []gpu.Process{{PID: 3, User: "bob"}, {PID: 4, User: "alice"}}},
		{UUID: "c", MemoryUsedMB: 2048}, // memory used, no process visible
		{UUID: "d", MemoryUsedMB: 10, Processes: []gpu.Process{{PID: 5, User: "carol"}}}, // below the threshold
	}
	require.Equal(t, []string{"b", "c"}, BusyFor(devs, 1024, "bob"), "bob may take the GPU only he uses")
	require.Equal(t, []string{"a", "b", "c"}, BusyFor(devs, 1024, "alice"))
	require.Equal(t, []string{"a", "b", "c"}, Busy(devs, 1024))
}
