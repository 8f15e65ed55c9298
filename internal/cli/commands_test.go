package cli

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/config"
)

func TestReserveReleaseAndOwnership(t *testing.T) {
	f := registered(t, idleGPUs(4))

	r := f.run(alice, "reserve", "--gpus", "2", "--duration", "1h", "--note", "notebook")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^Reserved 2 GPUs on node cli\d+ for 1h: \d,\d\n`, r.stdout)

	r = f.run(bob, "reserve", "--short", "--gpus", "2")
	require.Equal(t, 0, r.code, r.stderr)
	bobs := strings.TrimSpace(r.stdout)
	require.Regexp(t, `^\d,\d$`, bobs)

	// The node is full: the seed's message, Available counting what could
	// really be granted.
	r = f.run(bob, "reserve", "--gpus", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 1, Available: 0\n", r.stderr)

	// bob cannot release alice's GPUs, even by naming them.
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	var aliceIdx []string
	for _, g := range snap.GPUs {
		if snap.Reservations[g.UUID].User == "alice" {
			aliceIdx = append(aliceIdx, itoa(g.Index))
		}
	}
	require.Len(t, aliceIdx, 2)
	r = f.run(bob, "release", "--gpu-ids", aliceIdx[0])
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: GPU "+aliceIdx[0]+" is reserved by alice (manual), not by bob: only the owner, root or the admin group may release it\n", r.stderr)
	// Asking for them by index says who holds each.
	r = f.run(bob, "reserve", "--gpu-ids", aliceIdx[0]+","+aliceIdx[1])
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 2, Available: 0: GPU "+aliceIdx[0]+" is reserved by alice (manual); GPU "+
		aliceIdx[1]+" is reserved by alice (manual)\n", r.stderr)
	r = f.run(bob, "release", "--user", "alice")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: --user alice: only root may (no admin.group is configured) act for another user; you are bob\n", r.stderr)

	// bob's own release leaves alice's alone.
	r = f.run(bob, "release")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Released 2 GPUs on node "+f.node+": "+bobs+"\n")
	snap, err = f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 2)
	for _, res := range snap.Reservations {
		require.Equal(t, "alice", res.User)
		require.Equal(t, "notebook", res.Note)
	}

	// root may act for alice.
	r = f.run(root, "release", "--user", "alice")
	require.Equal(t, 0, r.code, r.stderr)
	r = f.run(alice, "release")
	require.Equal(t, 0, r.code)
	require.Equal(t, "No manual reservations of alice to release on node "+f.node+".\n", r.stdout)
}

// Naming another user's batch GPU is refused like any other GPU of theirs:
// exit 1 and one line naming the holder and the job, nothing released.
func TestReleaseRefusesAnotherUsersBatchGPU(t *testing.T) {
	f := registered(t, idleGPUs(2))
	ctx := context.Background()
	snap, err := f.store().Snapshot(ctx)
	require.NoError(t, err)
	gpu1, ok := snap.GPUByIndex(1)
	require.True(t, ok)
	_, err = f.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "alice", JobID: "4242", GPUs: []string{gpu1.UUID}})
	require.NoError(t, err)

	r := f.run(bob, "release", "--gpu-ids", "1")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "Error: GPU 1 is reserved by alice (slurm job 4242), not by bob: only the owner, root or the admin group may release it\n", r.stderr)

	// Its owner's release of manual and run reservations passes it over.
	r = f.run(alice, "release", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "No manual or run reservation of alice to release on GPU 1.\n", r.stdout)
	snap, err = f.store().Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "4242", snap.Reservations[gpu1.UUID].JobID, "the job keeps its GPU")
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestAdminGroupMayActForOthers(t *testing.T) {
	f := registered(t, idleGPUs(2), `admin.group = "gpuadmins"`)
	carol := Identity{Name: "carol", UID: 2003, Groups: []string{"users", "gpuadmins"}}
	r := f.run(carol, "reserve", "--user", "alice", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Reserved 1 GPU for alice on node")
	r = f.run(bob, "reserve", "--user", "alice")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: --user alice: only root and members of the admin group \"gpuadmins\" may act for another user; you are bob\n", r.stderr)
	r = f.run(bob, "admin", "--release", "--gpu-ids", "1")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "Error: canhazgpu admin: only root and members of the admin group \"gpuadmins\" may; you are bob\n")
	r = f.run(carol, "admin", "--release", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Released GPU 1 on node "+f.node+" (held by alice, manual).\n", r.stdout)
}

func TestUnreservedUseIsExcludedWithTheSeedMessage(t *testing.T) {
	f := registered(t, `{"gpus": [
		{"index": 0, "memory_used_mb": 2048, "processes": [{"pid": 1001, "name": "python3", "user": "bob", "used_memory_mb": 2048, "cmdline": ["python3"]}]},
		{"index": 1, "memory_used_mb": 1024, "processes": [{"pid": 1002, "name": "jupyter", "user": "carol", "used_memory_mb": 1024, "cmdline": ["jupyter"]}]},
		{"index": 2, "memory_used_mb": 1023},
		{"index": 3}]}`)
	r := f.run(alice, "reserve", "--gpus", "3")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 3, Available: 2 (2 GPUs in use without reservation - run 'canhazgpu status' for details)\n", r.stderr)
	r = f.run(alice, "reserve", "--gpu-ids", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 1, Available: 0 (1 GPUs in use without reservation - run 'canhazgpu status' for details): "+
		"GPU 1 is in use without reservation by carol\n", r.stderr, "a named GPU's refusal says who uses it")
	// The threshold is a setting: at 4096 MB nothing here is in use.
	r = f.run(root, "--memory-threshold", "4096", "reserve", "--gpus", "4", "--short")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "0,1,2,3\n", r.stdout)
}

func TestStatusThroughTheStore(t *testing.T) {
	f := registered(t, `{"gpus": [
		{"index": 0},
		{"index": 1, "memory_used_mb": 3000, "processes": [{"pid": 4242, "name": "python3", "user": "bob", "used_memory_mb": 3000, "cmdline": ["vllm", "serve", "Qwen/Qwen2-7B"]}]}]}`)
	r := f.run(alice, "reserve", "--gpu-ids", "0", "--duration", "2h")
	require.Equal(t, 0, r.code, r.stderr)
	r = f.run(alice, "status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 4)
	// Within the same millisecond as the grant, all two hours remain.
	require.Regexp(t, `^0 in use alice \d+s manual expires in (1h 59m \d+s|2h 0m 0s) no usage detected -$`, collapse(lines[2]))
	require.Equal(t, "1 in use bob Qwen/Qwen2-7B WITHOUT RESERVATION 3000MB used by PID 4242 (python3) -", collapse(lines[3]))

	r = f.run(alice, "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var doc statusDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	require.Equal(t, 1, doc.Version)
	require.Equal(t, f.node, doc.Node)
	require.Len(t, doc.GPUs, 2)
	require.Equal(t, "in_use", doc.GPUs[0].Status)
	require.Equal(t, "manual", doc.GPUs[0].Reservation.Kind)
	require.Equal(t, "unreserved", doc.GPUs[1].Status)
	require.Equal(t, []string{"bob"}, doc.GPUs[1].Users)
	_, err := time.Parse(time.RFC3339, *doc.GPUs[0].Reservation.ExpiresAt)
	require.NoError(t, err)

	// --all-nodes lists this node among the others of the store, with the
	// health check's findings.
	other := registered(t, idleGPUs(1))
	require.Equal(t, 0, other.run(bob, "reserve").code)
	require.NoError(t, other.store().SetFlags(context.Background(), []allocator.Flag{{GPU: "", Message: "drained by canhazgpu: unreserved use"}}))
	r = f.run(alice, "status", "--all-nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, other.node+" (reservations from the store; GPU usage is seen only on "+other.node+" itself)\n")
	require.Regexp(t, `(?m)^  node: drained by canhazgpu: unreserved use \(found \d+s ago\)$`, r.stdout)
	r = f.run(alice, "status", "--all-nodes", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var all allNodesDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &all))
	seen := map[string]jsonNode{}
	for _, n := range all.Nodes {
		seen[n.Node] = n
	}
	require.True(t, seen[f.node].Local)
	require.False(t, seen[other.node].Local)
	require.Equal(t, "bob", seen[other.node].GPUs[0].Reservation.User)
	require.Nil(t, seen[other.node].GPUs[0].MemoryUsedMB)
	require.Equal(t, "drained by canhazgpu: unreserved use", seen[other.node].Flags[0].Message)
}

// status asks its scan for utilisation, which the fake file, as NVML,
// gives only when asked: every form shows it.
func TestStatusReadsUtilization(t *testing.T) {
	f := registered(t, `{"gpus": [{"index": 0, "utilization": 61}, {"index": 1}]}`)
	r := f.run(alice, "status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Regexp(t, `^0 available .* 61%$`, collapse(lines[2]), "UTIL")
	require.Regexp(t, `^1 available .* -$`, collapse(lines[3]), "UTIL")

	r = f.run(alice, "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, []*int{new(61), nil}, utilizations(t, r.stdout, ""))
	r = f.run(alice, "status", "--json", "--all-nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, []*int{new(61), nil}, utilizations(t, r.stdout, f.node))
}

// utilizations are the utilization_percent of each GPU in a status
// document, of node's GPUs in an --all-nodes one.
func utilizations(t *testing.T, doc, node string) []*int {
	t.Helper()
	type gpus struct {
		Node string `json:"node"`
		GPUs []struct {
			Utilization *int `json:"utilization_percent"`
		} `json:"gpus"`
	}
	var d struct {
		gpus
		Nodes []gpus `json:"nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(doc), &d))
	if node != "" {
		i := slices.IndexFunc(d.Nodes, func(n gpus) bool { return n.Node == node })
		require.GreaterOrEqual(t, i, 0, "node %s in the document", node)
		d.gpus = d.Nodes[i]
	}
	var out []*int
	for _, g := range d.GPUs {
		out = append(out, g.Utilization)
	}
	return out
}

func TestQueueWaitsFirstComeFirstServed(t *testing.T) {
	f := registered(t, idleGPUs(2), `queue.poll_interval = "50ms"`)
	require.Equal(t, 0, f.run(alice, "reserve", "--gpus", "2").code)

	env, out, errw := f.env(bob)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), []string{"reserve", "--gpus", "2", "--wait", "--short"}, env)
	}()
	require.Eventually(t, func() bool { return strings.Contains(errw.String(), "position 1 in the queue") }, 5*time.Second, 20*time.Millisecond)

	// While bob waits, nobody jumps the queue.
	r := f.run(alice, "queue")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^1 +bob +manual +2 GPUs +\d+s$`, r.stdout)
	require.Contains(t, r.stdout, "1 request waiting for 2 GPUs on node "+f.node+".\n")
	r = f.run(alice, "queue", "--json")
	var q queueDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &q))
	require.Len(t, q.Queue, 1)
	require.Equal(t, "bob", q.Queue[0].User)
	require.Equal(t, 2, q.Queue[0].Requested)

	require.Equal(t, 0, f.run(alice, "release", "--gpu-ids", "0").code)
	r = f.run(carol(), "reserve", "--gpus", "1")
	require.Equal(t, 1, r.code, "the freed GPU is held for the head of the queue")
	require.Contains(t, r.stderr, "1 requests waiting in the queue - run 'canhazgpu queue' for details")
	require.Equal(t, 0, f.run(alice, "release").code)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("bob never got the GPUs")
	}
	require.Equal(t, "0,1\n", out.String())
	require.Contains(t, f.run(alice, "queue").stdout, "No requests waiting")
}

func carol() Identity { return Identity{Name: "carol", UID: 2003} }

// The bound's timer is the test's: bob waits in the queue until the test
// fires it, then leaves the queue with the bound named.
func TestWaitGivesUpAfterItsBound(t *testing.T) {
	f := registered(t, idleGPUs(1), `queue.poll_interval = "50ms"`)
	require.Equal(t, 0, f.run(alice, "reserve").code)
	env, _, errw := f.env(bob)
	bound, fire := make(chan time.Duration, 1), make(chan time.Time)
	env.waitTimer = func(d time.Duration) <-chan time.Time { bound <- d; return fire }
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), []string{"reserve", "--wait", "90m"}, env) }()
	require.Equal(t, 90*time.Minute, <-bound)
	st := f.store()
	require.Eventually(t, func() bool {
		return strings.Contains(errw.String(), "position 1 in the queue")
	}, 5*time.Second, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("gave up before its bound: %v", err)
	default:
	}
	fire <- time.Now()
	err := <-done
	require.Equal(t, 1, ExitCode(err))
	require.Equal(t, "Error: no 1 GPU within --wait 1h30m on node "+f.node+"; left the queue", ErrorLine(err))
	snap, err := st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Empty(t, snap.Queue)

	// More GPUs than the node has can never come: no waiting at all.
	r := f.run(bob, "reserve", "--gpus", "2", "--wait")
	require.Equal(t, 2, r.code)
	require.Equal(t, "Error: invalid --gpus \"2\": want at most 1, the number of GPUs of node "+f.node+"\n", r.stderr)
}

func TestRunSetsTheGPUsAndReturnsTheExitStatus(t *testing.T) {
	f := registered(t, idleGPUs(4), "CUDA_VISIBLE_DEVICES=7", "CUDA_DEVICE_ORDER=FASTEST_FIRST")
	r := f.run(alice, "run", "--gpu-ids", "2,1", "--", "sh", "-c", `echo "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER"; exit 3`)
	require.Equal(t, 3, r.code, r.stderr)
	require.Equal(t, "1,2 PCI_BUS_ID\n", r.stdout)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "released at exit")

	r = f.run(alice, "run", "sh", "-c", `kill -KILL $$`)
	require.Equal(t, 128+9, r.code)
	r = f.run(alice, "run", "--", "no-such-program-xyz")
	require.Equal(t, 127, r.code)
	require.Equal(t, "Error: no-such-program-xyz: command not found\n", r.stderr)
	r = f.run(alice, "run", "--")
	require.Equal(t, 2, r.code)
}

// TestRunStartsTheCommandWithTheCallersEnvironment: in secure-execution
// mode the environment canhazgpu obeys (Environ) lacks what the loader
// removed; the command gets the caller's own (CommandEnviron) instead,
// with the GPUs added, while the settings still come from Environ.
func TestRunStartsTheCommandWithTheCallersEnvironment(t *testing.T) {
	f := registered(t, idleGPUs(2))
	env, out, errw := f.env(alice)
	env.CommandEnviron = append(slices.Clone(env.Environ), "LD_LIBRARY_PATH=/opt/x", "TMPDIR=/tmp/y",
		"CUDA_VISIBLE_DEVICES=7", "CANHAZGPU_NODE=elsewhere")
	err := Run(context.Background(), []string{"run", "--gpu-ids", "1", "--", "env"}, env)
	require.Equal(t, 0, ExitCode(err), errw.String())
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Subset(t, got, []string{"LD_LIBRARY_PATH=/opt/x", "TMPDIR=/tmp/y", "CUDA_VISIBLE_DEVICES=1",
		"CUDA_DEVICE_ORDER=PCI_BUS_ID", "CANHAZGPU_NODE=elsewhere"})
	require.NotContains(t, got, "CUDA_VISIBLE_DEVICES=7")
}

func TestRunStopsTheCommandWhenTheLeaseIsLost(t *testing.T) {
	f := registered(t, idleGPUs(1), `run.heartbeat_interval = "100ms"`, `run.heartbeat_timeout = "2s"`, "CANHAZGPU_RUN_KILL_GRACE=2s")
	env, _, errw := f.env(alice)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), []string{"run", "--", "sleep", "30"}, env) }()
	require.Eventually(t, func() bool {
		snap, err := f.store().Snapshot(context.Background())
		return err == nil && len(snap.Reservations) == 1
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, 0, f.run(root, "admin", "--release", "--gpu-ids", "0").code)
	select {
	case err := <-done:
		require.Equal(t, 128+15, ExitCode(err))
		require.Contains(t, ErrorLine(err), "the command was stopped because its reservation was lost")
	case <-time.After(10 * time.Second):
		t.Fatal("the command kept running without its reservation")
	}
	require.Contains(t, errw.String(), "canhazgpu: warning: reservation of GPU")
}

func TestAdminRegistersWhatIsDetected(t *testing.T) {
	f := newFixture(t, idleGPUs(3))
	r := f.run(root, "admin", "--gpus", "4")
	require.Equal(t, 2, r.code)
	require.Equal(t, "Error: invalid --gpus \"4\": want 3, the number of GPUs the provider detects on node "+f.node+
		" (with --force, the detected GPUs are registered whatever N says)\n", r.stderr)
	r = f.run(root, "admin", "--gpus", "3")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Registered 3 GPUs on node "+f.node+" (3 changed):\n")
	r = f.run(alice, "admin", "--gpus", "3")
	require.Equal(t, 1, r.code)

	// Hardware replaced: GPU 2 is gone. --force drops it and its
	// reservation.
	require.Equal(t, 0, f.run(bob, "reserve", "--gpu-ids", "2").code)
	f.setGPUs(idleGPUs(2))
	r = f.run(root, "admin", "--gpus", "2", "--force")
	require.Equal(t, 0, r.code, r.stderr)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 2)
	require.Empty(t, snap.Reservations)
}

func TestReportCountsTheWindowOnly(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	start := now.Add(-7 * 24 * time.Hour)
	h := func(n float64) time.Duration { return time.Duration(n * float64(time.Hour)) }
	spans := []span{
		{"alice", allocator.KindRun, now.Add(-h(3)), now.Add(-h(1)), time.Time{}},                        // 2h inside
		{"alice", allocator.KindManual, start.Add(-h(5)), start.Add(h(1)), start.Add(-h(1))},             // 1h of 6h inside, idle since 1h before the window: 1h idle
		{"bob", allocator.KindSlurm, now.Add(-h(0.5)), now, time.Time{}},                                 // in progress: 0.5h
		{"bob", allocator.KindManual, start.Add(-h(3)), start.Add(-h(1)), start.Add(-h(2))},              // before the window
		{"carol", allocator.KindPBS, now.Add(-h(1) / 3), now.Add(-h(1)/3 + 20*time.Second), time.Time{}}, // 20s
		{"dave", allocator.KindManual, now.Add(-h(4)), now, now.Add(-h(1.5))},                            // held now, idle for the last 1.5h
	}
	rep := buildReport(start, now, 7, []string{"n1", "n2"}, spans)
	// bob's two violations; erin's, who reserved nothing; one whose user
	// no process named.
	rep.addViolations([]allocator.ViolationRecord{{User: "bob"}, {User: "erin"}, {User: "bob"}, {User: ""}})
	var b strings.Builder
	require.NoError(t, rep.write(&b))
	golden(t, "report/window.golden", []byte(b.String()))

	doc := rep.json()
	require.Equal(t, 3, doc.Violations)
	require.Equal(t, "erin", doc.Users[4].User)
	require.Equal(t, 1, doc.Users[4].Violations)
	require.Equal(t, int64(0), doc.Users[4].TotalSeconds)
	require.Equal(t, int64(4*3600), doc.Users[0].TotalSeconds)
	require.Equal(t, "dave", doc.Users[0].User)
	var sum int64
	for _, u := range doc.Users {
		var own int64
		for _, s := range u.Seconds {
			own += s
		}
		require.Equal(t, u.TotalSeconds, own)
		sum += u.TotalSeconds
	}
	require.Equal(t, doc.TotalSeconds, sum)
	require.Equal(t, int64(3*3600+1800+20+4*3600), doc.TotalSeconds)
	require.Equal(t, 5, doc.Reservations)
	used := map[string]int64{}
	for _, u := range doc.Users {
		used[u.User] = u.UsedSeconds
	}
	require.Equal(t, map[string]int64{"alice": 2 * 3600, "bob": 1800, "carol": 20, "dave": 2.5 * 3600, "erin": 0}, used)
	require.Equal(t, int64(2*3600+1800+20+2.5*3600), doc.UsedSeconds)
}

func TestReportThroughTheStore(t *testing.T) {
	// The report covers every node of the store, which other tests share:
	// these accounts are this test's own.
	f := registered(t, idleGPUs(2))
	dora, eve := Identity{Name: "dora-" + f.node, UID: 3001}, Identity{Name: "eve-" + f.node, UID: 3002}
	require.Equal(t, 0, f.run(dora, "run", "--", "sleep", "0.2").code)
	require.Equal(t, 0, f.run(eve, "reserve").code)
	r := f.run(alice, "report", "--days", "1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var doc reportDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	users := map[string]jsonUserUsage{}
	for _, u := range doc.Users {
		users[u.User] = u
	}
	require.Contains(t, doc.Nodes, f.node)
	require.Equal(t, 1, users[dora.Name].Reservations)
	require.Equal(t, 1, users[eve.Name].Reservations, "the reservation held now counts")
	r = f.run(alice, "report", "--days", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^TOTAL +\d+\.\d\d +`, r.stdout)
}

func TestOnlyRootRegistersGPUs(t *testing.T) {
	f := newFixture(t, idleGPUs(2))
	// A user's command on a node nobody registered changes nothing and
	// says who registers.
	r := f.run(alice, "reserve")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: node "+f.node+": node has no GPUs registered; root registers them: at boot (canhazgpu-register.service), "+
		"in the Prolog or the health check, or with 'canhazgpu admin --register'\n", r.stderr)
	r = f.run(alice, "status")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "No GPUs registered for node "+f.node+".\n", r.stdout)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Empty(t, snap.GPUs)
	r = f.run(alice, "admin", "--register")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "only root may")

	r = f.run(root, "admin", "--register")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Registered 2 GPUs on node "+f.node+" (2 changed):\n")

	// The hardware seen by a user's scan differs: reported, not applied.
	f.setGPUs(idleGPUs(3))
	r = f.run(alice, "status")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "canhazgpu: note: the GPUs detected here differ from node "+f.node+"'s registration in the store (2 registered, 3 detected); "+
		"the store's registration stands until root registers again ('canhazgpu admin --register')\n", r.stderr)
	snap, err = f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 2)
	// Root's next look applies it.
	require.Equal(t, 0, f.run(root, "status").code)
	snap, err = f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 3)
}

func TestUsersCannotSetSitePolicy(t *testing.T) {
	f := registered(t, idleGPUs(2))
	for _, args := range [][]string{
		{"--fake-file", f.gpuFile, "status"},
		{"--node", "other", "status"},
		{"--memory-threshold", "999999", "reserve"},
		{"--config", f.cfgFile, "status"},
	} {
		r := f.run(alice, args...)
		require.Equal(t, 2, r.code, "%v", args)
		require.Regexp(t, `^Error: config: --[a-z-]+: only root may set `, r.stderr, "%v", args)
	}
	env, _, errw := f.env(alice)
	env.Environ = append(env.Environ, "CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT=1000d")
	err := Run(context.Background(), []string{"reserve", "--wait"}, env)
	require.Equal(t, 2, ExitCode(err))
	require.Equal(t, "Error: config: CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT: only root may set queue.heartbeat_timeout; site settings come from "+config.SystemFile, ErrorLine(err))
	require.Empty(t, errw.String())
	snap, serr := f.store().Snapshot(context.Background())
	require.NoError(t, serr)
	require.Empty(t, snap.Reservations)
	require.Empty(t, snap.Queue)
}

func TestAdminReleaseClearsTheQueueAndLeavesBatchJobsToRoot(t *testing.T) {
	f := registered(t, idleGPUs(2), `admin.group = "gpuadmins"`)
	ctx := context.Background()
	carol := Identity{Name: "carol", UID: 2003, Groups: []string{"gpuadmins"}}
	require.Equal(t, 0, f.run(alice, "reserve", "--gpu-ids", "0").code)
	snap, err := f.store().Snapshot(ctx)
	require.NoError(t, err)
	gpu1, _ := snap.GPUByIndex(1)
	_, err = f.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "dora", JobID: "77", GPUs: []string{gpu1.UUID}})
	require.NoError(t, err)
	// bob waits for two GPUs: a dead waiter at the head would block the node.
	_, err = f.store().Enqueue(ctx, allocator.QueueEntry{ID: "bob-waits", Kind: allocator.KindManual, User: "bob", Count: 2}, time.Hour)
	require.NoError(t, err)

	r := f.run(carol, "admin", "--release", "--gpu-ids", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: GPU 1 is held by slurm job 77 of dora: only root may end a batch job's reservation\n", r.stderr)

	r = f.run(carol, "admin", "--release", "--user", "bob")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Removed bob's request for 2 GPUs from the queue of node "+f.node+".\n", r.stdout)
	snap, err = f.store().Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Queue)

	r = f.run(root, "admin", "--release", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "Released GPU 1 on node "+f.node+" (held by dora, slurm).\n", r.stdout)
}

func TestAdminACLMakesTheCredentials(t *testing.T) {
	f := newFixture(t, idleGPUs(1))
	r := f.run(alice, "admin", "--acl")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "only root may make the store credentials")
}

func TestReserveHintReleasesWhatWasReserved(t *testing.T) {
	f := registered(t, idleGPUs(2))
	r := f.run(alice, "reserve", "--gpus", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "\nRelease it earlier with: canhazgpu release\n")

	// Made for another user on a named node: the hint names both, and
	// running it releases the reservation.
	r = f.run(root, "--node", f.node, "reserve", "--user", "bob", "--gpus", "1")
	require.Equal(t, 0, r.code, r.stderr)
	hint := "canhazgpu release --node " + f.node + " --user bob"
	require.Contains(t, r.stdout, "\nRelease it earlier with: "+hint+"\n")
	r = f.run(root, strings.Fields(hint)[1:]...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Released 1 GPU on node "+f.node)
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1)
	for _, res := range snap.Reservations {
		require.Equal(t, "alice", res.User)
	}

	require.Equal(t, "gpu-07", shellWord("gpu-07"))
	require.Equal(t, `'o'"'"'brien x'`, shellWord("o'brien x"))
}

// TestGPUIDsOfANewGPU: a GPU added since the node was registered can be
// asked for by index; root's request registers it and is granted, a
// user's is refused saying who registers, and changes nothing.
func TestGPUIDsOfANewGPU(t *testing.T) {
	f := registered(t, idleGPUs(1))
	f.setGPUs(idleGPUs(2))

	r := f.run(alice, "reserve", "--gpu-ids", "1")
	require.Equal(t, 2, r.code, r.stdout)
	require.Contains(t, r.stderr, "want a GPU registered for node "+f.node+"; root registers them")
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 1)

	r = f.run(root, "reserve", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Reserved 1 GPU")
	snap, err = f.store().Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 2)
	g, _ := snap.GPUByIndex(1)
	require.Equal(t, "root", snap.Reservations[g.UUID].User)
}
