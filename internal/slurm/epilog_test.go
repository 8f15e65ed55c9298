package slurm

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

func TestEpilogReleasesByJob(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `placement = "canhazgpu"`)
	f.reserveManual(slurmUUID(0))
	_, err := f.hook(jobEnv("91", "0,1")...).Prolog(ctx)
	require.NoError(t, err)
	_, err = f.hook(jobEnv("92", "2")...).Prolog(ctx)
	require.NoError(t, err)
	held := f.jobGPUs("91")
	require.Len(t, held, 2)
	_, err = f.hook(jobEnv("90", "")...).Epilog(ctx) // loads the release script into the server
	require.NoError(t, err)
	f.calls.Reset()

	// SLURM_JOB_GPUS names Slurm's choice, not the GPUs the job got, and
	// does not matter: the release is by job.
	line, err := f.hook(jobEnv("91", "0,1")...).Epilog(ctx)
	require.NoError(t, err)
	require.Contains(t, line, "job 91: released ")
	for _, u := range held {
		require.Contains(t, line, u)
	}
	require.Equal(t, int64(1), f.calls.Load(), "one store round trip")
	require.Empty(t, f.jobGPUs("91"))
	require.Len(t, f.jobGPUs("92"), 1, "other jobs keep theirs")
	require.Equal(t, "alice", f.reservations()[slurmUUID(0)].User, "interactive reservations stay")
	requireNoJobFile(t, f, "91")

	line, err = f.hook(jobEnv("91", "")...).Epilog(ctx)
	require.NoError(t, err)
	require.Equal(t, "job 91: nothing to release", line)
	line, err = f.hook("SLURM_JOB_GPUS=0").Epilog(ctx)
	require.NoError(t, err)
	require.Equal(t, "no SLURM_JOB_ID: nothing to do", line)
}

func TestEpilogClearsMarkers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.register()
	// The Prolog could not reach the store; now the job ends with the
	// store back: nothing was reserved, and nothing must be later.
	require.NoError(t, jobstate.WriteMarker(f.stateDir(), jobstate.Marker{Op: jobstate.OpReserve,
		Kind: allocator.KindSlurm, JobID: "93", User: "bob", GPUs: []string{slurmUUID(0)}, At: testNow}))
	require.NoError(t, jobstate.WriteMarker(f.stateDir(), jobstate.Marker{Op: jobstate.OpReserve,
		Kind: allocator.KindSlurm, JobID: "94", User: "bob", GPUs: []string{slurmUUID(1)}, At: testNow}))
	line, err := f.hook(jobEnv("93", "0")...).Epilog(ctx)
	require.NoError(t, err)
	// Job 93's marker is dropped; job 94 still runs, and with the store
	// back its reservation is made now.
	require.Equal(t, "job 93: nothing to release; settled the pending reserve of slurm job 94", line)
	markers, err := jobstate.Markers(f.stateDir())
	require.NoError(t, err)
	require.Empty(t, markers)
	require.Empty(t, f.jobGPUs("93"))
	require.Equal(t, []string{slurmUUID(1)}, f.jobGPUs("94"))
}

// TestLeftoverReleaseSettled: a release recorded while the store was down
// is applied by the next Prolog or Epilog that reaches the store, on nodes
// where no health check runs.
func TestLeftoverReleaseSettled(t *testing.T) {
	ctx := context.Background()
	for _, next := range []string{"prolog", "epilog"} {
		t.Run(next, func(t *testing.T) {
			f := newFixture(t, `deadline = "300ms"`)
			_, err := f.hook(jobEnv("97", "0,1")...).Prolog(ctx)
			require.NoError(t, err)
			up := f.cfg.Redis.URL
			f.cfg.Redis.URL = "redis://127.0.0.1:1/0"
			line, err := f.hook(jobEnv("97", "0,1")...).Epilog(ctx)
			require.NoError(t, err)
			require.Contains(t, line, "release pending")
			require.Len(t, f.jobGPUs("97"), 2, "still held")

			f.cfg.Redis.URL = up
			if next == "prolog" {
				line, err = f.hook(jobEnv("98", "2")...).Prolog(ctx)
				require.NoError(t, err)
				require.Equal(t, "job 98: reserved "+slurmUUID(2)+" (index 0, slurm 2); settled the pending release of slurm job 97", line)
				require.Equal(t, []string{slurmUUID(2)}, f.jobGPUs("98"))
			} else {
				line, err = f.hook(jobEnv("98", "")...).Epilog(ctx)
				require.NoError(t, err)
				require.Equal(t, "job 98: nothing to release; settled the pending release of slurm job 97", line)
			}
			require.Empty(t, f.jobGPUs("97"))
			markers, err := jobstate.Markers(f.stateDir())
			require.NoError(t, err)
			require.Empty(t, markers)

			// With no marker left, nothing more is said and no store call
			// is added.
			_, err = f.hook(jobEnv("99", "")...).Epilog(ctx) // loads the release script into the server
			require.NoError(t, err)
			f.calls.Reset()
			line, err = f.hook(jobEnv("98", "")...).Epilog(ctx)
			require.NoError(t, err)
			require.NotContains(t, line, "settled")
			require.Equal(t, int64(1), f.calls.Load())
		})
	}
}

func TestEpilogStoreDown(t *testing.T) {
	ctx := context.Background()
	t.Run("allow", func(t *testing.T) {
		f := newFixture(t, `deadline = "300ms"`)
		_, err := f.hook(jobEnv("95", "0,1")...).Prolog(ctx)
		require.NoError(t, err)
		up := f.cfg.Redis.URL
		f.cfg.Redis.URL = blackhole(t)
		// After a requeue the Epilog may see the next attempt's count; the
		// marker must name the attempt that holds the GPUs.
		line, err := f.hook(jobEnv("95", "0,1", "SLURM_JOB_RESTART_COUNT=1")...).Epilog(ctx)
		require.NoError(t, err)
		require.Contains(t, line, "on_store_error=allow: release pending")
		requireNoJobFile(t, f, "95")
		markers, err := jobstate.Markers(f.stateDir())
		require.NoError(t, err)
		require.Equal(t, []jobstate.Marker{{Op: jobstate.OpRelease, Kind: allocator.KindSlurm, JobID: "95", User: "bob",
			UID: 1001, GPUs: []string{slurmUUID(0), slurmUUID(1)}, Restart: 0, At: testNow}}, markers)
		require.Len(t, f.jobGPUs("95"), 2, "still held until settled")

		f.cfg.Redis.URL = up
		done, err := jobstate.SettleAll(ctx, f.st, f.stateDir())
		require.NoError(t, err)
		require.Len(t, done, 1)
		require.Empty(t, f.jobGPUs("95"))
	})
	t.Run("fail", func(t *testing.T) {
		f := newFixture(t, `deadline = "300ms"`, `on_store_error = "fail"`)
		f.cfg.Redis.URL = "redis://127.0.0.1:1/0"
		_, err := f.hook(jobEnv("96", "0")...).Epilog(ctx)
		require.ErrorContains(t, err, "on_store_error=fail: nothing released")
		markers, err := jobstate.Markers(f.stateDir())
		require.NoError(t, err)
		require.Empty(t, markers)
	})
}
