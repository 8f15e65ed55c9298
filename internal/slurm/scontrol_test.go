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

	"canhazgpu/internal/slurm/scontroltest"
)

// scontrolOf is a runner of the stand-in.
func scontrolOf(s *scontroltest.StandIn, timeout time.Duration) *Scontrol {
	return &Scontrol{Path: s.Path, Node: "n1", Timeout: timeout, Env: s.Env()}
}

func TestParseShowNode(t *testing.T) {
	data, err := os.ReadFile("testdata/show-node-22.05.txt")
	require.NoError(t, err)
	info, err := parseShowNode(string(data))
	require.NoError(t, err)
	require.Equal(t, NodeInfo{State: []string{"MIXED", "DRAIN"},
		Reason:  "canhazgpu: GPU 1 used by bob (pid 4242) without reservation",
		Comment: "canhazgpu: hello world", Gres: "gpu:4"}, info)
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
	s := scontroltest.New(t)
	s.Show("IDLE+DRAIN", "canhazgpu: x", "")
	sc := scontrolOf(s, 5*time.Second)
	info, err := sc.Show(context.Background())
	require.NoError(t, err)
	require.Equal(t, "canhazgpu: x", info.Reason)
	reason := "canhazgpu: GPU 1 used by bob (pid 4242) without reservation"
	require.NoError(t, sc.Update(context.Background(), "State=DRAIN", "Reason="+reason))
	require.Equal(t, [][]string{{"show", "node", "n1"}, {"update", "NodeName=n1", "State=DRAIN", "Reason=" + reason}}, s.Calls(),
		"the reason is one argument, spaces and all")

	s.Touch("fail", "slurm_update error: Invalid node state specified\n")
	err = sc.Update(context.Background(), "State=UNDRAIN")
	require.ErrorContains(t, err, "scontrol update: exit status 1: slurm_update error: Invalid node state specified")

	require.NoError(t, os.Remove(filepath.Join(s.Dir, "show")))
	_, err = sc.Show(context.Background())
	require.ErrorContains(t, err, "Node n1 not found")

	_, err = (&Scontrol{Path: "/nonexistent/scontrol", Node: "n1", Timeout: time.Second}).Show(context.Background())
	require.ErrorContains(t, err, "no such file")
}

// A hanging scontrol is killed with everything it started, within its
// timeout.
func TestScontrolTimeoutKillsTheProcessGroup(t *testing.T) {
	s := scontroltest.New(t)
	s.Show("IDLE", "", "")
	s.Touch("hang", "")
	start := time.Now()
	_, err := scontrolOf(s, 300*time.Millisecond).Show(context.Background())
	require.ErrorContains(t, err, "scontrol show: no answer within 300ms")
	require.Less(t, time.Since(start), 5*time.Second)
	data, err := os.ReadFile(filepath.Join(s.Dir, "sleep.pid"))
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
	s := scontroltest.New(t)
	sc := scontrolOf(s, 5*time.Second)
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
				s.Touch("job."+job, "JobId="+job+" JobName=wrap\n   UserId=alice(1002) GroupId=alice(1002)\n   JobState="+tc.state+" Reason=None Dependency=(null)\n")
			}
			ended, state, err := sc.JobEnded(context.Background(), job)
			require.NoError(t, err)
			require.Equal(t, tc.ended, ended)
			require.Equal(t, tc.state, state)
		})
	}
	// An array's first task: squeue lists the other tasks under its id.
	s.Touch("job.300", "JobId=300 JobName=wrap\n   JobState=COMPLETED Reason=None\n")
	s.Touch("job.300.more", "301|RUNNING\n302|PENDING\n")
	ended, state, err := sc.JobEnded(context.Background(), "300")
	require.NoError(t, err)
	require.True(t, ended)
	require.Equal(t, "COMPLETED", state)

	s.Touch("hang", "")
	_, _, err = scontrolOf(s, 200*time.Millisecond).JobEnded(context.Background(), "100")
	require.ErrorContains(t, err, "no answer within 200ms")
}

// SpoolDir expands %n and %h as slurmd does, and accepts only an
// absolute path.
func TestScontrolSpoolDir(t *testing.T) {
	sc := scontroltest.New(t)
	s := &Scontrol{Path: sc.Path, Node: "gpu01", Timeout: 5 * time.Second, Env: sc.Env()}
	sc.Touch("config", "Configuration data as of 2026-11-30T17:00:00\nSlurmdPort              = 6818\n"+
		"SlurmdSpoolDir          = /var/spool/slurmd.%h/%n\nSlurmdTimeout           = 300 sec\n")
	dir, err := s.SpoolDir(context.Background(), "host1")
	require.NoError(t, err)
	require.Equal(t, "/var/spool/slurmd.host1/gpu01", dir)

	sc.Touch("config", "SlurmdSpoolDir          = spool\n")
	_, err = s.SpoolDir(context.Background(), "host1")
	require.EqualError(t, err, `scontrol show config: SlurmdSpoolDir "spool" is not an absolute path`)

	sc.Touch("config", "SlurmdPort              = 6818\n")
	_, err = s.SpoolDir(context.Background(), "host1")
	require.EqualError(t, err, "scontrol show config: no SlurmdSpoolDir in its output")
}
