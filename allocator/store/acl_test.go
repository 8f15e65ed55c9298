package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

// roleUsers are the test's Redis users: one per role, named after it,
// with the rules ACLRules gives.
func roleUsers(t testing.TB) map[string]string {
	t.Helper()
	users := map[string]string{}
	for _, r := range Roles {
		rules, err := ACLRules(r)
		require.NoError(t, err)
		users[string(r)] = "on >" + string(r) + "-pw " + rules
	}
	return users
}

// startWithRoles starts a private server with the three role users.
func startWithRoles(t testing.TB) *redistest.Server {
	t.Helper()
	own, err := redistest.Start(redistest.Options{Users: roleUsers(t)})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	return own
}

func roleConn(url string, r Role) Conn {
	return Conn{URL: url, Username: string(r), Password: string(r) + "-pw", DialTimeout: time.Second, OpTimeout: 2 * time.Second}
}

// openAs opens node's store on own as role.
func openAs(t testing.TB, own *redistest.Server, r Role, node string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), roleConn(own.URL(), r), node, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// rawAs is a plain client logged in as role, for commands the store never
// sends.
func rawAs(t testing.TB, own *redistest.Server, r Role) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: own.Addr(), Username: string(r), Password: string(r) + "-pw", MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// dumpAll is every key of the server with its serialized value, read as
// the unrestricted default user: two equal dumps mean nothing changed.
func dumpAll(t testing.TB, own *redistest.Server) map[string]string {
	t.Helper()
	c := own.Client()
	defer c.Close()
	out, err := redistest.Dump(context.Background(), c)
	require.NoError(t, err)
	return out
}

func requireNoPerm(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	require.True(t, strings.HasPrefix(err.Error(), "NOPERM"), "%s: want NOPERM, got %v", what, err)
}

// batchSetup registers node with 4 GPUs as admin and gives GPU 0 to slurm
// job 7 of alice.
func batchSetup(t *testing.T, own *redistest.Server, node string) (admin *Store, grant allocator.Grant) {
	t.Helper()
	ctx := context.Background()
	admin = openAs(t, own, RoleAdmin, node, Options{})
	_, err := admin.Register(ctx, fakeGPUs(4), false)
	require.NoError(t, err)
	grant, err = admin.Allocate(ctx, allocator.Request{RequestID: "slurm-prolog-7-0", Kind: allocator.KindSlurm,
		User: "alice", UID: 1001, JobID: "7", GPUs: []string{uuid(0)}})
	require.NoError(t, err)
	return admin, grant
}

func TestCLIRoleChangesOnlyInteractiveState(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	batchSetup(t, own, "n1")
	cli := openAs(t, own, RoleCLI, "n1", Options{})

	// Everything the CLI does works.
	g, err := cli.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	run, err := cli.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
		User: "carol", Count: 1, Lease: time.Minute})
	require.NoError(t, err)
	_, err = cli.Renew(ctx, "carol", run.Token, run.GPUs, time.Minute)
	require.NoError(t, err)
	_, err = cli.Enqueue(ctx, allocator.QueueEntry{ID: "dave-1", Kind: allocator.KindManual, User: "dave", Count: 2}, time.Minute)
	require.NoError(t, err)
	_, err = cli.QueueHeartbeat(ctx, "dave-1")
	require.NoError(t, err)
	_, err = cli.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
		User: "dave", Count: 2, Lease: time.Minute, QueueEntry: "dave-1"})
	var pending *allocator.PendingError
	require.ErrorAs(t, err, &pending, "the queue's head holds the one free GPU")
	require.NoError(t, cli.LeaveQueue(ctx, "dave-1"))
	snap, err := cli.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, allocator.KindSlurm, snap.Reservations[uuid(0)].Kind, "the CLI reads batch reservations")
	require.Len(t, snap.Reservations, 3)
	_, err = cli.Snapshots(ctx)
	require.NoError(t, err)
	nodes, err := cli.Nodes(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"n1"}, nodes)
	r, err := cli.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "bob", Kinds: []allocator.Kind{allocator.KindManual}})
	require.NoError(t, err)
	require.Equal(t, g.GPUs, r.GPUs)
	hist, err := cli.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 1)

	// Nothing else: root-owned keys, scripts, flushing, listing, config.
	raw := rawAs(t, own, RoleCLI)
	k := keysFor("n1")
	before := dumpAll(t, own)
	for _, key := range []string{k.bres, k.gpus, k.flags, k.policy} {
		requireNoPerm(t, raw.HSet(ctx, key, uuid(3), "x").Err(), "HSET "+key)
		requireNoPerm(t, raw.HDel(ctx, key, uuid(0)).Err(), "HDEL "+key)
	}
	requireNoPerm(t, raw.SAdd(ctx, registryKey, "evil").Err(), "SADD chg:nodes")
	requireNoPerm(t, raw.Set(ctx, k.reply("slurm-prolog-8-0", true), "forged", 0).Err(), "a batch reply in advance")
	requireNoPerm(t, raw.Eval(ctx, "return 1", nil).Err(), "EVAL")
	requireNoPerm(t, raw.EvalSha(ctx, strings.Repeat("0", 40), nil).Err(), "EVALSHA")
	requireNoPerm(t, raw.ScriptLoad(ctx, "return 1").Err(), "SCRIPT LOAD")
	requireNoPerm(t, raw.FunctionLoadReplace(ctx, library.code).Err(), "FUNCTION LOAD")
	requireNoPerm(t, raw.FunctionFlush(ctx).Err(), "FUNCTION FLUSH")
	requireNoPerm(t, raw.FlushAll(ctx).Err(), "FLUSHALL")
	requireNoPerm(t, raw.FlushDB(ctx).Err(), "FLUSHDB")
	requireNoPerm(t, raw.Del(ctx, k.res).Err(), "DEL")
	requireNoPerm(t, raw.Keys(ctx, "*").Err(), "KEYS")
	requireNoPerm(t, raw.Scan(ctx, 0, "*", 10).Err(), "SCAN")
	requireNoPerm(t, raw.ConfigGet(ctx, "*").Err(), "CONFIG GET")
	requireNoPerm(t, raw.Do(ctx, "acl", "whoami").Err(), "ACL")
	requireNoPerm(t, raw.Set(ctx, "other-app-key", "x", 0).Err(), "a key outside canhazgpu's")
	// A function that writes a root-owned key is refused at the call.
	requireNoPerm(t, raw.FCall(ctx, registerOp.function, []string{k.gpus, k.res, k.bres, k.mru, k.hist, k.policy}, "1").Err(), "FCALL register")
	requireNoPerm(t, raw.FCall(ctx, flagsOp.function, []string{k.flags}).Err(), "FCALL flags")
	// Through the store: registering, flags, batch grants and releases.
	_, err = cli.Register(ctx, fakeGPUs(1), true)
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	require.ErrorIs(t, cli.SetFlags(ctx, nil), allocator.ErrNotPermitted)
	_, err = cli.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindSlurm,
		User: "eve", JobID: "8", GPUs: []string{uuid(3)}})
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	for name, rel := range map[string]allocator.Release{
		"everyone's":      {RequestID: allocator.NewRequestID()},
		"the job's":       {RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: "7"},
		"the GPU by name": {RequestID: allocator.NewRequestID(), GPUs: []string{uuid(0), uuid(1)}},
		"the owner's":     {RequestID: allocator.NewRequestID(), User: "alice"},
	} {
		_, err = cli.Release(ctx, rel)
		require.ErrorIs(t, err, allocator.ErrNotPermitted, name)
	}
	require.Equal(t, before, dumpAll(t, own), "no refused call changed anything")
}

func TestMonitorRoleOnlyReads(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin, _ := batchSetup(t, own, "n1")
	g, err := admin.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	_, err = admin.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Token: g.Token})
	require.NoError(t, err)

	mon := openAs(t, own, RoleMonitor, "n1", Options{})
	snap, err := mon.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 4)
	require.Equal(t, "alice", snap.Reservations[uuid(0)].User)
	snaps, err := mon.Snapshots(ctx)
	require.NoError(t, err)
	require.Len(t, snaps, 1)
	hist, err := mon.History(ctx, time.Time{})
	require.NoError(t, err)
	require.Len(t, hist, 1)
	_, err = mon.Histories(ctx, []string{"n1"}, time.Time{})
	require.NoError(t, err)

	before := dumpAll(t, own)
	_, err = mon.Allocate(ctx, manual("mallory", 1))
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	_, err = mon.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID()})
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	_, err = mon.Enqueue(ctx, allocator.QueueEntry{ID: "m", Kind: allocator.KindManual, User: "mallory", Count: 1}, time.Minute)
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	raw := rawAs(t, own, RoleMonitor)
	k := keysFor("n1")
	requireNoPerm(t, raw.HSet(ctx, k.res, uuid(1), "x").Err(), "HSET res")
	requireNoPerm(t, raw.Set(ctx, k.reply("x", false), "x", 0).Err(), "SET req")
	// FCALL_RO refuses functions that write; FCALL is not granted.
	require.Error(t, raw.FCallRO(ctx, allocateOp.function, []string{k.res}).Err())
	requireNoPerm(t, raw.FCall(ctx, leaveOp.function, []string{k.q, k.qe, k.qx, k.res}, "x").Err(), "FCALL")
	require.Equal(t, before, dumpAll(t, own))
}

func TestAdminRoleDoesEverythingCanhazgpuNeedsOnly(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin, g := batchSetup(t, own, "n1")
	require.NoError(t, admin.LoadFunctions(ctx))
	require.NoError(t, admin.SetFlags(ctx, []allocator.Flag{{Message: "drained"}}))
	_, err := admin.Enqueue(ctx, allocator.QueueEntry{ID: "w", Kind: allocator.KindManual, User: "bob", Count: 1}, time.Minute)
	require.NoError(t, err)
	r, err := admin.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: "7"})
	require.NoError(t, err)
	require.Equal(t, g.GPUs, r.GPUs)
	r, err = admin.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Queue: true})
	require.NoError(t, err)
	require.Len(t, r.Dequeued, 1)
	_, err = admin.Register(ctx, fakeGPUs(2), true)
	require.NoError(t, err)
	snap, err := admin.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.GPUs, 2)
	require.Len(t, snap.Flags, 1)

	raw := rawAs(t, own, RoleAdmin)
	requireNoPerm(t, raw.FlushAll(ctx).Err(), "FLUSHALL")
	requireNoPerm(t, raw.Keys(ctx, "*").Err(), "KEYS")
	requireNoPerm(t, raw.ConfigGet(ctx, "*").Err(), "CONFIG GET")
	requireNoPerm(t, raw.Eval(ctx, "return 1", nil).Err(), "EVAL")
	requireNoPerm(t, raw.FunctionFlush(ctx).Err(), "FUNCTION FLUSH")
	requireNoPerm(t, raw.Do(ctx, "shutdown").Err(), "SHUTDOWN")
	requireNoPerm(t, raw.Do(ctx, "acl", "list").Err(), "ACL")
	requireNoPerm(t, raw.Set(ctx, "other-app-key", "x", 0).Err(), "a key outside canhazgpu's")
}

func TestCLIRoleWithoutFunctionsGetsTheClearError(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	cli := openAs(t, own, RoleCLI, "n1", Options{})
	_, err := cli.Snapshot(ctx)
	require.ErrorIs(t, err, ErrNoFunctions)
	require.ErrorContains(t, err, LibraryName())
	require.ErrorContains(t, err, "canhazgpu admin --register")
	_, err = cli.Allocate(ctx, manual("bob", 1))
	require.ErrorIs(t, err, ErrNoFunctions)
	mon := openAs(t, own, RoleMonitor, "n1", Options{})
	_, err = mon.Snapshots(ctx)
	require.NoError(t, err, "no node registered: nothing to call yet")

	admin := openAs(t, own, RoleAdmin, "n1", Options{})
	require.NoError(t, admin.LoadFunctions(ctx))
	snap, err := cli.Snapshot(ctx)
	require.NoError(t, err, "a root program loaded them")
	require.Empty(t, snap.GPUs)
}

// TestRolesCoverTheOperationsCommands reads every redis.call of the Lua
// code: the admin role must hold each command, and the CLI role each
// command of the operations it runs (a command missing from a role would
// fail only on the path that sends it).
func TestRolesCoverTheOperationsCommands(t *testing.T) {
	call := regexp.MustCompile(`redis\.call\('([A-Z]+)'`)
	allowed := func(r Role) []string {
		rules, err := ACLRules(r)
		require.NoError(t, err)
		var cmds []string
		for _, f := range strings.Fields(rules) {
			if c, ok := strings.CutPrefix(f, "+"); ok {
				cmds = append(cmds, c)
			}
		}
		return cmds
	}
	admin, cli := allowed(RoleAdmin), allowed(RoleCLI)
	libCmds := call.FindAllStringSubmatch(luaFile("lib"), -1)
	for _, o := range ops {
		cliRuns := o != registerOp && o != flagsOp && o != forgetOp && o != violationsOp && o != violationKillsOp
		for _, m := range append(call.FindAllStringSubmatch(luaFile(o.name), -1), libCmds...) {
			c := strings.ToLower(m[1])
			require.Contains(t, admin, c, "admin role for %s", o.name)
			if cliRuns {
				require.Contains(t, cli, c, "cli role for %s", o.name)
			}
		}
	}
	require.NotContains(t, cli, "del")
	require.NotContains(t, cli, "sadd")
	require.NotContains(t, cli, "srem")
	for _, r := range Roles {
		for _, c := range allowed(r) {
			require.False(t, slices.Contains([]string{"eval", "evalsha", "script", "flushall", "flushdb", "keys", "scan", "config", "acl", "function"}, c),
				"%s may %s", r, c)
		}
	}
	_, err := ACLRules("root")
	var in *allocator.InputError
	require.True(t, errors.As(err, &in))
}

// TestACLRulesInDocs: the store guide shows each role's rules as they are.
func TestACLRulesInDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/store.md")
	require.NoError(t, err)
	for _, r := range Roles {
		rules, err := ACLRules(r)
		require.NoError(t, err)
		want := fmt.Sprintf("user canhazgpu-%s on #<sha256 of its password> %s\n", r, rules)
		require.True(t, strings.Contains(string(doc), want), "docs/store.md lacks the %s rules:\n%s", r, want)
	}
}

func TestRolesWorkOnAnotherDatabase(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	url := strings.TrimSuffix(own.URL(), "/0") + "/3" // go-redis sends SELECT 3
	admin, err := Open(ctx, roleConn(url, RoleAdmin), "n1", Options{})
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.Register(ctx, fakeGPUs(1), false)
	require.NoError(t, err)
	cli, err := Open(ctx, roleConn(url, RoleCLI), "n1", Options{})
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Allocate(ctx, manual("bob", 1))
	require.NoError(t, err)
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: own.Socket, DB: 3})
	defer c.Close()
	require.Equal(t, int64(1), c.HLen(ctx, keysFor("n1").res).Val(), "the grant is in database 3")
}

// A CLI user made by the version before the queue's expiry set (no ZRANK,
// ZCARD or qx) is refused before anything changes, until the site gives
// it this version's rules (docs/store.md).
func TestCLIUserOfTheEarlierRulesIsRefusedBeforeAnyChange(t *testing.T) {
	ctx := context.Background()
	own := startWithRoles(t)
	admin := openAs(t, own, RoleAdmin, "old-acl", Options{})
	_, err := admin.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	rules, err := ACLRules(RoleCLI)
	require.NoError(t, err)
	earlier := strings.NewReplacer(" +zrank +zcard", "", " ~chg:{*}:qx", "").Replace(rules)
	require.NotEqual(t, rules, earlier)
	c := own.Client()
	defer c.Close()
	args := []any{"ACL", "SETUSER", string(RoleCLI), "reset", "on", ">" + string(RoleCLI) + "-pw"}
	for _, r := range strings.Fields(earlier) {
		args = append(args, r)
	}
	require.NoError(t, c.Do(ctx, args...).Err())

	cli := openAs(t, own, RoleCLI, "old-acl", Options{})
	before := dumpAll(t, own)
	_, err = cli.Allocate(ctx, manual("alice", 1))
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	_, err = cli.Enqueue(ctx, allocator.QueueEntry{ID: "alice-1", Kind: allocator.KindManual, User: "alice", Count: 1}, time.Minute)
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	require.Equal(t, before, dumpAll(t, own))
}
