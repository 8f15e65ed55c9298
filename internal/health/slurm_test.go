package health

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/slurm"
)

// standIn is the recording stand-in scontrol of ../slurm/testdata/scontrol with its
// own steering directory.
type standIn struct {
	t    testing.TB
	dir  string
	path string
}

func newStandIn(t testing.TB) *standIn {
	t.Helper()
	path, err := filepath.Abs("../slurm/testdata/scontrol")
	require.NoError(t, err)
	return &standIn{t: t, dir: t.TempDir(), path: path}
}

func (s *standIn) env() []string { return []string{"SCONTROL_DIR=" + s.dir, "PATH=/usr/bin:/bin"} }

// show sets the node `scontrol show node` reports, in the 22.05 layout.
func (s *standIn) show(state, reason, comment string) {
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
	require.NoError(s.t, os.WriteFile(filepath.Join(s.dir, "show"), []byte(b.String()), 0o644))
}

func (s *standIn) touch(name, text string) {
	s.t.Helper()
	require.NoError(s.t, os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o644))
}

// calls returns every call's arguments.
func (s *standIn) calls() [][]string {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.dir, "calls"))
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

// updates returns the arguments of the update calls after NodeName.
func (s *standIn) updates() [][]string {
	var out [][]string
	for _, c := range s.calls() {
		if c[0] == "update" {
			require.Equal(s.t, "NodeName=n1", c[1])
			out = append(out, c[2:])
		}
	}
	return out
}

func TestPlanSlurm(t *testing.T) {
	const want = "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"
	tests := []struct {
		name    string
		action  string
		info    slurm.NodeInfo
		reason  string
		updates [][]string
		skip    string
	}{
		{name: "drain an idle node", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE"}}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "already drained for this", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want}, reason: want},
		{name: "drained by us for something else: new reason", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"MIXED", "DRAIN"}, Reason: "canhazgpu: GPU 0 used by eve (pid 1) without reservation"}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "drained by someone else", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "maintenance"},
			reason: want, skip: `node already has reason "maintenance": left as it is`},
		{name: "a resumed node's kept reason is no mark (Slurm 24.11)", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"IDLE"}, Reason: "Prolog error"}, reason: want,
			updates: [][]string{{"State=DRAIN", "Reason=" + want}}},
		{name: "down node is left alone", action: ActionDrain, info: slurm.NodeInfo{State: []string{"DOWN"}}, reason: want, skip: "node is DOWN: not drained"},
		{name: "undrain our drain", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want},
			updates: [][]string{{"State=UNDRAIN"}}},
		{name: "never undrain another reason", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "NHC: check_fs_mount failed"}},
		{name: "a reason mentioning us in the middle is not ours", action: ActionDrain,
			info: slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: "bad gpu, see canhazgpu: later"}},
		{name: "clean and not drained", action: ActionDrain, info: slurm.NodeInfo{State: []string{"IDLE"}}},
		{name: "flag sets the comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}}, reason: want,
			updates: [][]string{{"Comment=" + want}}},
		{name: "flag keeps an equal comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: want}, reason: want},
		{name: "flag keeps someone else's comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "rack 4"},
			reason: want, skip: `node already has comment "rack 4": left as it is`},
		{name: "flag never drains", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "canhazgpu: old"}, reason: want,
			updates: [][]string{{"Comment=" + want}}},
		{name: "clean clears our comment and our drain", action: ActionFlag,
			info:    slurm.NodeInfo{State: []string{"IDLE", "DRAIN"}, Reason: want, Comment: want},
			updates: [][]string{{"State=UNDRAIN"}, {"Comment="}}},
		{name: "clean keeps someone else's comment", action: ActionFlag, info: slurm.NodeInfo{State: []string{"IDLE"}, Comment: "rack 4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var updates [][]string
			skip := ""
			for _, u := range planSlurm(tc.action, tc.info, tc.reason) {
				if len(u.fields) == 0 {
					skip = u.msg
					continue
				}
				updates = append(updates, u.fields)
			}
			require.Equal(t, tc.updates, updates)
			require.Equal(t, tc.skip, skip)
		})
	}
}
