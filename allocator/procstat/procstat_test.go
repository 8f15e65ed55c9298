package procstat

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// stat is a stat line as the kernel writes it, with the given name,
// state, parent and start time.
func stat(comm, state, ppid, start string) string {
	return "4242 (" + comm + ") " + state + " " + ppid + " 4242 4242 0 -1 4194304 100 0 0 0 5 1 0 0 20 0 1 0 " + start + " 1000 100\n"
}

func TestParse(t *testing.T) {
	st, err := Parse([]byte(stat("python3", "S", "1", "81234")))
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'S', PPID: 1, Start: 81234}, st)
	require.False(t, st.Ended())

	// A name chosen to mislead: spaces, parentheses, fake fields.
	st, err = Parse([]byte(stat("a) R 1 2 3 (b", "Z", "77", "99")))
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'Z', PPID: 77, Start: 99}, st)
	require.True(t, st.Ended())

	for _, bad := range []string{
		"",
		"4242 python3 S 1 2 3",
		"4242 (python3) S 1 2 3\n",
		stat("python3", "S", "one", "81234"),
		stat("python3", "S", "1", "-5"),
		stat("python3", "SS", "1", "81234"),
	} {
		_, err := Parse([]byte(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestRead(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "12"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "12", "stat"), []byte(stat("x", "R", "3", "44")), 0o644))
	st, err := Read(root, 12)
	require.NoError(t, err)
	require.Equal(t, Stat{State: 'R', PPID: 3, Start: 44}, st)
	_, err = Read(root, 13)
	require.ErrorIs(t, err, fs.ErrNotExist)

	self, err := Read("", os.Getpid())
	require.NoError(t, err)
	require.NotZero(t, self.Start)
	require.Equal(t, os.Getppid(), self.PPID)
}
