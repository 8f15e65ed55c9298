package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/<name> byte for byte; -update rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create %s", path)
	require.Equal(t, string(want), string(got), "output differs from %s (go test -update rewrites it; review the diff)", path)
}

// statusNow is the fixed store clock of the golden cases.
var statusNow = time.Date(2025, 6, 2, 14, 0, 0, 0, time.UTC)

// statusCase is one seed table: a fake GPU file and the store state.
type statusCase struct {
	name  string
	state func(s *allocator.Snapshot, uuid func(index int) string)
	// rows is the table as the product description prints it, column
	// widths collapsed (the dash line is checked apart); for "beyond",
	// which the description has no table for, as this program prints it.
	rows []string
}

var statusCases = []statusCase{
	{
		// Beyond the seed: a GPU in MIG mode shows its MIG devices under
		// its row; the reservation is the whole GPU's, and bob's process
		// on another slice of it is use without reservation.
		name: "mig",
		state: func(s *allocator.Snapshot, uuid func(int) string) {
			s.Reservations[uuid(0)] = allocator.Reservation{GPU: uuid(0), Kind: allocator.KindManual, User: "alice", Token: 9,
				StartedAt: statusNow.Add(-time.Hour), ExpiresAt: statusNow.Add(time.Hour)}
		},
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"0 in use alice 1h 0m 0s manual expires in 1h 0m 0s; also used by bob WITHOUT RESERVATION (owner alice) 25000MB, 2 processes -",
			"0/mig0 alice MIG device MIG-2f6c0d3e-8a1b-5c4d-9e7f-0a1b2c3d4e5f 20000MB of 40192MB, PID 7001 (python3)",
			"0/mig1 bob MIG device MIG-7b8c9d0e-1f2a-5b3c-8d4e-5f6a7b8c9d0e 5000MB of 19968MB, PID 7002 (jupyter)",
			"0/mig2 MIG device MIG-0c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f 0MB of 19968MB, no processes",
			"1 available free, never reserved 0MB used -",
		},
	},
	{
		name: "single",
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"2 in use bob mistralai/Mistral-7B-Instruct-v0.1 WITHOUT RESERVATION 1024MB used by PID 12345 (python3), PID 67890 (jupyter) -",
		},
	},
	{
		name: "multiple",
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"3 in use alice,bob,charlie meta-llama/Meta-Llama-3-8B-Instruct WITHOUT RESERVATION 2048MB used by PID 12345 (python3), PID 23456 (pytorch) and 2 more -",
		},
	},
	{
		name: "multigpu",
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"1 in use alice NousResearch/Nous-Hermes-2-Yi-34B WITHOUT RESERVATION 2048MB used by PID 11111 (python3) -",
			"2 in use alice NousResearch/Nous-Hermes-2-Yi-34B WITHOUT RESERVATION 2048MB used by PID 11111 (python3) -",
			"5 in use alice NousResearch/Nous-Hermes-2-Yi-34B WITHOUT RESERVATION 2048MB used by PID 11111 (python3) -",
		},
	},
	{
		name: "mixed",
		state: func(s *allocator.Snapshot, uuid func(int) string) {
			s.Reservations[uuid(0)] = allocator.Reservation{GPU: uuid(0), Kind: allocator.KindRun, User: "bob", Token: 7,
				StartedAt: statusNow.Add(-90 * time.Minute), HeartbeatAt: statusNow.Add(-5 * time.Second),
				ExpiresAt: statusNow.Add(55 * time.Second)}
			s.Reservations[uuid(3)] = allocator.Reservation{GPU: uuid(3), Kind: allocator.KindManual, User: "charlie", Token: 8,
				StartedAt: statusNow.Add(-45 * time.Minute), ExpiresAt: statusNow.Add(7*time.Hour + 15*time.Minute)}
			s.LastReleased[uuid(2)] = statusNow.Add(-2 * time.Hour)
		},
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"0 in use bob 1h 30m 0s run microsoft/DialoGPT-large heartbeat 5s ago 8452MB, 1 processes 73%",
			"1 in use alice teknium/OpenHermes-2.5-Mistral-7B WITHOUT RESERVATION 1024MB used by PID 22222 (jupyter) -",
			"2 available free for 2h 45MB used 0%",
			"3 in use charlie 45m 0s manual expires in 7h 15m 0s no usage detected 2%",
		},
	},
	{
		// An interactive hold Slurm sees (slurm.interactive_holds =
		// "placeholder"): the row names the placeholder job squeue shows.
		name: "placeholder",
		state: func(s *allocator.Snapshot, uuid func(int) string) {
			s.Reservations[uuid(3)] = allocator.Reservation{GPU: uuid(3), Kind: allocator.KindManual, User: "charlie", Token: 8,
				StartedAt: statusNow.Add(-45 * time.Minute), ExpiresAt: statusNow.Add(7*time.Hour + 15*time.Minute), JobID: "4711"}
		},
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"0 available free, never reserved 0MB used -",
			"3 in use charlie 45m 0s manual expires in 7h 15m 0s; slurm placeholder job 4711 no usage detected -",
		},
	},
	{
		name: "containers",
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"1 in use root,alice codellama/CodeLlama-7b-Instruct-hf WITHOUT RESERVATION 3072MB used by PID 33333 (dockerd), PID 44444 (python3) and 1 more -",
		},
	},
	{
		// Text other users chose: a process name and a model flag carrying
		// escape sequences, a note with a right-to-left override, a job id
		// with a colour sequence, an account name reversed by an override,
		// a finding quoting a line separator. Each
		// shows escaped, and the columns still line up.
		name: "hostile",
		state: func(s *allocator.Snapshot, uuid func(int) string) {
			s.Reservations[uuid(1)] = allocator.Reservation{GPU: uuid(1), Kind: allocator.KindManual, User: "eve", Token: 5,
				Note: "ok \u202etxt.exe", StartedAt: statusNow.Add(-time.Minute), ExpiresAt: statusNow.Add(time.Hour)}
			s.Reservations[uuid(2)] = allocator.Reservation{GPU: uuid(2), Kind: allocator.KindSlurm, User: "bob", JobID: "42\x1b[31m",
				Token: 6, StartedAt: statusNow.Add(-time.Hour)}
			s.Flags = []allocator.Flag{{GPU: uuid(0), Message: "used by mallory\u2028\x1b[1A", At: statusNow.Add(-time.Minute)}}
		},
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			`0 in use mallory \x1b]0;root@gpu01\x07org/model WITHOUT RESERVATION 2048MB used by PID 6666 (\x1b[2Jtop) -`,
			`1 in use eve 1m 0s manual org/\u202ellama\u200b expires in 1h 0m 0s; note: ok \u202etxt.exe; also used by \u202enimda WITHOUT RESERVATION (owner eve) 5120MB, 2 processes -`,
			`2 in use bob 1h 0m 0s slurm job 42\x1b[31m no usage detected -`,
		},
	},
	{
		// Beyond the seed: a batch job, someone else's process on a
		// reserved GPU, a note, a hold for the queue, a registered GPU the
		// provider lost, use without process information, health findings.
		name: "beyond",
		state: func(s *allocator.Snapshot, uuid func(int) string) {
			s.GPUs = append(s.GPUs, allocator.GPU{UUID: "GPU-5eed0000-0000-4000-8000-000000000003", Index: 3, Minor: 3, Name: "NVIDIA H100 80GB HBM3"})
			s.Reservations[uuid(0)] = allocator.Reservation{GPU: uuid(0), Kind: allocator.KindSlurm, User: "dave", JobID: "12345",
				Token: 3, StartedAt: statusNow.Add(-3*time.Hour - 20*time.Minute)}
			s.Reservations[uuid(1)] = allocator.Reservation{GPU: uuid(1), Kind: allocator.KindManual, User: "erin", Note: "debugging NCCL",
				Token: 4, StartedAt: statusNow.Add(-10 * time.Minute), ExpiresAt: statusNow.Add(20 * time.Minute)}
			s.Reservations[uuid(2)] = allocator.Reservation{GPU: uuid(2), Kind: allocator.KindManual, User: "grace", Queued: true,
				StartedAt: statusNow.Add(-time.Minute), ExpiresAt: statusNow.Add(29 * time.Second)}
			s.Flags = []allocator.Flag{
				{GPU: "", Message: "slurmd did not answer", At: statusNow.Add(-3 * time.Minute)},
				{GPU: uuid(4), Message: "used without reservation (2000MB, no process information)", At: statusNow.Add(-90 * time.Second)},
			}
		},
		rows: []string{
			"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
			"0 in use dave 3h 20m 0s slurm Qwen/Qwen2.5-7B job 12345 30000MB, 1 processes -",
			"1 in use erin 10m 0s manual expires in 20m 0s; note: debugging NCCL; also used by frank WITHOUT RESERVATION (owner erin) 4096MB, 2 processes -",
			"2 in use grace 1m 0s manual held for a waiting request no usage detected -",
			"3 available free, never reserved not reported by the GPU provider",
			"4 in use WITHOUT RESERVATION 2000MB used (no process information) -",
		},
	},
}

// statusView builds the case's view from its fake GPU file, through the
// fake provider, and its store state.
func statusView(t *testing.T, c statusCase) nodeView {
	t.Helper()
	prov, err := gpu.Open(gpu.Options{Provider: "fake", FakeFile: filepath.Join("testdata", "status", c.name+".gpus.json")})
	require.NoError(t, err)
	devs, err := prov.Devices(context.Background(), gpu.ReadUtilization)
	require.NoError(t, err)
	snap := &allocator.Snapshot{Node: "gpu-node-01", Now: statusNow, GPUs: usage.Registration(devs),
		Reservations: map[string]allocator.Reservation{}, LastReleased: map[string]time.Time{}}
	uuid := func(i int) string {
		for _, d := range devs {
			if d.Index == i {
				return d.UUID
			}
		}
		t.Fatalf("no GPU %d in %s", i, c.name)
		return ""
	}
	if c.state != nil {
		c.state(snap, uuid)
	}
	// A store snapshot lists GPUs by index.
	slices.SortFunc(snap.GPUs, func(a, b allocator.GPU) int { return a.Index - b.Index })
	return viewNode(snap, devs, true, 1024)
}

// collapse squeezes runs of spaces, which is how the seed's tables read
// once their column widths are set aside.
func collapse(line string) string { return strings.Join(strings.Fields(line), " ") }

func TestStatusTablesReproduceTheSeed(t *testing.T) {
	for _, c := range statusCases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			v := statusView(t, c)
			require.NoError(t, writeTable(&out, statusHeader, statusRows(v)))
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			require.Len(t, lines, len(c.rows)+1, out.String())
			require.Equal(t, c.rows[0], collapse(lines[0]))
			dashes := strings.Fields(lines[1])
			require.Len(t, dashes, len(statusHeader))
			for _, d := range dashes {
				require.Equal(t, strings.Repeat("-", len(d)), d)
			}
			for i, want := range c.rows[1:] {
				require.Equal(t, want, collapse(lines[i+2]))
			}
			// Columns line up: every cell starts where its header does.
			starts := columnStarts(lines[0])
			for _, l := range lines[2:] {
				for _, s := range starts[1:] {
					if s < len(l) {
						require.Equal(t, byte(' '), l[s-1], "cell boundary at %d in %q", s, l)
					}
				}
			}
			golden(t, "status/"+c.name+".golden", out.Bytes())
		})
	}
}

func columnStarts(header string) []int {
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	return starts
}

func TestStatusJSONGolden(t *testing.T) {
	for _, c := range statusCases {
		t.Run(c.name, func(t *testing.T) {
			v := statusView(t, c)
			n := jsonNodeOf(v)
			var out bytes.Buffer
			require.NoError(t, writeJSON(&out, statusDoc{Version: jsonVersion, Node: n.Node, GeneratedAt: jsonTime(v.Now), GPUs: n.GPUs, Flags: n.Flags}))
			golden(t, "status/"+c.name+".json.golden", out.Bytes())
		})
	}
}

func TestStatusHealthFindingsAndOtherNodes(t *testing.T) {
	c := statusCases[len(statusCases)-1]
	v := statusView(t, c)
	var out bytes.Buffer
	require.NoError(t, writeNodeStatus(&out, v))
	require.Contains(t, out.String(), "Health check findings:\n  node: slurmd did not answer (found 3m ago)\n"+
		"  GPU 4: used without reservation (2000MB, no process information) (found 1m ago)\n")

	// Another node: the store's view only, no usage columns.
	// Its health check found GPU 1 in use without a reservation; GPU 2 is
	// free as far as anyone knows.
	remoteSnap := &allocator.Snapshot{Node: "gpu-node-02", Now: statusNow,
		GPUs: []allocator.GPU{{UUID: "GPU-x", Index: 0}, {UUID: "GPU-y", Index: 1}, {UUID: "GPU-z", Index: 2}},
		Reservations: map[string]allocator.Reservation{"GPU-x": {GPU: "GPU-x", Kind: allocator.KindManual, User: "zoe",
			StartedAt: statusNow.Add(-time.Hour), ExpiresAt: statusNow.Add(time.Hour)}},
		Flags: []allocator.Flag{{GPU: "GPU-y", Message: "GPU 1 used by yves (pid 4242) without a reservation", At: statusNow.Add(-2 * time.Minute)}}}
	remote := viewNode(remoteSnap, nil, false, 1024)
	out.Reset()
	require.NoError(t, writeAllNodes(&out, []nodeView{v, remote}))
	golden(t, "status/all-nodes.golden", out.Bytes())
	require.Contains(t, out.String(), "  GPU 1 used by yves (pid 4242) without a reservation (found 2m ago)\n", "no doubled \"GPU 1:\"")
	require.Regexp(t, `\n1 +in use +WITHOUT RESERVATION *\n`, out.String(), "the finding's GPU shows in use, as on the node itself")
	require.Regexp(t, `\n2 +available +free, never reserved *\n`, out.String())
	j := jsonNodeOf(remote)
	require.Nil(t, j.GPUs[0].MemoryUsedMB, "usage of another node is unknown here")
	require.Equal(t, "in_use", j.GPUs[0].Status)
	require.Equal(t, string(usage.Unreserved), j.GPUs[1].Status)
	require.Equal(t, string(usage.Available), j.GPUs[2].Status)
}

func TestDurationFormats(t *testing.T) {
	for _, c := range []struct {
		d           time.Duration
		hms, coarse string
	}{
		{0, "0s", "0s"},
		{-time.Second, "0s", "0s"},
		{5 * time.Second, "5s", "5s"},
		{45 * time.Minute, "45m 0s", "45m"},
		{90 * time.Minute, "1h 30m 0s", "1h 30m"},
		{2 * time.Hour, "2h 0m 0s", "2h"},
		{7*time.Hour + 15*time.Minute + 999*time.Millisecond, "7h 15m 0s", "7h 15m"},
		{26*time.Hour + 3*time.Minute, "1d 2h 3m 0s", "1d 2h"},
		{72 * time.Hour, "3d 0h 0m 0s", "3d"},
	} {
		require.Equal(t, c.hms, hms(c.d), "hms(%s)", c.d)
		require.Equal(t, c.coarse, coarse(c.d), "coarse(%s)", c.d)
	}
}

func TestProcessList(t *testing.T) {
	p := func(pid int, name string) gpu.Process { return gpu.Process{PID: pid, Name: name} }
	require.Equal(t, "PID 1 (a)", processList([]gpu.Process{p(1, "a")}))
	require.Equal(t, "PID 1 (a), PID 2", processList([]gpu.Process{p(1, "a"), p(2, "")}))
	require.Equal(t, "PID 1 (a), PID 2 (b) and 1 more", processList([]gpu.Process{p(1, "a"), p(2, "b"), p(3, "c")}))
}
