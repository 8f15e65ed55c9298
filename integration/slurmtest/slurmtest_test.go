package slurmtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/testreq"
)

// TestCluster starts a cluster, runs a GPU job as an unprivileged user
// with a stand-in Prolog, and stops everything it started.
func TestCluster(t *testing.T) {
	testreq.NoError(t, Available())
	testCluster(t, "", "slurm-wlm 22.05.")
}

// TestClusterSlurm2411 is TestCluster with Debian 13's Slurm 24.11 from
// a Slurm root.
func TestClusterSlurm2411(t *testing.T) {
	testreq.NoError(t, Available())
	testreq.NoError(t, RootAvailable())
	root, err := DebianRoot("trixie")
	require.NoError(t, err)
	testCluster(t, root, "slurm-wlm 24.11.")
}

// testCluster runs TestCluster against the Slurm of root ("": this
// machine's), whose version begins with version.
func testCluster(t *testing.T, root, version string) {
	_, err := EnsureUser("chgjob")
	require.NoError(t, err)

	// A Prolog that leaves proof it ran, as root, without PATH.
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	marks := filepath.Join(dir, "marks")
	require.NoError(t, os.Mkdir(marks, 0o755))
	prolog := filepath.Join(dir, "prolog.sh")
	// (The shell makes up a PATH of its own; /proc shows what slurmd gave.)
	script := "#!/bin/sh\necho \"$(id -u) $(tr '\\0' '\\n' < /proc/$$/environ | grep -c '^PATH=') $SLURM_JOB_GPUS\" > " + marks + "/prolog.$SLURM_JOB_ID\n"
	require.NoError(t, os.WriteFile(prolog, []byte(script), 0o755))

	c, err := Start(Options{GPUs: 4, CPUs: 4, Prolog: prolog, Root: root})
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
		os.RemoveAll(c.Dir)
	})
	require.Len(t, c.GresDevices, 4)
	v, err := c.Version()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(v, version), v)

	out, err := c.Run("sinfo", "-h", "-N", "-o", "%N %T %G")
	require.NoError(t, err)
	require.Equal(t, "chgnode idle gpu:4", strings.TrimSpace(out))

	id, err := c.Submit("chgjob", "--gres=gpu:2", "--wrap", `echo "uid=$(id -u) cvd=$CUDA_VISIBLE_DEVICES"; srun sh -c 'echo "step cvd=$CUDA_VISIBLE_DEVICES"'`)
	require.NoError(t, err)
	job, err := c.WaitJob(id, 60*time.Second, JobState("COMPLETED", "FAILED", "CANCELLED"))
	require.NoError(t, err)
	require.Equal(t, "COMPLETED", job["JobState"], c.Output(id))
	require.Contains(t, c.Output(id), "cvd=0,1\n")
	require.Contains(t, c.Output(id), "step cvd=0,1\n")
	require.NotContains(t, c.Output(id), "uid=0 ")
	mark, err := os.ReadFile(filepath.Join(marks, "prolog."+id))
	require.NoError(t, err)
	require.Equal(t, "0 0 0,1\n", string(mark), "root, no PATH, Slurm's GPU indices")

	// A job that is still running when the cluster stops is cancelled, and
	// no daemon of the cluster survives.
	id, err = c.Submit("chgjob", "--wrap", "sleep 300")
	require.NoError(t, err)
	_, err = c.WaitJob(id, 60*time.Second, JobState("RUNNING"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(c.stepDaemons()) > 0 }, 30*time.Second, 50*time.Millisecond,
		"the batch step's slurmstepd is recognised as this cluster's")
	var pids []int
	for _, d := range c.daemons {
		pids = append(pids, d.cmd.Process.Pid)
	}
	require.NoError(t, c.Stop())
	stopped = true
	require.Empty(t, c.stepDaemons())
	for _, pid := range pids {
		require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "pid %d", pid)
	}
	require.NoError(t, c.Stop(), "stopping twice is fine")
}

// TestStopAfterControllerCrash: with slurmctld gone, jobs cannot be
// cancelled through Slurm; Stop still ends the job's step daemon and the
// job's processes, found through /proc, and says so.
func TestStopAfterControllerCrash(t *testing.T) {
	testreq.NoError(t, Available())
	_, err := EnsureUser("chgjob")
	require.NoError(t, err)
	c, err := Start(Options{GPUs: 1, CPUs: 1})
	require.NoError(t, err)
	t.Cleanup(func() { c.Remove() })

	id, err := c.Submit("chgjob", "--wrap", "sleep 300")
	require.NoError(t, err)
	_, err = c.WaitJob(id, 60*time.Second, JobState("RUNNING"))
	require.NoError(t, err)
	var steps []int
	require.Eventually(t, func() bool { steps = c.stepDaemons(); return len(steps) > 0 }, 30*time.Second, 50*time.Millisecond)
	var job []int // the batch script and its sleep, below the step daemon
	require.Eventually(t, func() bool { job = descendants(steps[0]); return len(job) >= 2 }, 30*time.Second, 50*time.Millisecond)

	for _, d := range c.daemons {
		if d.name == "slurmctld" {
			require.NoError(t, d.cmd.Process.Kill())
			<-d.done
		}
	}
	err = c.Stop()
	require.ErrorContains(t, err, "killing leftover slurmstepd")
	require.Empty(t, c.stepDaemons())
	for _, pid := range append(steps, job...) {
		require.Eventually(t, func() bool { return zombie(pid) }, 10*time.Second, 50*time.Millisecond, "pid %d still runs", pid)
	}
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			if _, ppid, ok := procStat(p); ok {
				children[ppid] = append(children[ppid], p)
			}
		}
	}
	todo := children[pid]
	for len(todo) > 0 {
		p := todo[0]
		todo = append(todo[1:], children[p]...)
		out = append(out, p)
	}
	return out
}
