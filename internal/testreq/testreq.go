// Package testreq is the tests' contract with the machine they run on.
//
// Tests that need something real (root, redis-server, Slurm's daemons, the
// packaging tools) ask for it here instead of skipping on their own. A
// developer's plain `go test ./...` skips such a test and says what is
// missing; `make test` sets CANHAZGPU_REQUIRE_ALL=1, and then a missing
// dependency fails the test, so the suite README promises cannot pass
// green while running only half of itself.
package testreq

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Switch is the environment variable that turns skips into failures.
const Switch = "CANHAZGPU_REQUIRE_ALL"

// Required reports whether the switch is on in env ("1" only: any other
// value is a mistake the preflight names).
func Required(getenv func(string) string) bool { return getenv(Switch) == "1" }

// Dep is one thing the tests need from the machine.
type Dep struct {
	// Name is what a missing Dep is called in messages: a program, or
	// "root".
	Name string
	// Install says how to get it.
	Install string
	// root marks the Dep that is the effective user, not a program.
	root bool
}

// Machine is what a Dep is checked against; tests of the contract inject
// their own.
type Machine struct {
	LookPath func(string) (string, error)
	Euid     func() int
}

// Here is the machine the tests run on.
var Here = Machine{LookPath: exec.LookPath, Euid: os.Geteuid}

// Has reports whether the machine has d.
func (m Machine) Has(d Dep) bool {
	if d.root {
		return m.Euid() == 0
	}
	_, err := m.LookPath(d.Name)
	return err == nil
}

// Missing is the deps the machine lacks, in the order given.
func (m Machine) Missing(deps ...Dep) []Dep {
	var out []Dep
	for _, d := range deps {
		if !m.Has(d) {
			out = append(out, d)
		}
	}
	return out
}

// The dependencies README promises for `make test`.
var (
	Root = Dep{Name: "root", Install: "run make test as root: the tests create accounts, start slurmd and install the .deb", root: true}

	RedisServer = prog("redis-server", "redis-server")
	RedisCLI    = prog("redis-cli", "redis-tools")
	GCC         = prog("gcc", "gcc") // cgo, and so go test -race
	Runuser     = prog("runuser", "util-linux")
	Useradd     = prog("useradd", "passwd")

	Munged     = prog("munged", "munge")
	Slurmctld  = prog("slurmctld", "slurmctld")
	Slurmd     = prog("slurmd", "slurmd")
	Slurmstepd = prog("slurmstepd", "slurmd")
	Scontrol   = prog("scontrol", "slurm-client")
	Sbatch     = prog("sbatch", "slurm-client")
	Srun       = prog("srun", "slurm-client")
	Scancel    = prog("scancel", "slurm-client")
	Squeue     = prog("squeue", "slurm-client")
	Sinfo      = prog("sinfo", "slurm-client")

	Dpkg           = prog("dpkg", "dpkg")
	DpkgDeb        = prog("dpkg-deb", "dpkg")
	RPM            = prog("rpm", "rpm")
	Lintian        = prog("lintian", "lintian")
	SystemdAnalyze = prog("systemd-analyze", "systemd")
	Promtool       = prog("promtool", "prometheus")
	Chromium       = prog("chromium", "chromium") // the dashboard's browser test
	Python3        = prog("python3", "python3")

	// The multi-node cluster's network namespaces, and the Slurm 24.11
	// root the Slurm suite builds.
	IP          = prog("ip", "iproute2")
	Debootstrap = prog("debootstrap", "debootstrap")
)

// Slurm is every program of the single-node cluster the Slurm tests start.
var Slurm = []Dep{Munged, Slurmctld, Slurmd, Slurmstepd, Scontrol, Sbatch, Srun, Scancel, Squeue, Sinfo}

// All is everything `make test` needs; the preflight checks it before the
// long run.
func All() []Dep {
	deps := []Dep{Root, RedisServer, RedisCLI, GCC, Runuser, Useradd}
	deps = append(deps, Slurm...)
	return append(deps, Dpkg, DpkgDeb, RPM, Lintian, SystemdAnalyze, Promtool, Python3, IP, Debootstrap, Chromium)
}

func prog(name, pkg string) Dep {
	return Dep{Name: name, Install: "not on the PATH: apt-get install " + pkg + " (scripts/install-deps.sh does, as root)"}
}

// Describe is the deps, one line each, with how to get them.
func Describe(deps []Dep) string {
	var b strings.Builder
	for _, d := range deps {
		fmt.Fprintf(&b, "  %s: %s\n", d.Name, d.Install)
	}
	return b.String()
}

// Preflight writes everything the machine lacks for `make test` to w, all
// at once, and reports whether it has it all.
func Preflight(m Machine, w io.Writer) bool {
	missing := m.Missing(All()...)
	if len(missing) == 0 {
		return true
	}
	fmt.Fprintf(w, "make test runs every test, and this machine lacks %d of what they need:\n%s", len(missing), Describe(missing))
	return false
}

// Need stops the test unless the machine has every dep: a skip naming
// them, or under the switch a failure naming them and how to get them.
func Need(t testing.TB, deps ...Dep) {
	t.Helper()
	missing := Here.Missing(deps...)
	if len(missing) == 0 {
		return
	}
	names := make([]string, len(missing))
	for i, d := range missing {
		names[i] = d.Name
	}
	stop(t, fmt.Sprintf("this test needs %s:\n%s", strings.Join(names, ", "), Describe(missing)))
}

// NoError is Need for a dependency a harness checks itself (for example
// slurmtest.Available): err nil means it is there.
func NoError(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		stop(t, err.Error())
	}
}

func stop(t testing.TB, why string) {
	t.Helper()
	if Required(os.Getenv) {
		t.Fatalf("%s (%s=1: make test runs every test)", strings.TrimRight(why, "\n"), Switch)
		return
	}
	t.Skipf("%s (make test would fail here)", strings.TrimRight(why, "\n"))
}
