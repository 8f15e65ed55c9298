package gpu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// unnamedUID is a uid no test machine gives a name to.
const unnamedUID = 3999999999

// fixtureProc describes one /proc/<pid> directory; empty fields are not written.
type fixtureProc struct {
	comm    string
	uid     int
	cmdline []string
	cgroup  string
	environ []string
	ppid    int    // for stat; 0 writes 1 (init)
	start   uint64 // for stat: start time in clock ticks after boot
}

func writeFixtureProc(t *testing.T, root string, pid int, p fixtureProc) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	status := "Name:\t" + p.comm + "\nUmask:\t0022\nState:\tS (sleeping)\n" +
		"Uid:\t" + strconv.Itoa(p.uid) + "\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
	ppid := p.ppid
	if ppid == 0 {
		ppid = 1
	}
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime …
	stat := fmt.Sprintf("%d (%s) S %d 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", pid, p.comm, ppid, p.start)
	files := map[string]string{"status": status, "stat": stat}
	if p.comm != "" {
		files["comm"] = p.comm + "\n"
	}
	if p.cmdline != nil {
		files["cmdline"] = strings.Join(p.cmdline, "\x00") + "\x00"
	}
	if p.cgroup != "" {
		files["cgroup"] = p.cgroup
	}
	if p.environ != nil {
		files["environ"] = strings.Join(p.environ, "\x00") + "\x00"
	}
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
}

func TestParseStatusUID(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int
		wantErr string
	}{
		{name: "real uid is the first field", status: "Name:\tpython3\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n", want: 1000},
		{name: "root", status: "Uid:\t0\t0\t0\t0\n", want: 0},
		{name: "largest uid", status: "Uid:\t4294967294\t1\t1\t1", want: 4294967294},
		{name: "no uid line", status: "Name:\tx\nGid:\t0\t0\t0\t0\n", wantErr: "no Uid line"},
		{name: "empty uid line", status: "Uid:\n", wantErr: "empty Uid line"},
		{name: "not a number", status: "Uid:\tabc\t0\t0\t0\n", wantErr: "bad Uid line"},
		{name: "negative", status: "Uid:\t-1\t0\t0\t0\n", wantErr: "bad Uid line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatusUID([]byte(tt.status))
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestSplitNUL(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "argv", in: "python3\x00-m\x00vllm.entrypoints.openai.api_server\x00", want: []string{"python3", "-m", "vllm.entrypoints.openai.api_server"}},
		{name: "empty argument kept", in: "sh\x00-c\x00\x00", want: []string{"sh", "-c", ""}},
		{name: "rewritten title without NUL", in: "postgres: writer", want: []string{"postgres: writer"}},
		{name: "zombie or kernel thread", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, splitNUL([]byte(tt.in)))
		})
	}
}

func TestJobFromCgroup(t *testing.T) {
	tests := []struct {
		name    string
		cgroup  string
		want    string
		inSlurm bool
	}{
		{name: "cgroup v2", cgroup: "0::/system.slice/slurmstepd.scope/job_42/step_0\n", want: "42", inSlurm: true},
		{name: "cgroup v2 task level", cgroup: "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n", want: "42", inSlurm: true},
		{name: "cgroup v2, several slurmd", cgroup: "0::/system.slice/node07_slurmstepd.scope/job_42/step_0\n", want: "42", inSlurm: true},
		{
			name: "cgroup v1",
			cgroup: "12:pids:/system.slice/slurmd.service\n" +
				"11:memory:/slurm/uid_1000/job_1234/step_batch/task_0\n" +
				"4:devices:/slurm/uid_1000/job_1234/step_batch\n",
			want: "1234", inSlurm: true,
		},
		{name: "cgroup v1, several slurmd", cgroup: "7:cpuset:/slurm_node07/uid_1000/job_99/step_extern\n", want: "99", inSlurm: true},
		{name: "a job_ made inside a step counts for nothing", cgroup: "7:freezer:/slurm/uid_1000/job_99/step_0/job_5\n", want: "99", inSlurm: true},
		{name: "slurmstepd itself", cgroup: "0::/system.slice/slurmstepd.scope/system\n", inSlurm: true},
		{name: "v1 slurm tree without a uid", cgroup: "4:memory:/slurm/job_42/step_0\n", inSlurm: true},
		{name: "not in a job", cgroup: "0::/user.slice/user-1000.slice/session-3.scope\n"},
		{name: "slurmd's own service", cgroup: "0::/system.slice/slurmd.service\n"},
		// cgroup trees systemd delegates to a user: directories there are
		// the user's to name.
		{name: "delegated job_", cgroup: "0::/user.slice/user-1000.slice/user@1000.service/app.slice/job_42/step_0\n"},
		{name: "delegated look-alike", cgroup: "0::/user.slice/user-1000.slice/user@1000.service/system.slice/slurmstepd.scope/job_42\n"},
		{name: "look-alike in a v1 controller", cgroup: "4:memory:/system.slice/slurmstepd.scope/job_42\n"},
		{name: "job_ without a number", cgroup: "0::/system.slice/slurmstepd.scope/job_abc/step_0\n", inSlurm: true},
		{name: "empty", cgroup: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, inSlurm := jobFromCgroup([]byte(tt.cgroup))
			require.Equal(t, tt.want, job)
			require.Equal(t, tt.inSlurm, inSlurm)
		})
	}
}

// TestSlurmJobAttribution: a process belongs to a job by its Slurm cgroup
// or the slurmstepd above it, never by what its environment claims.
func TestSlurmJobAttribution(t *testing.T) {
	root := t.TempDir()
	const outside = "0::/user.slice/user-1000.slice/session-3.scope\n"
	noCgroup := "0::/system.slice/slurmd.service\n" // proctrack/pgid: steps stay in slurmd's cgroup
	procs := map[int]fixtureProc{
		200: {comm: "slurmd", uid: 0, cmdline: []string{"/usr/sbin/slurmd"}, cgroup: noCgroup, start: 50},
		300: {comm: "slurmstepd", uid: 0, cmdline: []string{"slurmstepd: [55.batch]"}, cgroup: noCgroup, ppid: 200, start: 100},
		301: {comm: "bash", uid: 1000, cmdline: []string{"/bin/bash", "job.sh"}, cgroup: noCgroup, ppid: 300, start: 110,
			environ: []string{"SLURM_JOB_ID=55"}},
		302: {comm: "python3", uid: 1000, cmdline: []string{"python3", "train.py"}, cgroup: noCgroup, ppid: 301, start: 120,
			environ: []string{"SLURM_JOB_ID=77"}},
		// Another user's process claims job 55 through its environment.
		400: {comm: "python3", uid: 1001, cmdline: []string{"python3"}, cgroup: outside, start: 130,
			environ: []string{"SLURM_JOB_ID=55"}},
		// A user's own process named slurmstepd with a job's title.
		410: {comm: "slurmstepd", uid: 1001, cmdline: []string{"slurmstepd: [55.0]"}, cgroup: outside, start: 140},
		411: {comm: "python3", uid: 1001, cmdline: []string{"python3"}, cgroup: outside, ppid: 410, start: 150},
		// Started before pid 300 existed: its parent exited and the pid
		// went to the slurmstepd.
		420: {comm: "python3", uid: 1001, cmdline: []string{"python3"}, cgroup: outside, ppid: 300, start: 90},
		// A job_ directory in the user's own delegated cgroup tree.
		430: {comm: "python3", uid: 1001, cmdline: []string{"python3"}, start: 160,
			cgroup: "0::/user.slice/user-1001.slice/user@1001.service/app.slice/job_55\n"},
		// The cgroup wins over the process tree.
		440: {comm: "python3", uid: 1000, cmdline: []string{"python3"}, ppid: 300, start: 170,
			cgroup: "0::/system.slice/slurmstepd.scope/job_56/step_0/user/task_0\n"},
		// A root process that is no slurmstepd.
		450: {comm: "slurmstepd", uid: 0, cmdline: []string{"/usr/sbin/slurmstepd"}, cgroup: noCgroup, start: 180},
		451: {comm: "python3", uid: 1000, cmdline: []string{"python3"}, cgroup: noCgroup, ppid: 450, start: 190},
	}
	for pid, p := range procs {
		writeFixtureProc(t, root, pid, p)
	}
	for pid, want := range map[int]string{301: "55", 302: "55", 400: "", 411: "", 420: "", 430: "", 440: "56", 451: ""} {
		t.Run(strconv.Itoa(pid), func(t *testing.T) {
			got, err := LookupProcess(root, pid)
			require.NoError(t, err)
			require.Equal(t, want, got.JobID)
		})
	}
}

func TestStepdJob(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		title string
		want  string
	}{
		{"slurmstepd: [55.batch]", "55"},
		{"slurmstepd: [55.extern]", "55"},
		{"slurmstepd: [55.0]", "55"},
		{"slurmstepd: [55.interactive]   ", "55"},
		{"slurmstepd: [55]", ""},
		{"slurmstepd: [55.]", ""},
		{"slurmstepd: [x.0]", ""},
		{"slurmstepd: [55.0", ""},
		{"slurmstepd", ""},
	} {
		t.Run(tc.title, func(t *testing.T) {
			writeFixtureProc(t, root, 300, fixtureProc{comm: "slurmstepd", uid: 0, cmdline: []string{tc.title}})
			require.Equal(t, tc.want, stepdJob(root, 300))
		})
	}
}

func TestLookupProcess(t *testing.T) {
	root := t.TempDir()
	writeFixtureProc(t, root, 4242, fixtureProc{
		comm:    "python3",
		uid:     0,
		cmdline: []string{"python3", "train.py", "--epochs", "3"},
		cgroup:  "0::/system.slice/slurmstepd.scope/job_42/step_0\n",
		environ: []string{"SLURM_JOB_ID=7"},
	})
	writeFixtureProc(t, root, 5000, fixtureProc{
		comm:    "sleep",
		uid:     unnamedUID,
		cmdline: []string{"sleep", "100"},
		cgroup:  "0::/user.slice\n",
		environ: []string{"SLURM_JOB_ID=77"},
	})
	// A process of another user: environ unreadable, cgroup outside Slurm.
	writeFixtureProc(t, root, 6000, fixtureProc{comm: "kworker", uid: 0})

	tests := []struct {
		name    string
		pid     int
		want    Process
		wantErr error
	}{
		{
			name: "full",
			pid:  4242,
			want: Process{PID: 4242, Name: "python3", User: "root", UID: 0, UsedMemoryMB: -1,
				Cmdline: []string{"python3", "train.py", "--epochs", "3"}, JobID: "42"},
		},
		{
			name: "unnamed uid; the environment's job counts for nothing",
			pid:  5000,
			want: Process{PID: 5000, Name: "sleep", User: "uid:3999999999", UID: unnamedUID, UsedMemoryMB: -1,
				Cmdline: []string{"sleep", "100"}},
		},
		{
			name: "only status and comm",
			pid:  6000,
			want: Process{PID: 6000, Name: "kworker", User: "root", UID: 0, UsedMemoryMB: -1},
		},
		{
			name:    "vanished",
			pid:     7000,
			want:    Process{PID: 7000, UID: -1, UsedMemoryMB: -1},
			wantErr: fs.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LookupProcess(root, tt.pid)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestLookupProcessBadInput(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "10")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "status"), []byte("Name:\tx\n"), 0o644))

	for _, pid := range []int{0, -1} {
		_, err := LookupProcess(root, pid)
		require.ErrorContains(t, err, "invalid pid")
	}
	_, err := LookupProcess(root, 10)
	require.ErrorContains(t, err, "process 10: status: no Uid line")
}

func TestLookupProcessSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc on this machine")
	}
	got, err := LookupProcess("", os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Getuid(), got.UID)
	require.NotEmpty(t, got.Name)
	require.NotEmpty(t, got.Cmdline)
}

func TestUserCache(t *testing.T) {
	errDirectoryDown := errors.New("sssd: connection refused")
	tests := []struct {
		name      string
		uid       int
		lookup    func(string) (*user.User, error)
		want      string
		wantCalls int // after two lookups of the same uid
	}{
		{
			name:      "named uid is cached",
			uid:       1000,
			lookup:    func(string) (*user.User, error) { return &user.User{Username: "alice"}, nil },
			want:      "alice",
			wantCalls: 1,
		},
		{
			name:      "unknown uid is cached",
			uid:       1001,
			lookup:    func(string) (*user.User, error) { return nil, user.UnknownUserIdError(1001) },
			want:      "uid:1001",
			wantCalls: 1,
		},
		{
			name:      "failing directory is asked again",
			uid:       1002,
			lookup:    func(string) (*user.User, error) { return nil, errDirectoryDown },
			want:      "uid:1002",
			wantCalls: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			c := &userCache{lookup: func(uid string) (*user.User, error) {
				calls++
				require.Equal(t, strconv.Itoa(tt.uid), uid)
				return tt.lookup(uid)
			}}
			require.Equal(t, tt.want, c.name(tt.uid))
			require.Equal(t, tt.want, c.name(tt.uid))
			require.Equal(t, tt.wantCalls, calls)
		})
	}
}
