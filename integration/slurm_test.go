package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/gpu/amdsmitest"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
)

// TestSlurm runs canhazgpu-prolog (as Prolog and TaskProlog) and
// canhazgpu-epilog under a real slurmctld and slurmd, jobs submitted by an
// unprivileged user. One cluster serves every case; each case leaves the
// node idle with nothing held, which the next relies on. The settings the
// programs read are rewritten between cases (they load them at every run).
func TestSlurm(t *testing.T) {
	s := newSite(t)
	boot, err := jobstate.BootID("")
	require.NoError(t, err)

	t.Run("node", func(t *testing.T) {
		out, err := s.c.Run("sinfo", "-h", "-N", "-o", "%N %T %G")
		require.NoError(t, err)
		require.Equal(t, siteNode+" idle gpu:8", strings.TrimSpace(out))
	})

	t.Run("batch job with two GPUs", func(t *testing.T) {
		testBatchTwoGPUs(t, s.on(t), boot)
	})

	t.Run("index export with a one-GPU step", func(t *testing.T) {
		s := s.on(t)
		s.configure(`export = "index"`)
		defer s.configure()
		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript("srun --gres=gpu:1"))
		out := s.seen(id, "BATCH", "STEP0")
		require.Equal(t, fmt.Sprintf("%d,%d", nvmlOf(0), nvmlOf(1)), out["BATCH"]["cvd"], "NVML indices through the minor numbers")
		require.Equal(t, "PCI_BUS_ID", out["BATCH"]["order"])
		step, err := strconv.Atoi(out["STEP0"]["gpus"])
		require.NoError(t, err, "one GPU: %v", out["STEP0"])
		require.Equal(t, strconv.Itoa(nvmlOf(step)), out["STEP0"]["cvd"])
		require.Equal(t, "PCI_BUS_ID", out["STEP0"]["order"])
		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		s.requireClean()
	})

	t.Run("job without GPUs", func(t *testing.T) {
		s := s.on(t)
		id := s.submit("--wrap", s.jobScript())
		out := s.seen(id, "BATCH", "STEP0")
		require.Equal(t, "none", out["BATCH"]["gpus"])
		require.Equal(t, "unset", out["BATCH"]["cvd"])
		require.Equal(t, "unset", out["STEP0"]["cvd"])
		ev := s.waitEvent("prolog", id)
		require.Equal(t, "0", ev.RC)
		require.Empty(t, ev.Out, "nothing to say")
		snap, err := s.st.Snapshot(context.Background())
		require.NoError(t, err)
		require.Empty(t, snap.Reservations)

		// The job's processes belong to it through the slurmstepd that
		// started them (this cluster uses no Slurm cgroups); a process of
		// the same user outside Slurm that claims the job in its
		// environment does not.
		attributed := 0
		for _, pid := range processesWithEnv("SLURM_JOB_ID=" + id) {
			p, err := gpu.LookupProcess("", pid)
			if err != nil || p.UID != s.uid {
				continue // a short-lived child of the job's loop, or not the job user's
			}
			require.Equal(t, id, p.JobID, "pid %d %v", pid, p.Cmdline)
			attributed++
		}
		require.Positive(t, attributed, "no process of job %s found", id)
		u, err := user.Lookup(s.user)
		require.NoError(t, err)
		gid, err := strconv.Atoi(u.Gid)
		require.NoError(t, err)
		claim := exec.Command("/bin/sleep", "60")
		claim.Env = []string{"SLURM_JOB_ID=" + id, "SLURM_JOBID=" + id}
		claim.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(gid)}}
		require.NoError(t, claim.Start())
		defer func() { _ = claim.Process.Kill(); _ = claim.Wait() }()
		p, err := gpu.LookupProcess("", claim.Process.Pid)
		require.NoError(t, err)
		require.Equal(t, s.uid, p.UID)
		require.Empty(t, p.JobID, "an environment claim counts for nothing")

		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		require.Equal(t, "0", s.waitEvent("epilog", id).RC)
		s.requireClean()
	})

	t.Run("concurrent jobs never share a GPU", func(t *testing.T) {
		s := s.on(t)
		testConcurrent(t, s)
	})

	t.Run("interactive reservation with on_conflict fail", func(t *testing.T) {
		testConflictFail(t, s.on(t), true)
	})

	// on_conflict = "warn": the job runs on the GPU alice holds, the
	// health check (action drain, as healthcheck.md suggests) reports the
	// shared GPU from the job file and leaves the node in service.
	t.Run("interactive reservation with on_conflict warn", func(t *testing.T) {
		s := s.on(t)
		s.configure(`on_conflict = "warn"`)
		defer s.configure()
		s.reserveInteractive("alice", slurmUUID(0))
		defer s.releaseInteractive("alice")

		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		s.seen(id, "BATCH", "STEP0")
		require.Equal(t, "0", s.waitEvent("prolog", id).RC)
		f, err := jobstate.ReadJob(s.state, allocator.KindSlurm, id)
		require.NoError(t, err)
		require.Len(t, f.Conflicts, 1)
		require.Equal(t, slurmUUID(0), f.Conflicts[0].GPU)
		s.writeFakeGPUs(map[string]string{slurmUUID(0): id, slurmUUID(1): id})
		defer s.writeFakeGPUs(nil)

		scontrol, err := exec.LookPath("scontrol")
		require.NoError(t, err)
		code, out, _ := runHealthCheck(t, []string{"SLURMD_NODENAME=" + siteNode, "SLURM_CONF=" + s.c.Conf,
			"CANHAZGPU_CONFIG=" + s.cfg, "CANHAZGPU_HEALTH_ACTION=drain", "CANHAZGPU_HEALTH_SCONTROL=" + scontrol})
		require.Equal(t, 0, code, out)
		require.Contains(t, out, fmt.Sprintf("warned: slurm job %s of %s uses GPU %d without a reservation (on_conflict=warn): reserved by alice (manual",
			id, s.user, nvmlOf(0)))
		require.Contains(t, out, "healthy: ")
		require.NotContains(t, out, "problem:")
		st, reason, err := s.c.NodeState()
		require.NoError(t, err)
		require.NotContains(t, st, "drain")
		require.Equal(t, "none", reason)

		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		require.Equal(t, "0", s.waitEvent("epilog", id).RC)
		require.Empty(t, s.jobGPUs(id), "the Epilog released the GPU the job held")
	})

	t.Run("placement canhazgpu flows around an interactive reservation", func(t *testing.T) {
		s := s.on(t)
		s.configure(`placement = "canhazgpu"`)
		defer s.configure()
		s.reserveInteractive("alice", slurmUUID(0))
		defer s.releaseInteractive("alice")

		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		out := s.seen(id, "BATCH", "STEP0")
		require.Equal(t, "0,1", out["BATCH"]["gpus"], "Slurm chose the reserved GPU")
		cvd := strings.Split(out["BATCH"]["cvd"], ",")
		require.Len(t, cvd, 2)
		require.NotContains(t, cvd, slurmUUID(0))
		require.Equal(t, slurmUUID(1), cvd[1], "Slurm's choice where it is free")
		require.Equal(t, out["BATCH"]["cvd"], out["STEP0"]["cvd"])
		require.Equal(t, sorted(cvd...), keys(s.jobGPUs(id)))
		require.Equal(t, "alice", snapshotUser(t, s, slurmUUID(0)))

		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		s.requireClean()
	})

	t.Run("scontrol requeue of a running job", func(t *testing.T) {
		s := s.on(t)
		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		s.seen(id, "BATCH", "STEP0")
		for _, r := range s.jobGPUs(id) {
			require.Equal(t, 0, r.Restart)
		}
		_, err := s.c.Run("scontrol", "requeue", id)
		require.NoError(t, err)
		ev := s.waitEvent("epilog", id)
		require.Equal(t, "0", ev.RC)
		_, err = s.c.WaitJob(id, 60*time.Second, slurmtest.JobState("PENDING"))
		require.NoError(t, err)
		require.Empty(t, s.jobGPUs(id), "released at the Epilog")
		// The requeued job starts again once its old credentials expire
		// (cred_expire in the harness); forcing StartTime=now earlier
		// makes slurmd refuse it.
		require.Eventually(t, func() bool { return parseOutput(s.c.Output(id))["BATCH"]["restart"] == "1" },
			60*time.Second, 50*time.Millisecond, "second attempt: %q", s.c.Output(id))
		s.seen(id, "STEP0")
		held := s.jobGPUs(id)
		require.Len(t, held, 2)
		for _, r := range held {
			require.Equal(t, 1, r.Restart)
		}
		f, err := jobstate.ReadJob(s.state, allocator.KindSlurm, id)
		require.NoError(t, err)
		require.Equal(t, 1, f.Restart)
		s.letGo(id, 1)
		s.finish(id, "COMPLETED")
		s.requireClean()
	})

	t.Run("store down during the Prolog", func(t *testing.T) {
		s := s.on(t)
		srv.Halt()
		restarted := false
		defer func() {
			if !restarted {
				require.NoError(t, srv.Restart())
			}
		}()
		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		out := s.seen(id, "BATCH", "STEP0")
		require.Equal(t, "0,1", out["BATCH"]["cvd"], "the job runs on Slurm's GPUs")
		ev := s.waitEvent("prolog", id)
		require.Equal(t, "0", ev.RC)
		require.Contains(t, ev.Out, "on_store_error=allow")
		markers, err := jobstate.Markers(s.state)
		require.NoError(t, err)
		require.Len(t, markers, 1)
		require.Equal(t, jobstate.OpReserve, markers[0].Op)
		require.Equal(t, id, markers[0].JobID)
		require.Equal(t, []string{slurmUUID(0), slurmUUID(1)}, markers[0].GPUs)

		require.NoError(t, srv.Restart())
		restarted = true
		done, err := jobstate.SettleAll(context.Background(), s.st, s.state)
		require.NoError(t, err)
		require.Len(t, done, 1)
		require.Equal(t, sorted(slurmUUID(0), slurmUUID(1)), keys(s.jobGPUs(id)), "settled: reserved while the job runs")

		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		s.requireClean()
	})

	t.Run("store down during the Epilog", func(t *testing.T) {
		s := s.on(t)
		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		s.seen(id, "BATCH", "STEP0")
		require.Len(t, s.jobGPUs(id), 2)

		srv.Halt()
		restarted := false
		defer func() {
			if !restarted {
				require.NoError(t, srv.Restart())
			}
		}()
		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		ev := s.waitEvent("epilog", id)
		require.Equal(t, "0", ev.RC)
		require.Contains(t, ev.Out, "on_store_error=allow: release pending")
		st, reason, err := s.c.NodeState()
		require.NoError(t, err)
		require.Equal(t, "idle", st)
		require.Equal(t, "none", reason)
		markers, err := jobstate.Markers(s.state)
		require.NoError(t, err)
		require.Len(t, markers, 1)
		require.Equal(t, jobstate.OpRelease, markers[0].Op)

		require.NoError(t, srv.Restart())
		restarted = true
		require.Len(t, s.jobGPUs(id), 2, "held until settled")
		// No health check runs here: the next job's Prolog reaches the
		// store and applies the release.
		next := s.submit("--gres=gpu:1", "--wrap", s.jobScript())
		s.seen(next, "BATCH", "STEP0")
		ev = s.waitEvent("prolog", next)
		require.Equal(t, "0", ev.RC)
		require.Contains(t, ev.Out, "; settled the pending release of slurm job "+id)
		require.Empty(t, s.jobGPUs(id))
		s.letGo(next, 0)
		s.finish(next, "COMPLETED")
		s.requireClean()
	})

	// Redis comes back without its data (no AOF): one health-check run
	// gives the running job its GPUs back from its job file, so its own
	// processes are not unreserved use and the node is not drained; the
	// Epilog then releases them as usual.
	t.Run("store restarted without its data", func(t *testing.T) {
		s := s.on(t)
		id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
		s.seen(id, "BATCH", "STEP0")
		held := keys(s.jobGPUs(id))
		require.Equal(t, sorted(slurmUUID(0), slurmUUID(1)), held)
		s.writeFakeGPUs(map[string]string{slurmUUID(0): id, slurmUUID(1): id})
		defer s.writeFakeGPUs(nil)

		require.NoError(t, srv.RestartEmpty())
		snap, err := s.st.Snapshot(context.Background())
		require.NoError(t, err)
		require.Empty(t, snap.GPUs, "the node is not even registered any more")
		require.Empty(t, snap.Reservations)

		scontrol, err := exec.LookPath("scontrol")
		require.NoError(t, err)
		code, out, _ := runHealthCheck(t, []string{"SLURMD_NODENAME=" + siteNode, "SLURM_CONF=" + s.c.Conf,
			"CANHAZGPU_CONFIG=" + s.cfg, "CANHAZGPU_HEALTH_ACTION=drain", "CANHAZGPU_HEALTH_SCONTROL=" + scontrol,
			"CANHAZGPU_HEALTH_SLURMD_SPOOL_DIR=" + s.c.Spool})
		require.Equal(t, 0, code, out)
		require.Contains(t, out, fmt.Sprintf("settled: restored GPUs %d, %d of slurm job %s: the store had lost them\n",
			min(nvmlOf(0), nvmlOf(1)), max(nvmlOf(0), nvmlOf(1)), id))
		restored := s.jobGPUs(id)
		require.Equal(t, held, keys(restored))
		for _, r := range restored {
			require.Equal(t, s.user, r.User)
			require.Equal(t, s.uid, r.UID)
			require.Equal(t, boot, r.BootID)
		}
		st, reason, err := s.c.NodeState()
		require.NoError(t, err)
		require.NotContains(t, st, "drain")
		require.Equal(t, "none", reason)

		s.letGo(id, 0)
		s.finish(id, "COMPLETED")
		ev := s.waitEvent("epilog", id)
		require.Equal(t, "0", ev.RC)
		require.Contains(t, ev.Out, "released")
		require.Empty(t, s.jobGPUs(id))
		s.requireClean()
	})

	t.Run("AMD node", func(t *testing.T) {
		s := s.on(t)
		testAMD(t, s)
	})
}

// testAMD runs a job on the node as an AMD node: amd-smi (a stub printing
// JSON) reports the same GPUs, with render node 128+k behind Slurm's index
// k, the runtime's index differing from it as NVML's does. The Prolog
// reserves them unchanged, and the TaskProlog exports ROCR_VISIBLE_DEVICES
// and HIP_VISIBLE_DEVICES, leaving CUDA_VISIBLE_DEVICES to Slurm.
func testAMD(t *testing.T, s *site) {
	dir := filepath.Join(s.dir, "amd-smi")
	require.NoError(t, os.Mkdir(dir, 0o755))
	var gpus []amdsmitest.GPU
	for i := range siteGPUs {
		gpus = append(gpus, amdsmitest.GPU{Index: i, UUID: strings.TrimPrefix(siteUUID(i), "GPU-"), Node: 2 + i,
			Render: 128 + siteMinor(i)})
	}
	amdsmitest.Write(t, dir, gpus)
	s.amdSMI = amdsmitest.Stub(t, dir)
	s.configure(`export = "index"`)
	defer func() { s.amdSMI = ""; s.configure() }()

	show := `echo "%s gpus=${SLURM_STEP_GPUS:-${SLURM_JOB_GPUS:-none}} rocr=${ROCR_VISIBLE_DEVICES-unset} hip=${HIP_VISIBLE_DEVICES-unset} cvd=${CUDA_VISIBLE_DEVICES-unset} order=${CUDA_DEVICE_ORDER-unset}"`
	script := fmt.Sprintf(show, "BATCH") + "\n" +
		"srun sh -c '" + strings.ReplaceAll(fmt.Sprintf(show, "STEP0"), "'", "") + "'\n" +
		fmt.Sprintf(`while [ ! -e %s/go.$SLURM_JOB_ID.0 ]; do sleep 0.1; done`, s.ctl) + "\necho END\n"
	id := s.submit("--gres=gpu:2", "--wrap", script)
	out := s.seen(id, "BATCH", "STEP0")
	for _, step := range []string{"BATCH", "STEP0"} {
		require.Equal(t, fmt.Sprintf("%d,%d", nvmlOf(0), nvmlOf(1)), out[step]["rocr"], "%s: the runtime's indices through the render nodes", step)
		require.Equal(t, "0,1", out[step]["hip"], step)
		require.Equal(t, "0,1", out[step]["cvd"], "%s: Slurm's own, untouched", step)
		require.Equal(t, "unset", out[step]["order"], step)
	}
	require.Equal(t, sorted(slurmUUID(0), slurmUUID(1)), keys(s.jobGPUs(id)), "the GPUs behind Slurm's 0 and 1")

	s.letGo(id, 0)
	s.finish(id, "COMPLETED")
	require.Empty(t, s.jobGPUs(id))
	s.requireClean()
}

// testBatchTwoGPUs: a two-GPU batch job with an srun step gets Slurm's
// GPUs, reserved for it in the store with its user, restart count and
// boot, recorded in its job file, and released by the Epilog.
func testBatchTwoGPUs(t *testing.T, s *site, boot string) {
	id := s.submit("--gres=gpu:2", "--wrap", s.jobScript())
	out := s.seen(id, "BATCH", "STEP0")
	// export = "auto": Slurm's own CUDA_VISIBLE_DEVICES names the
	// reserved GPUs, so the TaskProlog leaves it alone.
	require.Equal(t, map[string]string{"restart": "0", "gpus": "0,1", "cvd": "0,1", "order": "unset"}, out["BATCH"])
	require.Equal(t, map[string]string{"gpus": "0,1", "cvd": "0,1", "order": "unset"}, out["STEP0"])

	held := s.jobGPUs(id)
	require.Equal(t, sorted(slurmUUID(0), slurmUUID(1)), keys(held))
	for _, r := range held {
		require.Equal(t, s.user, r.User)
		require.Equal(t, s.uid, r.UID)
		require.Equal(t, 0, r.Restart)
		require.Equal(t, boot, r.BootID)
	}
	f, err := jobstate.ReadJob(s.state, allocator.KindSlurm, id)
	require.NoError(t, err)
	require.Equal(t, []jobstate.GPU{{UUID: slurmUUID(0), Index: nvmlOf(0), SchedIndex: 0},
		{UUID: slurmUUID(1), Index: nvmlOf(1), SchedIndex: 1}}, f.GPUs)
	ev := s.waitEvent("prolog", id)
	require.Equal(t, "0", ev.RC)
	require.Contains(t, ev.Out, "canhazgpu-prolog: job "+id+": reserved "+slurmUUID(0))

	s.letGo(id, 0)
	s.finish(id, "COMPLETED")
	ev = s.waitEvent("epilog", id)
	require.Equal(t, "0", ev.RC)
	require.Contains(t, ev.Out, "released")
	require.Empty(t, s.jobGPUs(id))
	// Only the job's own lines: the TaskProlog printed nothing a task sees.
	for line := range strings.SplitSeq(strings.TrimSpace(s.c.Output(id)), "\n") {
		require.Regexp(t, `^(BATCH|STEP0|END)\b`, line)
	}
	s.requireClean()
}

// testConflictFail: a job whose GPU is held interactively fails its
// Prolog with on_conflict=fail, drains the node, is requeued held, and
// leaves the interactive reservation as it was. The Epilog follows the
// failed Prolog unless epilog is false (Slurm 24.11 with RunInJob runs
// none).
func testConflictFail(t *testing.T, s *site, epilog bool) {
	s.reserveInteractive("alice", slurmUUID(0))
	defer s.releaseInteractive("alice")
	before, err := s.st.Snapshot(context.Background())
	require.NoError(t, err)

	id := s.submit("--gres=gpu:8", "--wrap", "echo should-not-run")
	_, reason, err := s.c.WaitNode(60*time.Second, func(st, _ string) bool { return strings.HasPrefix(st, "drain") })
	require.NoError(t, err)
	require.Equal(t, "Prolog error", reason)
	job, err := s.c.WaitJob(id, 60*time.Second, func(j map[string]string) bool { return j["JobState"] == "PENDING" })
	require.NoError(t, err)
	require.Equal(t, "launch_failed_requeued_held", job["Reason"])

	ev := s.waitEvent("prolog", id)
	require.Equal(t, "1", ev.RC)
	require.Contains(t, ev.Out, fmt.Sprintf("GPU %d (%s) reserved by alice (manual", nvmlOf(0), slurmUUID(0)), "by index and UUID")
	require.Contains(t, ev.Out, "on_conflict=fail: nothing reserved")
	// A failed Prolog is followed by the Epilog, which has nothing to do.
	if epilog {
		ev = s.waitEvent("epilog", id)
		require.Equal(t, "0", ev.RC)
		require.Contains(t, ev.Out, "nothing to release")
	}

	after, err := s.st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Equal(t, before.Reservations, after.Reservations, "interactive reservation intact, nothing partial")
	_, err = jobstate.ReadJob(s.state, allocator.KindSlurm, id)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NotContains(t, s.c.Output(id), "should-not-run")

	_, err = s.c.Run("scancel", id)
	require.NoError(t, err)
	require.NoError(t, s.c.Resume())
	s.requireClean()
}

func snapshotUser(t *testing.T, s *site, uuid string) string {
	snap, err := s.st.Snapshot(context.Background())
	require.NoError(t, err)
	return snap.Reservations[uuid].User
}

// testConcurrent runs rounds of 4 two-GPU jobs at once on the 8 GPUs while
// watching the store: every reservation must belong to a job whose Slurm
// GPUs map to it, jobs that overlap in time never hold the same GPU, and
// nothing is left or taken over afterwards.
func testConcurrent(t *testing.T, s *site) {
	const rounds, perRound = 10, 4
	start := time.Now()
	script := `echo "BATCH gpus=$SLURM_JOB_GPUS start=$(date +%s%N)"; sleep 1; echo "STEP0 end=$(date +%s%N)"`

	var mu sync.Mutex
	observed := map[string]map[string]bool{} // job → GPUs seen held for it
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			snap, err := s.st.Snapshot(context.Background())
			if err != nil {
				continue
			}
			mu.Lock()
			for uuid, r := range snap.Reservations {
				if observed[r.JobID] == nil {
					observed[r.JobID] = map[string]bool{}
				}
				observed[r.JobID][uuid] = true
			}
			mu.Unlock()
		}
	}()

	var ids []string
	for range rounds {
		var round []string
		for range perRound {
			round = append(round, s.submit("--gres=gpu:2", "--wrap", script))
		}
		for _, id := range round {
			s.finish(id, "COMPLETED")
		}
		ids = append(ids, round...)
	}
	close(stop)
	<-watched

	spans := map[string]jobSpan{}
	for _, id := range ids {
		out := parseOutput(s.c.Output(id))
		require.NotNil(t, out["STEP0"], "job %s output: %q", id, s.c.Output(id))
		sp := jobSpan{gpus: map[string]bool{}}
		for k := range strings.SplitSeq(out["BATCH"]["gpus"], ",") {
			n, err := strconv.Atoi(k)
			require.NoError(t, err)
			sp.gpus[slurmUUID(n)] = true
		}
		require.Len(t, sp.gpus, 2)
		sp.start, _ = strconv.ParseInt(out["BATCH"]["start"], 10, 64)
		sp.end, _ = strconv.ParseInt(out["STEP0"]["end"], 10, 64)
		spans[id] = sp
		mu.Lock()
		require.Equal(t, sp.gpus, observed[id], "job %s: the store held exactly its GPUs", id)
		mu.Unlock()
	}
	overlaps := requireNoSharedGPU(t, spans)
	hist, err := s.st.History(context.Background(), start)
	require.NoError(t, err)
	for _, r := range hist {
		require.Equal(t, "released", r.End, "%+v", r)
	}
	require.Len(t, hist, 2*len(ids), "every grant released once")
	s.requireClean()
	t.Logf("%d jobs in %d rounds, %d overlapping pairs, %s", len(ids), rounds, overlaps, time.Since(start).Round(time.Millisecond))
}

// jobSpan is one job of a concurrency test: the GPUs it saw and when its
// steps started and ended (ms), from its own output.
type jobSpan struct {
	node       string // "" on a one-node cluster
	gpus       map[string]bool
	start, end int64
}

// requireNoSharedGPU checks that no two jobs that ran at the same time
// saw a common GPU, and that some did run at the same time (else the test
// proves nothing); it returns how many pairs overlapped.
func requireNoSharedGPU(t *testing.T, spans map[string]jobSpan) int {
	t.Helper()
	overlaps := 0
	for a, sa := range spans {
		for b, sb := range spans {
			if a >= b || sa.end < sb.start || sb.end < sa.start {
				continue
			}
			overlaps++
			for g := range sa.gpus {
				require.False(t, sb.gpus[g], "jobs %s and %s ran at the same time on %s", a, b, g)
			}
		}
	}
	require.Positive(t, overlaps, "jobs did run at the same time")
	return overlaps
}
