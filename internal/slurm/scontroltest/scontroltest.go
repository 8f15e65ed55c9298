// Package scontroltest drives the recording stand-in scontrol of
// internal/slurm/testdata for the tests of the Slurm adapter and of the
// health check, which both run scontrol.
package scontroltest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// StandIn is the stand-in scontrol with its own steering directory: it
// records every call there and answers from the files tests put there.
type StandIn struct {
	t    testing.TB
	Dir  string // the steering directory (SCONTROL_DIR)
	Path string // the stand-in program
}

// New makes a stand-in with a fresh steering directory.
func New(t testing.TB) *StandIn {
	t.Helper()
	_, here, _, ok := runtime.Caller(0)
	require.True(t, ok)
	path := filepath.Join(filepath.Dir(here), "..", "testdata", "scontrol")
	return &StandIn{t: t, Dir: t.TempDir(), Path: path}
}

// Env is the environment the stand-in needs.
func (s *StandIn) Env() []string { return []string{"SCONTROL_DIR=" + s.Dir, "PATH=/usr/bin:/bin"} }

// Show sets the node `scontrol show node` reports, in the 22.05 layout.
func (s *StandIn) Show(state, reason, comment string) {
	s.t.Helper()
	var b strings.Builder
	b.WriteString("NodeName=n1 Arch=x86_64 CoresPerSocket=1 \n   CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.10\n")
	b.WriteString("   OS=Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC Debian 6.1.0 \n")
	b.WriteString("   State=" + state + " ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A\n")
	b.WriteString("   Partitions=debug \n   BootTime=2026-11-25T12:51:13 SlurmdStartTime=2026-11-25T13:13:50\n")
	if reason != "" {
		b.WriteString("   Reason=" + reason + " [root@2026-11-25T13:13:59]\n")
	}
	if comment != "" {
		b.WriteString("   Comment=" + comment + "\n")
	}
	b.WriteString("\n")
	require.NoError(s.t, os.WriteFile(filepath.Join(s.Dir, "show"), []byte(b.String()), 0o644))
}

// Touch writes a steering file.
func (s *StandIn) Touch(name, text string) {
	s.t.Helper()
	require.NoError(s.t, os.WriteFile(filepath.Join(s.Dir, name), []byte(text), 0o644))
}

// JobQuery is the call that asks for one job's state (Scontrol.JobEnded),
// as Calls reports it: squeue's, beside scontrol, recorded with its name.
func JobQuery(id string) []string {
	return []string{"squeue", "--noheader", "--states=all", "--jobs=" + id, "--format=%A|%T"}
}

// Calls returns every call's arguments.
func (s *StandIn) Calls() [][]string {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(s.t, err)
	var out [][]string
	for line := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
		out = append(out, strings.Split(strings.TrimSuffix(line, "\t"), "\t"))
	}
	return out
}

// Updates returns the arguments of the update calls after NodeName=n1.
func (s *StandIn) Updates() [][]string {
	var out [][]string
	for _, c := range s.Calls() {
		if c[0] == "update" {
			require.Equal(s.t, "NodeName=n1", c[1])
			out = append(out, c[2:])
		}
	}
	return out
}
