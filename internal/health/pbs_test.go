package health

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// backdate moves the start of every batch reservation an hour back, past
// any prolog's deadline, as if the jobs had run that long.
func (n *testNode) backdate() {
	n.t.Helper()
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	key := "chg:{" + n.name + "}:bres"
	all, err := c.HGetAll(ctx, key).Result()
	require.NoError(n.t, err)
	require.NotEmpty(n.t, all)
	for uuid, raw := range all {
		var r map[string]any
		require.NoError(n.t, json.Unmarshal([]byte(raw), &r))
		r["s"] = r["s"].(float64) - 3600*1000
		b, err := json.Marshal(r)
		require.NoError(n.t, err)
		require.NoError(n.t, c.HSet(ctx, key, uuid, string(b)).Err())
	}
}

// PBS reservations leak no more after a reboot: a grant of an earlier
// boot is released, and so is one whose job qstat says is gone, while a
// job qstat reports running keeps its GPUs.
func TestRunSettlesStalePBSJobs(t *testing.T) {
	n := newTestNode(t, nil)
	n.reserve(allocator.KindPBS, "dave", 1004, "1.srv", "boot-old", 0)
	n.reserve(allocator.KindPBS, "dave", 1004, "2.srv", "boot-now", 1)
	n.jobFile(allocator.KindPBS, "1.srv", jobstate.JobFile{User: "dave", UID: 1004, BootID: "boot-old"}, 0)

	// Within the prolog's deadline nothing but the boot id counts, and
	// qstat is not asked.
	n.qstatSays(153, "", "qstat: Unknown Job Id 2.srv\n")
	r := n.run()
	require.Equal(t, StatusHealthy, r.Status, r.Error)
	require.Len(t, r.Settled, 1)
	require.Equal(t, "released GPU 0 of pbs job 1.srv: granted before this boot", r.Settled[0].Message)
	_, err := jobstate.ReadJob(n.stateDir, allocator.KindPBS, "1.srv")
	require.Error(t, err, "the earlier boot's job file goes with its grant")
	require.Equal(t, map[int]string{1: "pbs dave 2.srv"}, n.holders())

	n.backdate()
	n.qstatSays(0, "Job Id: 2.srv\n    job_state = R\n", "")
	r = n.run()
	require.Equal(t, StatusHealthy, r.Status, r.Error)
	require.Empty(t, r.Settled)
	require.Equal(t, map[int]string{1: "pbs dave 2.srv"}, n.holders(), "running in PBS")

	// A server that does not answer proves nothing: the job keeps its
	// GPUs and the run says it could not see.
	n.qstatSays(1, "", "qstat: cannot connect to server srv (errno=111)\n")
	r = n.run()
	require.Equal(t, StatusError, r.Status)
	require.Contains(t, r.Error, "cannot learn the state of pbs job 2.srv (qstat: exit status 1: qstat: cannot connect to server srv (errno=111)): it keeps its GPUs")
	require.Equal(t, map[int]string{1: "pbs dave 2.srv"}, n.holders())

	for _, tc := range []struct {
		code           int
		stdout, stderr string
		why            string
	}{
		{153, "", "qstat: Unknown Job Id 2.srv\n", "PBS no longer knows the job"},
		{35, "", "qstat: 2.srv Job has finished, use -x or -H to obtain historical job information\n", "the job has finished in PBS"},
		{0, "Job Id: 2.srv\n    job_state = F\n", "", "the job is F (finished) in PBS"},
	} {
		n.reserve(allocator.KindPBS, "dave", 1004, "2.srv", "boot-now", 1)
		n.backdate()
		n.qstatSays(tc.code, tc.stdout, tc.stderr)
		r = n.run()
		require.Equal(t, StatusHealthy, r.Status, r.Error)
		require.Len(t, r.Settled, 1)
		require.Equal(t, "released GPU 1 of pbs job 2.srv: "+tc.why, r.Settled[0].Message)
		require.Empty(t, n.holders())
	}
}

// A PBS job whose file is of this boot gets back what the store lost,
// unless qstat says the job is over.
func TestRestoreAsksQstat(t *testing.T) {
	n := newTestNode(t, nil)
	n.register()
	n.jobFile(allocator.KindPBS, "5.srv", jobstate.JobFile{User: "dave", UID: 1004, BootID: "boot-now"}, 2)
	n.qstatSays(153, "", "qstat: Unknown Job Id 5.srv\n")
	r := n.run()
	require.Equal(t, StatusHealthy, r.Status, r.Error)
	for _, s := range r.Settled {
		require.False(t, strings.HasPrefix(s.Message, "restored"), s.Message)
	}
	require.Empty(t, n.holders())

	n.qstatSays(0, "Job Id: 5.srv\n    job_state = R\n", "")
	r = n.run()
	require.Equal(t, StatusHealthy, r.Status, r.Error)
	require.Equal(t, map[int]string{2: "pbs dave 5.srv"}, n.holders())
}
