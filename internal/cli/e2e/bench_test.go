package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

// reserveRace starts procs `canhazgpu reserve --nonblock` processes at
// once on a fresh node of gpus idle GPUs and waits for all of them. It
// checks that exactly gpus were granted, each GPU once, and that every
// refusal gives the right numbers.
func reserveRace(tb testing.TB, procs, gpus int) time.Duration {
	tb.Helper()
	n := newNode(tb, idleGPUs(gpus))
	require.Equal(tb, 0, n.run("admin", "--gpus", fmt.Sprint(gpus)).code)
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*bytes.Buffer, procs)
	errs := make([]*bytes.Buffer, procs)
	for i := range cmds {
		cmds[i] = n.command("", "reserve", "--nonblock", "--short", "--user", fmt.Sprintf("user%02d", i))
		outs[i], errs[i] = &bytes.Buffer{}, &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], errs[i]
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Run()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	granted := map[string]bool{}
	for i, c := range cmds {
		switch c.ProcessState.ExitCode() {
		case 0:
			gpu := strings.TrimSpace(outs[i].String())
			require.False(tb, granted[gpu], "GPU %s granted twice", gpu)
			granted[gpu] = true
		case 1:
			require.Equal(tb, "Error: Not enough GPUs available. Requested: 1, Available: 0\n", errs[i].String())
		default:
			tb.Fatalf("reserve exited %d: %s", c.ProcessState.ExitCode(), errs[i].String())
		}
	}
	require.Len(tb, granted, gpus)
	require.Len(tb, n.reservations(), gpus)
	return elapsed
}

func TestConcurrentReserveGrantsEachGPUOnce(t *testing.T) {
	reserveRace(t, 64, 8)
}

// BenchmarkConcurrentReserve: 64 `canhazgpu reserve --nonblock` processes
// started at once on 8 fake GPUs; wall time until all have finished
// (process start included), with exactly 8 granted.
func BenchmarkConcurrentReserve(b *testing.B) {
	var total time.Duration
	for b.Loop() {
		total += reserveRace(b, 64, 8)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/64procs")
}

// manyNodes registers nodes × gpus GPUs in the store, a quarter of them
// reserved, and returns the node names.
func manyNodes(tb testing.TB, prefix string, nodes, gpus int) []string {
	tb.Helper()
	ctx := context.Background()
	base, err := store.Open(ctx, store.Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 5 * time.Second}, prefix+"0", store.Options{})
	require.NoError(tb, err)
	defer base.Close()
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
		st, err := base.ForNode(names[i])
		require.NoError(tb, err)
		reg := make([]allocator.GPU, gpus)
		for g := range reg {
			reg[g] = allocator.GPU{UUID: fmt.Sprintf("GPU-%s-%04d-%02d", prefix, i, g), Index: g, Minor: g, Name: "NVIDIA H100 80GB HBM3"}
		}
		_, err = st.Register(ctx, reg, false)
		require.NoError(tb, err)
		_, err = st.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
			User: fmt.Sprintf("user%d", i%50), Count: gpus / 4, Lease: time.Hour, Note: "bench"})
		require.NoError(tb, err)
	}
	return names
}

// TestStatusAllNodesCommands checks what `status --all-nodes` sends: one
// SMEMBERS for the registry and one FCALL_RO per node, which the store
// sends as a single pipeline (store.Snapshots): two round trips whatever
// the number of nodes.
func TestStatusAllNodesCommands(t *testing.T) {
	names := manyNodes(t, "fleet", 20, 8)
	n := newNode(t, idleGPUs(8))
	n.environ = append(n.environ, "CANHAZGPU_NODE="+names[0])
	require.Equal(t, 0, n.run("status").code) // the scan matches the registration from here on
	cmds := clientCommands(t, func() {
		r := n.run("status", "--all-nodes")
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, names[0]+" (this node)\n")
		require.Contains(t, r.stdout, names[19]+" (reservations from the store")
	})
	require.Equal(t, "smembers", cmds[0])
	for _, c := range cmds[1:] {
		require.Equal(t, "fcall_ro", c)
	}
	nodes, err := n.store().Nodes(context.Background())
	require.NoError(t, err)
	require.Len(t, cmds, 1+len(nodes), "one snapshot per node in the store")
}

// BenchmarkStatusAllNodes: `canhazgpu status --all-nodes` (the binary,
// table to /dev/null) over 1,000 nodes × 8 GPUs in one Redis.
func BenchmarkStatusAllNodes(b *testing.B) {
	names := manyNodes(b, "bench", 1000, 8)
	n := newNode(b, idleGPUs(8))
	n.environ = append(n.environ, "CANHAZGPU_NODE="+names[0])
	require.Equal(b, 0, n.run("status").code)
	for _, format := range []string{"table", "json"} {
		b.Run(format, func(b *testing.B) {
			args := []string{"status", "--all-nodes"}
			if format == "json" {
				args = append(args, "--json")
			}
			for b.Loop() {
				cmd := n.command("", args...)
				cmd.Stdout = io.Discard
				var errw bytes.Buffer
				cmd.Stderr = &errw
				require.NoError(b, cmd.Run(), errw.String())
			}
		})
	}
}
