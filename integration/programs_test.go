package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/store"
)

var hostSeq atomic.Int64

// host is a node for running the programs by hand, as slurmd would: a
// config file, a fake GPU file and a state directory.
type host struct {
	dir, cfg, state, node string
}

func newHost(t testing.TB) *host {
	t.Helper()
	h := &host{dir: t.TempDir(), node: fmt.Sprintf("host%d", hostSeq.Add(1))}
	h.cfg, h.state = filepath.Join(h.dir, "config.toml"), filepath.Join(h.dir, "state")
	type fake struct {
		Index int `json:"index"`
	}
	var gpus []fake
	for i := range 8 {
		gpus = append(gpus, fake{Index: i})
	}
	data, err := json.Marshal(map[string]any{"gpus": gpus})
	require.NoError(t, err)
	fakeFile := filepath.Join(h.dir, "gpus.json")
	require.NoError(t, os.WriteFile(fakeFile, data, 0o644))
	cfg := fmt.Sprintf("node = %q\n[redis]\nurl = %q\n[gpu]\nprovider = \"fake\"\nfake_file = %q\n[slurm]\nstate_dir = %q\n",
		h.node, srv.URL(), fakeFile, h.state)
	require.NoError(t, os.WriteFile(h.cfg, []byte(cfg), 0o644))
	return h
}

// slurmEnv is the whole environment slurmd gives a program of job id: no
// PATH, no HOME; the config file named as a wrapper would.
func (h *host) slurmEnv(context, id string, extra ...string) []string {
	return append([]string{"CANHAZGPU_CONFIG=" + h.cfg, "SLURM_SCRIPT_CONTEXT=" + context, "SLURM_JOB_ID=" + id,
		"SLURM_JOBID=" + id, "SLURM_JOB_USER=bob", "SLURM_JOB_UID=1001", "SLURM_JOB_GID=1001",
		"SLURM_JOB_RESTART_COUNT=0", "SLURMD_NODENAME=" + h.node, "SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=0,1"}, extra...)
}

type result struct {
	rc             int
	stdout, stderr string
}

// runProgram runs a built program with exactly env and no arguments
// beyond args. Its output pipes must close when it exits: a child left
// holding them would keep this waiting (slurmd would wait the same way).
func runProgram(t testing.TB, name string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Env = env
	cmd.Dir = "/"
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "%s did not finish", name)
	rc := 0
	if ee, ok := err.(*exec.ExitError); ok {
		rc = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{rc, out.String(), errOut.String()}
}

// TestPrograms checks the binaries' contract with slurmd outside Slurm:
// no PATH needed, one line for the Prolog and Epilog, only export lines
// and never a failure for the TaskProlog.
func TestPrograms(t *testing.T) {
	h := newHost(t)
	prolog := runProgram(t, "canhazgpu-prolog", h.slurmEnv("prolog_slurmd", "7"))
	require.Equal(t, 0, prolog.rc, prolog.stdout)
	require.Empty(t, prolog.stderr)
	require.Regexp(t, `^canhazgpu-prolog: job 7: reserved GPU-\S+ \(index 0, slurm 0\) GPU-\S+ \(index 1, slurm 1\)\n$`, prolog.stdout)

	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"auto", h.slurmEnv("prolog_task", "7"), ""},
		{"uuid", h.slurmEnv("prolog_task", "7", "CANHAZGPU_SLURM_EXPORT=uuid", "SLURM_STEP_GPUS=1"),
			"export CUDA_VISIBLE_DEVICES=GPU-fa4e0000-0000-4000-8000-000000000001\n"},
		{"no job file", h.slurmEnv("prolog_task", "8", "CANHAZGPU_SLURM_EXPORT=uuid"), ""},
		{"config missing", h.slurmEnv("prolog_task", "7", "CANHAZGPU_CONFIG=/nonexistent/config.toml"), ""},
		{"config broken", h.slurmEnv("prolog_task", "7", "CANHAZGPU_SLURM_EXPORT=everything"), ""},
	} {
		t.Run("taskprolog "+tc.name, func(t *testing.T) {
			r := runProgram(t, "canhazgpu-prolog", tc.env)
			require.Equal(t, result{0, tc.want, ""}, r)
		})
	}

	epilog := runProgram(t, "canhazgpu-epilog", h.slurmEnv("epilog_slurmd", "7"))
	require.Equal(t, result{0, "canhazgpu-epilog: job 7: released GPU-fa4e0000-0000-4000-8000-000000000000 GPU-fa4e0000-0000-4000-8000-000000000001\n", ""}, epilog)
	epilog = runProgram(t, "canhazgpu-epilog", h.slurmEnv("epilog_slurmd", "7"))
	require.Equal(t, result{0, "canhazgpu-epilog: job 7: nothing to release\n", ""}, epilog)

	for _, tc := range []struct {
		name, program string
		env           []string
		args          []string
		rc            int
		stdout        string
		stderr        string
	}{
		{"prolog with an argument", "canhazgpu-prolog", nil, []string{"--jobid"}, 2, "",
			"canhazgpu-prolog: unexpected argument \"--jobid\": as Slurm's Prolog and TaskProlog it takes none\n"},
		{"epilog with an argument", "canhazgpu-epilog", nil, []string{"7"}, 2, "",
			"canhazgpu-epilog: unexpected argument \"7\": as Slurm's Epilog it takes none\n"},
		{"epilog as prolog", "canhazgpu-epilog", h.slurmEnv("prolog_slurmd", "7"), nil, 1,
			"canhazgpu-epilog: SLURM_SCRIPT_CONTEXT=\"prolog_slurmd\": want epilog_slurmd (as Epilog=); the Prolog and TaskProlog are canhazgpu-prolog\n", ""},
		{"prolog with a bad config", "canhazgpu-prolog", h.slurmEnv("prolog_slurmd", "9", "CANHAZGPU_CONFIG=/nonexistent/config.toml"), nil, 1,
			"canhazgpu-prolog: config: file named by CANHAZGPU_CONFIG: open /nonexistent/config.toml: no such file or directory\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runProgram(t, tc.program, tc.env, tc.args...)
			require.Equal(t, result{tc.rc, tc.stdout, tc.stderr}, r)
		})
	}
	for _, program := range []string{"canhazgpu-prolog", "canhazgpu-epilog"} {
		help := runProgram(t, program, nil, "--help")
		require.Equal(t, 0, help.rc, program)
		require.True(t, strings.HasPrefix(help.stdout, "Usage: "+program+"\n"), help.stdout)
		require.Contains(t, help.stdout, program+" --pbs --help")
	}

	// Nothing of job 7 is left in the store.
	st, err := store.Open(context.Background(), store.Conn{URL: srv.URL()}, h.node, store.Options{})
	require.NoError(t, err)
	defer st.Close()
	snap, err := st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Empty(t, snap.Reservations)
}

// TestSlurmDocs keeps docs/slurm.md showing the slurm.conf lines that
// contrib/slurm/slurm.conf ships and the Slurm tests run with.
func TestSlurmDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "slurm.md"))
	require.NoError(t, err)
	lines := contribSlurmConf(t)
	require.NotEmpty(t, lines)
	for _, line := range lines {
		require.Contains(t, string(doc), "\n    "+line+"\n", "docs/slurm.md lacks %q", line)
	}
}
