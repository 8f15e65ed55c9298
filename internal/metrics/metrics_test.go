package metrics

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"canhazgpu/internal/clusterview"
)

// A status --json --all-nodes document: on gpu01 one GPU held by a Slurm
// job, one used by bob without a reservation, one free; on gpu02 a manual
// reservation that carol uses too, and a queue.
const statusDoc = `{"version": 1, "generated_at": "2026-11-30T12:00:00Z", "nodes": [
 {"node": "gpu01", "local": true, "flags": [], "gpus": [
  {"index": 0, "uuid": "GPU-aaaa-0", "status": "in_use", "memory_used_mb": 1024, "users": ["alice"], "foreign_users": [],
   "reservation": {"kind": "slurm", "user": "alice", "job_id": "4242"}},
  {"index": 1, "uuid": "GPU-aaaa-1", "status": "unreserved", "memory_used_mb": 2048, "users": ["bob"], "foreign_users": []},
  {"index": 2, "uuid": "GPU-aaaa-2", "status": "available", "memory_used_mb": 0, "users": [], "foreign_users": []}]},
 {"node": "gpu02", "local": false, "flags": [], "gpus": [
  {"index": 0, "uuid": "GPU-bbbb-0", "status": "in_use", "memory_used_mb": null, "users": [], "foreign_users": ["carol"],
   "reservation": {"kind": "manual", "user": "dave\"\n", "job_id": ""}}]}]}`

const gpu02Queue = `{"version": 1, "node": "gpu02", "queue": [
 {"position": 1, "id": "q1", "user": "erin", "kind": "run", "requested": 1, "waiting_seconds": 30},
 {"position": 2, "id": "q2", "user": "frank", "kind": "run", "requested": 2, "waiting_seconds": 7}]}`

// dcgm-exporter's output for the same GPUs, as it labels them.
const dcgm = `# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaaa-0",pci_bus_id="00000000:07:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu01",hpc_job="4242"} 0
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-aaaa-1",pci_bus_id="00000000:08:00.0",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu01"} 97
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-aaaa-2",pci_bus_id="00000000:09:00.0",device="nvidia2",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu01"} 0
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-bbbb-0",pci_bus_id="00000000:07:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu02"} 55
`

func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err, text)
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func written(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	c, err := clusterview.Decode([]byte(statusDoc), map[string][]byte{"gpu02": []byte(gpu02Queue)})
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, Write(&b, c))
	return parse(t, b.String())
}

// TestJoinsDCGMOnUUIDAndHostname does what "idle reserved GPUs by user"
// does in PromQL: DCGM_FI_DEV_GPU_UTIL * on(Hostname, UUID)
// group_left(user, kind, job_id) canhazgpu_gpu_info.
func TestJoinsDCGMOnUUIDAndHostname(t *testing.T) {
	ours := written(t)
	type key struct{ host, uuid string }
	info := map[key]map[string]string{}
	for _, m := range ours["canhazgpu_gpu_info"].GetMetric() {
		l := labels(m)
		info[key{l["Hostname"], l["UUID"]}] = l
		require.Equal(t, 1.0, m.GetGauge().GetValue())
	}
	got := map[string]string{} // UUID: user/kind/job at its utilisation
	for _, m := range parse(t, dcgm)["DCGM_FI_DEV_GPU_UTIL"].GetMetric() {
		l := labels(m)
		o, ok := info[key{l["Hostname"], l["UUID"]}]
		require.True(t, ok, "no canhazgpu_gpu_info for %v", l)
		require.Equal(t, l["gpu"], o["gpu"], "the gpu label is spelled and numbered as dcgm-exporter's")
		got[l["UUID"]] = o["user"] + "/" + o["kind"] + "/" + o["job_id"]
		if l["hpc_job"] != "" {
			require.Equal(t, l["hpc_job"], o["job_id"])
		}
	}
	require.Equal(t, map[string]string{
		"GPU-aaaa-0": "alice/slurm/4242",
		"GPU-aaaa-1": "bob/unreserved/",
		"GPU-aaaa-2": "//",
		"GPU-bbbb-0": "dave\"\n,carol/manual/", // a hostile name comes back as it was
	}, got)
}

func TestStatesMemoryQueueAndUsers(t *testing.T) {
	ours := written(t)
	states := map[string]string{}
	for _, m := range ours["canhazgpu_gpu_state"].GetMetric() {
		if m.GetGauge().GetValue() == 1 {
			l := labels(m)
			require.Empty(t, states[l["UUID"]], "one state per GPU")
			states[l["UUID"]] = l["state"]
		}
	}
	require.Equal(t, map[string]string{"GPU-aaaa-0": "reserved", "GPU-aaaa-1": "unreserved", "GPU-aaaa-2": "free", "GPU-bbbb-0": "foreign"}, states)
	require.Len(t, ours["canhazgpu_gpu_state"].GetMetric(), 4*len(States))

	mem := map[string]float64{}
	for _, m := range ours["canhazgpu_gpu_memory_used_bytes"].GetMetric() {
		mem[labels(m)["UUID"]] = m.GetGauge().GetValue()
	}
	require.Equal(t, map[string]float64{"GPU-aaaa-0": 1 << 30, "GPU-aaaa-1": 2 << 30, "GPU-aaaa-2": 0}, mem, "unknown memory (other nodes) has no series")

	perNode := func(name string) map[string]float64 {
		out := map[string]float64{}
		for _, m := range ours[name].GetMetric() {
			out[labels(m)["Hostname"]] = m.GetGauge().GetValue()
		}
		return out
	}
	require.Equal(t, map[string]float64{"gpu01": 0, "gpu02": 2}, perNode("canhazgpu_queue_requests"))
	require.Equal(t, map[string]float64{"gpu01": 0, "gpu02": 30}, perNode("canhazgpu_queue_oldest_wait_seconds"))

	users := map[string]float64{}
	for _, m := range ours["canhazgpu_user_reserved_gpus"].GetMetric() {
		l := labels(m)
		users[l["user"]+"/"+l["kind"]] = m.GetGauge().GetValue()
	}
	require.Equal(t, map[string]float64{"alice/slurm": 1, "dave\"\n/manual": 1}, users)
}
