package health

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// sampleReport is a run with one violation on GPU 1, one job restored and
// one released, and an idle manual reservation warned about. GPU 1's
// driver does not say how busy it is.
func sampleReport() *Report {
	return &Report{
		Node:    "n1",
		Status:  StatusViolations,
		StoreUp: true,
		GPUs: []GPUState{
			{Index: 0, UUID: testUUID(0), State: "in_use", Reserved: true, Owner: "alice", Kind: "slurm", JobID: "17",
				Busy: true, MemoryUsedMB: 4096, Utilization: gpu.Percent(87), Processes: 1},
			{Index: 1, UUID: testUUID(1), State: "unreserved", Busy: true, MemoryUsedMB: 2048, Processes: 1, Violations: 1},
			{Index: 2, UUID: testUUID(2), State: "in_use", Reserved: true, Owner: "carol", Kind: "manual", Utilization: gpu.Percent(0)},
		},
		Violations: []Violation{{Kind: Unreserved, GPU: 1, UUID: testUUID(1), MemoryUsedMB: 2048,
			Processes: []Process{{PID: 4242, Name: "python3", User: "bob", UID: 1001, UsedMemoryMB: 2048}},
			Message:   "GPU 1 used by bob (pid 4242) without reservation"}},
		Settled: []Settled{
			{What: "stale_job", Kind: allocator.KindSlurm, JobID: "18", GPUs: []string{testUUID(2)},
				Message: "released GPU 2 of slurm job 18: the job no longer runs on this node"},
			{What: "restored", Kind: allocator.KindSlurm, JobID: "17", GPUs: []string{testUUID(0)},
				Message: "restored GPU 0 of slurm job 17: the store had lost it"},
		},
		Idle: []IdleFinding{{What: IdleWarned, Kind: allocator.KindManual, User: "carol", GPUs: []int{2}, IdleSeconds: 2700,
			Message: "manual reservation of GPU 2 by carol on n1 idle for 45m"}},
		Actions:  []Action{{What: "drain", Message: "drained: " + bobReason}},
		Duration: 0.0125,
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to create it")
	require.Equal(t, string(want), string(got))
}

func TestWriteHuman(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteHuman(&b, sampleReport()))
	require.Equal(t, "problem: GPU 1 used by bob (pid 4242) without reservation\n"+
		"settled: released GPU 2 of slurm job 18: the job no longer runs on this node\n"+
		"settled: restored GPU 0 of slurm job 17: the store had lost it\n"+
		"idle: manual reservation of GPU 2 by carol on n1 idle for 45m\n"+
		"drain: drained: "+bobReason+"\n"+
		"unhealthy: 1 problem on n1\n", b.String())

	b.Reset()
	require.NoError(t, WriteHuman(&b, &Report{Node: "n1", Status: StatusHealthy, GPUs: make([]GPUState, 8)}))
	require.Equal(t, "healthy: 8 GPUs checked on n1\n", b.String())

	b.Reset()
	require.NoError(t, WriteHuman(&b, &Report{Node: "n1", Status: StatusError, Error: "boom"}))
	require.Empty(t, b.String(), "the error goes to stderr, from Main")
}

// Account names, job ids and errors come from other users: the human and
// NHC lines show them escaped, never raw on the terminal or in NHC's log.
func TestHumanAndNHCOutputEscapeOthersText(t *testing.T) {
	r := &Report{Node: "n1", Status: StatusViolations, GPUs: make([]GPUState, 1),
		Violations: []Violation{{Message: "GPU 0 used by \u202eeve (pid 1, job 7\x1b]0;x\a) without reservation"}},
		Settled:    []Settled{{Message: "released GPU 0 of slurm job 7\u009b2J"}},
		Actions:    []Action{{What: "error", Message: "scontrol: \u2066x\u2069"}}}
	var b bytes.Buffer
	require.NoError(t, WriteHuman(&b, r))
	require.Equal(t, `problem: GPU 0 used by \u202eeve (pid 1, job 7\x1b]0;x\x07) without reservation`+"\n"+
		`settled: released GPU 0 of slurm job 7\u009b2J`+"\n"+
		`error: scontrol: \u2066x\u2069`+"\n"+
		"unhealthy: 1 problem on n1\n", b.String())

	b.Reset()
	require.NoError(t, WriteNHC(&b, r))
	require.Equal(t, `ERROR:  canhazgpu:  GPU 0 used by \u202eeve (pid 1, job 7 ]0;x ) without reservation`+"\n", b.String())
	require.Equal(t, `canhazgpu: GPU 0 used by \u202eeve (pid 1, job 7 ]0;x ) without reservation`, Reason(r.Violations))
}

func TestWriteNHC(t *testing.T) {
	tests := []struct {
		name string
		r    *Report
		want string
	}{
		{"violations", sampleReport(), "ERROR:  canhazgpu:  GPU 1 used by bob (pid 4242) without reservation\n"},
		{"healthy", &Report{Status: StatusHealthy}, ""},
		{"error", &Report{Status: StatusError, Error: "snapshot: reservation store unavailable\nat x"},
			"ERROR:  canhazgpu:  could not check: snapshot: reservation store unavailable at x\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, WriteNHC(&b, tc.r))
			require.Equal(t, tc.want, b.String())
		})
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	r := sampleReport()
	r.Violations[0].Reservation = &allocator.Reservation{Kind: allocator.KindManual, User: "alice"}
	require.NoError(t, WriteJSON(&b, r))
	var got map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &got))
	require.Equal(t, "violations", got["status"])
	require.Equal(t, "n1", got["node"])
	v := got["violations"].([]any)[0].(map[string]any)
	require.Equal(t, "unreserved", v["kind"])
	require.Equal(t, "GPU 1 used by bob (pid 4242) without reservation", v["message"])
	require.Equal(t, float64(4242), v["processes"].([]any)[0].(map[string]any)["pid"])
	require.Equal(t, "alice", v["reservation"].(map[string]any)["user"])
	require.Equal(t, 0.0125, got["duration_seconds"])
	require.Len(t, got["gpus"], 3)
	require.Equal(t, float64(87), got["gpus"].([]any)[0].(map[string]any)["utilization_percent"])
	require.Nil(t, got["gpus"].([]any)[1].(map[string]any)["utilization_percent"], "unknown is null, not 0")
	require.Contains(t, got["gpus"].([]any)[1].(map[string]any), "utilization_percent")
	require.Equal(t, []any{map[string]any{"what": "warned", "kind": "manual", "user": "carol", "gpus": []any{float64(2)},
		"idle_seconds": float64(2700), "message": "manual reservation of GPU 2 by carol on n1 idle for 45m"}}, got["idle"])
	restored := got["settled"].([]any)[1].(map[string]any)
	require.Equal(t, map[string]any{"what": "restored", "kind": "slurm", "job_id": "17", "gpus": []any{testUUID(0)},
		"message": "restored GPU 0 of slurm job 17: the store had lost it"}, restored)
}

func TestWriteMetrics(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteMetrics(&b, sampleReport()))
	golden(t, "metrics.golden", b.Bytes())

	promtoolCheck(t, b.Bytes())

	// The store down: the GPU scan still gives usage, nothing that needs the
	// store (reservations, violations) is written.
	b.Reset()
	require.NoError(t, WriteMetrics(&b, &Report{Status: StatusError, Duration: 2, GPUs: deviceStates([]gpu.Device{
		{Index: 0, UUID: testUUID(0), MemoryUsedMB: 4096}, {Index: 1, UUID: testUUID(1)}}, 1024)}))
	require.Equal(t, "# HELP canhazgpu_gpu_in_use Whether the GPU's memory use reached the in-use threshold (1) or not (0).\n"+
		"# TYPE canhazgpu_gpu_in_use gauge\n"+
		"canhazgpu_gpu_in_use{gpu=\"0\",uuid=\""+testUUID(0)+"\"} 1\ncanhazgpu_gpu_in_use{gpu=\"1\",uuid=\""+testUUID(1)+"\"} 0\n"+
		"# HELP canhazgpu_gpu_memory_used_bytes GPU memory in use, in bytes.\n"+
		"# TYPE canhazgpu_gpu_memory_used_bytes gauge\n"+
		"canhazgpu_gpu_memory_used_bytes{gpu=\"0\",uuid=\""+testUUID(0)+"\"} 4294967296\ncanhazgpu_gpu_memory_used_bytes{gpu=\"1\",uuid=\""+testUUID(1)+"\"} 0\n"+
		"# HELP canhazgpu_health_check_settled Changes this run made to bring the store in line with the node, and those it could not make, by kind.\n"+
		"# TYPE canhazgpu_health_check_settled gauge\n"+
		"canhazgpu_health_check_settled{what=\"marker\"} 0\ncanhazgpu_health_check_settled{what=\"stale_job\"} 0\n"+
		"canhazgpu_health_check_settled{what=\"restored\"} 0\ncanhazgpu_health_check_settled{what=\"unsettled\"} 0\n"+
		"canhazgpu_health_check_settled{what=\"unrestored\"} 0\n"+
		"canhazgpu_health_check_settled{what=\"placeholder\"} 0\n"+
		"# HELP canhazgpu_store_up Whether the reservation store answered this run (1) or not (0: down, or not reached).\n"+
		"# TYPE canhazgpu_store_up gauge\ncanhazgpu_store_up 0\n"+
		"# HELP canhazgpu_health_check_success Whether the health check could check the node (1) or not (0).\n"+
		"# TYPE canhazgpu_health_check_success gauge\ncanhazgpu_health_check_success 0\n"+
		"# HELP canhazgpu_health_check_duration_seconds How long the health check took.\n"+
		"# TYPE canhazgpu_health_check_duration_seconds gauge\ncanhazgpu_health_check_duration_seconds 2\n", b.String())
	promtoolCheck(t, b.Bytes())
}

// promtoolCheck runs promtool from Debian's prometheus package (installed
// by scripts/install-deps.sh) on a textfile: no errors and no lint
// warnings, as node_exporter's textfile collector reads it.
func promtoolCheck(t *testing.T, text []byte) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is missing: install Debian's prometheus package (scripts/install-deps.sh does)")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics: %s", out)
	require.Empty(t, string(out), "promtool warnings")
}

func TestWriteTextfileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "canhazgpu.prom")
	require.NoError(t, os.WriteFile(path, []byte("old\n"), 0o600))
	require.NoError(t, WriteTextfile(path, sampleReport()))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var want bytes.Buffer
	require.NoError(t, WriteMetrics(&want, sampleReport()))
	require.Equal(t, want.String(), string(data))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "node_exporter runs as another user")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp file left behind")

	err = WriteTextfile(filepath.Join(dir, "missing", "canhazgpu.prom"), sampleReport())
	require.ErrorContains(t, err, "prometheus textfile")
}
