package health

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/syslogtest"
)

// runLogged runs the check once with its syslog lines sent to l.
func (n *testNode) runLogged(l *syslogtest.Listener) *Report {
	n.t.Helper()
	deps := n.deps()
	deps.SyslogPath = l.Path
	return Run(context.Background(), deps)
}

// Violations and the drain go to syslog at warning (daemon.warning:
// <28>), the undrain at info (<30>); a clean run sends nothing.
func TestRunLogsViolationsDrainAndUndrain(t *testing.T) {
	l := syslogtest.Listen(t)
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.register()
	n.gpus(4, bobOnGPU1)
	n.sc.Show("IDLE", "", "")
	require.Equal(t, StatusViolations, n.runLogged(l).Status)
	n.gpus(4, nil)
	n.sc.Show("IDLE+DRAIN", bobReason, "")
	require.Equal(t, StatusHealthy, n.runLogged(l).Status)
	n.sc.Show("IDLE", "", "")
	require.Equal(t, StatusHealthy, n.runLogged(l).Status)

	lines := l.Lines(4)
	require.Len(t, lines, 3)
	require.Regexp(t, `^<28>.* canhazgpu-healthcheck\[\d+\]: problem: GPU 1 used by bob \(pid 4242\) without reservation$`, lines[0])
	require.Regexp(t, `^<28>.* canhazgpu-healthcheck\[\d+\]: drain: drained: canhazgpu: GPU 1 used by bob`, lines[1])
	require.Regexp(t, `^<30>.* canhazgpu-healthcheck\[\d+\]: undrain: undrained: no violations left$`, lines[2])
}

// Releasing a gone job's GPUs also removes its job file, as its Epilog
// would have, and says so in syslog. A file written in this boot outlives
// the release of a grant from an earlier boot: it is a new job's.
func TestRunSettleRemovesTheJobFileAndLogs(t *testing.T) {
	l := syslogtest.Listen(t)
	n := newTestNode(t, nil)
	n.gpus(4, nil)
	n.reserve(allocator.KindSlurm, "alice", 1002, "31", "boot-now", 0) // job file, Slurm: completed
	n.reserve(allocator.KindSlurm, "alice", 1002, "32", "boot-old", 1) // this boot's job file: a new job 32
	n.reserve(allocator.KindSlurm, "alice", 1002, "33", "boot-old", 2) // an earlier boot's job file
	n.reserve(allocator.KindSlurm, "alice", 1002, "34", "boot-now", 3) // job file, Slurm: running
	for job, boot := range map[string]string{"31": "boot-now", "32": "boot-now", "33": "boot-old", "34": "boot-now"} {
		require.NoError(t, jobstate.WriteJob(n.stateDir, allocator.KindSlurm, job, jobstate.JobFile{User: "alice", BootID: boot}))
	}
	n.sc.Touch("job.31", "JobId=31 JobName=wrap\n   JobState=COMPLETED Reason=None Dependency=(null)\n")
	n.sc.Touch("job.34", "JobId=34 JobName=wrap\n   JobState=RUNNING Reason=None Dependency=(null)\n")

	r := n.runLogged(l)
	require.Empty(t, r.Error)
	require.Len(t, r.Settled, 3)
	hasFile := func(job string) bool {
		_, err := jobstate.ReadJob(n.stateDir, allocator.KindSlurm, job)
		return err == nil
	}
	require.False(t, hasFile("31"), "released: its file goes")
	require.True(t, hasFile("32"), "a new job of this boot keeps its file")
	require.False(t, hasFile("33"), "an earlier boot's file goes")
	require.True(t, hasFile("34"), "a running job keeps its file")
	require.Equal(t, map[int]string{3: "slurm alice 34"}, n.holders())

	lines := l.Lines(3)
	require.Len(t, lines, 3)
	require.Regexp(t, `^<30>.* canhazgpu-healthcheck\[\d+\]: settled: released GPU 0 of slurm job 31: the job is COMPLETED in Slurm$`, lines[0])
	require.Regexp(t, `^<30>.* canhazgpu-healthcheck\[\d+\]: settled: released GPU 1 of slurm job 32: granted before this boot$`, lines[1])
	require.Regexp(t, `^<30>.* canhazgpu-healthcheck\[\d+\]: settled: released GPU 2 of slurm job 33: granted before this boot$`, lines[2])
}

// A process name others chose reaches root's journal escaped.
func TestRunLogsEscaped(t *testing.T) {
	l := syslogtest.Listen(t)
	n := newTestNode(t, nil)
	n.register()
	n.gpus(4, map[int][]fakeProc{1: {{PID: 4242, User: "bob\x1b[2J", UID: 1001, MB: 2048}}})
	require.Equal(t, StatusViolations, n.runLogged(l).Status)
	lines := l.Lines(1)
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], `problem: GPU 1 used by bob\x1b[2J (pid 4242)`)
	require.NotContains(t, lines[0], "\x1b")
}
