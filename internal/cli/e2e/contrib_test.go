package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var examples = filepath.Join("..", "..", "..", "contrib", "examples")

// violatingNode has unreserved use by bob (GPU 0) and root (GPU 3), and
// frank's process on erin's reserved GPU 1.
func violatingNode(t *testing.T) *node {
	n := newNode(t, idleGPUs(4))
	require.Equal(t, 0, n.run("reserve", "--user", "erin", "--gpu-ids", "1").code)
	n.setGPUs(`{"gpus": [
		{"index": 0, "memory_used_mb": 3072, "processes": [
			{"pid": 100, "name": "python3", "user": "bob", "used_memory_mb": 2048, "cmdline": ["python3", "train.py"]},
			{"pid": 101, "name": "jupyter", "user": "bob", "used_memory_mb": 1024, "cmdline": ["jupyter", "lab"]}]},
		{"index": 1, "memory_used_mb": 1500, "processes": [
			{"pid": 200, "name": "python3", "user": "erin", "used_memory_mb": 500, "cmdline": ["python3"]},
			{"pid": 201, "name": "python3", "user": "frank", "used_memory_mb": 1000, "cmdline": ["python3"]}]},
		{"index": 2, "memory_used_mb": 10},
		{"index": 3, "memory_used_mb": 2048, "processes": [
			{"pid": 300, "name": "dockerd", "user": "root", "used_memory_mb": 2048, "cmdline": ["dockerd"]}]}]}`)
	return n
}

func (n *node) example(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(examples, name))
	require.NoError(t, err)
	cmd := exec.Command(path, args...)
	cmd.Env, cmd.Dir = append(append([]string{}, n.environ...), env...), n.dir
	return runCmd(t, cmd)
}

func TestReminderExample(t *testing.T) {
	n := violatingNode(t)
	r := n.example(t, nil, "unreserved_reminder.sh")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, `Reminder: Please use canhazgpu for GPU reservations
GPU 0: bob WITHOUT RESERVATION, 3072MB used by PID 100 (python3), PID 101 (jupyter)
GPU 1: frank WITHOUT RESERVATION on the GPU reserved by erin
GPU 3: root WITHOUT RESERVATION, 2048MB used by PID 300 (dockerd)
`, r.stdout)

	clean := newNode(t, idleGPUs(2))
	r = clean.example(t, nil, "unreserved_reminder.sh")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stdout)
}

func TestNotifyExample(t *testing.T) {
	n := violatingNode(t)
	notes := filepath.Join(n.dir, "notes")
	require.NoError(t, os.Mkdir(notes, 0o755))
	record := filepath.Join(n.dir, "record.sh")
	require.NoError(t, os.WriteFile(record, []byte("#!/bin/sh\ncat > "+notes+"/$1\n"), 0o755))
	logFile := filepath.Join(n.dir, "violations.log")

	r := n.example(t, []string{"NOTIFY_COMMAND=" + record, "LOG_FILE=" + logFile}, "unreserved_notify.sh")
	require.Equal(t, 0, r.code, r.stderr)
	entries, err := os.ReadDir(notes)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	require.Equal(t, []string{"bob", "frank"}, got, "root is exempt")
	msg, err := os.ReadFile(filepath.Join(notes, "bob"))
	require.NoError(t, err)
	require.Equal(t, "Please use canhazgpu for GPU reservations: on "+n.name+" you use GPU 0 (PID 100 (python3), PID 101 (jupyter)) without a reservation.\n"+
		"Reserve it with:  canhazgpu reserve --gpu-ids 0 --duration 4h\n"+
		"or run your job with:  canhazgpu run --gpu-ids 0 -- <command>\n", string(msg))
	msg, err = os.ReadFile(filepath.Join(notes, "frank"))
	require.NoError(t, err)
	require.Contains(t, string(msg), "you use GPU 1 (PID 201 (python3)) reserved by erin.")
	logged, err := os.ReadFile(logFile)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(logged)), "\n")
	require.Len(t, lines, 3, "every violation is logged, exempt users too")
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `+n.name+`: root uses GPU 3 \(PID 300 \(dockerd\)\) without a reservation$`, lines[2])

	// A user who cannot be reached is reported, the others still notified.
	require.NoError(t, os.RemoveAll(notes))
	r = n.example(t, []string{"NOTIFY_COMMAND=false"}, "unreserved_notify.sh")
	require.Equal(t, 0, r.code)
	require.Equal(t, "unreserved_notify: could not notify bob with 'false'\nunreserved_notify: could not notify frank with 'false'\n", r.stderr)
}

func TestMonitorExample(t *testing.T) {
	n := violatingNode(t)
	r := n.example(t, nil, "unreserved_monitor.py")
	require.Equal(t, 1, r.code, r.stderr)
	require.Empty(t, r.stdout)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	require.Len(t, lines, 3, r.stderr)
	require.Regexp(t, ` WARNING Unreserved GPU usage on node `+n.name+` GPU 0: bob using 3072MB \(PID 100 \(python3\), PID 101 \(jupyter\)\)$`, lines[0])
	require.Regexp(t, ` WARNING Unreserved GPU usage on node `+n.name+` GPU 1, reserved by erin: frank using 1500MB \(PID 201 \(python3\)\)$`, lines[1])
	require.Regexp(t, ` WARNING Unreserved GPU usage on node `+n.name+` GPU 3: root using 2048MB \(PID 300 \(dockerd\)\)$`, lines[2])

	clean := newNode(t, idleGPUs(2))
	r = clean.example(t, nil, "unreserved_monitor.py")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr)

	r = clean.example(t, []string{"CANHAZGPU_REDIS_URL=redis://127.0.0.1:1/0"}, "unreserved_monitor.py")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "ERROR cannot read the GPU status: Error: ")
}
