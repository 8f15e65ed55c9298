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
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/buildtest"
)

// holdsSite is a site whose node offers one GRES type per GPU and whose
// interactive holds are Slurm placeholder jobs, with the CLI built for it
// (the site's config as its system file, as a package installs it).
type holdsSite struct {
	*site
	cli string
}

// holdGPUs: four GPUs, so four one-GPU jobs and one hold overfill it.
const holdGPUs = 4

func newHoldsSite(t *testing.T) *holdsSite {
	t.Helper()
	s := newSite(t, func(o *slurmtest.Options) { o.TypedGPUs, o.GPUs = true, holdGPUs })
	salloc, err := exec.LookPath("salloc")
	require.NoError(t, err)
	scancel, err := exec.LookPath("scancel")
	require.NoError(t, err)
	s.configure(holdSettings(s.c, salloc, scancel)...)
	dir, err := buildtest.BuildWithSystemFile(map[string]string{"canhazgpu": "canhazgpu/cmd/canhazgpu"}, s.cfg)
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &holdsSite{site: s, cli: filepath.Join(dir, "canhazgpu")}
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
		cmd = exec.Command("runuser", append([]string{"-u", user, "--", h.cli}, args...)...)
		cmd.Env = []string{"PATH=/nonexistent"}
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
func TestSlurmPlaceholderHolds(t *testing.T) {
	h := newHoldsSite(t)
	ctx := context.Background()

	hold := h.hold(1)
	job, err := h.c.Job(hold)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", job["JobState"], "%v", job)
	require.Equal(t, "canhazgpu-hold", job["JobName"])
	require.Contains(t, job["UserId"], h.user, "the hold's owner owns the placeholder")
	ev := h.waitEvent("prolog", hold)
	require.Equal(t, "0", ev.RC, ev.Out)
	require.Contains(t, ev.Out, "placeholder of the interactive hold of "+h.user)
	snap, err := h.st.Snapshot(ctx)
	require.NoError(t, err)
	r := snap.Reservations[slurmUUID(1)]
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
	require.Equal(t, []string{"0", "2", "3"}, values(gpus), "Slurm placed the jobs around the hold")
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
	require.Equal(t, "1", late["BATCH"]["gpus"], "the waiting job got the released GPU")
	require.Equal(t, "0", h.waitEvent("prolog", pending[0]).RC)

	for _, id := range jobs {
		h.letGo(id, 0)
	}
	for _, id := range jobs {
		h.finish(id, "COMPLETED")
	}
	h.requireClean()
	snap, err = h.st.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
	st, _, err = h.c.NodeState()
	require.NoError(t, err)
	require.False(t, strings.Contains(st, "drain"), st)
}
