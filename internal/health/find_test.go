package health

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
	"canhazgpu/internal/schedulers"
)

var exempt = []string{"root", "nvidia-mps"}

func testUUID(i int) string { return fmt.Sprintf("GPU-7e570000-0000-4000-8000-%012d", i) }

// proc is a GPU process; job "" means none.
func proc(pid int, user string, uid int, job string, mb int64) gpu.Process {
	return gpu.Process{PID: pid, Name: "python3", User: user, UID: uid, JobID: job, UsedMemoryMB: mb}
}

func res(kind allocator.Kind, user string, uid int, job string) *allocator.Reservation {
	return &allocator.Reservation{Kind: kind, User: user, UID: uid, JobID: job}
}

// classify builds the joined view of one GPU (index 1) the way the check
// does, from a reservation (nil: none) and a device.
func classify(r *allocator.Reservation, used int64, procs ...gpu.Process) []usage.GPU {
	snap := &allocator.Snapshot{Node: "n1", Now: time.Now(), GPUs: []allocator.GPU{{UUID: testUUID(1), Index: 1}},
		Reservations: map[string]allocator.Reservation{}, LastReleased: map[string]time.Time{}}
	if r != nil {
		rr := *r
		rr.GPU = testUUID(1)
		snap.Reservations[rr.GPU] = rr
	}
	dev := gpu.Device{Index: 1, UUID: testUUID(1), MemoryUsedMB: used, Processes: procs}
	return usage.Classify(snap, []gpu.Device{dev}, 1024)
}

// inJobBySchedulers tells a process's job as a run does, by the
// schedulers' own watches.
func inJobBySchedulers() func(gpu.Process, allocator.Reservation) bool {
	c := &check{deps: &Deps{Schedulers: schedulers.All}, cfg: &config.Config{}}
	return c.inJob(nil)
}

func TestFind(t *testing.T) {
	bob := proc(4242, "bob", 1001, "", 2048)
	tests := []struct {
		name    string
		gpus    []usage.GPU
		kinds   []Kind
		pids    [][]int
		message []string
	}{
		{name: "unreserved use", gpus: classify(nil, 2048, bob), kinds: []Kind{Unreserved}, pids: [][]int{{4242}},
			message: []string{"GPU 1 used by bob (pid 4242) without reservation"}},
		{name: "unreserved use by a job names the job",
			gpus:  classify(nil, 4096, proc(51, "alice", 1002, "17", 4096), proc(52, "alice", 1002, "17", 10)),
			kinds: []Kind{Unreserved}, pids: [][]int{{51, 52}},
			message: []string{"GPU 1 used by alice (pid 51, job 17, +1 more) without reservation"}},
		{name: "below the threshold is free", gpus: classify(nil, 1023, proc(4242, "bob", 1001, "", 1023))},
		{name: "exempt users only", gpus: classify(nil, 4096, proc(1, "root", 0, "", 2048), proc(2, "nvidia-mps", 998, "", 2048))},
		{name: "exempt and another user: only the other counts",
			gpus:  classify(nil, 4096, proc(1, "root", 0, "", 2048), proc(7, "carol", 1003, "", 10)),
			kinds: []Kind{Unreserved}, pids: [][]int{{7}},
			message: []string{"GPU 1 used by carol (pid 7) without reservation"}},
		{name: "memory used without any visible process", gpus: classify(nil, 3000), kinds: []Kind{Unreserved},
			pids: [][]int{{}}, message: []string{"GPU 1 in use (3000 MB) without reservation, no process visible"}},
		{name: "owner's own use", gpus: classify(res(allocator.KindManual, "bob", 1001, ""), 2048, bob)},
		{name: "run reservation used by another user",
			gpus: classify(res(allocator.KindRun, "alice", 1002, ""), 2048, bob), kinds: []Kind{ForeignUser}, pids: [][]int{{4242}},
			message: []string{"GPU 1 used by bob (pid 4242) while reserved by alice"}},
		{name: "another user below the threshold still counts on a reserved GPU",
			gpus:  classify(res(allocator.KindManual, "alice", 1002, ""), 100, proc(9, "bob", 1001, "", 100)),
			kinds: []Kind{ForeignUser}, pids: [][]int{{9}}},
		{name: "exempt user on a reserved GPU", gpus: classify(res(allocator.KindManual, "alice", 1002, ""), 2048, proc(1, "root", 0, "", 2048))},
		{name: "owner known only by uid", gpus: classify(res(allocator.KindManual, "alice", 1002, ""), 2048, proc(9, "uid:1002", 1002, "", 2048))},
		{name: "nameless uid of someone else",
			gpus: classify(res(allocator.KindManual, "alice", 1002, ""), 2048, proc(9, "uid:1005", 1005, "", 2048)), kinds: []Kind{ForeignUser}},
		{name: "process whose owner could not be read", gpus: classify(res(allocator.KindManual, "alice", 1002, ""), 2048, proc(9, "", -1, "", 2048))},
		{name: "slurm job's own process", gpus: classify(res(allocator.KindSlurm, "alice", 1002, "17"), 2048, proc(51, "alice", 1002, "17", 2048))},
		{name: "slurm job's user outside any job",
			gpus: classify(res(allocator.KindSlurm, "alice", 1002, "17"), 2048, proc(51, "alice", 1002, "", 2048)), kinds: []Kind{OutsideJob},
			pids: [][]int{{51}}, message: []string{"GPU 1 used by alice (pid 51) outside job 17, which reserved it"}},
		{name: "slurm job's user in another job",
			gpus: classify(res(allocator.KindSlurm, "alice", 1002, "17"), 2048, proc(51, "alice", 1002, "18", 2048)), kinds: []Kind{OutsideJob},
			message: []string{"GPU 1 used by alice (pid 51, job 18) outside job 17, which reserved it"}},
		{name: "another user on a slurm job's GPU",
			gpus: classify(res(allocator.KindSlurm, "alice", 1002, "17"), 2048, proc(60, "bob", 1001, "17", 2048)), kinds: []Kind{ForeignUser},
			message: []string{"GPU 1 used by bob (pid 60, job 17) while reserved by slurm job 17 (alice)"}},
		{name: "foreign and outside on one GPU",
			gpus:  classify(res(allocator.KindSlurm, "alice", 1002, "17"), 4096, proc(51, "alice", 1002, "", 10), proc(60, "bob", 1001, "", 10)),
			kinds: []Kind{ForeignUser, OutsideJob}, pids: [][]int{{60}, {51}}},
		{name: "pbs job's user is judged by user only",
			gpus: classify(res(allocator.KindPBS, "alice", 1002, "5.server"), 2048, proc(51, "alice", 1002, "", 2048))},
		{name: "registered GPU the provider does not report", gpus: func() []usage.GPU {
			g := classify(nil, 0)
			g[0].Seen, g[0].Busy = false, true
			return g
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := Find(tc.gpus, exempt, nil, inJobBySchedulers())
			var kinds []Kind
			for _, v := range vs {
				kinds = append(kinds, v.Kind)
				require.Equal(t, 1, v.GPU)
				require.Equal(t, testUUID(1), v.UUID)
				require.Equal(t, v.Message, message(v))
			}
			require.Equal(t, tc.kinds, kinds)
			if tc.pids != nil {
				var pids [][]int
				for _, v := range vs {
					p := []int{}
					for _, pr := range v.Processes {
						p = append(p, pr.PID)
					}
					pids = append(pids, p)
				}
				require.Equal(t, tc.pids, pids)
			}
			for i, m := range tc.message {
				require.Equal(t, m, vs[i].Message)
			}
		})
	}
}

func TestFindUsesTheConfiguredExemptions(t *testing.T) {
	gpus := classify(nil, 2048, proc(1, "root", 0, "", 2048))
	require.Len(t, Find(gpus, nil, nil, inJobBySchedulers()), 1, "root counts when nobody is exempt")
	require.Empty(t, Find(classify(nil, 2048, bobProc()), []string{"bob"}, nil, inJobBySchedulers()))
}

func bobProc() gpu.Process { return proc(4242, "bob", 1001, "", 2048) }

func TestReason(t *testing.T) {
	one := Violation{Message: "GPU 1 used by bob (pid 4242) without reservation"}
	tests := []struct {
		name string
		vs   []Violation
		want string
	}{
		{"clean", nil, ""},
		{"one", []Violation{one}, "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"},
		{"more", []Violation{one, one, one}, "canhazgpu: GPU 1 used by bob (pid 4242) without reservation (+2 more)"},
		{"control characters", []Violation{{Message: "GPU 0 used by x\ny\tz\x1b (pid 1)"}},
			"canhazgpu: GPU 0 used by x y z  (pid 1)"},
		{"shell quoting", []Violation{{Message: "GPU 0 used by o'brien \"b\" $(id) `id` a\\b (pid 1)"}},
			`canhazgpu: GPU 0 used by o\x27brien \x22b\x22 \x24(id) \x60id\x60 a\x5cb (pid 1)`},
		{"non-ASCII kept, invisible escaped", []Violation{{Message: "GPU 0 used by jürgen\u202e (pid 1)"}},
			`canhazgpu: GPU 0 used by jürgen\u202e (pid 1)`},
		{"long", []Violation{{Message: "GPU 0 used by " + strings.Repeat("ü", 100) + " (pid 1)"}, one},
			"canhazgpu: GPU 0 used by " + strings.Repeat("ü", 41) + "... (+1 more)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Reason(tc.vs)
			require.Equal(t, tc.want, got)
			require.LessOrEqual(t, len(got), maxReasonLen)
			require.NotContains(t, got, "\n")
		})
	}
}

// TestFindGuessesModel: a violation names the model its processes' command
// lines name, for the record.
func TestFindGuessesModel(t *testing.T) {
	p := proc(4242, "bob", 1001, "", 4096)
	p.Cmdline = []string{"/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "meta-llama/Llama-3.1-8B"}
	vs := Find(classify(nil, 4096, p), nil, allowedUse{}, func(gpu.Process, allocator.Reservation) bool { return true })
	require.Len(t, vs, 1)
	require.Equal(t, "meta-llama/Llama-3.1-8B", vs[0].Model)
}
