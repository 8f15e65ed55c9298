package jobstate

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// These tests need root, as the programs do: they create root-owned state
// and hand files to other uids.

// otherUID owns what an unprivileged user could have made.
const otherUID = 12345

func goodJob() JobFile {
	return JobFile{User: "bob", UID: 1001, GPUs: []GPU{{UUID: "GPU-5e570000-0000-4000-8000-000000000001", Index: 1, SchedIndex: 0}},
		At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func goodMarker(job string) Marker {
	return Marker{Op: OpRelease, Kind: allocator.KindSlurm, JobID: job, User: "bob", UID: 1001,
		GPUs: []string{"GPU-5e570000-0000-4000-8000-000000000001"}, At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func requireUnsafe(t *testing.T, err error, msg string) {
	t.Helper()
	var unsafe *UnsafeError
	require.ErrorAs(t, err, &unsafe)
	require.Contains(t, err.Error(), msg)
	require.NotContains(t, err.Error(), "\n")
}

func TestPrepareCreatesRootDirs(t *testing.T) {
	old := syscall.Umask(0o077) // slurmd's may be strict; the job's user must still read
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "run", "canhazgpu")
	require.NoError(t, Prepare(dir))
	require.NoError(t, WriteJob(dir, allocator.KindSlurm, "7", goodJob()))
	require.NoError(t, WriteMarker(dir, goodMarker("8")))
	for _, p := range []string{filepath.Dir(dir), dir, filepath.Join(dir, "slurm"), filepath.Join(dir, "pending")} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, fs.ModeDir|0o755, fi.Mode(), p)
		require.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid, p)
	}
	for _, p := range []string{JobPath(dir, allocator.KindSlurm, "7"), MarkerPath(dir, allocator.KindSlurm, "8", OpRelease)} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o644), fi.Mode(), p)
	}
	require.NoError(t, Prepare(dir), "an existing good directory is fine")
	_, err := ReadJob(filepath.Join(t.TempDir(), "absent"), allocator.KindSlurm, "7")
	require.ErrorIs(t, err, fs.ErrNotExist, "readers create nothing")
}

// TestUnsafeStateDir: a state directory someone else could change is
// refused by every operation, with one line naming the path, and nothing
// is read, written or removed.
func TestUnsafeStateDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, base, state string)
		want  string
	}{
		{"state dir of another user", func(t *testing.T, base, state string) {
			require.NoError(t, os.Lchown(state, otherUID, otherUID))
		}, "state dir STATE is owned by uid 12345; want a directory owned by root and writable by root only"},
		{"state dir writable by others", func(t *testing.T, base, state string) {
			require.NoError(t, os.Chmod(state, 0o777))
		}, "state dir STATE has mode 0777, which lets group or others write in it"},
		{"state dir sticky and writable by others", func(t *testing.T, base, state string) {
			require.NoError(t, os.Chmod(state, 0o777|fs.ModeSticky))
		}, "state dir STATE has mode 1777"},
		{"state dir writable by its group", func(t *testing.T, base, state string) {
			require.NoError(t, os.Chmod(state, 0o775))
		}, "has mode 0775"},
		{"parent of another user", func(t *testing.T, base, state string) {
			require.NoError(t, os.Lchown(base, otherUID, otherUID))
		}, "state dir STATE: BASE is owned by uid 12345"},
		{"parent writable by others", func(t *testing.T, base, state string) {
			require.NoError(t, os.Chmod(base, 0o777))
		}, "state dir STATE: BASE has mode 0777"},
		{"state dir is a symbolic link", func(t *testing.T, base, state string) {
			real := filepath.Join(base, "real")
			require.NoError(t, os.Rename(state, real))
			require.NoError(t, os.Symlink(real, state))
		}, "state dir STATE is a symbolic link, which is never followed"},
		{"state dir is a file", func(t *testing.T, base, state string) {
			require.NoError(t, os.RemoveAll(state))
			require.NoError(t, os.WriteFile(state, nil, 0o644))
		}, "state dir STATE is not a directory"},
		{"kind dir of another user", func(t *testing.T, base, state string) {
			require.NoError(t, os.Lchown(filepath.Join(state, "slurm"), otherUID, otherUID))
			require.NoError(t, os.Lchown(filepath.Join(state, "pending"), otherUID, otherUID))
		}, "is owned by uid 12345"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "base")
			state := filepath.Join(base, "state")
			require.NoError(t, WriteJob(state, allocator.KindSlurm, "7", goodJob()))
			require.NoError(t, WriteMarker(state, goodMarker("8")))
			require.NoError(t, os.Chmod(base, 0o755))
			tc.setup(t, base, state)
			want := strings.NewReplacer("STATE", state, "BASE", base).Replace(tc.want)

			if tc.name != "kind dir of another user" {
				requireUnsafe(t, Prepare(state), want)
			}
			requireUnsafe(t, WriteJob(state, allocator.KindSlurm, "9", goodJob()), want)
			requireUnsafe(t, WriteMarker(state, goodMarker("9")), want)
			_, err := ReadJob(state, allocator.KindSlurm, "7")
			requireUnsafe(t, err, want)
			ids, err := Jobs(state, allocator.KindSlurm)
			requireUnsafe(t, err, want)
			require.Empty(t, ids)
			ms, err := Markers(state)
			requireUnsafe(t, err, want)
			require.Empty(t, ms)
			requireUnsafe(t, RemoveJob(state, allocator.KindSlurm, "7"), want)
			requireUnsafe(t, RemoveMarker(state, allocator.KindSlurm, "8", OpRelease), want)
			require.NoFileExists(t, JobPath(state, allocator.KindSlurm, "9"))
			require.NoFileExists(t, MarkerPath(state, allocator.KindSlurm, "9", OpRelease))
			if tc.name != "state dir is a file" {
				require.FileExists(t, JobPath(state, allocator.KindSlurm, "7"), "nothing removed")
				require.FileExists(t, MarkerPath(state, allocator.KindSlurm, "8", OpRelease), "nothing removed")
			}
		})
	}
	t.Run("relative path", func(t *testing.T) {
		requireUnsafe(t, Prepare("run/canhazgpu"), "state dir run/canhazgpu is not an absolute path")
	})
}

// TestStickyParent: a state directory of root's inside a sticky directory
// that everyone may write (like /tmp) is safe: nobody else can rename or
// remove it. Created first by someone else, it is refused.
func TestStickyParent(t *testing.T) {
	base := filepath.Join(t.TempDir(), "tmp")
	require.NoError(t, os.Mkdir(base, 0o755))
	require.NoError(t, os.Chmod(base, 0o777|fs.ModeSticky))
	state := filepath.Join(base, "canhazgpu")
	require.NoError(t, Prepare(state))
	require.NoError(t, WriteJob(state, allocator.KindSlurm, "7", goodJob()))

	squatted := filepath.Join(base, "squatted")
	require.NoError(t, os.Mkdir(squatted, 0o755))
	require.NoError(t, os.Lchown(squatted, otherUID, otherUID))
	requireUnsafe(t, Prepare(squatted), "state dir "+squatted+" is owned by uid 12345")
	requireUnsafe(t, WriteJob(squatted, allocator.KindSlurm, "7", goodJob()), "is owned by uid 12345")
	entries, err := os.ReadDir(squatted)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written into it")
}

// TestPlantedLinks: links inside a state directory are never followed,
// neither read, written through nor used to remove what they point to.
func TestPlantedLinks(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	outside := filepath.Join(t.TempDir(), "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	victim := filepath.Join(outside, "victim")
	require.NoError(t, os.WriteFile(victim, []byte("precious\n"), 0o644))
	require.NoError(t, Prepare(state))

	t.Run("kind dir is a link", func(t *testing.T) {
		require.NoError(t, os.Symlink(outside, filepath.Join(state, "slurm")))
		defer os.Remove(filepath.Join(state, "slurm"))
		requireUnsafe(t, WriteJob(state, allocator.KindSlurm, "victim", goodJob()),
			"state dir "+filepath.Join(state, "slurm")+" is a symbolic link, which is never followed")
		requireUnsafe(t, RemoveJob(state, allocator.KindSlurm, "victim"), "is a symbolic link")
		_, err := ReadJob(state, allocator.KindSlurm, "victim")
		requireUnsafe(t, err, "is a symbolic link")
	})
	t.Run("pending dir is a link", func(t *testing.T) {
		require.NoError(t, os.Symlink(outside, filepath.Join(state, "pending")))
		defer os.Remove(filepath.Join(state, "pending"))
		requireUnsafe(t, WriteMarker(state, goodMarker("7")), "is a symbolic link")
		requireUnsafe(t, RemoveMarker(state, allocator.KindSlurm, "7", OpReserve), "is a symbolic link")
		_, err := Markers(state)
		requireUnsafe(t, err, "is a symbolic link")
	})
	t.Run("job file is a link", func(t *testing.T) {
		require.NoError(t, WriteJob(state, allocator.KindSlurm, "1", goodJob()))
		link := JobPath(state, allocator.KindSlurm, "7")
		require.NoError(t, os.Symlink(victim, link))
		_, err := ReadJob(state, allocator.KindSlurm, "7")
		requireUnsafe(t, err, "state file "+link+" is a symbolic link, which is never followed")
		ids, err := Jobs(state, allocator.KindSlurm)
		requireUnsafe(t, err, "state file "+link+" is not a regular file")
		require.Equal(t, []string{"1"}, ids, "the good ones still come back")

		require.NoError(t, RemoveJob(state, allocator.KindSlurm, "7"))
		require.NoFileExists(t, link)
		require.NoError(t, os.Symlink(victim, link))
		require.NoError(t, WriteJob(state, allocator.KindSlurm, "7", goodJob()), "the link is replaced")
		fi, err := os.Lstat(link)
		require.NoError(t, err)
		require.True(t, fi.Mode().IsRegular())
	})
	data, err := os.ReadFile(victim)
	require.NoError(t, err)
	require.Equal(t, "precious\n", string(data), "never written through, never removed")
}

// TestForeignFiles: a file that is not root's, or that others may write,
// is ignored and reported; the good ones are still used.
func TestForeignFiles(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	require.NoError(t, WriteJob(state, allocator.KindSlurm, "1", goodJob()))
	require.NoError(t, WriteJob(state, allocator.KindSlurm, "2", goodJob()))
	require.NoError(t, WriteJob(state, allocator.KindSlurm, "3", goodJob()))
	require.NoError(t, WriteMarker(state, goodMarker("1")))
	require.NoError(t, WriteMarker(state, goodMarker("2")))
	require.NoError(t, os.Lchown(JobPath(state, allocator.KindSlurm, "2"), otherUID, otherUID))
	require.NoError(t, os.Chmod(JobPath(state, allocator.KindSlurm, "3"), 0o666))
	require.NoError(t, os.Lchown(MarkerPath(state, allocator.KindSlurm, "2", OpRelease), otherUID, 0))
	require.NoError(t, syscall.Mkfifo(JobPath(state, allocator.KindSlurm, "4"), 0o644))

	_, err := ReadJob(state, allocator.KindSlurm, "2")
	requireUnsafe(t, err, "state file "+JobPath(state, allocator.KindSlurm, "2")+" is owned by uid 12345; want a regular file owned by root")
	_, err = ReadJob(state, allocator.KindSlurm, "3")
	requireUnsafe(t, err, "has mode 0666, which lets group or others write it")
	_, err = ReadJob(state, allocator.KindSlurm, "4") // a FIFO must not block the reader
	requireUnsafe(t, err, "is not a regular file")

	ids, err := Jobs(state, allocator.KindSlurm)
	require.Equal(t, []string{"1"}, ids)
	require.ErrorContains(t, err, JobPath(state, allocator.KindSlurm, "2")+" is owned by uid 12345")
	require.ErrorContains(t, err, "ignored")

	ms, err := Markers(state)
	require.Equal(t, []Marker{goodMarker("1")}, ms)
	require.ErrorContains(t, err, MarkerPath(state, allocator.KindSlurm, "2", OpRelease)+" is owned by uid 12345")
}

// TestForgedContent: root-owned files whose content the programs would not
// write are rejected, and the programs refuse to write such content.
func TestForgedContent(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	require.NoError(t, Prepare(state))
	require.NoError(t, os.Mkdir(filepath.Join(state, "slurm"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(state, "pending"), 0o755))
	const gpu = `{"uuid":"GPU-5e570000-0000-4000-8000-000000000001","index":1,"sched_index":0}`
	for _, tc := range []struct {
		name, content, want string
	}{
		{"id with a line break", `{"kind":"slurm","job_id":"7","gpus":[{"uuid":"GPU-a\nexport LD_PRELOAD=/tmp/x.so","index":0,"sched_index":0}]}`,
			`invalid gpu id "GPU-a\nexport LD_PRELOAD=/tmp/x.so"`},
		{"id of another form", `{"kind":"slurm","job_id":"7","gpus":[{"uuid":"LD_PRELOAD=/tmp/x.so","index":0,"sched_index":0}]}`,
			`invalid gpu id "LD_PRELOAD=/tmp/x.so"`},
		{"unknown field", `{"kind":"slurm","job_id":"7","env":{"LD_PRELOAD":"/tmp/x.so"},"gpus":[` + gpu + `]}`, `unknown field "env"`},
		{"another job", `{"kind":"slurm","job_id":"8","gpus":[` + gpu + `]}`, `holds slurm job "8"`},
		{"another kind", `{"kind":"pbs","job_id":"7","gpus":[` + gpu + `]}`, `holds pbs job "7"`},
		{"negative index", `{"kind":"slurm","job_id":"7","gpus":[{"uuid":"GPU-a","index":-2,"sched_index":0}]}`, "invalid gpu index"},
		{"control character in a reason", `{"kind":"slurm","job_id":"7","conflicts":[{"gpu":"","reason":"x\u001b[2J"}]}`, "invalid conflict reason"},
		{"two values", `{"kind":"slurm","job_id":"7"} {"kind":"slurm","job_id":"7"}`, "more than one JSON value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(JobPath(state, allocator.KindSlurm, "7"), []byte(tc.content), 0o644))
			f, err := ReadJob(state, allocator.KindSlurm, "7")
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "job file "+JobPath(state, allocator.KindSlurm, "7"))
			require.Equal(t, JobFile{}, f, "nothing of it comes back")
		})
	}

	bad := goodJob()
	bad.GPUs[0].UUID = "GPU-a\nexport LD_PRELOAD=/tmp/x.so"
	var in *allocator.InputError
	require.ErrorAs(t, WriteJob(state, allocator.KindSlurm, "9", bad), &in)
	require.NoFileExists(t, JobPath(state, allocator.KindSlurm, "9"))

	for _, tc := range []struct {
		name, file, content, want string
	}{
		{"bad gpu", "slurm-7-release", `{"op":"release","kind":"slurm","job_id":"7","gpus":["GPU-a;rm"]}`, `invalid gpu id "GPU-a;rm"`},
		{"unknown field", "slurm-8-release", `{"op":"release","kind":"slurm","job_id":"8","user_override":"root"}`, `unknown field "user_override"`},
		{"bad uid", "slurm-9-reserve", `{"op":"reserve","kind":"slurm","job_id":"9","uid":-5}`, `invalid uid "-5"`},
		{"bad boot id", "slurm-10-reserve", `{"op":"reserve","kind":"slurm","job_id":"10","boot_id":"a\nb"}`, `invalid boot id`},
	} {
		t.Run("marker "+tc.name, func(t *testing.T) {
			path := filepath.Join(state, "pending", tc.file)
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			defer os.Remove(path)
			ms, err := Markers(state)
			require.Empty(t, ms)
			require.ErrorContains(t, err, "pending marker "+path+": ")
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "ignored")
		})
	}
	m := goodMarker("11")
	m.GPUs = []string{"GPU-a b"}
	require.ErrorAs(t, WriteMarker(state, m), &in)
	require.NoError(t, WriteMarker(state, goodMarker("11")))
}
