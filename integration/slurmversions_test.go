package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/testreq"
)

// slurmVariant is a way of running Slurm the key cases are checked under.
type slurmVariant struct {
	name        string
	prologFlags string
	// cgroups: proctrack/cgroup, task/cgroup and ConstrainDevices=yes with
	// cgroup/v1. This machine mounts cgroup v2 only as the hybrid
	// "unified" tree with no controller but hugetlb, so Slurm's cgroup/v2
	// (which needs the unified tree at /sys/fs/cgroup, with the devices
	// done by eBPF there) cannot run here.
	cgroups bool
}

func (v slurmVariant) options(root string) func(*slurmtest.Options) {
	return func(o *slurmtest.Options) {
		o.Root = root
		setConf(o, "PrologFlags="+v.prologFlags)
		if v.cgroups {
			o.CharDevices = true
			o.CgroupConf = []string{"CgroupPlugin=cgroup/v1", "ConstrainDevices=yes"}
			setConf(o, "ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup")
		}
	}
}

// setConf puts slurm.conf lines in place of Extra's lines of the same key
// (Extra lines replace the harness's own).
func setConf(o *slurmtest.Options, lines ...string) {
	for _, line := range lines {
		key, _, _ := strings.Cut(line, "=")
		replaced := false
		for i, l := range o.Extra {
			if strings.HasPrefix(l, key+"=") {
				o.Extra[i], replaced = line, true
			}
		}
		if !replaced {
			o.Extra = append(o.Extra, line)
		}
	}
}

// TestSlurm2411 runs the key cases of TestSlurm under Debian 13's Slurm
// 24.11 (a Slurm root built by debootstrap and cached between runs): as
// docs/slurm.md configures it, with PrologFlags=Alloc,Contain and with
// RunInJob, both with ConstrainDevices=yes.
func TestSlurm2411(t *testing.T) {
	testreq.NoError(t, slurmtest.Available())
	testreq.NoError(t, slurmtest.RootAvailable())
	root, err := slurmtest.DebianRoot("trixie")
	require.NoError(t, err)
	testSlurmVariants(t, root, "slurm-wlm 24.11.", []slurmVariant{
		{name: "Alloc", prologFlags: "Alloc"},
		{name: "Alloc,Contain with ConstrainDevices", prologFlags: "Alloc,Contain", cgroups: true},
		{name: "RunInJob with ConstrainDevices", prologFlags: "Alloc,Contain,RunInJob", cgroups: true},
	})
}

// TestSlurmCgroups runs the key cases under this machine's Slurm 22.05
// with PrologFlags=Alloc,Contain and ConstrainDevices=yes (22.05 has no
// RunInJob).
func TestSlurmCgroups(t *testing.T) {
	testreq.NoError(t, slurmtest.Available())
	testSlurmVariants(t, "", "slurm-wlm 22.05.", []slurmVariant{
		{name: "Alloc,Contain with ConstrainDevices", prologFlags: "Alloc,Contain", cgroups: true},
	})
}

func testSlurmVariants(t *testing.T, root, version string, variants []slurmVariant) {
	boot, err := jobstate.BootID("")
	require.NoError(t, err)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			s := newSite(t, v.options(root))
			got, err := s.c.Version()
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(got, version), got)

			t.Run("batch job with two GPUs", func(t *testing.T) {
				testBatchTwoGPUs(t, s.on(t), boot)
			})
			runInJob := strings.Contains(v.prologFlags, "RunInJob")
			t.Run("interactive reservation with on_conflict fail", func(t *testing.T) {
				testConflictFail(t, s.on(t), !runInJob)
			})
			if s.keepsReason {
				t.Run("health check drains a resumed node that kept its reason", func(t *testing.T) {
					testKeptReason(t, s.on(t))
				})
			}
			if !v.cgroups {
				t.Run("concurrent jobs never share a GPU", func(t *testing.T) {
					testConcurrent(t, s.on(t))
				})
				return
			}
			t.Run("devices constrained, Prolog where Slurm runs it", func(t *testing.T) {
				testConstrained(t, s.on(t), runInJob)
			})
		})
	}
}

// testKeptReason: Slurm 24.11 keeps "Prolog error" on the node resumed
// after testConflictFail; unreserved use still drains it with the health
// check's own reason, and the check undrains it once the use ends.
func testKeptReason(t *testing.T, s *site) {
	st, reason, err := s.c.NodeState()
	require.NoError(t, err)
	require.Equal(t, "idle", st)
	require.Equal(t, "Prolog error", reason, "the reason Slurm 24.11 keeps")
	env := []string{"SLURMD_NODENAME=" + siteNode, "SLURM_CONF=" + s.c.Conf, "CANHAZGPU_CONFIG=" + s.cfg,
		"CANHAZGPU_HEALTH_ACTION=drain", "CANHAZGPU_HEALTH_SCONTROL=" + s.c.Bin("scontrol"),
		"CANHAZGPU_HEALTH_SLURMD_SPOOL_DIR=" + s.c.Spool}
	s.writeFakeGPUs(map[string]string{slurmUUID(3): ""})
	defer s.writeFakeGPUs(nil)
	code, out, _ := runHealthCheck(t, env)
	require.Equal(t, 1, code, out)
	want := fmt.Sprintf("canhazgpu: GPU %d used by %s (pid %d) without reservation", nvmlOf(3), s.user, 7000+nvmlOf(3))
	require.Contains(t, out, "drained: "+want)
	st, reason, err = s.c.NodeState()
	require.NoError(t, err)
	require.Equal(t, "drained", st)
	require.Equal(t, want, reason)

	s.writeFakeGPUs(nil)
	code, out, _ = runHealthCheck(t, env)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "undrained: no violations left")
	s.requireClean()
}

// testConstrained: with ConstrainDevices=yes the job may open only its
// own GPUs' device files (the others are refused by the device cgroup;
// its own fail only for want of a driver), and the Prolog runs inside
// the job's cgroup exactly when PrologFlags has RunInJob.
func testConstrained(t *testing.T, s *site, runInJob bool) {
	var b strings.Builder
	b.WriteString("line=BATCH; ")
	for i, dev := range s.c.GresDevices {
		fmt.Fprintf(&b, "r=$(cat %s 2>&1 >/dev/null | cut -d: -f3 | tr -d ' '); line=\"$line dev%d=${r:-ok}\"; ", dev, i)
	}
	b.WriteString(`echo "$line"`)
	id := s.submit("--gres=gpu:2", "--wrap", b.String())
	s.finish(id, "COMPLETED")
	out := parseOutput(s.c.Output(id))["BATCH"]
	require.NotNil(t, out, s.c.Output(id))
	for i := range s.c.GresDevices {
		want := "Operationnotpermitted"
		if i < 2 { // Slurm's first two GPUs: the job's
			want = "Nosuchdeviceoraddress"
		}
		require.Equal(t, want, out[fmt.Sprintf("dev%d", i)], "device %d: %v", i, out)
	}
	cg, err := os.ReadFile(filepath.Join(s.dir, "prolog.cgroup."+id))
	require.NoError(t, err)
	if runInJob {
		require.Contains(t, string(cg), "/job_"+id+"/", "the Prolog ran in the job's cgroup")
	} else {
		require.NotContains(t, string(cg), "/job_"+id+"/")
	}
	require.Empty(t, s.jobGPUs(id))
	s.requireClean()
}
