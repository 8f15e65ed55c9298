package health

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/procstop"
	"canhazgpu/internal/redistest"
)

// fakeProcs stands in for /proc and the signals: every PID it knows is
// an ordinary process of its uid; Stop records what it was asked to stop.
type fakeProcs struct {
	mu      sync.Mutex
	ids     map[int]procstop.Identity
	stopped []int
}

func (f *fakeProcs) Identify(pid int) (procstop.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.ids[pid]
	if !ok {
		return procstop.Identity{}, os.ErrProcessDone
	}
	return id, nil
}

func (f *fakeProcs) Stop(_ context.Context, pid int, want procstop.Identity, _ time.Duration) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids[pid] != want {
		return "", procstop.ErrChanged
	}
	f.stopped = append(f.stopped, pid)
	delete(f.ids, pid)
	return "term", nil
}

func (f *fakeProcs) stops() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stopped)
}

// notes records the notify action's lines by user.
type notes struct {
	mu  sync.Mutex
	got []string
}

func (n *notes) notify(user, msg string) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, user+": "+msg)
	return 1, nil
}

// seen is what was told so far, kept.
func (n *notes) seen() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.got...)
}

func (n *notes) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.got
	n.got = nil
	return out
}

// violatorsNode has, under every step enabled with grace times:
// bob's two processes on the unreserved GPU 0; carol (kill-exempt) on the
// unreserved GPU 1; dave on alice's GPU 2; erin's process on GPU 3 of her
// Slurm job 77, outside the job; and nvidia-smi (a kill-exempt command) run
// by frank beside bob on GPU 0.
func violatorsNode(t *testing.T, extra map[string]string) (*testNode, *Deps, *fakeProcs, *notes, *time.Time) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\ncat >> "+dir+"/events\necho >> "+dir+"/events\nenv > "+dir+"/env\necho mailed\n"), 0o755))
	// The exempt command is a file of its own: exemption is by the file a
	// process runs, not by the name (see TestExemptCommandIsTheFile).
	smi := filepath.Join(dir, "nvidia-smi")
	require.NoError(t, os.WriteFile(smi, []byte("#!/bin/sh\n"), 0o755))
	settings := map[string]string{
		"health.action":                   "flag",
		"violations.actions":              `["notify", "exec", "kill"]`,
		"violations.notify_after":         "0",
		"violations.exec_after":           "5m",
		"violations.kill_after":           "10m",
		"violations.mark_after":           "15m",
		"violations.renotify_every":       "30m",
		"violations.kills_per_hour":       "2",
		"violations.kill_exempt_users":    `["carol"]`,
		"violations.kill_exempt_commands": `["` + smi + `"]`,
		"violations.exec":                 hook,
	}
	for k, v := range extra {
		settings[k] = v
	}
	n := newTestNode(t, settings)
	n.reserve(allocator.KindManual, "alice", 1002, "", "", 2)
	n.reserve(allocator.KindSlurm, "erin", 1005, "77", "boot-now", 3)
	n.jobFile(allocator.KindSlurm, "77", jobstate.JobFile{User: "erin", UID: 1005, BootID: "boot-now"}, 3)
	n.stepSocket("77", "0")
	n.sc.Show("IDLE", "", "")
	n.gpus(4, map[int][]fakeProc{
		0: {{PID: 501, User: "bob", UID: 1001, MB: 2048}, {PID: 502, User: "bob", UID: 1001, MB: 2048},
			{PID: 509, User: "frank", UID: 1006, MB: 2048}},
		1: {{PID: 503, User: "carol", UID: 1003, MB: 2048}},
		2: {{PID: 504, User: "dave", UID: 1004, MB: 2048}},
		3: {{PID: 505, User: "erin", UID: 1005, JobID: "78", MB: 2048}},
	})
	procs := &fakeProcs{ids: map[int]procstop.Identity{
		501: {UID: 1001, Start: 11, Exe: "/usr/bin/python3"}, 502: {UID: 1001, Start: 12, Exe: "/usr/bin/python3"},
		503: {UID: 1003, Start: 13, Exe: "/usr/bin/python3"}, 504: {UID: 1004, Start: 14, Exe: "/usr/bin/python3"},
		505: {UID: 1005, Start: 15, Exe: "/usr/bin/python3"}, 509: {UID: 1006, Start: 19, Exe: smi, ExeFile: fileID(t, smi)},
	}}
	told := &notes{}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	deps := n.deps()
	deps.Processes, deps.Notify = procs, told.notify
	deps.Now = func() time.Time { return now }
	return n, deps, procs, told, &now
}

func actionKinds(r *Report) []string {
	var out []string
	for _, a := range r.Actions {
		out = append(out, a.What)
	}
	return out
}

func hasLine(lines []string, prefix, part string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) && strings.Contains(l, part) })
}

// TestViolatorsEscalate drives one set of violations through the steps by
// the injected clock: notify at once (offenders, the holder of a used
// reservation, the owner of a job whose process runs outside it), exec
// after 5 minutes, kill after 10 (never exempt users or commands, at most
// 2 an hour), flag the node after 15, notify again after 30; and nothing
// twice in between.
func TestViolatorsEscalate(t *testing.T) {
	n, deps, procs, told, now := violatorsNode(t, nil)
	ctx := context.Background()
	events := filepath.Join(filepath.Dir(n.settings["violations.exec"]), "events")

	r := Run(ctx, deps)
	require.Equal(t, StatusViolations, r.Status, r.Error)
	lines := told.take()
	require.True(t, hasLine(lines, "bob: ", "you use GPU 0 on "+n.name+" without a reservation (pid 501 python3, pid 502 python3)"), lines)
	require.True(t, hasLine(lines, "bob: ", "will be stopped after 12:10 UTC"), lines)
	require.True(t, hasLine(lines, "carol: ", "GPU 1"), lines)
	require.True(t, hasLine(lines, "dave: ", "you use GPU 2 on "+n.name+", reserved by alice"), lines)
	require.True(t, hasLine(lines, "alice: ", "dave uses your GPU 2"), lines)
	require.True(t, hasLine(lines, "erin: ", "run outside job 77"), lines)
	require.True(t, hasLine(lines, "frank: ", "GPU 0"), lines)
	require.False(t, hasLine(lines, "frank: ", "stopped"), "nvidia-smi is never stopped")
	require.Len(t, lines, 6)
	require.False(t, hasLine(lines, "carol: ", "stopped"), "carol's processes are never stopped")
	require.NotContains(t, actionKinds(r), "flags", "mark_after not over")
	require.Empty(t, n.snapshot().Flags)
	require.NoFileExists(t, events)

	// A minute on: nothing is told twice.
	*now = now.Add(time.Minute)
	r = Run(ctx, deps)
	require.Empty(t, told.take())
	require.Empty(t, r.Actions)

	// 5 minutes: the site's command, once per violation and user.
	*now = now.Add(4 * time.Minute)
	r = Run(ctx, deps)
	require.Equal(t, []string{"exec", "exec", "exec", "exec", "exec"}, actionKinds(r))
	require.Contains(t, r.Actions[0].Message, ": ok: mailed")
	data, err := os.ReadFile(events)
	require.NoError(t, err)
	require.Contains(t, string(data), `"user":"bob"`)
	require.Contains(t, string(data), `"message":"GPU 0 used by bob (pid 501, +2 more) without reservation"`)
	env, err := os.ReadFile(filepath.Join(filepath.Dir(events), "env"))
	require.NoError(t, err)
	require.NotContains(t, string(env), "CANHAZGPU", "a fixed environment")
	require.Contains(t, string(env), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")

	// 10 minutes: kill, 2 of them this hour: bob's two; dave and erin
	// wait for the limit; carol and nvidia-smi are exempt.
	*now = now.Add(5 * time.Minute)
	r = Run(ctx, deps)
	require.Equal(t, []int{501, 502}, procs.stops())
	require.Contains(t, actionKinds(r), "kill_limited")
	require.NotContains(t, actionKinds(r), "flags")

	// 15 minutes: the node is flagged.
	*now = now.Add(5 * time.Minute)
	n.gpus(4, map[int][]fakeProc{
		1: {{PID: 503, User: "carol", UID: 1003, MB: 2048}},
		2: {{PID: 504, User: "dave", UID: 1004, MB: 2048}},
		3: {{PID: 505, User: "erin", UID: 1005, JobID: "78", MB: 2048}},
	})
	r = Run(ctx, deps)
	require.Contains(t, actionKinds(r), "flags")
	require.Len(t, n.snapshot().Flags, 3)
	require.Empty(t, told.take())

	// 30 minutes: told again.
	*now = now.Add(15 * time.Minute)
	Run(ctx, deps)
	lines = told.take()
	require.True(t, hasLine(lines, "dave: ", "processes are being stopped"), lines)
	require.True(t, hasLine(lines, "alice: ", "dave uses your GPU 2"), lines)

	// An hour after the first kills: the limit has room for dave and erin.
	*now = now.Add(41 * time.Minute)
	Run(ctx, deps)
	require.Equal(t, []int{501, 502, 504, 505}, procs.stops())

	recs, err := n.store().Violations(ctx, time.Time{})
	require.NoError(t, err)
	killed := map[string][]int{}
	for _, rec := range recs {
		killed[rec.User] = append(killed[rec.User], rec.Killed()...)
	}
	require.Equal(t, map[string][]int{"bob": {501, 502}, "carol": nil, "dave": {504}, "erin": {505}, "frank": nil}, killed)
}

// TestViolatorsDefault: without [violations] actions, violations are
// recorded and the node marked as before; no one is told or stopped.
func TestViolatorsDefault(t *testing.T) {
	n, deps, procs, told, _ := violatorsNode(t, map[string]string{"violations.actions": "[]", "violations.mark_after": "0"})
	r := Run(context.Background(), deps)
	require.Equal(t, StatusViolations, r.Status)
	require.Equal(t, []string{"flags", "comment"}, actionKinds(r))
	require.Empty(t, told.take())
	require.Empty(t, procs.stops())
	recs, err := n.store().Violations(context.Background(), time.Time{})
	require.NoError(t, err)
	require.Len(t, recs, 5)
	for _, rec := range recs {
		require.Empty(t, rec.Actions)
		require.Equal(t, n.name, rec.Node)
	}
}

// TestViolatorsPIDReused: a process that is no longer the one seen (its
// PID reused) is not stopped, and the record says so; the attempt does not
// count against the hourly limit, and the process, seen again, is stopped
// at the next run.
func TestViolatorsPIDReused(t *testing.T) {
	n, deps, procs, _, now := violatorsNode(t, nil) // at most 2 kills an hour
	ctx := context.Background()
	Run(ctx, deps)
	*now = now.Add(time.Hour)
	deps.Processes = &changing{procs}
	r := Run(ctx, deps)
	require.Empty(t, procs.stops())
	require.Contains(t, actionKinds(r), "error")
	require.Equal(t, map[string][]string{"bob": {allocator.KillNotSame, allocator.KillNotSame}}, killOutcomes(t, n))

	*now = now.Add(time.Minute)
	deps.Processes = procs
	Run(ctx, deps)
	require.Equal(t, []int{501, 502}, procs.stops(), "tried again, within the limit")
	require.Equal(t, map[string][]string{"bob": {allocator.KillTerm, allocator.KillTerm}}, killOutcomes(t, n))
}

// killOutcomes is the outcomes of the recorded kills, by offender.
func killOutcomes(t *testing.T, n *testNode) map[string][]string {
	t.Helper()
	recs, err := n.store().Violations(context.Background(), time.Time{})
	require.NoError(t, err)
	out := map[string][]string{}
	for _, rec := range recs {
		for _, a := range rec.Actions {
			if a.What == "kill" {
				out[rec.User] = append(out[rec.User], a.Outcome)
			}
		}
	}
	return out
}

// TestViolatorsStoppedMidKill: a check that ends between claiming a kill
// and saying how it went leaves the claim pending; the next runs leave the
// process alone until the claim's run would have hit its time limit
// ([health] timeout), then stop it and record how.
func TestViolatorsStoppedMidKill(t *testing.T) {
	n, deps, procs, _, now := violatorsNode(t, map[string]string{"violations.actions": `["kill"]`, "violations.kill_after": "0",
		"violations.mark_after": "0", "violations.kills_per_hour": "10", "health.timeout": "1h"})
	ctx := context.Background()
	// Reads judge a pending claim by the reader's clock: the check's
	// clock starts at it.
	*now = time.Now()
	deps.Processes = &dying{procs}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, deps)
	}()
	<-done
	require.Empty(t, procs.stops())
	claimed := map[string][]string{"bob": {allocator.KillPending, allocator.KillPending}, "dave": {allocator.KillPending},
		"erin": {allocator.KillPending}}
	require.Equal(t, claimed, killOutcomes(t, n))

	deps.Processes = procs
	*now = now.Add(59 * time.Minute)
	Run(ctx, deps)
	require.Empty(t, procs.stops(), "the claims may still be under way")
	require.Equal(t, claimed, killOutcomes(t, n))

	*now = now.Add(2 * time.Minute)
	Run(ctx, deps)
	require.Equal(t, []int{501, 502, 504, 505}, procs.stops())
	require.Equal(t, map[string][]string{"bob": {allocator.KillTerm, allocator.KillTerm}, "dave": {allocator.KillTerm},
		"erin": {allocator.KillTerm}}, killOutcomes(t, n))
}

// dying identifies processes, then the check ends as it goes to stop one,
// as a check killed by the scheduler mid-run would.
type dying struct{ *fakeProcs }

func (d *dying) Stop(context.Context, int, procstop.Identity, time.Duration) (string, error) {
	runtime.Goexit()
	return "", nil
}

// changing identifies each process as seen, but by the time of the
// signal its PID names a new process.
type changing struct{ *fakeProcs }

func (c *changing) Stop(ctx context.Context, pid int, want procstop.Identity, wait time.Duration) (string, error) {
	want.Start++
	return c.fakeProcs.Stop(ctx, pid, want, wait)
}

// TestViolatorsExecTimeout: a site command that does not end is killed,
// with what it started, at exec_timeout, and the run goes on.
func TestViolatorsExecTimeout(t *testing.T) {
	n, deps, _, _, _ := violatorsNode(t, map[string]string{"violations.actions": `["exec"]`, "violations.exec_after": "0",
		"violations.exec_timeout": "1s"})
	pidFile := filepath.Join(n.dir, "child")
	require.NoError(t, os.WriteFile(n.settings["violations.exec"],
		[]byte("#!/bin/sh\nsleep 60 &\necho $! > "+pidFile+"\nexec sleep 60\n"), 0o755))
	r := Run(context.Background(), deps)
	require.Equal(t, StatusViolations, r.Status, r.Error)
	require.Contains(t, r.Actions[0].Message, "no end within 1s")
	data, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	// The child was killed with the command: it ends (a pidfd turns
	// readable), without anyone signalling it again.
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		defer unix.Close(fd)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 30000)
		require.NoError(t, err)
		require.Equal(t, 1, n, "the command's child ended")
	} else {
		require.ErrorIs(t, err, unix.ESRCH)
	}
}

// TestViolatorsWithoutRootsCredential: a check run with the cli role's
// credential (an admin trying it by hand, or a user) records nothing,
// tells and stops no one, and says so in one skip action.
func TestViolatorsWithoutRootsCredential(t *testing.T) {
	users := map[string]string{}
	for _, r := range store.Roles {
		rules, err := store.ACLRules(r)
		require.NoError(t, err)
		users[string(r)] = "on >" + string(r) + "-pw " + rules
	}
	own, err := redistest.Start(redistest.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	dir := t.TempDir()
	for _, r := range []store.Role{store.RoleAdmin, store.RoleCLI} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, string(r)), []byte(string(r)+"-pw\n"), 0o600))
	}
	n, _, procs, told, now := violatorsNode(t, map[string]string{"redis.url": own.URL(),
		"redis.username": "admin", "redis.password_file": filepath.Join(dir, "admin"), "violations.notify_after": "0"})

	n.settings["redis.username"], n.settings["redis.password_file"] = "cli", filepath.Join(dir, "cli")
	n.writeConfig()
	deps := n.deps()
	deps.Processes, deps.Notify = procs, told.notify
	deps.Now = func() time.Time { return *now }
	r := Run(context.Background(), deps)
	require.Equal(t, StatusViolations, r.Status)
	require.Contains(t, actionKinds(r), "skip")
	require.Empty(t, told.take(), "no one told")
	require.Empty(t, procs.stops(), "no one stopped")

	admin, err := store.Open(context.Background(), store.Conn{URL: own.URL(), Username: "admin", Password: "admin-pw",
		DialTimeout: time.Second, OpTimeout: 2 * time.Second}, n.name, store.Options{})
	require.NoError(t, err)
	defer admin.Close()
	recs, err := admin.Violations(context.Background(), time.Time{})
	require.NoError(t, err)
	require.Empty(t, recs, "nothing recorded")
}

// fileID is the device and inode of path, as procstop.Identify reads a
// process's executable.
func fileID(t *testing.T, path string) procstop.FileID {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return procstop.FileID{Dev: st.Dev, Ino: st.Ino}
}

// TestExemptCommandIsTheFile: a process is an exempt command when it runs
// that very file; one whose executable only bears the name (its user
// bind-mounted another program over the path in a mount namespace of
// their own, where /proc/<pid>/exe reads as the exempt path) is not.
func TestExemptCommandIsTheFile(t *testing.T) {
	smi := filepath.Join(t.TempDir(), "nvidia-smi")
	require.NoError(t, os.WriteFile(smi, []byte("#!/bin/sh\n"), 0o755))
	exempt := []string{"/nonexistent/tool", smi}
	require.True(t, exemptCommand(exempt, procstop.Identity{Exe: smi, ExeFile: fileID(t, smi)}))
	require.False(t, exemptCommand(exempt, procstop.Identity{Exe: smi, ExeFile: fileID(t, "/bin/sh")}), "the name alone")
	require.False(t, exemptCommand(exempt, procstop.Identity{Exe: smi}), "an executable that could not be read")
}

// TestUnknownOwnerNeverKilled: a process the scan could not tell the
// owner of (uid -1) is never stopped, whatever process its PID names now.
func TestUnknownOwnerNeverKilled(t *testing.T) {
	n, deps, procs, _, now := violatorsNode(t, nil)
	n.gpus(4, map[int][]fakeProc{0: {{PID: 601, User: "mallory", UID: -1, MB: 2048}}})
	procs.ids[601] = procstop.Identity{UID: 1001, Start: 61, Exe: "/usr/bin/python3"}
	Run(context.Background(), deps)
	*now = now.Add(11 * time.Minute)
	r := Run(context.Background(), deps)
	for _, a := range r.Actions {
		require.NotEqual(t, "kill", a.What, "%+v", a)
	}
	require.Empty(t, procs.stopped)
}

// TestOffenderToldByTheirOwnName: an account name with '|' (which the
// store's record key makes '_') is told as itself, never as the account
// that the made-up name could be.
func TestOffenderToldByTheirOwnName(t *testing.T) {
	n, deps, _, told, _ := violatorsNode(t, nil)
	n.gpus(4, map[int][]fakeProc{0: {{PID: 701, User: "ops|x", UID: 1007, MB: 2048}}})
	told.take()
	Run(context.Background(), deps)
	got := told.take()
	require.NotEmpty(t, got)
	for _, line := range got {
		require.True(t, strings.HasPrefix(line, "ops|x: "), line)
	}
}

// TestKillNotTriedWithoutTimeToWait: with too little of the check's time
// left to wait for a process to end, a claimed kill sends nothing (cut
// short, SIGKILL would follow SIGTERM at once); it is recorded as not
// tried, costs no place under kills_per_hour, and a later run with time
// stops the process.
func TestKillNotTriedWithoutTimeToWait(t *testing.T) {
	_, deps, procs, _, now := violatorsNode(t, map[string]string{"violations.actions": `["kill"]`, "violations.kill_after": "0",
		"violations.mark_after": "0", "violations.kills_per_hour": "10", "health.timeout": "2s"})
	r := Run(context.Background(), deps)
	require.Empty(t, procs.stops())
	var notTried int
	for _, a := range r.Actions {
		if a.What == "error" && strings.Contains(a.Message, "not tried: too little of the check's time left") {
			notTried++
		}
	}
	require.Positive(t, notTried, "%+v", r.Actions)

	deps.Config.Health.Timeout = time.Hour
	*now = now.Add(time.Minute)
	Run(context.Background(), deps)
	require.NotEmpty(t, procs.stops(), "stopped once there is time")
}
