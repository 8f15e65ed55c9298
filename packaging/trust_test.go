package packaging

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/accounttest"
	"canhazgpu/internal/redistest"
)

// testTrustBoundary runs on the installed package what an ordinary user
// could try with nothing but the CLI's own flags, variables and files
// (docs/security.md), as test accounts against a Redis that serves nobody
// without one of the ACL roles' passwords. Each attempt is refused with one
// line and leaves the store byte for byte as it was; the same accounts can
// still use canhazgpu for themselves, and cannot read any credential.
func testTrustBoundary(t *testing.T) {
	const mallory, alice, victim = "chg-mallory", "chg-alice", "chg-victim"
	for _, a := range []string{mallory, alice, victim} {
		accounttest.Ensure(t, a)
	}
	// Readable by the test accounts, which t.TempDir's parent is not.
	dir, err := os.MkdirTemp("", "canhazgpu-trust-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	fake := filepath.Join(dir, "gpus.json")
	require.NoError(t, os.WriteFile(fake, []byte(`{"gpus": [{"index": 0}, {"index": 1}, {"index": 2}, {"index": 3}]}`), 0o644))
	// A user's own files, which the attacks name.
	mine := filepath.Join(dir, "mine")
	require.NoError(t, os.Mkdir(mine, 0o777))
	require.NoError(t, os.WriteFile(filepath.Join(mine, "gpus.json"), []byte(`{"gpus": [{"index": 0, "uuid": "GPU-ghost-0"}]}`), 0o666))
	require.NoError(t, os.WriteFile(filepath.Join(mine, "config.toml"), []byte("[admin]\ngroup = \"chg-mallory\"\n"), 0o666))

	// Step 1 of docs/security.md: the roles' passwords and ACL users.
	acl := output(t, "/usr/bin/canhazgpu", "admin", "--acl")
	users := map[string]string{}
	for line := range strings.Lines(acl) {
		fields := strings.SplitN(strings.TrimSpace(line), " ", 3)
		require.Len(t, fields, 3, line)
		require.Equal(t, "user", fields[0], line)
		users[fields[1]] = fields[2]
	}
	require.Len(t, users, 3)
	require.Equal(t, "root root 600\n", output(t, "stat", "-c", "%U %G %a", "/etc/canhazgpu/secrets/admin.password"))
	require.Equal(t, "root canhazgpu 640\n", output(t, "stat", "-c", "%U %G %a", "/etc/canhazgpu/secrets/cli.password"))
	// Step 2: a server whose default user needs a password too: the
	// test's own, for its inspection.
	users["default"] = "on >harness-only ~* &* +@all"
	srv, err := redistest.Start(redistest.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	inspect := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket, Password: "harness-only"})
	t.Cleanup(func() { inspect.Close() })

	// Step 4: the installed config names the server and the credentials.
	const node = "pkgtrust"
	conf := "node = \"" + node + "\"\n" +
		"[redis]\nurl = \"" + srv.URL() + "\"\n" +
		"username = \"canhazgpu-admin\"\npassword_file = \"/etc/canhazgpu/secrets/admin.password\"\n" +
		"cli_username = \"canhazgpu-cli\"\ncli_password_file = \"/etc/canhazgpu/secrets/cli.password\"\n" +
		"[gpu]\nprovider = \"fake\"\nfake_file = \"" + fake + "\"\n"
	require.NoError(t, os.WriteFile("/etc/canhazgpu/config.toml", []byte(conf), 0o644))

	env := []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", "HOME=" + dir}
	as := func(account string, extraEnv []string, args ...string) (string, int) {
		t.Helper()
		var cmd *exec.Cmd
		if account == "root" {
			cmd = exec.Command("/usr/bin/canhazgpu", args...)
		} else {
			cmd = exec.Command("runuser", append([]string{"-u", account, "--", "/usr/bin/canhazgpu"}, args...)...)
		}
		cmd.Env, cmd.Dir = append(slices.Clone(env), extraEnv...), dir
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			require.NoError(t, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}

	// Root registers the node and holds GPU 0 for the victim; a Slurm job
	// of the victim's holds GPU 1.
	out, code := as("root", nil, "admin", "--register")
	require.Equal(t, 0, code, out)
	out, code = as("root", nil, "reserve", "--user", victim, "--gpu-ids", "0", "--duration", "1h")
	require.Equal(t, 0, code, out)
	admin, err := store.Open(context.Background(), store.Conn{URL: srv.URL(), Username: "canhazgpu-admin",
		PasswordFile: "/etc/canhazgpu/secrets/admin.password", DialTimeout: time.Second, OpTimeout: 2 * time.Second}, node, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	snap, err := admin.Snapshot(context.Background())
	require.NoError(t, err)
	gpu1, _ := snap.GPUByIndex(1)
	_, err = admin.Allocate(context.Background(), allocator.Request{RequestID: "pkgtrust-job-77", Kind: allocator.KindSlurm,
		User: victim, JobID: "77", GPUs: []string{gpu1.UUID}})
	require.NoError(t, err)

	before := dump(t, inspect)
	refused := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"admin group from the environment", []string{"CANHAZGPU_ADMIN_GROUP=" + mallory}, []string{"admin", "--release", "--gpu-ids", "0"}, 2,
			"Error: config: CANHAZGPU_ADMIN_GROUP: only root may set admin.group; site settings come from /etc/canhazgpu/config.toml"},
		{"a config file of the user's by flag", nil, []string{"--config", filepath.Join(mine, "config.toml"), "admin", "--release", "--user", victim}, 2,
			"Error: config: --config: only root may set another config file"},
		{"a config file of the user's by variable", []string{"CANHAZGPU_CONFIG=" + filepath.Join(mine, "config.toml")}, []string{"release", "--user", victim}, 2,
			"Error: config: CANHAZGPU_CONFIG: only root may set another config file"},
		{"release for another user", nil, []string{"release", "--user", victim}, 1,
			"Error: --user " + victim + ": only root may (no admin.group is configured) act for another user; you are " + mallory},
		{"reserve for another user", nil, []string{"reserve", "--user", victim}, 1,
			"Error: --user " + victim + ": only root may (no admin.group is configured) act for another user"},
		{"release another user's GPU", nil, []string{"release", "--gpu-ids", "0"}, 1,
			"Error: GPU 0 is reserved by " + victim + " (manual"},
		{"release a batch job's GPU", nil, []string{"release", "--gpu-ids", "1"}, 1,
			"Error: GPU 1 is reserved by " + victim + " (slurm job 77)"},
		{"admin release", nil, []string{"admin", "--release", "--gpu-ids", "1"}, 1,
			"Error: canhazgpu admin: only root may (no admin.group is configured); you are " + mallory},
		{"ghost GPUs from a fake file", nil, []string{"--fake-file", filepath.Join(mine, "gpus.json"), "status"}, 2,
			"Error: config: --fake-file: only root may set gpu.fake_file"},
		{"another GPU provider", nil, []string{"--gpu-provider", "fake", "status"}, 2,
			"Error: config: --gpu-provider: only root may set gpu.provider"},
		{"another node", nil, []string{"--node", "other", "status"}, 2,
			"Error: config: --node: only root may set node"},
		{"registering", nil, []string{"admin", "--gpus", "1", "--force"}, 1,
			"Error: canhazgpu admin: only root may"},
		{"a 1000-day queue place", []string{"CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT=1000d"}, []string{"reserve", "--gpus", "4", "--wait"}, 2,
			"Error: config: CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT: only root may set queue.heartbeat_timeout"},
		{"history cap", []string{"CANHAZGPU_HISTORY_MAX_RECORDS=1"}, []string{"status"}, 2,
			"Error: config: CANHAZGPU_HISTORY_MAX_RECORDS: only root may set history.max_records"},
		{"memory threshold", nil, []string{"--memory-threshold", "999999", "reserve"}, 2,
			"Error: config: --memory-threshold: only root may set gpu.memory_threshold_mb"},
		{"endless duration", nil, []string{"reserve", "--duration", "9223372036s"}, 2,
			`Error: invalid --duration "9223372036s"`},
		{"a duration beyond the site's maximum", nil, []string{"reserve", "--duration", "8d"}, 2,
			`Error: invalid --duration "8d": want at most 7d, this site's reserve.max_duration`},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			out, code := as(mallory, c.env, c.args...)
			require.Equal(t, c.code, code, out)
			require.Equal(t, 1, strings.Count(out, "\n"), "one line: %q", out)
			require.True(t, strings.HasPrefix(out, c.want), "%q does not start with %q", out, c.want)
			require.Equal(t, before, dump(t, inspect), "the store is unchanged, byte for byte")
		})
	}

	t.Run("no credential can be read", func(t *testing.T) {
		ids := accounttest.Output(t, mallory, "id", "-Gn")
		require.NotContains(t, strings.Fields(ids), "canhazgpu")
		for _, f := range []string{"admin.password", "cli.password", "monitor.password"} {
			out, err := accounttest.Run(mallory, "cat", "/etc/canhazgpu/secrets/"+f)
			require.Error(t, err)
			require.Contains(t, out, "Permission denied")
		}
		// Without a password Redis serves nobody.
		for _, args := range [][]string{
			{"-u", srv.URL(), "SET", "chg:{" + node + "}:gpus", "x"},
			{"-u", srv.URL(), "--user", "canhazgpu-cli", "--pass", "guess", "--no-auth-warning", "HGETALL", "chg:{" + node + "}:res"},
		} {
			out, _ := accounttest.Run(mallory, "redis-cli", args...)
			require.Regexp(t, `NOAUTH|WRONGPASS`, out)
		}
		require.Equal(t, before, dump(t, inspect))
	})

	t.Run("users still serve themselves", func(t *testing.T) {
		out, code := as(alice, nil, "status")
		require.Equal(t, 0, code, out)
		require.Contains(t, out, victim)
		out, code = as(alice, nil, "reserve", "--gpus", "1", "--short")
		require.Equal(t, 0, code, out)
		out, code = as(alice, nil, "queue")
		require.Equal(t, 0, code, out)
		out, code = as(alice, nil, "release")
		require.Equal(t, 0, code, out)
		out, code = as(alice, nil, "report")
		require.Equal(t, 0, code, out)
		require.Contains(t, out, alice)
		// The command run starts has the user's groups only: it cannot
		// read the credential the setgid CLI read, although run starts it
		// through a re-executed (so again setgid) keeper.
		gid := strings.TrimSpace(output(t, "getent", "group", "canhazgpu"))
		gid = strings.Split(gid, ":")[2]
		// Not through a shell: bash and dash give up a group they were
		// started with, which would hide the fault this looks for.
		callers := []string{"LD_LIBRARY_PATH=/opt/x", "TMPDIR=/tmp/y", "GOTRACEBACK=crash"}
		out, code = as(alice, callers, "run", "--gpus", "1", "--", "id", "-G")
		require.Equal(t, 0, code, out)
		require.Regexp(t, `^[0-9 ]+\n$`, out)
		require.NotContains(t, strings.Fields(out), gid, "the command runs without the canhazgpu group")
		// The loader took LD_LIBRARY_PATH and TMPDIR from the setgid CLI
		// and again from its keeper, and the Go runtime set their
		// GOTRACEBACK to none; the command gets the caller's values back.
		out, code = as(alice, callers, "run", "--gpus", "1", "--", "env")
		require.Equal(t, 0, code, out)
		lines := strings.Split(out, "\n")
		require.Subset(t, lines, callers, "the command has the caller's environment")
		require.Subset(t, lines, []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID"})
		require.Regexp(t, `(?m)^CUDA_VISIBLE_DEVICES=[0-9]$`, out)
		out, code = as(alice, nil, "run", "--gpus", "1", "--", "cat", "/etc/canhazgpu/secrets/cli.password")
		require.Equal(t, 1, code, out)
		require.Contains(t, out, "Permission denied")
	})
}

// dump is every key of the server with its serialized value.
func dump(t *testing.T, c *redis.Client) map[string]string {
	t.Helper()
	out, err := redistest.Dump(context.Background(), c)
	require.NoError(t, err)
	return out
}
