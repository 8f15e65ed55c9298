package health

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/slurm/scontroltest"
)

const bobReason = "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"

var bobOnGPU1 = map[int][]fakeProc{1: {{PID: 4242, User: "bob", UID: 1001, MB: 2048}}}

func actionsOf(r *Report) []string {
	var out []string
	for _, a := range r.Actions {
		out = append(out, a.What+": "+a.Message)
	}
	return out
}

func TestRunHealthy(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.reserve(allocator.KindManual, "alice", 1002, "", "", 0)
	n.gpus(4, map[int][]fakeProc{0: {{PID: 50, User: "alice", UID: 1002, MB: 4096}}, 3: {{PID: 1, User: "root", UID: 0, MB: 2048}}})
	n.sc.Show("IDLE", "", "")
	deps := n.deps()
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	deps.Now = func() time.Time { clock = clock.Add(250 * time.Millisecond); return clock }
	r := Run(context.Background(), deps)
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	require.Equal(t, 0, r.ExitCode())
	require.Equal(t, 0.25, r.Duration, "measured with the injected clock")
	require.Empty(t, r.Violations)
	require.Len(t, r.GPUs, 4)
	require.Equal(t, GPUState{Index: 0, UUID: testUUID(0), State: "in_use", Reserved: true, Owner: "alice", Kind: "manual",
		Busy: true, MemoryUsedMB: 4096, Processes: 1}, r.GPUs[0])
	require.Empty(t, r.Actions, "nothing to change on a clean node")
	require.Equal(t, [][]string{{"show", "node", "n1"}}, n.sc.Calls())
}

// Unreserved use drains the node with a canhazgpu: reason and flags the
// store; once clean, the node is undrained and the flags cleared.
func TestRunDrainsAndUndrains(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.register()
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE", "", "")
	r := n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Equal(t, 1, r.ExitCode())
	require.Len(t, r.Violations, 1)
	require.Equal(t, Unreserved, r.Violations[0].Kind)
	require.Equal(t, [][]string{{"State=DRAIN", "Reason=" + bobReason}}, n.sc.Updates())
	require.Equal(t, []string{"flags: flagged 1 GPU in the store", "drain: drained: " + bobReason}, actionsOf(r))
	snap := n.snapshot()
	require.Len(t, snap.Flags, 1)
	require.Equal(t, testUUID(1), snap.Flags[0].GPU)
	require.Equal(t, "GPU 1 used by bob (pid 4242) without reservation", snap.Flags[0].Message)

	// Next round, still in use: Slurm shows our drain, nothing is rewritten.
	n.sc.Show("IDLE+DRAIN", bobReason, "")
	r = n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Empty(t, r.Actions)
	require.Len(t, n.sc.Updates(), 1)

	n.gpus(4, nil)
	r = n.run()
	require.Equal(t, StatusHealthy, r.Status)
	require.Equal(t, [][]string{{"State=DRAIN", "Reason=" + bobReason}, {"State=UNDRAIN"}}, n.sc.Updates())
	require.Equal(t, []string{"flags: cleared the store flags", "undrain: undrained: no violations left"}, actionsOf(r))
	require.Empty(t, n.snapshot().Flags)
}

// A node drained by someone else keeps its reason, violations or not.
func TestRunLeavesAnotherDrainAlone(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.register()
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE+DRAIN", "maintenance", "")
	r := n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Contains(t, actionsOf(r), `skip: node already has reason "maintenance": left as it is`)
	n.gpus(4, nil)
	require.Equal(t, StatusHealthy, n.run().Status)
	require.Empty(t, n.sc.Updates())
}

func TestRunFlagSetsTheComment(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "flag"})
	n.register()
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE", "", "")
	r := n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Equal(t, [][]string{{"Comment=" + bobReason}}, n.sc.Updates())
	require.Len(t, n.snapshot().Flags, 1)

	n.gpus(4, nil)
	n.sc.Show("IDLE", "", bobReason)
	require.Equal(t, StatusHealthy, n.run().Status)
	require.Equal(t, [][]string{{"Comment=" + bobReason}, {"Comment="}}, n.sc.Updates())
	require.Empty(t, n.snapshot().Flags)
}

// A node without Slurm: flag records the findings in the store only.
func TestRunFlagWithoutSlurm(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "flag", "health.scontrol": "/nonexistent/scontrol"})
	n.register()
	n.gpus(4, bobOnGPU1)
	r := n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Equal(t, []string{"flags: flagged 1 GPU in the store"}, actionsOf(r))
	require.Len(t, n.snapshot().Flags, 1)
}

func TestRunActionNoneWritesNothing(t *testing.T) {
	n := newTestNode(t, nil)
	n.register()
	n.gpus(4, bobOnGPU1)
	r := n.run()
	require.Equal(t, StatusViolations, r.Status)
	require.Empty(t, r.Actions)
	require.Empty(t, n.sc.Calls())
	require.Empty(t, n.snapshot().Flags)
}

// Under NHC, NHC marks the node: no scontrol calls of our own.
func TestRunNHCMakesNoScontrolCalls(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.register()
	n.gpus(4, bobOnGPU1)
	deps := n.deps()
	deps.NHC = true
	r := Run(context.Background(), deps)
	require.Equal(t, StatusViolations, r.Status)
	require.Empty(t, n.sc.Calls())
	require.Len(t, n.snapshot().Flags, 1, "the store still records the finding")
}

// When scontrol does not answer (slurmd not registered yet, controller
// down), the round's actions are skipped and the check still finishes.
func TestRunSkipsActionsWhenSlurmHangs(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain", "health.scontrol_timeout": "300ms"})
	n.register()
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE", "", "")
	n.sc.Touch("hang", "")
	start := time.Now()
	r := n.run()
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, StatusViolations, r.Status)
	require.Equal(t, []string{"flags: flagged 1 GPU in the store",
		"skip: Slurm actions skipped this round: scontrol show: no answer within 300ms"}, actionsOf(r))
	require.Empty(t, n.sc.Updates())
}

// As Slurm's HealthCheckProgram, a check that could not run changes
// nothing: a node it drained earlier stays drained (the violation may
// still be there), a node in service stays in service.
func TestRunStoreUnreachable(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain", "redis.url": "redis://127.0.0.1:1/0", "redis.dial_timeout": "200ms"})
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE+DRAIN", bobReason, "")
	r := n.run()
	require.Equal(t, StatusError, r.Status)
	require.Equal(t, 2, r.ExitCode())
	require.Contains(t, r.Error, allocator.ErrUnavailable.Error())
	require.Empty(t, n.sc.Calls(), "no actions without a check")
}

func TestRunBadFakeFile(t *testing.T) {
	n := newTestNode(t, nil)
	require.NoError(t, os.WriteFile(n.fake, []byte(`{"gpus": [{"index": -1}]}`), 0o644))
	r := n.run()
	require.Equal(t, StatusError, r.Status)
	require.Contains(t, r.Error, "negative index -1")
}

// Slurm reservations of jobs that no longer run here are released; every
// sign of a running job keeps them; other kinds are never touched.
func TestRunSettlesStaleSlurmJobs(t *testing.T) {
	n := newTestNode(t, nil)
	n.gpus(10, nil)
	n.reserve(allocator.KindSlurm, "alice", 1002, "17", "boot-now", 0) // step socket
	n.reserve(allocator.KindSlurm, "alice", 1002, "18", "boot-now", 1) // nothing: gone
	n.reserve(allocator.KindSlurm, "alice", 1002, "19", "boot-now", 2) // job file, Slurm: running
	n.reserve(allocator.KindSlurm, "alice", 1002, "20", "boot-now", 3) // a process of the job
	n.reserve(allocator.KindSlurm, "alice", 1002, "21", "boot-old", 4) // socket, but an older boot
	n.reserve(allocator.KindSlurm, "alice", 1002, "22", "", 5)         // no boot id, nothing else: gone
	n.reserve(allocator.KindManual, "carol", 1003, "", "", 6)
	n.reserve(allocator.KindRun, "dave", 1004, "", "", 7)
	n.reserve(allocator.KindSlurm, "alice", 1002, "23", "boot-now", 8) // job file, Slurm: completed
	n.reserve(allocator.KindSlurm, "alice", 1002, "24", "boot-now", 9) // job file, Slurm: unknown job
	n.gpus(10, map[int][]fakeProc{3: {{PID: 70, User: "alice", UID: 1002, JobID: "20", MB: 10}}})
	n.stepSocket("17", "4294967291")
	n.stepSocket("21", "0")
	n.stepSocket("178", "0") // another job whose id starts like 17's
	for _, job := range []string{"19", "23", "24"} {
		require.NoError(t, jobstate.WriteJob(n.stateDir, allocator.KindSlurm, job, jobstate.JobFile{User: "alice"}))
	}
	n.sc.Touch("job.19", "JobId=19 JobName=wrap\n   JobState=RUNNING Reason=None Dependency=(null)\n")
	n.sc.Touch("job.23", "JobId=23 JobName=wrap\n   JobState=COMPLETED Reason=None Dependency=(null)\n")
	// Not a socket: a leftover file with a step socket's name proves nothing.
	require.NoError(t, os.WriteFile(filepath.Join(n.spool, "n1_18.0"), nil, 0o644))

	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	var msgs []string
	for _, s := range r.Settled {
		require.Equal(t, "stale_job", s.What)
		msgs = append(msgs, s.Message)
	}
	require.Equal(t, []string{
		"released GPU 1 of slurm job 18: the job no longer runs on this node",
		"released GPU 4 of slurm job 21: granted before this boot",
		"released GPU 5 of slurm job 22: the job no longer runs on this node",
		"released GPU 8 of slurm job 23: the job is COMPLETED in Slurm",
		"released GPU 9 of slurm job 24: Slurm no longer knows the job",
	}, msgs)
	require.Equal(t, map[int]string{0: "slurm alice 17", 2: "slurm alice 19", 3: "slurm alice 20",
		6: "manual carol ", 7: "run dave "}, n.holders())
	require.Len(t, r.GPUs, 10)
	require.False(t, r.GPUs[1].Reserved, "the report shows the state after settling")
	require.Equal(t, [][]string{scontroltest.JobQuery("19"), scontroltest.JobQuery("23"), scontroltest.JobQuery("24")}, n.sc.Calls(),
		"only jobs kept by their file alone are asked about, once each")
}

// A job kept only by its file keeps its GPUs when Slurm cannot be asked:
// under NHC (no scontrol of our own), or when scontrol does not answer,
// which the run reports: it is never healthy then.
func TestRunKeepsJobsSlurmCannotJudge(t *testing.T) {
	for _, tc := range []struct {
		name string
		nhc  bool
		hang bool
	}{{"nhc", true, false}, {"no answer", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, map[string]string{"health.scontrol_timeout": "200ms"})
			n.reserve(allocator.KindSlurm, "alice", 1002, "23", "boot-now", 1)
			require.NoError(t, jobstate.WriteJob(n.stateDir, allocator.KindSlurm, "23", jobstate.JobFile{User: "alice"}))
			n.sc.Touch("job.23", "JobId=23 JobName=wrap\n   JobState=COMPLETED Reason=None\n")
			if tc.hang {
				n.sc.Touch("hang", "")
			}
			deps := n.deps()
			deps.NHC = tc.nhc
			r := Run(context.Background(), deps)
			if tc.hang {
				require.Equal(t, StatusError, r.Status)
				require.Equal(t, "cannot judge slurm jobs: cannot learn the state of slurm job 23 (squeue: no answer within 200ms): it keeps its GPUs", r.Error)
				require.True(t, r.StoreUp)
				require.Len(t, r.GPUs, 4, "the GPUs are still checked")
			} else {
				require.Empty(t, r.Error)
			}
			require.Empty(t, r.Settled)
			require.Equal(t, map[int]string{1: "slurm alice 23"}, n.holders())
			if tc.nhc {
				require.Empty(t, n.sc.Calls())
			}
		})
	}
}

// A job file that is not root's proves nothing: a user cannot keep a gone
// job's GPUs reserved by planting one.
func TestRunIgnoresForeignJobFiles(t *testing.T) {
	n := newTestNode(t, nil)
	n.reserve(allocator.KindSlurm, "alice", 1002, "25", "boot-now", 1)
	require.NoError(t, jobstate.WriteJob(n.stateDir, allocator.KindSlurm, "25", jobstate.JobFile{User: "alice"}))
	require.NoError(t, os.Lchown(jobstate.JobPath(n.stateDir, allocator.KindSlurm, "25"), 12345, 12345))
	n.sc.Touch("job.25", "JobId=25 JobName=wrap\n   JobState=RUNNING Reason=None\n")
	r := n.run()
	require.Empty(t, r.Error)
	require.Len(t, r.Settled, 2)
	require.Equal(t, "released GPU 1 of slurm job 25: the job no longer runs on this node", r.Settled[0].Message)
	require.Equal(t, "unrestored", r.Settled[1].What, "the foreign file is reported, and restores nothing")
	require.Contains(t, r.Settled[1].Message, "slurm job files: state file "+jobstate.JobPath(n.stateDir, allocator.KindSlurm, "25")+" is owned by uid 12345")
	require.Empty(t, n.sc.Calls(), "Slurm is not asked about a job only a foreign file speaks for")
}

// Without slurmd's spool dir a missing socket proves nothing: only an
// older boot makes a job stale, and the run says loudly that it is blind.
func TestRunWithoutSpoolDirJudgesByBootOnly(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.slurmd_spool_dir": "/nonexistent/spool"})
	n.reserve(allocator.KindSlurm, "alice", 1002, "18", "boot-now", 1)
	n.reserve(allocator.KindSlurm, "alice", 1002, "21", "boot-old", 2)
	n.gpus(4, map[int][]fakeProc{3: {{PID: 70, User: "eve", UID: 1005, MB: 4096}}})
	r := n.run()
	require.Equal(t, StatusError, r.Status)
	require.Equal(t, "cannot judge slurm jobs: the slurmd spool directory /nonexistent/spool does not exist: "+
		"set [health] slurmd_spool_dir to the SlurmdSpoolDir of slurm.conf", r.Error)
	require.Len(t, r.Violations, 1, "violations are still found")
	require.Len(t, r.Settled, 1)
	require.Equal(t, "released GPU 2 of slurm job 21: granted before this boot", r.Settled[0].Message)
	require.Equal(t, map[int]string{1: "slurm alice 18"}, n.holders())

	var nhc, prom bytes.Buffer
	require.NoError(t, WriteNHC(&nhc, r))
	require.Contains(t, nhc.String(), NHCPrefix+"could not check: cannot judge slurm jobs: the slurmd spool directory /nonexistent/spool does not exist")
	require.NoError(t, WriteMetrics(&prom, r))
	require.Contains(t, prom.String(), "canhazgpu_health_check_success 0\n")
}

// With slurmd_spool_dir empty (the default) the check asks Slurm for its
// SlurmdSpoolDir, once per run, with %n expanded to the node's name.
func TestRunAsksSlurmForSpoolDir(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.slurmd_spool_dir": ""})
	// Reserved first: older than [slurm] deadline by the time the check runs.
	n.reserve(allocator.KindSlurm, "alice", 1002, "18", "boot-now", 1)
	n.reserve(allocator.KindSlurm, "alice", 1002, "21", "boot-now", 2)
	require.NoError(t, os.Mkdir(filepath.Join(n.spool, "n1"), 0o755))
	n.sc.Touch("config", "Configuration data as of 2026-11-30T17:00:00\nSlurmctldPort           = 6817\n"+
		"SlurmdSpoolDir          = "+n.spool+"/%n\nSlurmdTimeout           = 300 sec\n")
	l, err := net.Listen("unix", filepath.Join(n.spool, "n1", "n1_18.0"))
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	deps := n.deps()
	deps.SlurmNode = "n1"
	r := Run(context.Background(), deps)
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	require.Len(t, r.Settled, 1)
	require.Equal(t, "released GPU 2 of slurm job 21: the job no longer runs on this node", r.Settled[0].Message)
	require.Equal(t, map[int]string{1: "slurm alice 18"}, n.holders())
	require.Equal(t, [][]string{{"show", "config"}}, n.sc.Calls())
}

// When Slurm cannot say where its spool dir is, the run says so: never
// healthy, and no job is released for a missing socket.
func TestRunSpoolDirUnknown(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.slurmd_spool_dir": ""})
	n.reserve(allocator.KindSlurm, "alice", 1002, "21", "boot-now", 2)
	r := n.run()
	require.Equal(t, StatusError, r.Status)
	require.Equal(t, "cannot judge slurm jobs: cannot find the slurmd spool directory (scontrol show: exit status 1: "+
		"slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)): set [health] slurmd_spool_dir", r.Error)
	require.Empty(t, r.Settled)
	require.Equal(t, map[int]string{2: "slurm alice 21"}, n.holders())
}

// A reservation younger than the Prolog's deadline may belong to a Prolog
// that has not written its job file yet.
func TestRunKeepsYoungSlurmReservations(t *testing.T) {
	n := newTestNode(t, map[string]string{"slurm.deadline": "1h"})
	n.reserve(allocator.KindSlurm, "alice", 1002, "18", "boot-now", 1)
	r := n.run()
	require.Empty(t, r.Settled)
	require.Equal(t, map[int]string{1: "slurm alice 18"}, n.holders())
}

// Pending markers of Prologs and Epilogs that could not reach the store
// are applied and removed; one that cannot be applied stays and is
// reported without failing the check.
func TestRunAppliesPendingMarkers(t *testing.T) {
	n := newTestNode(t, nil)
	n.reserve(allocator.KindSlurm, "alice", 1002, "31", "boot-now", 2)
	n.reserve(allocator.KindManual, "carol", 1003, "", "", 3)
	n.stepSocket("30", "0")
	n.stepSocket("31", "0") // still there: only the marker ends job 31
	n.stepSocket("32", "0")
	at := time.Now().Add(-time.Minute)
	for _, m := range []jobstate.Marker{
		{Op: jobstate.OpReserve, Kind: allocator.KindSlurm, JobID: "30", User: "bob", UID: 1001, GPUs: []string{testUUID(0), testUUID(1)}, BootID: "boot-now", At: at},
		{Op: jobstate.OpRelease, Kind: allocator.KindSlurm, JobID: "31", At: at.Add(time.Second)},
		{Op: jobstate.OpReserve, Kind: allocator.KindSlurm, JobID: "32", User: "eve", UID: 1005, GPUs: []string{testUUID(3)}, BootID: "boot-now", At: at.Add(2 * time.Second)},
	} {
		require.NoError(t, jobstate.WriteMarker(n.stateDir, m))
	}
	// Job 30 is already at work on its GPUs: only the marker makes that legal.
	n.gpus(4, map[int][]fakeProc{0: {{PID: 80, User: "bob", UID: 1001, JobID: "30", MB: 4096}}})

	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status)
	require.Len(t, r.Settled, 3)
	require.Equal(t, Settled{What: "marker", Kind: allocator.KindSlurm, JobID: "30", GPUs: []string{testUUID(0), testUUID(1)},
		Message: "applied the pending reserve of slurm job 30 (2 GPUs)"}, r.Settled[0])
	require.Equal(t, "applied the pending release of slurm job 31", r.Settled[1].Message)
	require.Equal(t, "unsettled", r.Settled[2].What)
	require.Contains(t, r.Settled[2].Message, "settle reserve of slurm job 32")
	require.Equal(t, map[int]string{0: "slurm bob 30", 1: "slurm bob 30", 3: "manual carol "}, n.holders())
	left, err := jobstate.Markers(n.stateDir)
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, "32", left[0].JobID)
}
