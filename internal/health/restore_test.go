package health

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/slurm/scontroltest"
)

// jobFile writes a job's file as its Prolog does, with f's owner, restart
// count, boot id and time (zero: now), and the GPUs by index in the
// scheduler's order.
func (n *testNode) jobFile(kind allocator.Kind, job string, f jobstate.JobFile, gpus ...int) {
	n.t.Helper()
	if f.At.IsZero() {
		f.At = time.Now()
	}
	for i, g := range gpus {
		f.GPUs = append(f.GPUs, jobstate.GPU{UUID: testUUID(g), Index: g, SchedIndex: i})
	}
	require.NoError(n.t, jobstate.WriteJob(n.stateDir, kind, job, f))
}

// jobCalls lists the scontrol show job calls so far.
func (n *testNode) jobCalls() [][]string {
	var out [][]string
	for _, c := range n.sc.Calls() {
		if len(c) > 3 && c[0] == "squeue" && strings.HasPrefix(c[3], "--jobs=") {
			out = append(out, c)
		}
	}
	return out
}

var (
	alice = jobstate.JobFile{User: "alice", UID: 1002, BootID: "boot-now"}
	bob   = jobstate.JobFile{User: "bob", UID: 1001, BootID: "boot-now"}
)

// After Redis restarts without its data, the next run gives every batch
// job that still runs here its GPUs back from its job file, before usage
// is judged: the jobs' own processes are not reported and the node is not
// drained. Jobs that no longer run, and files of an earlier boot, are left
// alone.
func TestRunRestoresBatchJobsAfterStoreLoss(t *testing.T) {
	priv, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(priv.Stop)
	n := newTestNode(t, map[string]string{"redis.url": priv.URL(), "health.action": "drain"})
	n.gpus(8, nil)
	n.sc.Show("MIXED", "", "")

	dave := jobstate.JobFile{User: "dave", UID: 1004, BootID: "boot-now"}
	bobRequeued := bob
	bobRequeued.Restart = 2
	oldBoot := bob
	oldBoot.BootID = "boot-old"
	noBoot := dave
	noBoot.BootID = ""
	for _, j := range []struct {
		kind allocator.Kind
		id   string
		f    jobstate.JobFile
		gpus []int
	}{
		{allocator.KindSlurm, "13", alice, []int{0, 1}},    // step socket and processes
		{allocator.KindSlurm, "14", bobRequeued, []int{2}}, // Slurm: RUNNING
		{allocator.KindSlurm, "15", bob, []int{3}},         // Slurm: COMPLETING, its Epilog at work
		{allocator.KindSlurm, "16", oldBoot, []int{5}},     // a socket, but the file is of an earlier boot
		{allocator.KindPBS, "7.srv", dave, []int{4}},       // PBS: a file of this boot
		{allocator.KindPBS, "8.srv", noBoot, []int{6}},     // PBS: a file without boot id
	} {
		n.reserve(j.kind, j.f.User, j.f.UID, j.id, j.f.BootID, j.gpus...)
		n.jobFile(j.kind, j.id, j.f, j.gpus...)
	}
	n.reserve(allocator.KindManual, "carol", 1003, "", "", 7)
	n.stepSocket("13", "4294967291")
	n.stepSocket("16", "0")
	n.sc.Touch("job.14", "JobId=14 JobName=wrap\n   JobState=RUNNING Reason=None Dependency=(null)\n")
	n.sc.Touch("job.15", "JobId=15 JobName=wrap\n   JobState=COMPLETING Reason=None Dependency=(null)\n")
	n.gpus(8, map[int][]fakeProc{
		0: {{PID: 90, User: "alice", UID: 1002, JobID: "13", MB: 4096}},
		1: {{PID: 91, User: "alice", UID: 1002, JobID: "13", MB: 4096}},
	})
	require.Len(t, n.holders(), 8)

	require.NoError(t, priv.RestartEmpty())
	require.Empty(t, n.snapshot().GPUs, "the store lost everything, the node's GPUs too")

	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, StatusHealthy, r.Status, "violations: %v", r.Violations)
	require.Equal(t, []Settled{
		{What: "restored", Kind: allocator.KindSlurm, JobID: "13", GPUs: []string{testUUID(0), testUUID(1)},
			Message: "restored GPUs 0, 1 of slurm job 13: the store had lost them"},
		{What: "restored", Kind: allocator.KindSlurm, JobID: "14", GPUs: []string{testUUID(2)},
			Message: "restored GPU 2 of slurm job 14: the store had lost it"},
		{What: "restored", Kind: allocator.KindPBS, JobID: "7.srv", GPUs: []string{testUUID(4)},
			Message: "restored GPU 4 of pbs job 7.srv: the store had lost it"},
	}, r.Settled)
	require.Equal(t, map[int]string{0: "slurm alice 13", 1: "slurm alice 13", 2: "slurm bob 14", 4: "pbs dave 7.srv"},
		n.holders(), "interactive reservations are their programs' to restore")
	got := n.snapshot().Reservations[testUUID(2)]
	require.Equal(t, []any{1001, 2, "boot-now"}, []any{got.UID, got.Restart, got.BootID}, "as the Prolog reserved it")
	require.True(t, r.GPUs[0].Reserved, "the report shows the restored state")
	require.Equal(t, "13", r.GPUs[0].JobID)
	require.Equal(t, [][]string{scontroltest.JobQuery("14"), scontroltest.JobQuery("15")}, n.jobCalls(),
		"only jobs without a sign on the node are asked about")
	require.Empty(t, n.sc.Updates(), "not drained")

	// The next run finds everything in place. Slurm is asked about job 14
	// as about any job kept by its file alone, and about job 15 until its
	// Epilog removes the file.
	r = n.run()
	require.Equal(t, StatusHealthy, r.Status)
	require.Empty(t, r.Settled)
	require.Equal(t, [][]string{scontroltest.JobQuery("14"), scontroltest.JobQuery("15")}, n.jobCalls()[2:])
	require.Len(t, n.holders(), 4)
}

// A GPU of a running job that someone else holds by now is reported and
// left to its holder: restoring never takes a GPU over, not even from
// another job of the same scheduler. GPUs the job ran on without holding
// them (on_conflict = "warn") are not asked for, and a job whose reserve
// marker is still pending is left to the marker.
func TestRunReportsGPUsItCannotRestore(t *testing.T) {
	n := newTestNode(t, nil)
	n.reserve(allocator.KindManual, "carol", 1003, "", "", 1)
	n.reserve(allocator.KindSlurm, "bob", 1001, "14", "boot-now", 2)
	for _, job := range []string{"13", "14", "17", "18"} {
		n.stepSocket(job, "0")
	}
	n.jobFile(allocator.KindSlurm, "13", alice, 2, 1, 0) // its grant is lost; Slurm's order is not the index order
	warned := alice
	warned.Conflicts = []jobstate.Conflict{{GPU: testUUID(3), Reason: "reserved by carol (manual)"}}
	n.jobFile(allocator.KindSlurm, "17", warned, 3)
	pending := alice
	pending.Pending = true
	n.jobFile(allocator.KindSlurm, "18", pending, 1)
	require.NoError(t, jobstate.WriteMarker(n.stateDir, jobstate.Marker{Op: jobstate.OpReserve, Kind: allocator.KindSlurm,
		JobID: "18", User: "alice", UID: 1002, GPUs: []string{testUUID(1)}, BootID: "boot-now", At: time.Now()}))

	r := n.run()
	require.Empty(t, r.Error)
	require.Len(t, r.Settled, 3)
	require.Equal(t, "unsettled", r.Settled[0].What)
	require.Contains(t, r.Settled[0].Message, "settle reserve of slurm job 18")
	require.Equal(t, Settled{What: "restored", Kind: allocator.KindSlurm, JobID: "13", GPUs: []string{testUUID(0)},
		Message: "restored GPU 0 of slurm job 13: the store had lost it"}, r.Settled[1])
	require.Equal(t, Settled{What: "unrestored", Kind: allocator.KindSlurm, JobID: "13", GPUs: []string{testUUID(1), testUUID(2)},
		Message: "could not restore GPUs 1, 2 of slurm job 13: GPU 1 reserved by carol (manual); GPU 2 reserved by slurm job 14 of bob"},
		r.Settled[2])
	require.Equal(t, map[int]string{0: "slurm alice 13", 1: "manual carol ", 2: "slurm bob 14"}, n.holders())
}

// Only what the store lost is restored: a reservation the history shows
// ended since the job file was written (the Epilog released it and has
// not removed the file yet, or an admin released it) stays ended. A
// release before the file was written, of an earlier attempt, does not
// count.
func TestRunRestoresOnlyWhatTheStoreLost(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t, nil)
	n.stepSocket("13", "0")
	n.reserve(allocator.KindSlurm, "alice", 1002, "13", "boot-now", 1, 2)
	n.jobFile(allocator.KindSlurm, "13", alice, 1, 2)
	n.reserve(allocator.KindPBS, "dave", 1004, "7.srv", "boot-now", 0)
	n.jobFile(allocator.KindPBS, "7.srv", jobstate.JobFile{User: "dave", UID: 1004, BootID: "boot-now"}, 0)
	n.reserve(allocator.KindPBS, "dave", 1004, "9.srv", "boot-now", 3)
	for _, rel := range []allocator.Release{
		{Kinds: []allocator.Kind{allocator.KindSlurm}, GPUs: []string{testUUID(2)}}, // an admin's release
		{Kinds: []allocator.Kind{allocator.KindPBS}, JobID: "7.srv"},                // its epilog
		{Kinds: []allocator.Kind{allocator.KindPBS}, JobID: "9.srv"},                // the epilog of its first run
	} {
		rel.RequestID = allocator.NewRequestID()
		_, err := n.store().Release(ctx, rel)
		require.NoError(t, err)
	}
	// The rerun's file, written well after that release.
	n.jobFile(allocator.KindPBS, "9.srv", jobstate.JobFile{User: "dave", UID: 1004, Restart: 1, BootID: "boot-now",
		At: time.Now().Add(time.Hour)}, 3)

	r := n.run()
	require.Empty(t, r.Error)
	require.Equal(t, []Settled{{What: "restored", Kind: allocator.KindPBS, JobID: "9.srv", GPUs: []string{testUUID(3)},
		Message: "restored GPU 3 of pbs job 9.srv: the store had lost it"}}, r.Settled)
	require.Equal(t, map[int]string{1: "slurm alice 13", 3: "pbs dave 9.srv"}, n.holders())
}

// Between the snapshot and the grant another job may reserve one of the
// GPUs: the grant never takes it over, and the GPU the store gave in its
// place is given back.
func TestRestoreLeavesAGPUTakenSinceTheSnapshot(t *testing.T) {
	ctx := context.Background()
	n := newTestNode(t, nil)
	n.register()
	n.stepSocket("13", "0")
	n.jobFile(allocator.KindSlurm, "13", alice, 0, 1)
	snap := n.snapshot()
	n.reserve(allocator.KindSlurm, "bob", 1001, "14", "boot-now", 1) // by UUID, as a Prolog does

	deps := n.deps()
	devs, err := deps.GPUs.Devices(ctx)
	require.NoError(t, err)
	out, err := (&check{deps: deps, cfg: deps.Config}).restoreJobs(ctx, snap, devs)
	require.NoError(t, err)
	require.Equal(t, []Settled{
		{What: "restored", Kind: allocator.KindSlurm, JobID: "13", GPUs: []string{testUUID(0)},
			Message: "restored GPU 0 of slurm job 13: the store had lost it"},
		{What: "unrestored", Kind: allocator.KindSlurm, JobID: "13", GPUs: []string{testUUID(1)},
			Message: "could not restore GPU 1 of slurm job 13: reserved by someone else meanwhile"},
	}, out)
	require.Equal(t, map[int]string{0: "slurm alice 13", 1: "slurm bob 14"}, n.holders())
}

// A job known only to Slurm is restored only when Slurm can say it runs:
// not under NHC (no scontrol of our own), not when scontrol does not
// answer. A step socket is enough either way.
func TestRunRestoresBySlurmOnlyWhenItAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		nhc  bool
		hang bool
	}{{"nhc", true, false}, {"no answer", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, map[string]string{"health.scontrol_timeout": "200ms"})
			n.register()
			n.stepSocket("13", "0")
			n.jobFile(allocator.KindSlurm, "13", alice, 0)
			n.jobFile(allocator.KindSlurm, "14", bob, 1)
			n.sc.Touch("job.14", "JobId=14 JobName=wrap\n   JobState=RUNNING Reason=None\n")
			if tc.hang {
				n.sc.Touch("hang", "")
			}
			deps := n.deps()
			deps.NHC = tc.nhc
			r := Run(context.Background(), deps)
			if tc.hang {
				require.Equal(t, "cannot judge slurm jobs: cannot learn the state of slurm job 14 (squeue: no answer within 200ms): it keeps its GPUs", r.Error)
			} else {
				require.Empty(t, r.Error)
			}
			require.Len(t, r.Settled, 1)
			require.Equal(t, "restored GPU 0 of slurm job 13: the store had lost it", r.Settled[0].Message)
			require.Equal(t, map[int]string{0: "slurm alice 13"}, n.holders())
			if tc.nhc {
				require.Empty(t, n.sc.Calls())
			} else {
				require.Equal(t, [][]string{scontroltest.JobQuery("14")}, n.jobCalls())
			}
		})
	}
}

// A job file that cannot be read, or is not root's, is reported; the other
// jobs are still restored.
func TestRunReportsUnreadableJobFiles(t *testing.T) {
	n := newTestNode(t, nil)
	n.register()
	n.stepSocket("13", "0")
	n.jobFile(allocator.KindSlurm, "13", alice, 0)
	n.jobFile(allocator.KindSlurm, "12", bob, 1)
	require.NoError(t, os.WriteFile(jobstate.JobPath(n.stateDir, allocator.KindSlurm, "12"), []byte("{"), 0o644))
	n.jobFile(allocator.KindSlurm, "14", bob, 2)
	require.NoError(t, os.Lchown(jobstate.JobPath(n.stateDir, allocator.KindSlurm, "14"), 12345, 12345))

	r := n.run()
	require.Empty(t, r.Error)
	require.Len(t, r.Settled, 3)
	require.Equal(t, "unrestored", r.Settled[0].What)
	require.Contains(t, r.Settled[0].Message, "slurm job files: state file "+filepath.Join(n.stateDir, "slurm", "14")+" is owned by uid 12345")
	require.Equal(t, "unrestored", r.Settled[1].What)
	require.Equal(t, "12", r.Settled[1].JobID)
	require.Contains(t, r.Settled[1].Message, "could not check slurm job 12: job file "+filepath.Join(n.stateDir, "slurm", "12"))
	require.Equal(t, "restored GPU 0 of slurm job 13: the store had lost it", r.Settled[2].Message)
}
