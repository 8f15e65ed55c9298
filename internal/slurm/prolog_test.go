package slurm

import (
	"bytes"
	"context"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

func readJob(t *testing.T, f *fixture, job string) jobstate.JobFile {
	t.Helper()
	jf, err := jobstate.ReadJob(f.stateDir(), allocator.KindSlurm, job)
	require.NoError(t, err)
	return jf
}

func requireNoJobFile(t *testing.T, f *fixture, job string) {
	t.Helper()
	_, err := jobstate.ReadJob(f.stateDir(), allocator.KindSlurm, job)
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestPrologPlacementSlurm(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.register()

	line, err := f.hook(jobEnv("11", "0,1")...).Prolog(ctx)
	require.NoError(t, err)
	require.Equal(t, "job 11: reserved "+slurmUUID(0)+" (index 2, slurm 0) "+slurmUUID(1)+" (index 3, slurm 1)", line)
	require.Equal(t, int64(1), f.calls.Load(), "one store round trip")

	res := f.reservations()
	require.Len(t, res, 2)
	for _, k := range []int{0, 1} {
		r := res[slurmUUID(k)]
		require.Equal(t, allocator.KindSlurm, r.Kind)
		require.Equal(t, "11", r.JobID)
		require.Equal(t, "bob", r.User)
		require.Equal(t, 1001, r.UID)
		require.Equal(t, 0, r.Restart)
		require.Equal(t, "boot-1", r.BootID)
		require.True(t, r.ExpiresAt.IsZero(), "batch reservations end with the job")
	}
	jf := readJob(t, f, "11")
	require.Equal(t, jobstate.JobFile{Kind: allocator.KindSlurm, JobID: "11", User: "bob", UID: 1001, BootID: "boot-1", At: testNow,
		GPUs: []jobstate.GPU{{UUID: slurmUUID(0), Index: 2, SchedIndex: 0}, {UUID: slurmUUID(1), Index: 3, SchedIndex: 1}}}, jf)

	// A retried Prolog of the same attempt gets the same answer.
	again, err := f.hook(jobEnv("11", "0,1")...).Prolog(ctx)
	require.NoError(t, err)
	require.Equal(t, line, again)
	require.Len(t, f.reservations(), 2)

	// The requeued job (restart 1) keeps its GPUs under its new attempt.
	_, err = f.hook(jobEnv("11", "0,1", "SLURM_JOB_RESTART_COUNT=1")...).Prolog(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, f.reservations()[slurmUUID(0)].Restart)
	require.Equal(t, 1, readJob(t, f, "11").Restart)
}

// TestPrologRerunAfterEpilog: a Prolog run again for the same job attempt
// soon after its Epilog (within the store's memory of replies) reserves
// the GPUs again rather than replaying the first run's reply.
func TestPrologRerunAfterEpilog(t *testing.T) {
	ctx := context.Background()
	for _, placement := range []string{"slurm", "canhazgpu"} {
		t.Run(placement, func(t *testing.T) {
			f := newFixture(t, `placement = "`+placement+`"`)
			env := jobEnv("12", "0,1", "SLURM_JOB_START_TIME=1767225600")
			first, err := f.hook(env...).Prolog(ctx)
			require.NoError(t, err)
			_, err = f.hook(env...).Epilog(ctx)
			require.NoError(t, err)
			require.Empty(t, f.jobGPUs("12"))

			again, err := f.hook(env...).Prolog(ctx)
			require.NoError(t, err)
			require.Equal(t, first, again)
			require.ElementsMatch(t, []string{slurmUUID(0), slurmUUID(1)}, f.jobGPUs("12"), "what it says it reserved is held")
			require.Len(t, readJob(t, f, "12").GPUs, 2)
		})
	}
}

func TestPrologNothingToDo(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		env  []string
		line string
	}{
		{"no job id", []string{"SLURM_JOB_GPUS=0"}, "no SLURM_JOB_ID: nothing to do"},
		{"no gpus", jobEnv("12", ""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, err := f.hook(tc.env...).Prolog(ctx)
			require.NoError(t, err)
			require.Equal(t, tc.line, line)
			require.Zero(t, f.calls.Load(), "no store access")
			_, err = os.Stat(f.stateDir())
			require.ErrorIs(t, err, fs.ErrNotExist, "no file written")
		})
	}
}

func TestPrologRegistersNewNode(t *testing.T) {
	f := newFixture(t) // nothing registered yet
	_, err := f.hook(jobEnv("13", "2")...).Prolog(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{slurmUUID(2)}, f.jobGPUs("13"))
}

func TestPrologConflictFail(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		placement string
		setup     func(f *fixture)
		want      string
	}{
		{"reserved interactively", "slurm", func(f *fixture) { f.reserveManual(slurmUUID(1)) },
			"job 21: GPU 3 (" + slurmUUID(1) + ") reserved by alice (manual since"},
		{"used without reservation", "slurm", func(f *fixture) { f.register(); f.setBusy(2) },
			"job 21: GPU 2 (" + slurmUUID(0) + ") in use without reservation; on_conflict=fail: nothing reserved"},
		{"canhazgpu finds too few", "canhazgpu", func(f *fixture) { f.reserveManual(fakeUUID(0), fakeUUID(1), fakeUUID(2)) },
			"job 21: 2 GPUs wanted, 1 free (0 in use without reservation); on_conflict=fail: nothing reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, `placement = "`+tc.placement+`"`, `on_conflict = "fail"`)
			tc.setup(f)
			before := f.reservations()
			_, err := f.hook(jobEnv("21", "0,1")...).Prolog(ctx)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "\n")
			require.Equal(t, before, f.reservations(), "nothing partial, the interactive reservation intact")
			requireNoJobFile(t, f, "21")
			markers, err := jobstate.Markers(f.stateDir())
			require.NoError(t, err)
			require.Empty(t, markers)
		})
	}
}

func TestPrologConflictWarn(t *testing.T) {
	ctx := context.Background()
	t.Run("slurm placement holds what is free", func(t *testing.T) {
		f := newFixture(t, `on_conflict = "warn"`)
		f.reserveManual(slurmUUID(1))
		line, err := f.hook(jobEnv("22", "0,1")...).Prolog(ctx)
		require.NoError(t, err)
		require.Contains(t, line, "job 22: reserved "+slurmUUID(0)+" (index 2, slurm 0); on_conflict=warn: running without a reservation on GPU 3 ("+slurmUUID(1)+") reserved by alice (manual since")
		require.Equal(t, []string{slurmUUID(0)}, f.jobGPUs("22"))
		require.Equal(t, "alice", f.reservations()[slurmUUID(1)].User)
		require.LessOrEqual(t, f.calls.Load(), int64(2))
		jf := readJob(t, f, "22")
		require.Equal(t, []jobstate.GPU{{UUID: slurmUUID(0), Index: 2, SchedIndex: 0}, {UUID: slurmUUID(1), Index: 3, SchedIndex: 1}}, jf.GPUs,
			"the job runs on every GPU Slurm gave it")
		require.Len(t, jf.Conflicts, 1)
		require.Equal(t, slurmUUID(1), jf.Conflicts[0].GPU)
		require.Contains(t, jf.Conflicts[0].Reason, "reserved by alice (manual")
	})
	t.Run("canhazgpu placement holds what it can get", func(t *testing.T) {
		f := newFixture(t, `on_conflict = "warn"`, `placement = "canhazgpu"`)
		f.reserveManual(fakeUUID(0), fakeUUID(1), fakeUUID(2)) // Slurm 0 = NVML 2 taken; only NVML 3 (Slurm 1) free
		line, err := f.hook(jobEnv("23", "0,1")...).Prolog(ctx)
		require.NoError(t, err)
		require.Contains(t, line, "on_conflict=warn")
		require.Equal(t, []string{slurmUUID(1)}, f.jobGPUs("23"))
		jf := readJob(t, f, "23")
		require.Equal(t, []jobstate.GPU{{UUID: slurmUUID(0), Index: 2, SchedIndex: 0}, {UUID: slurmUUID(1), Index: 3, SchedIndex: 1}}, jf.GPUs)
		require.Equal(t, []jobstate.Conflict{{GPU: slurmUUID(0), Reason: "not granted: 2 GPUs wanted, 1 free (0 in use without reservation)"}}, jf.Conflicts)
	})
}

func TestPrologPlacementCanhazgpu(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `placement = "canhazgpu"`)
	f.reserveManual(slurmUUID(0))

	line, err := f.hook(jobEnv("31", "0,1")...).Prolog(ctx)
	require.NoError(t, err)
	got := f.jobGPUs("31")
	require.Len(t, got, 2)
	require.Contains(t, got, slurmUUID(1), "Slurm's own choice when it is free")
	require.NotContains(t, got, slurmUUID(0))
	require.Contains(t, line, "moved")
	jf := readJob(t, f, "31")
	require.Len(t, jf.GPUs, 2)
	require.True(t, jf.GPUs[0].Moved)
	require.NotEqual(t, slurmUUID(0), jf.GPUs[0].UUID)
	require.Equal(t, 0, jf.GPUs[0].SchedIndex)
	require.Equal(t, jobstate.GPU{UUID: slurmUUID(1), Index: 3, SchedIndex: 1}, jf.GPUs[1])
	require.Equal(t, int64(1), f.calls.Load())

	// Without conflicts Slurm's choice stands. (Slurm's GPU 2 went to job
	// 31, which Slurm does not know: a job given it would move too.)
	line, err = f.hook(jobEnv("32", "3")...).Prolog(ctx)
	require.NoError(t, err)
	require.NotContains(t, line, "moved")
	require.Equal(t, []string{slurmUUID(3)}, f.jobGPUs("32"))
}

func TestPrologTakesOverStaleJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	_, err := f.hook(jobEnv("41", "0")...).Prolog(ctx)
	require.NoError(t, err)
	// Job 41's Epilog never ran; Slurm gives its GPU to job 42.
	line, err := f.hook(jobEnv("42", "0,1")...).Prolog(ctx)
	require.NoError(t, err)
	require.Contains(t, line, "took over GPU 2 ("+slurmUUID(0)+") from stale slurm job 41 (bob)")
	require.ElementsMatch(t, []string{slurmUUID(0), slurmUUID(1)}, f.jobGPUs("42"))
	require.Empty(t, f.jobGPUs("41"))
}

func TestPrologUnusableGPUList(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, gpus, extra, want string
	}{
		{"bad list", "0-1", "", `invalid SLURM_JOB_GPUS "0-1"`},
		{"beyond gres_devices", "2", `gres_devices = ["/dev/nvidia0", "/dev/nvidia1"]`, `invalid slurm gpu index "2"`},
		{"unknown minor", "7", "", "slurm GPU 7: /dev/nvidia7 (minor 7) is no GPU of this node"},
	} {
		t.Run(tc.name+"/fail", func(t *testing.T) {
			f := newFixture(t, tc.extra)
			_, err := f.hook(jobEnv("51", tc.gpus)...).Prolog(ctx)
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, f.reservations())
			requireNoJobFile(t, f, "51")
		})
		t.Run(tc.name+"/warn", func(t *testing.T) {
			f := newFixture(t, tc.extra, `on_conflict = "warn"`)
			line, err := f.hook(jobEnv("51", tc.gpus)...).Prolog(ctx)
			require.NoError(t, err)
			require.Contains(t, line, tc.want)
			require.Contains(t, line, "on_conflict=warn: running without a reservation")
			require.Empty(t, f.reservations())
			jf := readJob(t, f, "51")
			require.Empty(t, jf.GPUs)
			require.Len(t, jf.Conflicts, 1)
		})
	}
}

// blackhole accepts connections and never answers: a store that hangs.
func blackhole(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return "redis://" + l.Addr().String() + "/0"
}

func TestPrologStoreDown(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"refused", func(*testing.T) string { return "redis://127.0.0.1:1/0" }},
		{"hanging", blackhole},
	} {
		t.Run(tc.name+"/allow", func(t *testing.T) {
			f := newFixture(t, `deadline = "300ms"`)
			f.cfg.Redis.URL = tc.url(t)
			// Far longer than the deadline: the deadline must cut them short.
			f.cfg.Redis.DialTimeout, f.cfg.Redis.OpTimeout = 10*time.Second, 10*time.Second
			start := time.Now()
			line, err := f.hook(jobEnv("61", "0,1", "SLURM_JOB_RESTART_COUNT=2")...).Prolog(ctx)
			require.Less(t, time.Since(start), 5*time.Second, "the deadline holds, store retries included")
			require.NoError(t, err)
			require.Contains(t, line, "on_store_error=allow: running on Slurm's GPUs")
			markers, err := jobstate.Markers(f.stateDir())
			require.NoError(t, err)
			require.Equal(t, []jobstate.Marker{{Op: jobstate.OpReserve, Kind: allocator.KindSlurm, JobID: "61", User: "bob",
				UID: 1001, GPUs: []string{slurmUUID(0), slurmUUID(1)}, Restart: 2, BootID: "boot-1", At: testNow}}, markers)
			jf := readJob(t, f, "61")
			require.True(t, jf.Pending)
			require.Len(t, jf.GPUs, 2)
		})
		t.Run(tc.name+"/fail", func(t *testing.T) {
			f := newFixture(t, `deadline = "300ms"`, `on_store_error = "fail"`)
			f.cfg.Redis.URL = tc.url(t)
			_, err := f.hook(jobEnv("62", "0")...).Prolog(ctx)
			require.ErrorContains(t, err, "on_store_error=fail: nothing reserved")
			requireNoJobFile(t, f, "62")
			markers, err := jobstate.Markers(f.stateDir())
			require.NoError(t, err)
			require.Empty(t, markers)
		})
	}
}

func TestPrologBadGPUFile(t *testing.T) {
	f := newFixture(t, `on_conflict = "warn"`, `on_store_error = "allow"`)
	require.NoError(t, os.WriteFile(f.fakeFile, []byte("{"), 0o644))
	_, err := f.hook(jobEnv("71", "0")...).Prolog(context.Background())
	require.ErrorContains(t, err, "scan GPUs")
	requireNoJobFile(t, f, "71")
}

func TestPrologMain(t *testing.T) {
	f := newFixture(t)
	base := append(jobEnv("81", "0"), "CANHAZGPU_CONFIG="+f.cfgFile)
	for _, tc := range []struct {
		name string
		env  []string
		rc   int
		out  string
	}{
		{"prolog", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_slurmd"}), 0, "canhazgpu-prolog: job 81: reserved " + slurmUUID(0)},
		{"no context", base, 1, `canhazgpu-prolog: SLURM_SCRIPT_CONTEXT="": want prolog_slurmd`},
		{"as epilog", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=epilog_slurmd"}), 1,
			`canhazgpu-prolog: SLURM_SCRIPT_CONTEXT="epilog_slurmd": want prolog_slurmd (as Prolog=) or prolog_task (as TaskProlog=); the Epilog is canhazgpu-epilog`},
		{"bad config", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_slurmd", "CANHAZGPU_SLURM_PLACEMENT=anywhere"}), 1,
			`canhazgpu-prolog: config: CANHAZGPU_SLURM_PLACEMENT: slurm.placement: must be one of slurm, canhazgpu, got "anywhere"`},
		{"task", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_task", "CANHAZGPU_SLURM_EXPORT=uuid"}), 0,
			"export CUDA_VISIBLE_DEVICES=" + slurmUUID(0)},
		{"task with bad config", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_task", "CANHAZGPU_SLURM_EXPORT=all"}), 0, ""},
		{"prolog of a job without GPUs", slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_slurmd", "SLURM_JOB_GPUS="}), 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			rc := PrologMain(context.Background(), tc.env, &out)
			require.Equal(t, tc.rc, rc)
			if tc.out == "" {
				require.Empty(t, out.String())
				return
			}
			require.True(t, strings.HasPrefix(out.String(), tc.out), out.String())
			require.Equal(t, 1, strings.Count(out.String(), "\n"), "one line")
		})
	}
	var out bytes.Buffer
	require.Equal(t, 1, EpilogMain(context.Background(), slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=prolog_slurmd"}), &out))
	require.Contains(t, out.String(), `canhazgpu-epilog: SLURM_SCRIPT_CONTEXT="prolog_slurmd": want epilog_slurmd`)
	out.Reset()
	require.Equal(t, 0, EpilogMain(context.Background(), slices.Concat(base, []string{"SLURM_SCRIPT_CONTEXT=epilog_slurmd"}), &out))
	require.Equal(t, "canhazgpu-epilog: job 81: released "+slurmUUID(0)+"\n", out.String())
	require.NoFileExists(t, filepath.Join(f.stateDir(), "slurm", "81"))
}
