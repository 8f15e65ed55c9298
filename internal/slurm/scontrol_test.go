package slurm

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// standIn is the recording stand-in scontrol of testdata/scontrol with its
// own steering directory.
type standIn struct {
	t    testing.TB
	dir  string
	path string
}

func newStandIn(t testing.TB) *standIn {
	t.Helper()
	path, err := filepath.Abs("testdata/scontrol")
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

func (s *standIn) scontrol(timeout time.Duration) *Scontrol {
	return &Scontrol{Path: s.path, Node: "n1", Timeout: timeout, Env: s.env()}
}

func TestParseShowNode(t *testing.T) {
	data, err := os.ReadFile("testdata/show-node-22.05.txt")
	require.NoError(t, err)
	info, err := parseShowNode(string(data))
	require.NoError(t, err)
	require.Equal(t, NodeInfo{State: []string{"MIXED", "DRAIN"},
		Reason:  "canhazgpu: GPU 1 used by bob (pid 4242) without reservation",
		Comment: "canhazgpu: hello world"}, info)
	require.True(t, info.Drained())
	require.False(t, info.Down())

	info, err = parseShowNode("NodeName=n1\n   State=DOWN+NOT_RESPONDING ThreadsPerCore=1\n   Reason=Not responding [slurm@2026-11-25T13:13:59]\n")
	require.NoError(t, err)
	require.True(t, info.Down())
	require.False(t, info.Drained())
	require.Equal(t, "Not responding", info.Reason)

	_, err = parseShowNode("Node n1 not found\n")
	require.ErrorContains(t, err, "no State")
}

func TestScontrolCalls(t *testing.T) {
	s := newStandIn(t)
	s.show("IDLE+DRAIN", "canhazgpu: x", "")
	sc := s.scontrol(5 * time.Second)
	info, err := sc.Show(context.Background())
	require.NoError(t, err)
	require.Equal(t, "canhazgpu: x", info.Reason)
	reason := "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"
	require.NoError(t, sc.Update(context.Background(), "State=DRAIN", "Reason="+reason))
	require.Equal(t, [][]string{{"show", "node", "n1"}, {"update", "NodeName=n1", "State=DRAIN", "Reason=" + reason}}, s.calls(),
		"the reason is one argument, spaces and all")

	s.touch("fail", "slurm_update error: Invalid node state specified\n")
	err = sc.Update(context.Background(), "State=UNDRAIN")
	require.ErrorContains(t, err, "scontrol update: exit status 1: slurm_update error: Invalid node state specified")

	require.NoError(t, os.Remove(filepath.Join(s.dir, "show")))
	_, err = sc.Show(context.Background())
	require.ErrorContains(t, err, "Node n1 not found")

	_, err = (&Scontrol{Path: "/nonexistent/scontrol", Node: "n1", Timeout: time.Second}).Show(context.Background())
	require.ErrorContains(t, err, "no such file")
}

// A hanging scontrol is killed with everything it started, within its
// timeout.
func TestScontrolTimeoutKillsTheProcessGroup(t *testing.T) {
	s := newStandIn(t)
	s.show("IDLE", "", "")
	s.touch("hang", "")
	start := time.Now()
	_, err := s.scontrol(300 * time.Millisecond).Show(context.Background())
	require.ErrorContains(t, err, "scontrol show: no answer within 300ms")
	require.Less(t, time.Since(start), 5*time.Second)
	data, err := os.ReadFile(filepath.Join(s.dir, "sleep.pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 20*time.Millisecond,
		"the stand-in's child %d outlived the check", pid)
}

// alive: the process exists and is not a zombie waiting for its reaper.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestJobEnded(t *testing.T) {
	s := newStandIn(t)
	sc := s.scontrol(5 * time.Second)
	tests := []struct {
		state string // "" : Slurm does not know the job
		ended bool
	}{
		{"COMPLETED", true}, {"CANCELLED", true}, {"FAILED", true}, {"TIMEOUT", true}, {"NODE_FAIL", true},
		{"OUT_OF_MEMORY", true}, {"PENDING", true}, {"REQUEUE_HOLD", true}, {"", true},
		{"RUNNING", false}, {"COMPLETING", false}, {"SUSPENDED", false}, {"CONFIGURING", false}, {"SOMETHING_NEW", false},
	}
	for i, tc := range tests {
		t.Run(tc.state, func(t *testing.T) {
			job := strconv.Itoa(100 + i)
			if tc.state != "" {
				s.touch("job."+job, "JobId="+job+" JobName=wrap\n   UserId=alice(1002) GroupId=alice(1002)\n   JobState="+tc.state+" Reason=None Dependency=(null)\n")
			}
			ended, state, err := sc.JobEnded(context.Background(), job)
			require.NoError(t, err)
			require.Equal(t, tc.ended, ended)
			require.Equal(t, tc.state, state)
		})
	}
	s.touch("hang", "")
	_, _, err := s.scontrol(200*time.Millisecond).JobEnded(context.Background(), "100")
	require.ErrorContains(t, err, "no answer within 200ms")
}

// SpoolDir expands %n and %h as slurmd does, and accepts only an
// absolute path.
func TestScontrolSpoolDir(t *testing.T) {
	sc := newStandIn(t)
	s := &Scontrol{Path: sc.path, Node: "gpu01", Timeout: 5 * time.Second, Env: sc.env()}
	sc.touch("config", "Configuration data as of 2026-11-30T17:00:00\nSlurmdPort              = 6818\n"+
		"SlurmdSpoolDir          = /var/spool/slurmd.%h/%n\nSlurmdTimeout           = 300 sec\n")
	dir, err := s.SpoolDir(context.Background(), "host1")
	require.NoError(t, err)
	require.Equal(t, "/var/spool/slurmd.host1/gpu01", dir)

	sc.touch("config", "SlurmdSpoolDir          = spool\n")
	_, err = s.SpoolDir(context.Background(), "host1")
	require.EqualError(t, err, `scontrol show config: SlurmdSpoolDir "spool" is not an absolute path`)

	sc.touch("config", "SlurmdPort              = 6818\n")
	_, err = s.SpoolDir(context.Background(), "host1")
	require.EqualError(t, err, "scontrol show config: no SlurmdSpoolDir in its output")
}
