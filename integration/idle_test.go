package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
)

// idleGPUs writes the fake GPU file: 4 GPUs, all at 0% utilisation and
// without processes, as a notebook that stopped computing and a batch
// job waiting on its input leave them.
func (h *hcSite) idleGPUs() {
	h.t.Helper()
	var list []map[string]any
	for i := range 4 {
		list = append(list, map[string]any{"index": i, "uuid": hcUUID(i), "utilization": 0, "processes": []any{}})
	}
	data, err := json.Marshal(map[string]any{"gpus": list})
	require.NoError(h.t, err)
	tmp := h.fake + ".tmp"
	require.NoError(h.t, os.WriteFile(tmp, data, 0o644))
	require.NoError(h.t, os.Rename(tmp, h.fake))
}

// ageReservations moves every stored time of the node's reservations,
// batch and interactive, back by `by`, as if they were that much older.
func (h *hcSite) ageReservations(by time.Duration) { ageNodeReservations(h.t, hcNode, by) }

// ageNodeReservations moves every stored time of node's reservations back
// by `by`: the store takes time from the server's clock, so tests age
// what it stored instead of waiting.
func ageNodeReservations(t testing.TB, node string, by time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	for _, hash := range []string{"chg:{" + node + "}:res", "chg:{" + node + "}:bres"} {
		all, err := c.HGetAll(ctx, hash).Result()
		require.NoError(t, err)
		for id, stored := range all {
			var r map[string]any
			require.NoError(t, json.Unmarshal([]byte(stored), &r))
			for _, f := range []string{"s", "e", "h", "a", "w"} {
				if v, ok := r[f].(float64); ok && v != 0 {
					r[f] = int64(v) - by.Milliseconds()
				}
			}
			b, err := json.Marshal(r)
			require.NoError(t, err)
			require.NoError(t, c.HSet(ctx, hash, id, b).Err())
		}
	}
}

// TestHealthCheckReclaimsIdleManualReservation runs the check on a live
// Slurm node where a running batch job and a manual reservation both
// hold GPUs that have been idle for 3 hours: the manual reservation is
// released and recorded as reclaimed, the job keeps its GPU.
func TestHealthCheckReclaimsIdleManualReservation(t *testing.T) {
	h := newHCSite(t, 0)
	_, err := slurmtest.EnsureUser(hcJobUser)
	require.NoError(t, err)
	boot, err := jobstate.BootID("")
	require.NoError(t, err)
	// The node's name is shared with the other health check tests: start
	// from an empty node.
	_, _, err = h.st.Forget(context.Background(), true)
	require.NoError(t, err)
	h.idleGPUs()
	code, out, _ := h.check() // registers the node's GPUs
	require.Equal(t, 0, code, out)

	job, err := h.c.Submit(hcJobUser, "--wrap", "sleep 300")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = h.c.Run("scancel", job) })
	_, err = h.c.WaitJob(job, 60*time.Second, slurmtest.JobState("RUNNING"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(h.c.Spool, hcNode+"_"+job+".4294967291"))
		return err == nil
	}, 30*time.Second, 50*time.Millisecond)
	// As the Prolog leaves it: the job's reservation and job file.
	h.reserve(allocator.KindSlurm, hcJobUser, job, boot, 0)
	require.NoError(t, jobstate.WriteJob(h.state, allocator.KindSlurm, job, jobstate.JobFile{User: hcJobUser}))
	_, err = h.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: "alice", UID: 4301, GPUs: []string{hcUUID(2), hcUUID(3)}, Lease: 8 * time.Hour})
	require.NoError(t, err)
	h.checkEnv = []string{"CANHAZGPU_SLURM_DEADLINE=1ms"}

	code, out, _ = h.check()
	require.Equal(t, 0, code, out)
	require.NotContains(t, out, "idle:", "just reserved")

	h.ageReservations(3 * time.Hour)
	code, out, _ = h.check()
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "idle: released manual reservation of GPUs 2, 3 by alice on "+hcNode+": idle for 3h "+
		"(no process above 1024 MB and under 5% utilisation), longer than [idle] manual_release_after 2h\n")
	require.Equal(t, map[int]string{0: "slurm " + hcJobUser + " " + job}, h.holders(), "the batch job's idle GPU stays")
	recs, err := h.st.History(context.Background(), time.Now().Add(-time.Hour))
	require.NoError(t, err)
	var reclaimed []string
	for _, r := range recs {
		if r.End == "reclaimed_idle" {
			reclaimed = append(reclaimed, r.User+" "+r.GPU)
		}
	}
	require.ElementsMatch(t, []string{"alice " + hcUUID(2), "alice " + hcUUID(3)}, reclaimed)

	code, out, _ = h.check()
	require.Equal(t, 0, code, out)
	require.NotContains(t, out, "idle:")
	require.Equal(t, map[int]string{0: "slurm " + hcJobUser + " " + job}, h.holders())
}
