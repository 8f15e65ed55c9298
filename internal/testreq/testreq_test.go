package testreq

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// machine has the programs in have, and is root when root is true.
func machine(root bool, have ...string) Machine {
	return Machine{
		LookPath: func(name string) (string, error) {
			for _, h := range have {
				if h == name {
					return "/usr/bin/" + name, nil
				}
			}
			return "", exec.ErrNotFound
		},
		Euid: func() int {
			if root {
				return 0
			}
			return 1000
		},
	}
}

func names(deps []Dep) []string {
	out := make([]string, len(deps))
	for i, d := range deps {
		out[i] = d.Name
	}
	return out
}

// A non-root user with everything installed but slurmd off the PATH gets
// one list naming both, before any test runs.
func TestPreflightListsEverythingMissing(t *testing.T) {
	var have []string
	for _, d := range All() {
		if !d.root && d.Name != "slurmd" {
			have = append(have, d.Name)
		}
	}
	var out strings.Builder
	require.False(t, Preflight(machine(false, have...), &out))
	require.Equal(t, "make test runs every test, and this machine lacks 2 of what they need:\n"+
		"  root: run make test as root: the tests create accounts, start slurmd and install the .deb\n"+
		"  slurmd: not on the PATH: apt-get install slurmd (scripts/install-deps.sh does, as root)\n", out.String())

	out.Reset()
	require.True(t, Preflight(machine(true, append(have, "slurmd")...), &out))
	require.Empty(t, out.String())
}

func TestMissingKeepsOrder(t *testing.T) {
	m := machine(true, "munged", "scontrol")
	require.Equal(t, []string{"slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "scancel", "squeue", "sinfo"}, names(m.Missing(Slurm...)))
	require.Empty(t, m.Missing(Root, Munged))
	require.Equal(t, []string{"root"}, names(machine(false).Missing(Root)))
}

func TestRequiredOnlyForOne(t *testing.T) {
	for v, want := range map[string]bool{"1": true, "": false, "0": false, "yes": false} {
		require.Equal(t, want, Required(func(string) string { return v }), "%s=%q", Switch, v)
	}
}

// recorder is a testing.TB that records how a test was stopped.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                         {}
func (r *recorder) Skipf(f string, a ...any)        { r.skipped = fmt.Sprintf(f, a...) }
func (r *recorder) Fatalf(f string, a ...any)       { r.failed = fmt.Sprintf(f, a...) }
func (r *recorder) Setenv(k, v string)              { r.TB.Setenv(k, v) }
func (r *recorder) Cleanup(f func())                { r.TB.Cleanup(f) }
func (r *recorder) stopped() (skipped, failed bool) { return r.skipped != "", r.failed != "" }

func TestNoErrorSkipsOrFails(t *testing.T) {
	missing := errors.New("slurmtest: slurmd not found: install the Debian packages")

	t.Setenv(Switch, "")
	r := &recorder{TB: t}
	NoError(r, missing)
	require.Equal(t, "slurmtest: slurmd not found: install the Debian packages (make test would fail here)", r.skipped)
	require.Empty(t, r.failed)

	t.Setenv(Switch, "1")
	r = &recorder{TB: t}
	NoError(r, missing)
	require.Empty(t, r.skipped)
	require.Equal(t, "slurmtest: slurmd not found: install the Debian packages (CANHAZGPU_REQUIRE_ALL=1: make test runs every test)", r.failed)

	r = &recorder{TB: t}
	NoError(r, nil)
	skipped, failed := r.stopped()
	require.False(t, skipped || failed, "nothing missing: the test goes on")
}

func TestNeedNamesWhatIsMissing(t *testing.T) {
	t.Setenv(Switch, "1")
	saved := Here
	t.Cleanup(func() { Here = saved })
	Here = machine(false, "dpkg")

	r := &recorder{TB: t}
	Need(r, Root, Dpkg, DpkgDeb)
	require.Equal(t, "this test needs root, dpkg-deb:\n"+
		"  root: run make test as root: the tests create accounts, start slurmd and install the .deb\n"+
		"  dpkg-deb: not on the PATH: apt-get install dpkg (scripts/install-deps.sh does, as root) (CANHAZGPU_REQUIRE_ALL=1: make test runs every test)", r.failed)

	r = &recorder{TB: t}
	Need(r, Dpkg)
	skipped, failed := r.stopped()
	require.False(t, skipped || failed)
}
