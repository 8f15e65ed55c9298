package slurm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/config"
)

// standIn writes an executable shell script that records its arguments
// and environment, one per line, then prints out and exits with rc.
func standIn(t *testing.T, dir, name, out string, rc int) (path, record string) {
	t.Helper()
	path, record = filepath.Join(dir, name), filepath.Join(dir, name+".log")
	script := "#!/bin/sh\nfor a in \"$@\"; do echo \"arg $a\"; done > " + record + "\nenv | sed 's/^/env /' | sort >> " + record +
		"\nprintf '%s\\n' '" + out + "' >&2\nexit " + string(rune('0'+rc)) + "\n"
	require.NoError(t, os.WriteFile(path, []byte(script), 0o755))
	return path, record
}

func recorded(t *testing.T, record string) (args, env []string) {
	t.Helper()
	data, err := os.ReadFile(record)
	require.NoError(t, err)
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		if a, ok := strings.CutPrefix(line, "arg "); ok {
			args = append(args, a)
		} else if e, ok := strings.CutPrefix(line, "env "); ok && !strings.HasPrefix(e, "PWD=") && !strings.HasPrefix(e, "SHLVL=") && !strings.HasPrefix(e, "_=") {
			env = append(env, e)
		}
	}
	return args, env
}

// TestHoldsSubmit: salloc gets arguments built from validated values only
// and an environment of root's config alone, whatever the caller's.
func TestHoldsSubmit(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SLURM_CONF", "/home/mallory/slurm.conf")
	t.Setenv("SALLOC_PARTITION", "mallory")
	t.Setenv("PATH", "/home/mallory/bin")
	salloc, record := standIn(t, dir, "salloc", "salloc: Granted job allocation 77", 0)
	cfg := &config.Config{Node: "gpu07", Slurm: config.SlurmConfig{Holds: config.SlurmHolds{Salloc: salloc, SlurmConf: "/etc/slurm/slurm.conf"}},
		Health: config.HealthConfig{ScontrolTimeout: time.Second}}
	h := NewHolds(cfg)

	job, err := h.Submit(context.Background(), "gpu07", Placeholder{Token: 5, Indices: []int{1, 3}, Limit: 90*time.Minute + time.Second})
	require.NoError(t, err)
	require.Equal(t, "77", job)
	args, env := recorded(t, record)
	require.Equal(t, []string{"--no-shell", "--immediate", "--nodes=1", "--ntasks=1", "--nodelist=gpu07", "--job-name=canhazgpu-hold",
		"--comment=canhazgpu-hold:5", "--time=91", "--gres=gpu:dev1:1,gpu:dev3:1"}, args)
	require.Equal(t, []string{"PATH=/usr/bin:/bin", "SLURM_CONF=/etc/slurm/slurm.conf"}, env)

	_, err = h.Submit(context.Background(), "gpu07", Placeholder{Count: 2, Limit: time.Hour})
	require.NoError(t, err)
	args, _ = recorded(t, record)
	require.Contains(t, args, "--comment=canhazgpu-hold:new:60")
	require.Contains(t, args, "--gres=gpu:2")

	for _, bad := range []struct {
		node string
		p    Placeholder
	}{
		{"gpu07 --uid=0", Placeholder{Token: 5, Indices: []int{1}, Limit: time.Hour}},
		{"--gres=gpu:8", Placeholder{Token: 5, Indices: []int{1}, Limit: time.Hour}},
		{"gpu07", Placeholder{Token: 5, Limit: time.Hour}},
		{"gpu07", Placeholder{Indices: []int{1}, Limit: time.Hour}},
		{"gpu07", Placeholder{Token: 5, Indices: []int{1}}},
	} {
		require.NoError(t, os.RemoveAll(record))
		_, err := h.Submit(context.Background(), bad.node, bad.p)
		require.Error(t, err, "%+v", bad)
		require.NoFileExists(t, record, "salloc never ran")
	}
}

func TestHoldsSubmitRefused(t *testing.T) {
	dir := t.TempDir()
	salloc, _ := standIn(t, dir, "salloc", "salloc: error: Job submit/allocate failed: Requested nodes are busy", 1)
	h := NewHolds(&config.Config{Slurm: config.SlurmConfig{Holds: config.SlurmHolds{Salloc: salloc}},
		Health: config.HealthConfig{ScontrolTimeout: time.Second}})
	_, err := h.Submit(context.Background(), "gpu07", Placeholder{Token: 5, Indices: []int{1}, Limit: time.Hour})
	require.EqualError(t, err, "salloc: exit status 1: salloc: error: Job submit/allocate failed: Requested nodes are busy")
}

func TestHoldsCancel(t *testing.T) {
	dir := t.TempDir()
	scancel, record := standIn(t, dir, "scancel", "", 0)
	h := NewHolds(&config.Config{Slurm: config.SlurmConfig{Holds: config.SlurmHolds{Scancel: scancel}},
		Health: config.HealthConfig{ScontrolTimeout: time.Second}})
	require.NoError(t, h.Cancel(context.Background(), "77"))
	args, env := recorded(t, record)
	require.Equal(t, []string{"77"}, args)
	require.Equal(t, []string{"PATH=/usr/bin:/bin"}, env)
	require.NoError(t, os.Remove(record))
	for _, bad := range []string{"", "-u", "77 78", "--signal=KILL", "077", "4294967373"} {
		require.Error(t, h.Cancel(context.Background(), bad))
	}
	require.NoFileExists(t, record)
}

// TestParseHoldJobs reads squeue's lines of the fields Slurm makes alone
// (holdJobFormat): a job's name and comment, its user's text, are never
// printed, so no line is of a user's making. Ids Slurm does not write
// (which Slurm's commands would still read as another job's) are left out.
func TestParseHoldJobs(t *testing.T) {
	out := strings.Join([]string{
		"10|RUNNING|gpu07|gpu07|None|1001",
		"11|PENDING||gpu07|Resources|1001",
		"12|COMPLETED|gpu07|gpu07|None|1001",
		"13|RUNNING|gpu08|gpu08|None|1001",
		"01234|RUNNING|gpu07|gpu07|None|1003",
		"4294968530|RUNNING|gpu07|gpu07|None|1003",
		"0|RUNNING|gpu07|gpu07|None|1003",
		"17|RUNNING|gpu07|gpu07|None",
		"18|RUNNING|gpu07|gpu07|None|bob",
		// Its Prolog still runs: the hold may not name it in the store yet.
		"21|RUNNING|gpu07|gpu07|Prolog|1001",
		"22|CONFIGURING|gpu07||None|0",
		"",
	}, "\n")
	require.Equal(t, []HoldJob{{ID: "10", UID: 1001, State: "RUNNING"}, {ID: "11", UID: 1001, State: "PENDING", Starting: true},
		{ID: "21", UID: 1001, State: "RUNNING", Starting: true}, {ID: "22", UID: 0, State: "CONFIGURING", Starting: true}},
		parseHoldJobs(out, "gpu07"))
}

func TestValidJobID(t *testing.T) {
	for _, id := range []string{"1", "77", "4294967295"} {
		require.True(t, ValidJobID(id), id)
	}
	for _, id := range []string{"", "0", "01234", "+5", "-5", "4294967296", "4294968530", "12 13", "1e3", "12_3"} {
		require.False(t, ValidJobID(id), id)
	}
}

// Slurm's commands read root's slurm_conf when the config names one, in
// place of any SLURM_CONF of the environment they are given.
func TestCommandEnv(t *testing.T) {
	none := &config.Config{}
	site := &config.Config{Slurm: config.SlurmConfig{Holds: config.SlurmHolds{SlurmConf: "/etc/site/slurm.conf"}}}
	require.Equal(t, []string{"PATH=/usr/bin:/bin"}, CommandEnv(none, nil))
	require.Equal(t, []string{"PATH=/usr/bin:/bin", "SLURM_CONF=/etc/site/slurm.conf"}, CommandEnv(site, nil))
	slurmd := []string{"SLURM_CONF=/var/spool/slurmd/conf-cache/slurm.conf", "SLURMD_NODENAME=n1"}
	require.Equal(t, slurmd, CommandEnv(none, slurmd))
	require.Equal(t, []string{"SLURMD_NODENAME=n1", "SLURM_CONF=/etc/site/slurm.conf"}, CommandEnv(site, slurmd))
}

// A placeholder runs as its owner only while the account is the one the
// hold was granted to.
func TestAccount(t *testing.T) {
	as, err := Account("root", 0)
	require.NoError(t, err)
	require.Equal(t, uint32(0), as.Uid)
	_, err = Account("root", 1234)
	require.EqualError(t, err, "account root has uid 0, not the hold's 1234")
	_, err = Account("no-such-account-here", -1)
	require.Error(t, err)
}

// A failing Slurm command's error is one line, ending with the last line
// Slurm printed, its control characters made visible.
func TestHoldsCancelFails(t *testing.T) {
	dir := t.TempDir()
	scancel, _ := standIn(t, dir, "scancel", "scancel: error: Kill job error on job id 77: Access/permission denied\x1b[2J", 1)
	h := NewHolds(&config.Config{Slurm: config.SlurmConfig{Holds: config.SlurmHolds{Scancel: scancel}},
		Health: config.HealthConfig{ScontrolTimeout: time.Second}})
	err := h.Cancel(context.Background(), "77")
	require.EqualError(t, err, `scancel 77: exit status 1: scancel: error: Kill job error on job id 77: Access/permission denied\x1b[2J`)
}
