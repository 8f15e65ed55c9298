package gpu

import (
	"errors"
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
}

func writeFixtureProc(t *testing.T, root string, pid int, p fixtureProc) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	status := "Name:\t" + p.comm + "\nUmask:\t0022\nState:\tS (sleeping)\n" +
		"Uid:\t" + strconv.Itoa(p.uid) + "\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
	files := map[string]string{"status": status}
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

func TestJobID(t *testing.T) {
	tests := []struct {
		name    string
		cgroup  string
		environ string
		want    string
	}{
		{name: "cgroup v2", cgroup: "0::/system.slice/slurmstepd.scope/job_42/step_0\n", want: "42"},
		{name: "cgroup v2 task level", cgroup: "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n", want: "42"},
		{
			name: "cgroup v1",
			cgroup: "12:pids:/system.slice/slurmd.service\n" +
				"11:memory:/slurm/uid_1000/job_1234/step_batch/task_0\n" +
				"4:devices:/slurm/uid_1000/job_1234/step_batch\n",
			want: "1234",
		},
		{name: "cgroup v1 with node name", cgroup: "7:cpuset:/slurm_node07/uid_1000/job_99/step_extern\n", want: "99"},
		{name: "not in a job", cgroup: "0::/user.slice/user-1000.slice/session-3.scope\n", want: ""},
		{name: "job_ without a number", cgroup: "0::/system.slice/job_abc/step_0\n", want: ""},
		{name: "environ", cgroup: "0::/user.slice\n", environ: "PATH=/bin\x00SLURM_JOB_ID=77\x00HOME=/root\x00", want: "77"},
		{name: "cgroup wins over environ", cgroup: "0::/system.slice/slurmstepd.scope/job_42/step_0\n", environ: "SLURM_JOB_ID=77\x00", want: "42"},
		{name: "empty environ value", environ: "SLURM_JOB_ID=\x00", want: ""},
		{name: "similar variable", environ: "SLURM_JOB_ID_OLD=5\x00MY_SLURM_JOB_ID=6\x00", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := jobIDFromCgroup([]byte(tt.cgroup))
			if got == "" {
				got = jobIDFromEnviron([]byte(tt.environ))
			}
			require.Equal(t, tt.want, got)
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
			name: "unnamed uid and job from environ",
			pid:  5000,
			want: Process{PID: 5000, Name: "sleep", User: "uid:3999999999", UID: unnamedUID, UsedMemoryMB: -1,
				Cmdline: []string{"sleep", "100"}, JobID: "77"},
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
