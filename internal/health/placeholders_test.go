package health

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/accounttest"
)

// slurmCommand writes a stand-in salloc or scancel that records each
// call (its SLURM_CONF, then its arguments) and prints out on stderr, as
// Slurm's commands do, exiting with rc.
func slurmCommand(t *testing.T, dir, name, out string, rc int) (path string, calls func() [][]string) {
	t.Helper()
	path = filepath.Join(dir, name)
	record := path + ".calls"
	script := fmt.Sprintf("#!/bin/sh\n{ printf 'SLURM_CONF=%%s' \"$SLURM_CONF\"; for a in \"$@\"; do printf '\\t%%s' \"$a\"; done; echo; } >> %s\nprintf '%%s\\n' %s >&2\nexit %d\n",
		shellQuote(record), shellQuote(out), rc)
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path, func() [][]string {
		data, err := os.ReadFile(record)
		if os.IsNotExist(err) {
			return nil
		}
		require.NoError(t, err)
		var out [][]string
		for line := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
			out = append(out, strings.Split(line, "\t"))
		}
		return out
	}
}

// placeholderNode is a test node with interactive_holds = "placeholder",
// stand-in salloc and scancel, and a slurm_conf of root's config.
type placeholderNode struct {
	*testNode
	salloc, scancel func() [][]string
}

const siteSlurmConf = "/etc/site/slurm.conf"

func newPlaceholderNode(t *testing.T, lost, sallocSays string, sallocRC int, settings map[string]string) *placeholderNode {
	t.Helper()
	dir := t.TempDir()
	salloc, sallocCalls := slurmCommand(t, dir, "salloc", sallocSays, sallocRC)
	scancel, scancelCalls := slurmCommand(t, dir, "scancel", "", 0)
	all := map[string]string{"slurm.interactive_holds": "placeholder", "slurm.salloc": salloc, "slurm.scancel": scancel,
		"slurm.slurm_conf": siteSlurmConf, "slurm.lost_placeholder": lost}
	for k, v := range settings {
		all[k] = v
	}
	n := &placeholderNode{testNode: newTestNode(t, all), salloc: sallocCalls, scancel: scancelCalls}
	n.sc.Touch("show", "NodeName=n1 Arch=x86_64\n   Gres=gpu:dev0:1,gpu:dev1:1,gpu:dev2:1,gpu:dev3:1\n   State=MIXED ThreadsPerCore=1\n")
	return n
}

// holdWithJob gives root (uid 0: the check acts as the hold's owner
// without changing user) a hold of GPU k of kind whose placeholder is job.
func (n *placeholderNode) holdWithJob(kind allocator.Kind, lease time.Duration, k int, job string) allocator.Grant {
	n.t.Helper()
	g := n.reserveFor(kind, "root", 0, lease, k)
	require.NoError(n.t, n.store().SetHoldJob(context.Background(), "root", g.Token, g.GPUs, job))
	return g
}

func settledWith(r *Report, what string) []string {
	var out []string
	for _, s := range r.Settled {
		if s.What == what {
			out = append(out, s.Message)
		}
	}
	return out
}

// The check cancels a placeholder that stands for no hold with scancel
// by root's config: its slurm_conf, not the SLURM_CONF slurmd handed the
// check. It does so under NHC too: settling placeholders marks no node.
func TestPlaceholderCancelledWithTheConfigsSlurmConf(t *testing.T) {
	for _, nhc := range []bool{false, true} {
		t.Run(fmt.Sprintf("nhc=%v", nhc), func(t *testing.T) {
			n := newPlaceholderNode(t, "release", "", 0, nil)
			n.register()
			n.sc.Touch("jobs", "90|RUNNING|n1|n1|None|0\n")
			deps := n.deps()
			deps.Env = append(deps.Env, "SLURM_CONF=/var/spool/slurmd/conf-cache/slurm.conf")
			deps.NHC = nhc
			r := Run(context.Background(), deps)
			require.Equal(t, StatusHealthy, r.Status, r.Error)
			require.Equal(t, []string{"cancelled placeholder job 90 (RUNNING): it stands for no interactive hold"}, settledWith(r, "placeholder"))
			require.Equal(t, [][]string{{"SLURM_CONF=" + siteSlurmConf, "90"}}, n.scancel())
			require.Contains(t, n.sc.Calls(), []string{"squeue", "--noheader", "--states=all", "--name=canhazgpu-hold", "--format=%A|%T|%N|%n|%r|%U"})
		})
	}
}

// Under NHC a Slurm that cannot list its jobs leaves the placeholders for
// the next run, reported, without failing the check (NHC would drain the
// node); without NHC the check says it could not see.
func TestPlaceholdersUnlisted(t *testing.T) {
	n := newPlaceholderNode(t, "release", "", 0, nil)
	n.register()
	n.sc.Touch("hang", "")
	n.settings["health.scontrol_timeout"] = "300ms"
	n.writeConfig()
	deps := n.deps()
	deps.NHC = true
	r := Run(context.Background(), deps)
	require.Equal(t, StatusHealthy, r.Status, r.Error)
	require.Equal(t, []string{"placeholder jobs left as they are: squeue: no answer within 300ms"}, settledWith(r, "unsettled"))

	r = n.run()
	require.Equal(t, StatusError, r.Status)
	require.Contains(t, r.Error, "placeholder jobs: squeue: no answer within 300ms")
}

// A hold whose placeholder job vanished, by lost_placeholder.
func TestLostPlaceholder(t *testing.T) {
	granted := "salloc: Granted job allocation 77"
	busy := "salloc: error: Job submit/allocate failed: Requested nodes are busy"

	t.Run("keep leaves the hold and Slurm alone", func(t *testing.T) {
		n := newPlaceholderNode(t, "keep", granted, 0, nil)
		n.holdWithJob(allocator.KindManual, time.Hour, 1, "42")
		r := n.run()
		require.Equal(t, StatusHealthy, r.Status, r.Error)
		require.Empty(t, settledWith(r, "placeholder"))
		require.Equal(t, map[int]string{1: "manual root 42"}, n.holders())
		require.Empty(t, n.salloc())
		require.Empty(t, n.scancel())
	})

	t.Run("release ends the hold", func(t *testing.T) {
		n := newPlaceholderNode(t, "release", granted, 0, nil)
		n.holdWithJob(allocator.KindManual, time.Hour, 1, "42")
		r := n.run()
		require.Equal(t, []string{"released GPU 1 of root's manual hold: its placeholder job 42 no longer runs (lost_placeholder=release)"},
			settledWith(r, "placeholder"))
		require.Empty(t, n.holders())
		require.Empty(t, n.salloc())
	})

	t.Run("resubmit: a new placeholder for what is left of the hold", func(t *testing.T) {
		n := newPlaceholderNode(t, "resubmit", granted, 0, nil)
		g := n.holdWithJob(allocator.KindManual, time.Hour, 1, "42")
		n.ageIdle(25 * time.Minute) // 35 minutes left
		r := n.run()
		require.Equal(t, StatusHealthy, r.Status, r.Error)
		require.Equal(t, []string{"re-submitted the placeholder of root's manual hold of GPU 1: job 77 in place of job 42, which no longer runs (lost_placeholder=resubmit)"},
			settledWith(r, "placeholder"))
		require.Equal(t, [][]string{{"SLURM_CONF=" + siteSlurmConf, "--no-shell", "--immediate", "--nodes=1", "--ntasks=1", "--nodelist=n1",
			"--job-name=canhazgpu-hold", fmt.Sprintf("--comment=canhazgpu-hold:%d", g.Token), "--time=35", "--gres=gpu:dev1:1"}}, n.salloc())
		require.Equal(t, map[int]string{1: "manual root 77"}, n.holders(), "the same hold names its new placeholder")
		require.Equal(t, g.Token, n.snapshot().Reservations[testUUID(1)].Token)
		require.Empty(t, n.scancel())
	})

	t.Run("resubmit: a run lease gets what a run without --timeout gets", func(t *testing.T) {
		n := newPlaceholderNode(t, "resubmit", granted, 0, map[string]string{"reserve.max_duration": "2h",
			"run.heartbeat_timeout": "60s", "run.heartbeat_interval": "10s"})
		n.holdWithJob(allocator.KindRun, time.Minute, 2, "43")
		n.ageIdle(30 * time.Second) // ran 30 s; its lease has 30 s left
		r := n.run()
		require.Len(t, settledWith(r, "placeholder"), 1)
		calls := n.salloc()
		require.Len(t, calls, 1)
		require.Contains(t, calls[0], "--time=121", "2h less 30 s, plus the heartbeat timeout, in whole minutes")
		require.Contains(t, calls[0], "--gres=gpu:dev2:1")
		require.Equal(t, map[int]string{2: "run root 77"}, n.holders())
	})

	t.Run("resubmit refused by Slurm releases, saying so", func(t *testing.T) {
		n := newPlaceholderNode(t, "resubmit", busy, 1, nil)
		n.holdWithJob(allocator.KindManual, time.Hour, 3, "42")
		r := n.run()
		require.Equal(t, []string{"released GPU 3 of root's manual hold: its placeholder job 42 no longer runs and Slurm refused a new one: " +
			"salloc: exit status 1: " + busy + " (lost_placeholder=resubmit)"}, settledWith(r, "placeholder"))
		require.Len(t, n.salloc(), 1)
		require.Empty(t, n.holders())
	})

	t.Run("resubmit on a node where Slurm chooses the GPUs releases", func(t *testing.T) {
		n := newPlaceholderNode(t, "resubmit", granted, 0, nil)
		n.sc.Touch("show", "NodeName=n1 Arch=x86_64\n   Gres=gpu:4\n   State=MIXED ThreadsPerCore=1\n")
		n.holdWithJob(allocator.KindManual, time.Hour, 0, "42")
		r := n.run()
		msgs := settledWith(r, "placeholder")
		require.Len(t, msgs, 1)
		require.Contains(t, msgs[0], "no GRES type per GPU")
		require.Empty(t, n.salloc())
		require.Empty(t, n.holders())
	})

	t.Run("a live placeholder is left alone", func(t *testing.T) {
		n := newPlaceholderNode(t, "resubmit", granted, 0, nil)
		n.holdWithJob(allocator.KindManual, time.Hour, 1, "42")
		n.sc.Touch("jobs", "42|RUNNING|n1|n1|None|0\n")
		r := n.run()
		require.Empty(t, settledWith(r, "placeholder"))
		require.Empty(t, n.salloc())
		require.Empty(t, n.scancel())
		require.Equal(t, map[int]string{1: "manual root 42"}, n.holders())
	})
}

// The check cancels a placeholder as the account Slurm lists as its
// owner, never as root: Slurm lets an account cancel its own jobs only,
// so no listing or stored job id can make root's check end another
// account's job. A placeholder of an account whose hold has no job id yet
// (its salloc has not returned) is left alone; another account's is not.
func TestPlaceholderCancelledAsItsOwner(t *testing.T) {
	accounttest.Ensure(t, "chgphowner")
	owner := accounttest.UID(t, "chgphowner")
	// A stand-in scancel any account may run, recording who ran it.
	dir, err := os.MkdirTemp("", "chg-scancel-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	record := filepath.Join(dir, "calls")
	scancel := filepath.Join(dir, "scancel")
	require.NoError(t, os.WriteFile(scancel, []byte("#!/bin/sh\necho \"$(id -u) $*\" >> "+shellQuote(record)+"\n"), 0o755))

	n := newPlaceholderNode(t, "release", "", 0, map[string]string{"slurm.scancel": scancel})
	n.register()
	n.reserveFor(allocator.KindManual, "root", 0, time.Hour, 2) // no job id recorded yet
	n.sc.Touch("jobs", fmt.Sprintf("90|RUNNING|n1|n1|None|%d\n91|RUNNING|n1|n1|None|0\n", owner))
	r := n.run()
	require.Equal(t, []string{"cancelled placeholder job 90 (RUNNING): it stands for no interactive hold"}, settledWith(r, "placeholder"))
	calls, err := os.ReadFile(record)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d 90\n", owner), string(calls), "cancelled as its owner; root's own job 91 stands for root's hold")
}

// A check that finds another settling the placeholders leaves them to it:
// nothing is asked of Slurm, nothing cancelled, and it says so.
func TestPlaceholdersSettledByOneCheckAtATime(t *testing.T) {
	n := newPlaceholderNode(t, "release", "", 0, nil)
	n.register()
	n.sc.Touch("jobs", "90|RUNNING|n1|n1|None|0\n")
	unlock, err := lockPlaceholders(n.stateDir)
	require.NoError(t, err)
	r := n.run()
	require.Equal(t, []string{"placeholder jobs left as they are: another health check is settling them"}, settledWith(r, "unsettled"))
	require.Empty(t, n.scancel())
	require.Empty(t, n.sc.Calls())

	unlock()
	r = n.run()
	require.Equal(t, []string{"cancelled placeholder job 90 (RUNNING): it stands for no interactive hold"}, settledWith(r, "placeholder"))
}
