package pbs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Ended passes qstat one job id it could have recorded, never an option,
// and without qstat says nothing: the boot id alone judges then.
func TestEndedAsksQstatSafely(t *testing.T) {
	dir := t.TempDir()
	qstat := filepath.Join(dir, "qstat")
	args := filepath.Join(dir, "args")
	require.NoError(t, os.WriteFile(qstat, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > "+args+"\necho '    job_state = C'\n"), 0o755))
	s := Scheduler{Qstat: qstat}
	why, err := s.Ended(context.Background(), "12[3].srv")
	require.NoError(t, err)
	require.Equal(t, "the job is C (finished) in PBS", why)
	got, err := os.ReadFile(args)
	require.NoError(t, err)
	require.Equal(t, "-f\n12[3].srv\n", string(got))

	for _, bad := range []string{"-x", "", "1 2", "../1"} {
		require.NoError(t, os.Remove(args))
		_, err := s.Ended(context.Background(), bad)
		require.Error(t, err, "%q", bad)
		require.NoFileExists(t, args, "qstat is not run for %q", bad)
		require.NoError(t, os.WriteFile(args, nil, 0o644))
	}

	why, err = Scheduler{Qstat: filepath.Join(dir, "missing")}.Ended(context.Background(), "1.srv")
	require.Error(t, err, "a configured qstat that cannot run is a blind spot")
	require.Empty(t, why)

	saved := QstatPaths
	t.Cleanup(func() { QstatPaths = saved })
	QstatPaths = []string{filepath.Join(dir, "missing")}
	why, err = Scheduler{}.Ended(context.Background(), "1.srv")
	require.NoError(t, err, "no qstat installed: nothing to ask")
	require.Empty(t, why)
}
