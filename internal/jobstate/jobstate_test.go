package jobstate

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

func TestJobFileRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f := JobFile{User: "bob", UID: 1001, Restart: 2,
		GPUs:      []GPU{{UUID: "GPU-a", Index: 2, SchedIndex: 0}, {UUID: "GPU-b", Index: 0, SchedIndex: 1, Moved: true}},
		Conflicts: []Conflict{{GPU: "GPU-c", Reason: "reserved by alice (manual)"}},
		At:        time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	require.NoError(t, WriteJob(dir, allocator.KindSlurm, "42", f))

	got, err := ReadJob(dir, allocator.KindSlurm, "42")
	require.NoError(t, err)
	want := f
	want.Kind, want.JobID = allocator.KindSlurm, "42"
	require.Equal(t, want, got)

	// Readable by the job's user, who runs the TaskProlog.
	fi, err := os.Stat(JobPath(dir, allocator.KindSlurm, "42"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	for _, d := range []string{dir, filepath.Join(dir, "slurm")} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), d)
	}

	// A requeued job's Prolog replaces the file; no temporary file stays.
	f.Restart = 3
	require.NoError(t, WriteJob(dir, allocator.KindSlurm, "42", f))
	got, err = ReadJob(dir, allocator.KindSlurm, "42")
	require.NoError(t, err)
	require.Equal(t, 3, got.Restart)
	entries, err := os.ReadDir(filepath.Join(dir, "slurm"))
	require.NoError(t, err)
	require.Len(t, entries, 1)

	ids, err := Jobs(dir, allocator.KindSlurm)
	require.NoError(t, err)
	require.Equal(t, []string{"42"}, ids)
	ids, err = Jobs(dir, allocator.KindPBS)
	require.NoError(t, err)
	require.Empty(t, ids)

	require.NoError(t, RemoveJob(dir, allocator.KindSlurm, "42"))
	require.NoError(t, RemoveJob(dir, allocator.KindSlurm, "42"), "removing twice is fine")
	_, err = ReadJob(dir, allocator.KindSlurm, "42")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestBadNames(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		kind allocator.Kind
		job  string
	}{
		{allocator.KindSlurm, ""},
		{allocator.KindSlurm, "../etc"},
		{allocator.KindSlurm, ".."},
		{allocator.KindSlurm, "1 2"},
		{allocator.KindSlurm, "1\n"},
		{allocator.KindManual, "1"},
		{allocator.KindRun, "1"},
		// Any batch kind is a directory name: one that is not a
		// scheduler's name never becomes a path.
		{"../etc", "1"},
		{"pending", "1"},
	} {
		t.Run(string(tc.kind)+"/"+tc.job, func(t *testing.T) {
			var in *allocator.InputError
			require.ErrorAs(t, WriteJob(dir, tc.kind, tc.job, JobFile{}), &in)
			require.ErrorAs(t, WriteMarker(dir, Marker{Op: OpReserve, Kind: tc.kind, JobID: tc.job}), &in)
			require.ErrorAs(t, RemoveMarker(dir, tc.kind, tc.job, OpReserve), &in)
		})
	}
	var in *allocator.InputError
	require.ErrorAs(t, WriteMarker(dir, Marker{Op: "undo", Kind: allocator.KindSlurm, JobID: "1"}), &in)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written for bad input")
	// PBS job ids carry the server name and array indices.
	require.NoError(t, WriteJob(dir, allocator.KindPBS, "123.server[4]", JobFile{}))
}

func TestMarkers(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reserve7 := Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "7", User: "bob", UID: 1001,
		GPUs: []string{"GPU-a"}, Restart: 0, BootID: "boot", At: t0.Add(2 * time.Second)}
	reserve8 := Marker{Op: OpReserve, Kind: allocator.KindSlurm, JobID: "8", User: "eve", GPUs: []string{"GPU-b"}, At: t0}
	release9 := Marker{Op: OpRelease, Kind: allocator.KindPBS, JobID: "9.srv", At: t0.Add(time.Second)}
	for _, m := range []Marker{reserve7, reserve8, release9} {
		require.NoError(t, WriteMarker(dir, m))
	}
	require.FileExists(t, filepath.Join(dir, "pending", "slurm-7-reserve"))

	got, err := Markers(dir)
	require.NoError(t, err)
	require.Equal(t, []Marker{reserve8, release9, reserve7}, got, "oldest first")

	// The job ended while the store was still away: its release replaces
	// the reserve.
	release7 := Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: "7", User: "bob", At: t0.Add(3 * time.Second)}
	require.NoError(t, WriteMarker(dir, release7))
	require.NoFileExists(t, MarkerPath(dir, allocator.KindSlurm, "7", OpReserve))
	got, err = Markers(dir)
	require.NoError(t, err)
	require.Equal(t, []Marker{reserve8, release9, release7}, got)

	// Both left behind (a crash between the two steps): the release wins.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pending", "slurm-7-reserve"), mustJSON(t, reserve7), 0o644))
	got, err = Markers(dir)
	require.NoError(t, err)
	require.Equal(t, []Marker{reserve8, release9, release7}, got)

	// A damaged file is reported; the others still come back.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pending", "slurm-10-reserve"), []byte("{"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pending", "slurm-11-reserve"), mustJSON(t, reserve8), 0o644))
	got, err = Markers(dir)
	require.Error(t, err)
	require.Contains(t, err.Error(), "slurm-10-reserve")
	require.Contains(t, err.Error(), "slurm-11-reserve: does not match its contents")
	require.Equal(t, []Marker{reserve8, release9, release7}, got)

	require.NoError(t, RemoveMarker(dir, allocator.KindSlurm, "8", OpReserve))
	require.NoError(t, RemoveMarker(dir, allocator.KindSlurm, "8", OpReserve))
	require.NoFileExists(t, MarkerPath(dir, allocator.KindSlurm, "8", OpReserve))

	none, err := Markers(filepath.Join(dir, "absent"))
	require.NoError(t, err)
	require.Empty(t, none)
}

func TestBootID(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "boot_id")
	require.NoError(t, os.WriteFile(good, []byte("6c1f0a2e-1b7d-4f0e-9a61-0d0b0f4c2a11\n"), 0o644))
	id, err := BootID(good)
	require.NoError(t, err)
	require.Equal(t, "6c1f0a2e-1b7d-4f0e-9a61-0d0b0f4c2a11", id)

	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, err = BootID(empty)
	require.ErrorContains(t, err, "empty")
	_, err = BootID(filepath.Join(dir, "missing"))
	require.True(t, errors.Is(err, fs.ErrNotExist))

	if _, err := os.Stat(DefaultBootIDPath); err == nil {
		id, err := BootID("")
		require.NoError(t, err)
		require.NotEmpty(t, id)
	}
}
