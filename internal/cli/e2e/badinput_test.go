package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/accounttest"
)

// storeState reads everything the store keeps for a node, plus the node
// registry, in a comparable form. Stored replies to request ids
// (…:req:<id>) are left out: a refused release records its answer for
// retries, which changes no reservation.
func storeState(t *testing.T, node string) map[string]string {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	defer c.Close()
	keys, err := c.Keys(ctx, "chg:{"+node+"}:*").Result()
	require.NoError(t, err)
	keys = append(keys, "chg:nodes")
	state := map[string]string{}
	for _, k := range keys {
		if strings.Contains(k, "}:req:") {
			continue
		}
		typ, err := c.Type(ctx, k).Result()
		require.NoError(t, err)
		var v any
		switch typ {
		case "hash":
			v, err = c.HGetAll(ctx, k).Result()
		case "zset":
			v, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "set":
			var m []string
			m, err = c.SMembers(ctx, k).Result()
			sort.Strings(m)
			v = m
		case "string":
			v, err = c.Get(ctx, k).Result()
		case "none":
		default:
			t.Fatalf("key %s has unexpected type %s", k, typ)
		}
		require.NoError(t, err)
		state[k] = fmt.Sprint(v)
	}
	return state
}

// TestBadInputs: each bad command line gets one "Error:" line naming the
// bad value, exit status 2 (usage) or 1 (refused), nothing on stdout, and
// leaves the store as it was.
func TestBadInputs(t *testing.T) {
	accounttest.Ensure(t, userB)
	n := newNode(t, `{"gpus": [{"index": 0}, {"index": 1}, {"index": 2},
		{"index": 3, "memory_used_mb": 2048, "processes": [{"pid": 4321, "name": "python3", "user": "mallory", "used_memory_mb": 2048, "cmdline": ["python3"]}]}]}`)
	r := n.run("reserve", "--user", "holder", "--gpu-ids", "0", "--duration", "1h")
	require.Equal(t, 0, r.code, r.stderr)
	// GPU 2 belongs to a batch job of the same account, as the Prolog
	// would reserve it.
	ctx := context.Background()
	snap, err := n.store().Snapshot(ctx)
	require.NoError(t, err)
	gpu2, ok := snap.GPUByIndex(2)
	require.True(t, ok)
	_, err = n.store().Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "holder", JobID: "77", GPUs: []string{gpu2.UUID}})
	require.NoError(t, err)
	long := strings.Repeat("x", 201)
	durationAccepted := "want a positive duration such as 30s, 30m, 2h, 1d, 0.5h or 1h30m (each unit once, largest first; at most 36500d)"

	cases := []struct {
		as   string // "" root, else a test account
		args []string
		code int
		want string // part of the error line
	}{
		{"", []string{"frobnicate"}, 2, `unknown command "frobnicate": want one of status, run, reserve, release, queue, report, violations, web, admin, version`},
		{"", []string{}, 2, "no command given: want one of status, run,"},
		{"", []string{"help", "nope"}, 2, `unknown command "nope"`},
		{"", []string{"status", "--bogus"}, 2, "unknown flag --bogus for canhazgpu status: want one of --json, --all-nodes,"},
		{"", []string{"status", "-x"}, 2, "unknown flag -x for canhazgpu status"},
		{"", []string{"status", "extra"}, 2, `unexpected argument "extra": canhazgpu status takes no arguments`},
		{"", []string{"status", "--all-nodes=perhaps"}, 2, `invalid --all-nodes "perhaps": want true or false`},
		{"", []string{"version", "extra"}, 2, `unexpected argument "extra"`},
		{"", []string{"reserve", "--gpus", "0"}, 2, `invalid --gpus "0": want a positive whole number of GPUs`},
		{"", []string{"reserve", "--gpus", "-1"}, 2, `invalid --gpus "-1": want a positive whole number of GPUs`},
		{"", []string{"reserve", "--gpus", "two"}, 2, `invalid --gpus "two": want a positive whole number of GPUs`},
		{"", []string{"reserve", "--gpus", "9"}, 2, `invalid --gpus "9": want at most 4, the number of GPUs of node ` + n.name},
		{"", []string{"reserve", "--gpus"}, 2, "flag --gpus needs a value: how many GPUs to reserve"},
		{"", []string{"reserve", "--gpus", "1", "--gpu-ids", "2"}, 2, "--gpus 1 and --gpu-ids 2 conflict"},
		{"", []string{"reserve", "--gpu-ids", "a"}, 2, `invalid --gpu-ids "a": want GPU indices separated by commas`},
		{"", []string{"reserve", "--gpu-ids", "1,1"}, 2, `invalid --gpu-ids "1,1": want GPU indices separated by commas, each once`},
		{"", []string{"reserve", "--gpu-ids", ""}, 2, `invalid --gpu-ids "": want GPU indices`},
		{"", []string{"reserve", "--gpu-ids", "-1"}, 2, `invalid --gpu-ids "-1": want GPU indices`},
		{"", []string{"reserve", "--gpu-ids", "7"}, 2, `invalid --gpu-ids "7": want indices of this node's GPUs: 0,1,2,3`},
		{"", []string{"reserve", "--duration", "0"}, 2, `invalid --duration "0": ` + durationAccepted},
		{"", []string{"reserve", "--duration", "1d1d"}, 2, `invalid --duration "1d1d": ` + durationAccepted},
		{"", []string{"reserve", "--duration", "30m1h"}, 2, `invalid --duration "30m1h": ` + durationAccepted},
		{"", []string{"reserve", "--duration", "9223372036s"}, 2, `invalid --duration "9223372036s": ` + durationAccepted},
		{"", []string{"reserve", "--wait=36501d"}, 2, `invalid --wait "36501d": ` + durationAccepted + ", or no value to wait"},
		{"", []string{"reserve", "--gpus", "1", "--gpus", "2"}, 2, `flag --gpus given twice ("1", then "2"): want each flag at most once`},
		{"", []string{"reserve", "-g", "1", "--gpus=1"}, 2, `flag --gpus given twice ("1", then "1")`},
		{"", []string{"reserve", "--duration", "1h", "--duration", "2h"}, 2, `flag --duration given twice ("1h", then "2h")`},
		{"", []string{"reserve", "--gpu-ids", "1", "--gpu-ids", "3"}, 2, `flag --gpu-ids given twice ("1", then "3")`},
		{"", []string{"reserve", "--note", "a", "--note", "b"}, 2, `flag --note given twice ("a", then "b")`},
		{"", []string{"status", "-jj"}, 2, `flag --json given twice ("true", then "true")`},
		{"", []string{"--node", "a", "--node", "b", "status"}, 2, `flag --node given twice ("a", then "b")`},
		{"", []string{"--node", "a", "status", "--node", "b"}, 2, `flag --node given twice ("a", then "b")`},
		{"", []string{"--node", "", "status"}, 2, `invalid --node "": want a non-empty value, or no --node at all for the default`},
		{"", []string{"status", "--node="}, 2, `invalid --node "": want a non-empty value`},
		{"", []string{"--config", "", "status"}, 2, `invalid --config "": want a non-empty value, or no --config at all for the default`},
		{"", []string{"reserve", "--duration", "-5m"}, 2, `invalid --duration "-5m": want a positive duration`},
		{"", []string{"reserve", "--duration", "5"}, 2, `invalid --duration "5": want a positive duration`},
		{"", []string{"reserve", "--duration", "forever"}, 2, `invalid --duration "forever": want a positive duration`},
		{"", []string{"reserve", "--wait=soon"}, 2, `invalid --wait "soon": want a positive duration`},
		{"", []string{"reserve", "--wait", "--nonblock"}, 2, "--wait and --nonblock conflict"},
		{"", []string{"reserve", "--note", long}, 2, `invalid --note "` + long + `": want one line of at most 200 bytes`},
		{"", []string{"reserve", "--note", "two\nlines"}, 2, `invalid --note "two\nlines": want one line`},
		{"", []string{"reserve", "--user", "bad,name"}, 2, `invalid --user "bad,name": want an account name without commas`},
		{"", []string{"reserve", "--gpus", "3"}, 1, "Not enough GPUs available. Requested: 3, Available: 1 (1 GPUs in use without reservation - run 'canhazgpu status' for details)"},
		{"", []string{"reserve", "--gpu-ids", "0"}, 1, "Not enough GPUs available. Requested: 1, Available: 0: GPU 0 is reserved by holder (manual)"},
		{userB, []string{"reserve", "--user", "holder"}, 1, "--user holder: only root may (no admin.group is configured) act for another user; you are chg-bob"},
		{"", []string{"run"}, 2, "no command given: want canhazgpu run [flags] -- CMD ARGS..."},
		{"", []string{"run", "--"}, 2, "no command given: want canhazgpu run [flags] -- CMD ARGS..."},
		{"", []string{"run", "--", ""}, 2, `invalid command name "": want the name or path of a program, as in canhazgpu run [flags] -- CMD ARGS...`},
		{"", []string{"run", "--gpus", "1", ""}, 2, `invalid command name ""`},
		{"", []string{"run", "--timeout", "0", "--", "true"}, 2, `invalid --timeout "0": want a positive duration`},
		{"", []string{"run", "--timeout", "abc", "--", "true"}, 2, `invalid --timeout "abc": want a positive duration`},
		{"", []string{"run", "--gpus", "0", "--", "true"}, 2, `invalid --gpus "0"`},
		{"", []string{"run", "--gpu-ids", "3", "--", "true"}, 1, "Not enough GPUs available. Requested: 1, Available: 0 (1 GPUs in use without reservation"},
		{"", []string{"run", "--", "no-such-command-xyz"}, 127, "no-such-command-xyz: command not found"},
		{"", []string{"release", "--gpu-ids", "x"}, 2, `invalid --gpu-ids "x"`},
		{userB, []string{"release", "--gpu-ids", "0"}, 1, "GPU 0 is reserved by holder (manual), not by chg-bob"},
		{userB, []string{"release", "--gpu-ids", "2"}, 1, "GPU 2 is reserved by holder (slurm job 77), not by chg-bob: only the owner, root or the admin group may release it"},
		{"", []string{"queue", "--json=maybe"}, 2, `invalid --json "maybe": want true or false`},
		{"", []string{"report", "--days", "0"}, 2, `invalid --days "0": want a whole number of days from 1 to 3650`},
		{"", []string{"report", "--days", "99999"}, 2, `invalid --days "99999": want a whole number of days from 1 to 3650`},
		{"", []string{"admin"}, 2, "canhazgpu admin needs one of --register, --gpus N (register GPUs), --release (release reservations), --acl (store credentials), --check-config (check the config file) or --forget-node NAME (remove a node)"},
		{"", []string{"admin", "--gpus", "8"}, 2, `invalid --gpus "8": want 4, the number of GPUs the provider detects on node ` + n.name},
		{userB, []string{"admin", "--gpus", "4"}, 1, "canhazgpu admin: only root may (no admin.group is configured); you are chg-bob"},
		{"", []string{"admin", "--release"}, 2, "--release needs --gpu-ids LIST, --user NAME or both"},
		{"", []string{"admin", "--force", "--release", "--user", "x"}, 2, "--force goes with --gpus"},
		{"", []string{"admin", "--release", "--gpu-ids", "9"}, 2, `invalid --gpu-ids "9": want indices of GPUs registered for node ` + n.name + ": 0,1,2,3"},
		{"", []string{"--redis-url", "ftp://x", "status"}, 2, `--redis-url: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got "ftp://x"`},
		{"", []string{"status", "--memory-threshold", "-1"}, 2, "--memory-threshold: gpu.memory_threshold_mb: must be a positive integer, got -1"},
		{"", []string{"--gpu-provider", "bogus", "status"}, 2, `--gpu-provider: gpu.provider: must be one of auto, nvml, amdsmi, fake, got "bogus"`},
		{"", []string{"--node", "bad&name", "status"}, 2, `invalid node name "bad&name": want 1-63 letters, digits`},
		{"", []string{"--config", "/nonexistent/canhazgpu.toml", "status"}, 2, "file named by --config: open /nonexistent/canhazgpu.toml: no such file or directory"},
		// Site policy is root's: a user's flags cannot name another config,
		// other GPUs, another node or another threshold.
		{userB, []string{"--config", "/tmp/mine.toml", "status"}, 2, "config: --config: only root may set another config file"},
		{userB, []string{"--fake-file", "/tmp/mine.json", "status"}, 2, "config: --fake-file: only root may set gpu.fake_file"},
		{userB, []string{"--gpu-provider", "fake", "status"}, 2, "config: --gpu-provider: only root may set gpu.provider"},
		{userB, []string{"--node", "other", "status"}, 2, "config: --node: only root may set node"},
		{userB, []string{"--memory-threshold", "999999", "reserve"}, 2, "config: --memory-threshold: only root may set gpu.memory_threshold_mb"},
		{userB, []string{"reserve", "--duration", "8d"}, 2, `invalid --duration "8d": want at most 7d, this site's reserve.max_duration`},
		{userB, []string{"admin", "--register"}, 1, "canhazgpu admin: only root may (no admin.group is configured); you are chg-bob"},
		{"", []string{"admin", "--forget-node", "bad&name"}, 2, `invalid --forget-node "bad&name": want 1-63 letters, digits`},
		{"", []string{"admin", "--forget-node", "no-such-node"}, 2, `invalid --forget-node "no-such-node": want a node in the store: `},
		{"", []string{"admin", "--forget-node", n.name, "--gpus", "4"}, 2, "--forget-node goes alone or with --force: want canhazgpu admin --forget-node NAME [--force]"},
		{userB, []string{"admin", "--forget-node", n.name}, 1, "canhazgpu admin --forget-node: only root may remove a node from the store; you are chg-bob"},
		{"", []string{"admin", "--forget-node", n.name}, 1, "node " + n.name + " holds 2 reservations (GPU 0 (GPU-"},
		{"", []string{"admin", "--check-config", "/nonexistent/canhazgpu.toml"}, 1, "config: file named by --config: open /nonexistent/canhazgpu.toml: no such file or directory"},
	}
	require.GreaterOrEqual(t, len(cases), 30)
	for _, c := range cases {
		t.Run(strings.Join(append([]string{c.as}, c.args...), " "), func(t *testing.T) {
			before := storeState(t, n.name)
			r := n.runAs(c.as, c.args...)
			require.Equal(t, c.code, r.code, "stderr: %s", r.stderr)
			line := oneErrorLine(t, r)
			require.Contains(t, line, c.want)
			require.Empty(t, r.stdout)
			require.Equal(t, before, storeState(t, n.name), "the store is unchanged")
		})
	}
}
