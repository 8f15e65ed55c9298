package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/buildtest"
	"canhazgpu/internal/testreq"
)

// holdsSite is a site whose node offers one GRES type per GPU and whose
// interactive holds are Slurm placeholder jobs, with the CLI built for it
// (the site's config as its system file, as a package installs it).
type holdsSite struct {
	*site
	cli string
	// runuser starts the CLI as a user: this machine's, or, on a Slurm
	// root, the root's through its wrapper, so that the CLI and the salloc
	// it runs are the root's (the wrappers need root to enter it).
	runuser string
	// salloc and scancel are the config's paths of Slurm's commands.
	salloc, scancel string
}

// holdGPUs: four GPUs, so four one-GPU jobs and one hold overfill it.
const holdGPUs = 4

func newHoldsSite(t testing.TB) *holdsSite { return newHoldsSiteOn(t, true, "") }

// newHoldsSiteOn: typed false leaves the node's GPUs untyped (gpu:4), so
// Slurm chooses the GPUs of a hold; root is a Slurm root ("": this
// machine's Slurm).
func newHoldsSiteOn(t testing.TB, typed bool, root string) *holdsSite {
	t.Helper()
	s := newSite(t, func(o *slurmtest.Options) { o.TypedGPUs, o.GPUs, o.Root = typed, holdGPUs, root })
	salloc, scancel, runuser := "/usr/bin/salloc", "/usr/bin/scancel", s.c.Bin("runuser")
	if root == "" {
		var err error
		salloc, err = exec.LookPath("salloc")
		require.NoError(t, err)
		scancel, err = exec.LookPath("scancel")
		require.NoError(t, err)
		runuser = "runuser"
	}
	s.configure(holdSettings(s.c, salloc, scancel)...)
	dir, err := buildtest.BuildWithSystemFile(map[string]string{"canhazgpu": "canhazgpu/cmd/canhazgpu"}, s.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &holdsSite{site: s, cli: filepath.Join(dir, "canhazgpu"), runuser: runuser, salloc: salloc, scancel: scancel}
	out, code := h.canhazgpu("", "admin", "--register")
	require.Equal(t, 0, code, out)
	return h
}

func holdSettings(c *slurmtest.Cluster, salloc, scancel string) []string {
	return []string{`interactive_holds = "placeholder"`, fmt.Sprintf("salloc = %q", salloc),
		fmt.Sprintf("scancel = %q", scancel), fmt.Sprintf("slurm_conf = %q", c.Conf)}
}

// canhazgpu runs the CLI as user ("": root, naming the config as only
// root may) with a bare environment: no SLURM_CONF, no PATH to Slurm's
// commands, so the placeholder's commands come from the config alone.
func (h *holdsSite) canhazgpu(user string, args ...string) (string, int) {
	h.t.Helper()
	var cmd *exec.Cmd
	if user == "" {
		cmd = exec.Command(h.cli, args...)
		cmd.Env = []string{"CANHAZGPU_CONFIG=" + h.cfg}
	} else {
		cmd = exec.Command(h.runuser, append([]string{"-u", user, "--", h.cli}, args...)...)
		// No Slurm command on the PATH: the CLI takes them from the
		// config. (A Slurm root's wrapper needs the system's tools.)
		cmd.Env = []string{"PATH=/nonexistent"}
		if h.runuser != "runuser" {
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		}
	}
	cmd.Dir = h.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	require.NoError(h.t, err)
	return out.String(), 0
}

var holdJobLine = regexp.MustCompile(`Slurm sees the hold as job ([0-9]+) `)

// hold reserves Slurm's GPU k as the job user and returns the
// placeholder's job id.
func (h *holdsSite) hold(k int) string {
	h.t.Helper()
	out, code := h.canhazgpu(h.user, "reserve", "--gpu-ids", strconv.Itoa(nvmlOf(k)), "--duration", "30m")
	require.Equal(h.t, 0, code, out)
	m := holdJobLine.FindStringSubmatch(out)
	require.NotNil(h.t, m, out)
	return m[1]
}

// cancelPlaceholder cancels a hold's placeholder job as user ("": root)
// with scancel, as a person or an admin would, and waits until Slurm has
// ended it; the hold stays in the store.
func (h *holdsSite) cancelPlaceholder(user, job string) {
	h.t.Helper()
	var out string
	var err error
	if user == "" {
		out, err = h.c.Run("scancel", job)
	} else {
		out, err = h.c.RunAs(user, "scancel", job)
	}
	require.NoError(h.t, err, out)
	_, err = h.c.WaitJob(job, 60*time.Second, slurmtest.JobState("CANCELLED"))
	require.NoError(h.t, err)
}

// running waits until n of the jobs run and returns each running job's
// Slurm GPU index (from its output) and the jobs still pending.
func (h *holdsSite) running(jobs []string, n int) (map[string]string, []string) {
	h.t.Helper()
	var gpus map[string]string
	var pending []string
	require.Eventually(h.t, func() bool {
		gpus, pending = map[string]string{}, nil
		for _, id := range jobs {
			job, err := h.c.Job(id)
			if err != nil {
				return false
			}
			switch job["JobState"] {
			case "RUNNING":
				out := parseOutput(h.c.Output(id))
				if out["BATCH"] == nil {
					return false
				}
				gpus[id] = out["BATCH"]["gpus"]
			case "PENDING":
				pending = append(pending, id)
			}
		}
		return len(gpus) == n && len(pending) == len(jobs)-n
	}, 60*time.Second, 100*time.Millisecond, "want %d of %v running", n, jobs)
	return gpus, pending
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// TestSlurmPlaceholderHolds: with interactive_holds = "placeholder" on a
// node with one GRES type per GPU, a person's hold on GPU 1 is a Slurm job
// on exactly GPU 1, and Slurm places batch jobs around it: of four
// one-GPU jobs three run on GPUs 0, 2 and 3 and one waits; no Prolog
// fails and the node stays in service. Releasing the hold cancels the
// placeholder and the waiting job starts on GPU 1.
//
// A GPU Slurm refuses the placeholder (here: Slurm runs a job on it that
// the store lost) is left out and another free one is held.
func TestSlurmPlaceholderHolds(t *testing.T) {
	h := newHoldsSite(t)
	hold := h.hold(1)
	testHoldKeepsJobsAway(t, h, hold, 1)

	t.Run("a GPU Slurm refuses is skipped", func(t *testing.T) {
		ctx := context.Background()
		h := &holdsSite{site: h.on(t), cli: h.cli, runuser: h.runuser, salloc: h.salloc, scancel: h.scancel}
		// GPU 0 becomes the user's most recently released: the store
		// offers it first.
		first := h.hold(0)
		out, code := h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
		_, err := h.c.WaitJob(first, 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
		require.NoError(t, err)
		busy := h.submit("--gres=gpu:dev0:1", "--wrap", h.jobScript())
		h.seen(busy, "BATCH")
		_, err = h.st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: busy})
		require.NoError(t, err)

		out, code = h.canhazgpu(h.user, "reserve", "--gpus", "1", "--duration", "30m")
		require.Equal(t, 0, code, out)
		require.Contains(t, out, fmt.Sprintf("the placeholder job for GPU %d was refused by Slurm", nvmlOf(0)),
			"the store offered GPU 0 first")
		require.Contains(t, out, "trying other GPUs")
		m := holdJobLine.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		require.Len(t, snap.Reservations, 1)
		for uuid, r := range snap.Reservations {
			require.NotEqual(t, slurmUUID(0), uuid, "Slurm's busy GPU was left out")
			require.Equal(t, m[1], r.JobID)
		}
		out, code = h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
		h.letGo(busy, 0)
		h.finish(busy, "COMPLETED")
		_, err = h.c.WaitJob(m[1], 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
		require.NoError(t, err)
		h.requireClean()
	})
}

// TestSlurm2411PlaceholderHolds is TestSlurmPlaceholderHolds's hold on
// GPU 1 under Debian 13's Slurm 24.11 (a Slurm root), the CLI and salloc
// running inside it.
func TestSlurm2411PlaceholderHolds(t *testing.T) {
	testreq.NoError(t, slurmtest.Available())
	testreq.NoError(t, slurmtest.RootAvailable())
	root, err := slurmtest.DebianRoot("trixie")
	require.NoError(t, err)
	h := newHoldsSiteOn(t, true, root)
	v, err := h.c.Version()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(v, "slurm-wlm 24.11."), v)
	testHoldKeepsJobsAway(t, h, h.hold(1), 1)
}

// TestSlurmPlaceholderSlurmChooses: the same on a node whose GPUs have no
// type of their own (gpu:4): `reserve --gpus 1` lets Slurm choose the
// placeholder's GPU, its Prolog holds that GPU for the user, and batch
// jobs are placed around it.
func TestSlurmPlaceholderSlurmChooses(t *testing.T) {
	h := newHoldsSiteOn(t, false, "")
	out, code := h.canhazgpu(h.user, "reserve", "--gpus", "1", "--duration", "30m")
	require.Equal(t, 0, code, out)
	m := holdJobLine.FindStringSubmatch(out)
	require.NotNil(t, m, out)
	hold := m[1]
	snap, err := h.st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1)
	k := -1
	for uuid, r := range snap.Reservations {
		require.Equal(t, hold, r.JobID)
		for i := range holdGPUs {
			if slurmUUID(i) == uuid {
				k = i
			}
		}
	}
	require.GreaterOrEqual(t, k, 0, "the hold is on a GPU of Slurm's")
	require.Contains(t, out, fmt.Sprintf(": %d\n", nvmlOf(k)), "the user is told the GPU Slurm chose")
	out, code = h.canhazgpu(h.user, "reserve", "--gpu-ids", "0")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "give --gpus N")
	testHoldKeepsJobsAway(t, h, hold, k)
}

// testHoldKeepsJobsAway checks a placeholder hold of Slurm's GPU k and
// what batch jobs meet around it, then releases it.
func testHoldKeepsJobsAway(t *testing.T, h *holdsSite, hold string, k int) {
	ctx := context.Background()
	job, err := h.c.Job(hold)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", job["JobState"], "%v", job)
	require.Equal(t, "canhazgpu-hold", job["JobName"])
	require.Contains(t, job["UserId"], h.user, "the hold's owner owns the placeholder")
	ev := h.waitEvent("prolog", hold)
	require.Equal(t, "0", ev.RC, ev.Out)
	require.Contains(t, ev.Out, "placeholder")
	snap, err := h.st.Snapshot(ctx)
	require.NoError(t, err)
	r := snap.Reservations[slurmUUID(k)]
	require.Equal(t, allocator.KindManual, r.Kind)
	require.Equal(t, hold, r.JobID, "the hold names its placeholder")
	require.Len(t, snap.Reservations, 1, "the Prolog reserved nothing for the placeholder")
	status, code := h.canhazgpu(h.user, "status")
	require.Equal(t, 0, code, status)
	require.Contains(t, status, "slurm placeholder job "+hold)

	var jobs []string
	for range 4 {
		jobs = append(jobs, h.submit("--gres=gpu:1", "--wrap", h.jobScript()))
	}
	gpus, pending := h.running(jobs, 3)
	var others []string
	for i := range holdGPUs {
		if i != k {
			others = append(others, strconv.Itoa(i))
		}
	}
	require.Equal(t, others, values(gpus), "Slurm placed the jobs around the hold")
	require.Len(t, pending, 1)
	for id := range gpus {
		require.Equal(t, "0", h.waitEvent("prolog", id).RC)
	}
	require.Empty(t, h.eventsOf("prolog", pending[0]), "the waiting job never met the hold")
	st, _, err := h.c.NodeState()
	require.NoError(t, err)
	require.NotContains(t, st, "drain")

	out, code := h.canhazgpu(h.user, "release")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Released 1 GPU")
	_, err = h.c.WaitJob(hold, 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
	require.NoError(t, err)
	late := h.seen(pending[0], "BATCH")
	require.Equal(t, strconv.Itoa(k), late["BATCH"]["gpus"], "the waiting job got the released GPU")
	require.Equal(t, "0", h.waitEvent("prolog", pending[0]).RC)

	for _, id := range jobs {
		// Each job's srun step has ended before the job may: a step still
		// starting when its job ends can take Slurm a minute to clean up.
		h.seen(id, "BATCH", "STEP0")
		h.letGo(id, 0)
	}
	for _, id := range jobs {
		h.finish(id, "COMPLETED")
	}
	h.requireClean()
	snap, err = h.st.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
	// What report counts: the hold once, as the manual reservation it
	// was; the placeholder job itself held nothing. (Earlier clusters on
	// the same store reused the job ids: only records since the hold.)
	recs, err := h.st.History(ctx, r.StartedAt)
	require.NoError(t, err)
	var ofHold []allocator.Record
	for _, rec := range recs {
		if rec.JobID == hold && !rec.StartedAt.Before(r.StartedAt) {
			ofHold = append(ofHold, rec)
		}
	}
	require.Len(t, ofHold, 1, "%+v", ofHold)
	require.Equal(t, allocator.KindManual, ofHold[0].Kind)
	require.Equal(t, slurmUUID(k), ofHold[0].GPU)
	st, _, err = h.c.NodeState()
	require.NoError(t, err)
	require.False(t, strings.Contains(st, "drain"), st)
}

// healthCheck runs canhazgpu-healthcheck as slurmd would, with settings
// such as CANHAZGPU_SLURM_LOST_PLACEHOLDER=keep, and returns its output.
func (h *holdsSite) healthCheck(settings ...string) string {
	h.t.Helper()
	scontrol, err := exec.LookPath("scontrol")
	require.NoError(h.t, err)
	code, out, _ := runHealthCheck(h.t, append([]string{"SLURMD_NODENAME=" + siteNode, "SLURM_CONF=" + h.c.Conf,
		"CANHAZGPU_CONFIG=" + h.cfg, "CANHAZGPU_HEALTH_SCONTROL=" + scontrol}, settings...))
	require.Equal(h.t, 0, code, out)
	return out
}

// TestSlurmPlaceholderReconciled: the health check keeps placeholders and
// holds in step both ways. A hold that ended without its canhazgpu (a
// killed run whose lease lapsed, a release behind the CLI's back) leaves
// its placeholder job running, keeping batch jobs off a free GPU: the
// check cancels it, a killed run's once its lease lapsed. A placeholder
// cancelled by hand leaves a hold Slurm no longer sees: the check releases
// it (lost_placeholder = "release"), leaves it ("keep") or gives it a new
// placeholder ("resubmit"). Root's reserve --user makes the placeholder
// the user's job.
func TestSlurmPlaceholderReconciled(t *testing.T) {
	h := newHoldsSite(t)
	ctx := context.Background()

	t.Run("placeholder without its hold", func(t *testing.T) {
		hold := h.hold(2)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		r := snap.Reservations[slurmUUID(2)]
		// What the lapse of a killed run's lease does, in one store call.
		_, err = h.st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: h.user, Token: r.Token})
		require.NoError(t, err)
		job, err := h.c.Job(hold)
		require.NoError(t, err)
		require.Equal(t, "RUNNING", job["JobState"], "nobody told Slurm")

		out := h.healthCheck()
		require.Contains(t, out, "cancelled placeholder job "+hold)
		_, err = h.c.WaitJob(hold, 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
		require.NotContains(t, h.healthCheck(), "placeholder job", "nothing left to settle")
	})

	t.Run("hold without its placeholder", func(t *testing.T) {
		hold := h.hold(3)
		h.cancelPlaceholder("", hold)

		out := h.healthCheck()
		require.Contains(t, out, fmt.Sprintf("of %s's manual hold: its placeholder job %s no longer runs", h.user, hold))
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		require.Empty(t, snap.Reservations, "the hold Slurm no longer saw is released")
	})

	t.Run("run ends its placeholder with the command", func(t *testing.T) {
		before := h.holdJobIDs()
		out, code := h.canhazgpu(h.user, "run", "--gpu-ids", strconv.Itoa(nvmlOf(1)), "--", "/bin/true")
		require.Equal(t, 0, code, out)
		after := h.holdJobIDs()
		require.Len(t, after, len(before)+1, "one placeholder for the run")
		job, err := h.c.WaitJob(after[len(after)-1], 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
		require.Equal(t, "gpu:dev1:1", strings.TrimPrefix(job["TresPerNode"], "gres:"), "%v", job)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		require.Empty(t, snap.Reservations)
	})

	t.Run("a killed run's lease lapses: its placeholder is cancelled", func(t *testing.T) {
		run := h.startRun(t, 1)
		job := run.job
		run.kill()
		j, err := h.c.Job(job)
		require.NoError(t, err)
		require.Equal(t, "RUNNING", j["JobState"], "nobody told Slurm")
		require.NotContains(t, h.healthCheck(), "placeholder job", "the lease has not lapsed yet")

		// Two heartbeat timeouts without a heartbeat: the lease lapsed.
		ageNodeReservations(t, siteNode, 2*time.Minute)
		out := h.healthCheck()
		require.Contains(t, out, "cancelled placeholder job "+job)
		_, err = h.c.WaitJob(job, 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		for _, r := range snap.Reservations {
			require.False(t, r.Active(snap.Now), "the lapsed lease holds nothing: %+v", r)
		}
	})

	t.Run("keep leaves a hold whose placeholder was cancelled", func(t *testing.T) {
		hold := h.hold(3)
		h.cancelPlaceholder("", hold)

		require.NotContains(t, h.healthCheck("CANHAZGPU_SLURM_LOST_PLACEHOLDER=keep"), "placeholder job")
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		r := snap.Reservations[slurmUUID(3)]
		require.Equal(t, allocator.KindManual, r.Kind, "kept")
		require.Equal(t, hold, r.JobID)
		out, code := h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
	})

	t.Run("resubmit gives a hold a new placeholder", func(t *testing.T) {
		hold := h.hold(3)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		token := snap.Reservations[slurmUUID(3)].Token
		h.cancelPlaceholder("", hold)

		out := h.healthCheck("CANHAZGPU_SLURM_LOST_PLACEHOLDER=resubmit")
		m := regexp.MustCompile(`: job ([0-9]+) in place of job ` + hold + `, which no longer runs`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		job, err := h.c.Job(m[1])
		require.NoError(t, err)
		require.Equal(t, "RUNNING", job["JobState"], "%v", job)
		require.Contains(t, job["UserId"], h.user, "submitted as the hold's owner")
		require.Equal(t, "gpu:dev3:1", strings.TrimPrefix(job["TresPerNode"], "gres:"), "%v", job)
		ev := h.waitEvent("prolog", m[1])
		require.Equal(t, "0", ev.RC, ev.Out)
		require.Contains(t, ev.Out, "placeholder", "its Prolog found the same hold")
		snap, err = h.st.Snapshot(ctx)
		require.NoError(t, err)
		require.Len(t, snap.Reservations, 1)
		r := snap.Reservations[slurmUUID(3)]
		require.Equal(t, m[1], r.JobID, "the hold names its new placeholder")
		require.Equal(t, token, r.Token, "the same hold")
		require.NotContains(t, h.healthCheck("CANHAZGPU_SLURM_LOST_PLACEHOLDER=resubmit"), "placeholder job", "in step again")

		out, code := h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
		_, err = h.c.WaitJob(m[1], 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
	})

	t.Run("resubmit: a run's end cancels its new placeholder", func(t *testing.T) {
		run := h.startRun(t, 0)
		_, err := h.c.Run("scancel", run.job)
		require.NoError(t, err)
		_, err = h.c.WaitJob(run.job, 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
		out := h.healthCheck("CANHAZGPU_SLURM_LOST_PLACEHOLDER=resubmit")
		m := regexp.MustCompile(`: job ([0-9]+) in place of job ` + run.job + `, which no longer runs`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		job, err := h.c.Job(m[1])
		require.NoError(t, err)
		require.Equal(t, "RUNNING", job["JobState"], "%v", job)
		require.Contains(t, job["UserId"], h.user)

		out = run.end()
		require.NotContains(t, out, "warning", "nothing left to its time limit")
		_, err = h.c.WaitJob(m[1], 60*time.Second, slurmtest.JobState("CANCELLED"))
		require.NoError(t, err)
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		require.Empty(t, snap.Reservations)
	})

	t.Run("resubmit: a GPU Slurm gave a batch job meanwhile is released", func(t *testing.T) {
		// The batch job meets the hold in its Prolog: let it run there,
		// and keep the Prolog from releasing the hold itself (it does
		// unless lost_placeholder is "keep": see
		// TestSlurmPlaceholderCancelledByItsOwner), so that the check
		// finds it.
		h.configure(append(holdSettings(h.c, h.salloc, h.scancel), `on_conflict = "warn"`, `lost_placeholder = "keep"`)...)
		defer h.configure(holdSettings(h.c, h.salloc, h.scancel)...)
		hold := h.hold(2)
		h.cancelPlaceholder("", hold)
		busy := h.submit("--gres=gpu:dev2:1", "--wrap", h.jobScript())
		h.seen(busy, "BATCH")

		out := h.healthCheck("CANHAZGPU_SLURM_LOST_PLACEHOLDER=resubmit")
		require.Contains(t, out, fmt.Sprintf("of %s's manual hold: its placeholder job %s no longer runs and Slurm refused a new one: salloc: ", h.user, hold))
		require.Contains(t, out, "lost_placeholder=resubmit")
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		for _, r := range snap.Reservations {
			require.NotEqual(t, allocator.KindManual, r.Kind, "the hold is released: %+v", r)
		}
		h.letGo(busy, 0)
		h.finish(busy, "COMPLETED")
	})

	t.Run("root's reserve --user: the placeholder is the user's", func(t *testing.T) {
		out, code := h.canhazgpu("", "reserve", "--user", h.user, "--gpu-ids", strconv.Itoa(nvmlOf(2)), "--duration", "30m")
		require.Equal(t, 0, code, out)
		m := holdJobLine.FindStringSubmatch(out)
		require.NotNil(t, m, out)
		job, err := h.c.Job(m[1])
		require.NoError(t, err)
		require.Equal(t, "RUNNING", job["JobState"], "%v", job)
		require.Contains(t, job["UserId"], h.user)
		owner, err := h.c.Run("squeue", "--noheader", "--jobs", m[1], "--format", "%u")
		require.NoError(t, err)
		require.Equal(t, h.user, strings.TrimSpace(owner), "squeue shows the hold's owner")
		snap, err := h.st.Snapshot(ctx)
		require.NoError(t, err)
		r := snap.Reservations[slurmUUID(2)]
		require.Equal(t, h.user, r.User)
		require.Equal(t, m[1], r.JobID)
		out, code = h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
		_, err = h.c.WaitJob(m[1], 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
		require.NoError(t, err)
	})

	t.Run("live holds are left alone", func(t *testing.T) {
		hold := h.hold(0)
		out := h.healthCheck()
		require.NotContains(t, out, "placeholder job")
		job, err := h.c.Job(hold)
		require.NoError(t, err)
		require.Equal(t, "RUNNING", job["JobState"])
		out, code := h.canhazgpu(h.user, "release")
		require.Equal(t, 0, code, out)
		_, err = h.c.WaitJob(hold, 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
		require.NoError(t, err)
	})
	h.requireClean()
}

// heldRun is a `canhazgpu run` of the job user's, holding a GPU with its
// placeholder while its command (a sleep) waits.
type heldRun struct {
	t       *testing.T
	cmd     *exec.Cmd
	pidFile string // the command's pid
	out     bytes.Buffer
	job     string // the placeholder job the hold named when it started
}

// startRun starts `canhazgpu run` on Slurm's GPU k as the job user and
// returns once the hold names its placeholder and the command runs.
func (h *holdsSite) startRun(t *testing.T, k int) *heldRun {
	t.Helper()
	dir, err := os.MkdirTemp("", "chg-run")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	r := &heldRun{t: t, pidFile: filepath.Join(dir, "pid")}
	r.cmd = exec.Command(h.runuser, "-u", h.user, "--", h.cli, "run", "--gpu-ids", strconv.Itoa(nvmlOf(k)), "--",
		"/bin/sh", "-c", "echo $$ > "+r.pidFile+"; exec /bin/sleep 600")
	r.cmd.Env = []string{"PATH=/nonexistent"}
	r.cmd.Dir = h.dir
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	require.NoError(t, r.cmd.Start())
	t.Cleanup(r.kill)
	require.Eventually(t, func() bool {
		snap, err := h.st.Snapshot(context.Background())
		if err != nil {
			return false
		}
		res, ok := snap.Reservations[slurmUUID(k)]
		r.job = res.JobID
		return ok && res.Kind == allocator.KindRun && r.job != "" && r.commandPID() > 0
	}, 60*time.Second, 100*time.Millisecond, "the run never held GPU %d with its placeholder", k)
	return r
}

func (r *heldRun) commandPID() int {
	data, err := os.ReadFile(r.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// kill ends the run's canhazgpu and its command with SIGKILL, as the OOM
// killer or a lost session would: nothing releases the lease or cancels
// the placeholder.
func (r *heldRun) kill() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	if pid := r.commandPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = r.cmd.Wait()
}

// end ends the command alone: canhazgpu then releases and cancels as
// after any command. It returns the run's output.
func (r *heldRun) end() string {
	r.t.Helper()
	require.NoError(r.t, syscall.Kill(r.commandPID(), syscall.SIGTERM))
	_ = r.cmd.Wait()
	return r.out.String()
}

// holdJobIDs are the ids of every placeholder job Slurm remembers, in
// submission order.
func (h *holdsSite) holdJobIDs() []string {
	h.t.Helper()
	out, err := h.c.Run("scontrol", "--oneliner", "show", "job")
	require.NoError(h.t, err)
	var ids []int
	for line := range strings.SplitSeq(out, "\n") {
		if m := regexp.MustCompile(`^JobId=(\d+) JobName=canhazgpu-hold `).FindStringSubmatch(line); m != nil {
			id, _ := strconv.Atoi(m[1])
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out2 := make([]string, len(ids))
	for i, id := range ids {
		out2[i] = strconv.Itoa(id)
	}
	return out2
}
