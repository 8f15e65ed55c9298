package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestEveryCommandHappyPath runs each command once as a user would.
func TestEveryCommandHappyPath(t *testing.T) {
	n := newNode(t, idleGPUs(4))

	r := n.run("version")
	require.Equal(t, 0, r.code)
	require.Regexp(t, `^canhazgpu dev \(commit unknown, built unknown\)\n$`, r.stdout)
	require.Equal(t, r.stdout, n.run("--version").stdout)

	r = n.run("admin", "--gpus", "4")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "Registered 4 GPUs on node "+n.name)

	r = n.run("reserve", "--gpus", "2", "--short", "--duration", "2h")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^\d,\d\n$`, r.stdout)

	r = n.run("run", "--gpus", "2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^\d,\d\n$`, r.stdout)

	r = n.run("status")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 2, strings.Count(r.stdout, " manual "), r.stdout)
	require.Equal(t, 2, strings.Count(r.stdout, "available"), r.stdout)

	r = n.run("queue")
	require.Equal(t, 0, r.code)
	require.Equal(t, "No requests waiting on node "+n.name+".\n", r.stdout)

	r = n.run("report", "--days", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "GPU usage over the last 1 day")

	r = n.run("release")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^Released 2 GPUs on node e2e\d+: \d,\d\n$`, r.stdout)
	require.Empty(t, n.reservations())

	r = n.run("status", "--all-nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, n.name+" (this node)\n")

	r = n.run("--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "Usage: canhazgpu [global flags] COMMAND [flags]")
}

// TestStatusIsOneRoundTrip watches the server with MONITOR while the
// binary shows the status of a registered node: one function call.
func TestStatusIsOneRoundTrip(t *testing.T) {
	n := newNode(t, idleGPUs(8))
	require.Equal(t, 0, n.run("status").code) // registers the node
	cmds := clientCommands(t, func() { require.Equal(t, 0, n.run("status").code) })
	require.Equal(t, []string{"fcall_ro"}, cmds)
	// So are a reservation and its release (the functions are loaded).
	require.Equal(t, 0, n.run("reserve").code)
	require.Equal(t, 0, n.run("release").code)
	cmds = clientCommands(t, func() { require.Equal(t, 0, n.run("reserve", "--gpus", "2").code) })
	require.Equal(t, []string{"fcall"}, cmds)
	cmds = clientCommands(t, func() { require.Equal(t, 0, n.run("release").code) })
	require.Equal(t, []string{"fcall"}, cmds)
}

// clientCommands returns the commands clients sent while fn ran, in
// order: what scripts call inside the server and the connection
// handshake of go-redis (HELLO, CLIENT SETINFO) are left out.
func clientCommands(t testing.TB, fn func()) []string {
	t.Helper()
	conn, err := net.Dial("unix", srv.Socket)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", line)
	fn()
	// A marker from another connection ends what fn caused.
	marker := fmt.Sprintf("end-%d", time.Now().UnixNano())
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	defer c.Close()
	require.NoError(t, c.Echo(context.Background(), marker).Err())
	var cmds []string
	for {
		line, err := rd.ReadString('\n')
		require.NoError(t, err)
		if strings.Contains(line, marker) {
			return cmds
		}
		m := monitorLine.FindStringSubmatch(line)
		if m == nil || m[1] == "lua" {
			continue
		}
		switch cmd := strings.ToLower(m[2]); cmd {
		case "hello", "client":
		default:
			cmds = append(cmds, cmd)
		}
	}
}

// monitorLine: +1700000000.123456 [0 127.0.0.1:5000] "fcall" ...
var monitorLine = regexp.MustCompile(`^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"`)

func TestStatusJSONThroughTheBinary(t *testing.T) {
	n := newNode(t, `{"gpus": [{"index": 0, "memory_used_mb": 45},
		{"index": 1, "memory_used_mb": 2048, "processes": [{"pid": 777, "name": "python3", "user": "mallory", "used_memory_mb": 2048, "cmdline": ["python3", "--model", "org/model-x"]}]}]}`)
	r := n.run("status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var doc struct {
		Version int    `json:"version"`
		Node    string `json:"node"`
		GPUs    []struct {
			Index        int     `json:"index"`
			Status       string  `json:"status"`
			MemoryUsedMB int64   `json:"memory_used_mb"`
			Model        string  `json:"model"`
			Reservation  *string `json:"reservation"`
			Processes    []struct {
				PID  int    `json:"pid"`
				User string `json:"user"`
			} `json:"processes"`
		} `json:"gpus"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	require.Equal(t, 1, doc.Version)
	require.Equal(t, n.name, doc.Node)
	require.Equal(t, "available", doc.GPUs[0].Status)
	require.Equal(t, int64(45), doc.GPUs[0].MemoryUsedMB)
	require.Equal(t, "unreserved", doc.GPUs[1].Status)
	require.Equal(t, "org/model-x", doc.GPUs[1].Model)
	require.Equal(t, "mallory", doc.GPUs[1].Processes[0].User)
	require.Nil(t, doc.GPUs[1].Reservation)
}

// TestMixedSeedTableThroughTheStore reproduces the seed's "Mixed Usage
// Patterns" table end to end: reservations made by the binary, their
// stored times moved back as if made earlier (the store's clock is
// Redis's, which a test cannot set), usage from the fake GPU file.
func TestMixedSeedTableThroughTheStore(t *testing.T) {
	n := newNode(t, `{"gpus": [{"index": 0}, {"index": 1}, {"index": 2}, {"index": 3}]}`)
	ctx := context.Background()
	require.Equal(t, 0, n.run("reserve", "--user", "charlie", "--gpu-ids", "3", "--duration", "8h").code)
	// bob's run holds GPU 0 while this test rewrites its times.
	run := n.command("", "run", "--user", "bob", "--gpu-ids", "0", "--", "sleep", "30")
	require.NoError(t, run.Start())
	t.Cleanup(func() { _ = run.Process.Kill(); _ = run.Wait() })
	require.Eventually(t, func() bool { return n.reservations()[0] == "bob" }, 5*time.Second, 20*time.Millisecond)
	n.setGPUs(`{"gpus": [
		{"index": 0, "memory_used_mb": 8452, "utilization": 73, "processes": [{"pid": 31337, "name": "python3", "user": "bob", "used_memory_mb": 8452, "cmdline": ["python3", "chat.py", "--model", "microsoft/DialoGPT-large"]}]},
		{"index": 1, "memory_used_mb": 1024, "processes": [{"pid": 22222, "name": "jupyter", "user": "alice", "used_memory_mb": 1024, "cmdline": ["jupyter", "notebook", "--model=teknium/OpenHermes-2.5-Mistral-7B"]}]},
		{"index": 2, "memory_used_mb": 45, "utilization": 0},
		{"index": 3, "memory_used_mb": 0, "utilization": 2}]}`)

	c := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	defer c.Close()
	snap, err := n.store().Snapshot(ctx)
	require.NoError(t, err)
	res := "chg:{" + n.name + "}:res"
	mru := "chg:{" + n.name + "}:mru"
	nowMS := snap.Now.UnixMilli()
	shift := func(index int, fields map[string]int64) {
		g, ok := snap.GPUByIndex(index)
		require.True(t, ok)
		raw, err := c.HGet(ctx, res, g.UUID).Result()
		require.NoError(t, err)
		var r map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw), &r))
		for k, v := range fields {
			r[k] = v
		}
		b, err := json.Marshal(r)
		require.NoError(t, err)
		require.NoError(t, c.HSet(ctx, res, g.UUID, b).Err())
	}
	// Times are in ms (see allocator/store/lib.lua). The table shows
	// whole seconds rounded down; half a second of margin, into the past
	// for start times and into the future for the expiry, keeps them
	// exact while the status runs.
	shift(0, map[string]int64{"s": nowMS - 90*60000 - 500, "h": nowMS - 5000 - 500})
	shift(3, map[string]int64{"s": nowMS - 45*60000 - 500, "e": nowMS + (7*60+15)*60000 + 500})
	g2, _ := snap.GPUByIndex(2)
	require.NoError(t, c.HSet(ctx, mru, g2.UUID, nowMS-2*3600000-500).Err())

	r := n.run("status")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Equal(t, []string{
		"GPU STATUS USER DURATION TYPE MODEL DETAILS VALIDATION UTIL",
		"0 in use bob 1h 30m 0s run microsoft/DialoGPT-large heartbeat 5s ago 8452MB, 1 processes 73%",
		"1 in use alice teknium/OpenHermes-2.5-Mistral-7B WITHOUT RESERVATION 1024MB used by PID 22222 (jupyter) -",
		"2 available free for 2h 45MB used 0%",
		"3 in use charlie 45m 0s manual expires in 7h 15m 0s no usage detected 2%",
	}, []string{collapse(lines[0]), collapse(lines[2]), collapse(lines[3]), collapse(lines[4]), collapse(lines[5])}, r.stdout)
}

func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestQueueWaitAndCtrlC(t *testing.T) {
	n := newNode(t, idleGPUs(1), `queue.poll_interval = "50ms"`)
	require.Equal(t, 0, n.run("reserve").code)
	wait := n.command("", "reserve", "--wait")
	var errw strings.Builder
	wait.Stderr = &errw
	require.NoError(t, wait.Start())
	require.Eventually(t, func() bool { return strings.Contains(n.run("queue").stdout, "1 request waiting") }, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, wait.Process.Signal(syscall.SIGINT))
	err := wait.Wait()
	require.Error(t, err)
	require.Equal(t, 130, wait.ProcessState.ExitCode())
	require.Contains(t, errw.String(), "Interrupted by interrupt: left the queue.\n")
	require.Equal(t, "No requests waiting on node "+n.name+".\n", n.run("queue").stdout)
	require.Equal(t, map[int]string{0: "root"}, n.reservations())
}
