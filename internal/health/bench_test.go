package health

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/procstop"
	"canhazgpu/internal/redistest"
)

// benchNode is a node of 8 GPUs with 8 processes each, every GPU held
// by a running Slurm job whose processes run inside it and whose Prolog
// left its job file; with bad, GPU 7 is in unreserved use by bob instead.
func benchNode(b *testing.B, action string, bad bool, boot string) *testNode {
	n := newTestNode(b, map[string]string{"health.action": action})
	procs := map[int][]fakeProc{}
	n.gpus(8, nil)
	for g := range 8 {
		job := fmt.Sprint(100 + g)
		if !(bad && g == 7) {
			n.reserve(allocator.KindSlurm, "alice", 1002, job, boot, g)
			n.jobFile(allocator.KindSlurm, job, jobstate.JobFile{User: "alice", UID: 1002, BootID: boot}, g)
		}
		l, err := net.Listen("unix", n.spool+"/n1_"+job+".0")
		require.NoError(b, err)
		b.Cleanup(func() { l.Close() })
		for p := range 8 {
			procs[g] = append(procs[g], fakeProc{PID: 1000 + 8*g + p, User: "alice", UID: 1002, JobID: job, MB: 512})
		}
	}
	if bad {
		procs[7] = append(procs[7][:7], fakeProc{PID: 4242, User: "bob", UID: 1001, MB: 4096})
	}
	n.gpus(8, procs)
	return n
}

// idleBenchNode is a node of 8 GPUs with 8 processes each, every GPU held
// by a manual reservation of its own (8 grants), for the idle clock: with
// busy, the processes hold 4 GB per GPU, so every grant is in use and its
// clock is written (by the run's snapshot) whenever it is idleStampEvery
// old; without,
// every GPU is idle (0%, 64 MB per GPU), its grant past the warning time
// and already warned, so nothing is written.
func idleBenchNode(b *testing.B, busy bool) *testNode {
	n := newTestNode(b, nil)
	n.util = map[int]int{}
	procs := map[int][]fakeProc{}
	n.gpus(8, nil)
	mb := int64(8)
	if busy {
		mb = 512
	}
	for g := range 8 {
		n.util[g] = 0
		n.reserveFor(allocator.KindManual, "alice", 1002, 8*time.Hour, g)
		for p := range 8 {
			procs[g] = append(procs[g], fakeProc{PID: 1000 + 8*g + p, User: "alice", UID: 1002, MB: mb})
		}
	}
	n.gpus(8, procs)
	if !busy {
		n.ageIdle(time.Hour)
		first := Run(context.Background(), n.deps())
		require.Len(b, first.Idle, 8, "all warned once")
	}
	return n
}

// BenchmarkIdle is BenchmarkRun's clean case with interactive
// reservations instead of batch ones, so that the idle clock has work:
//
//   - in_use: 8 manual grants whose GPUs are busy, runs closer together
//     than idleStampEvery: judged, nothing written.
//   - in_use_due: as in_use, each run finding the clocks idleStampEvery
//     old (moved back between runs, off the clock), as on a node whose
//     check runs a minute or more apart: the run's snapshot writes the 8
//     clocks, in its one round trip.
//   - idle_warned: 8 idle manual grants, all warned: judged, nothing
//     written.
//
// Run: go test -run '^$' -bench BenchmarkIdle -benchtime 2s ./internal/health/
func BenchmarkIdle(b *testing.B) {
	for _, tc := range []struct {
		name string
		busy bool
		due  bool
	}{{"in_use", true, false}, {"in_use_due", true, true}, {"idle_warned", false, false}} {
		b.Run(tc.name, func(b *testing.B) {
			n := idleBenchNode(b, tc.busy)
			deps := n.deps()
			deps.Notify = (&notes{}).notify
			hook := redistest.CountRoundTrips(deps.Store.Client())
			b.ResetTimer()
			for b.Loop() {
				if tc.due {
					b.StopTimer()
					// The stamps only: the leases must not run out over the
					// iterations. Through a client of its own: no round
					// trip counted.
					n.ageStored(idleStampEvery, "s", "a")
					b.StartTimer()
				}
				r := Run(context.Background(), deps)
				if r.Status == StatusError || len(r.Idle) > 0 {
					b.Fatal(r.Error, r.Idle)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(hook.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkRun is one health check of a node with 8 GPUs and 64 processes
// (8 per GPU), from the fake GPU file and a real Redis:
//
//   - clean: every GPU reserved by a Slurm job whose step runs (socket),
//     whose processes run inside it and whose job file is in place;
//     action none.
//   - violations: one GPU in unreserved use, the rest as above; action
//     drain, with Slurm (a stand-in scontrol) already showing the drain, so
//     the steady state of a node that stays unhealthy: one scontrol call.
//     The violation is recorded each run.
//   - violations-steps: as violations, with [violations] actions notify
//     and kill, the violator already told and within the kill grace: the
//     steady state of a violation being waited out (processes identified
//     from a stand-in for /proc).
//
// Run: go test -run '^$' -bench BenchmarkRun -benchtime 2s ./internal/health/
func BenchmarkRun(b *testing.B) {
	for _, tc := range []struct {
		name   string
		action string
		bad    bool
		steps  bool
	}{{"clean", ActionNone, false, false}, {"violations", ActionDrain, true, false}, {"violations-steps", ActionDrain, true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			n := benchNode(b, tc.action, tc.bad, "boot-now")
			if tc.steps {
				n.settings["violations.actions"] = `["notify", "kill"]`
				n.writeConfig()
			}
			deps := n.deps()
			deps.Processes = &fakeProcs{ids: map[int]procstop.Identity{4242: {UID: 1001, Start: 1, Exe: "/usr/bin/python3"}}}
			deps.Notify = func(string, string) (int, error) { return 1, nil }
			if tc.bad {
				first := Run(context.Background(), deps)
				require.Equal(b, StatusViolations, first.Status)
				n.sc.Show("MIXED+DRAIN", Reason(first.Violations), "")
			}
			hook := redistest.CountRoundTrips(deps.Store.Client())
			callsBefore := len(n.sc.Calls())
			b.ResetTimer()
			for b.Loop() {
				r := Run(context.Background(), deps)
				if r.Status == StatusError {
					b.Fatal(r.Error)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(hook.Load())/float64(b.N), "roundtrips/op")
			b.ReportMetric(float64(len(n.sc.Calls())-callsBefore)/float64(b.N), "scontrol/op")
		})
	}
}

// BenchmarkProgram is the clean case of BenchmarkRun as Slurm runs it: the
// canhazgpu-healthcheck process from start to exit, loading its config
// file and connecting to Redis.
//
// Run: go test -run '^$' -bench BenchmarkProgram -benchtime 2s ./internal/health/
func BenchmarkProgram(b *testing.B) {
	bin := healthcheckBinary(b)
	boot, err := jobstate.BootID("")
	require.NoError(b, err)
	n := benchNode(b, ActionNone, false, boot)
	env := append([]string{"CANHAZGPU_CONFIG=" + n.cfgFile, "SLURMD_NODENAME=n1"}, n.sc.Env()...)
	for b.Loop() {
		cmd := exec.Command(bin)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}
