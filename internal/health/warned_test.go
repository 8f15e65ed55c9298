package health

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// A job that on_conflict = "warn" let run on GPUs it does not hold is
// reported from its job file, and its use of those GPUs is no violation:
// the node stays in service. Anything else on those GPUs still is one.
func TestRunReportsWarnedUseWithoutDraining(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.reserve(allocator.KindManual, "alice", 1002, "", "", 1)
	n.reserve(allocator.KindSlurm, "bob", 1001, "40", "boot-now", 0)
	n.stepSocket("40", "0")
	n.jobFile(allocator.KindSlurm, "40", jobstate.JobFile{User: "bob", UID: 1001, BootID: "boot-now",
		Conflicts: []jobstate.Conflict{{GPU: testUUID(1), Reason: "reserved by alice (manual since 2026-11-30T17:00:00Z)"},
			{GPU: testUUID(2), Reason: "in use without reservation"}}}, 0, 1, 2)
	n.gpus(4, map[int][]fakeProc{
		0: {{PID: 60, User: "bob", UID: 1001, JobID: "40", MB: 4096}},
		1: {{PID: 50, User: "alice", UID: 1002, MB: 4096}, {PID: 61, User: "bob", UID: 1001, JobID: "40", MB: 4096}},
		2: {{PID: 62, User: "bob", UID: 1001, JobID: "40", MB: 4096}},
	})
	n.sc.Show("IDLE", "", "")
	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	require.Empty(t, r.Violations)
	require.Equal(t, []WarnedUse{
		{JobID: "40", User: "bob", GPU: 1, UUID: testUUID(1),
			Message: "slurm job 40 of bob uses GPU 1 without a reservation (on_conflict=warn): reserved by alice (manual since 2026-11-30T17:00:00Z)"},
		{JobID: "40", User: "bob", GPU: 2, UUID: testUUID(2),
			Message: "slurm job 40 of bob uses GPU 2 without a reservation (on_conflict=warn): in use without reservation"},
	}, r.Warned)
	require.Empty(t, n.sc.Updates(), "no drain for a use the warn policy allowed")
	var out bytes.Buffer
	require.NoError(t, WriteHuman(&out, r))
	require.Contains(t, out.String(), "warned: slurm job 40 of bob uses GPU 2 without a reservation (on_conflict=warn): in use without reservation\n")
	require.Contains(t, out.String(), "healthy: 4 GPUs checked on "+n.name+"\n")
	var nhc bytes.Buffer
	require.NoError(t, WriteNHC(&nhc, r))
	require.Empty(t, nhc.String(), "no node fault for NHC")

	// The allowance is the job's alone: bob outside the job, and another
	// job of his, still break the rules on GPU 2.
	n.gpus(4, map[int][]fakeProc{2: {{PID: 62, User: "bob", UID: 1001, JobID: "40", MB: 4096},
		{PID: 70, User: "bob", UID: 1001, JobID: "41", MB: 1024}}})
	r = n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Len(t, r.Violations, 1)
	require.Equal(t, Unreserved, r.Violations[0].Kind)
	require.Equal(t, []Process{{PID: 70, Name: "python3", User: "bob", UID: 1001, JobID: "41",
		UsedMemoryMB: 1024}}, r.Violations[0].Processes)
	require.NotEmpty(t, n.sc.Updates(), "a use the policy did not allow still drains")
}
