package termnotify

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"canhazgpu/internal/accounttest"
	"canhazgpu/internal/termnotify/utmptest"
)

func uidOf(t *testing.T, name string) int {
	t.Helper()
	u, err := user.Lookup(name)
	require.NoError(t, err)
	uid, err := strconv.Atoi(u.Uid)
	require.NoError(t, err)
	return uid
}

// TestNotify: each of the user's sessions that accepts messages gets the
// line, escaped; a session with `mesg n`, one whose terminal belongs to
// someone else and other users' sessions get nothing.
func TestNotify(t *testing.T) {
	accounttest.Ensure(t, "chgnotify1")
	accounttest.Ensure(t, "chgnotify2")
	uid1, uid2 := uidOf(t, "chgnotify1"), uidOf(t, "chgnotify2")
	utmp := filepath.Join(t.TempDir(), "utmp")
	on := utmptest.Login(t, utmp, "chgnotify1", uid1, 0o620)
	second := utmptest.Login(t, utmp, "chgnotify1", uid1, 0o620)
	mesgN := utmptest.Login(t, utmp, "chgnotify1", uid1, 0o600)
	// utmp names the user, but the terminal is another user's: a stale or
	// forged record must not make root write to someone else's terminal.
	notTheirs := utmptest.Login(t, utmp, "chgnotify1", uid2, 0o620)
	other := utmptest.Login(t, utmp, "chgnotify2", uid2, 0o620)

	n, err := Notifier{Utmp: utmp}.Notify("chgnotify1", "you use GPU 2 without a reservation: \x1b]0;owned\x07python3")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	for _, s := range []*utmptest.Session{on, second} {
		got := s.Sent(t)
		require.Contains(t, got, `canhazgpu: you use GPU 2 without a reservation: \x1b]0;owned\x07python3`)
		require.NotContains(t, got, "\x1b")
	}
	for _, s := range []*utmptest.Session{mesgN, notTheirs, other} {
		require.Empty(t, s.Sent(t))
	}
}

// TestNotifyUnreadTerminal: a terminal nobody reads, its buffer full, is
// skipped at once instead of holding the caller up.
func TestNotifyUnreadTerminal(t *testing.T) {
	accounttest.Ensure(t, "chgnotify1")
	utmp := filepath.Join(t.TempDir(), "utmp")
	s := utmptest.Login(t, utmp, "chgnotify1", uidOf(t, "chgnotify1"), 0o620)
	fd, err := unix.Open("/dev/"+s.Line, unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	chunk := make([]byte, 4096)
	for {
		if _, err := unix.Write(fd, chunk); err != nil {
			require.ErrorIs(t, err, unix.EAGAIN)
			break
		}
	}
	// A blocking write would never return here (nobody reads): the test
	// would end at its timeout. The kernel may still move a little of the
	// full buffer to the pty's other side meanwhile, so the line can fit.
	n, err := Notifier{Utmp: utmp}.Notify("chgnotify1", "hello")
	require.NoError(t, err)
	require.LessOrEqual(t, n, 1)
}

// TestNotifyNoSessions: no sessions, or no utmp at all, is no error.
func TestNotifyNoSessions(t *testing.T) {
	accounttest.Ensure(t, "chgnotify1")
	dir := t.TempDir()
	n, err := Notifier{Utmp: filepath.Join(dir, "missing")}.Notify("chgnotify1", "hello")
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = Notifier{Utmp: dir}.Notify("no-such-user-here", "hello")
	require.ErrorContains(t, err, "no-such-user-here")
}

// TestNotifyBadLines: a utmp line outside /dev/pts and /dev/tty* is never
// opened, whatever it points at.
func TestNotifyBadLines(t *testing.T) {
	accounttest.Ensure(t, "chgnotify1")
	uid := uidOf(t, "chgnotify1")
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	require.NoError(t, os.WriteFile(target, nil, 0o620))
	require.NoError(t, os.Chown(target, uid, -1))
	utmp := filepath.Join(dir, "utmp")
	var recs []byte
	for _, line := range []string{"../" + target, target, "pts/../../" + target, "null", ""} {
		recs = append(recs, utmptest.Record("chgnotify1", line, 1)...)
	}
	require.NoError(t, os.WriteFile(utmp, recs, 0o644))
	n, err := Notifier{Utmp: utmp}.Notify("chgnotify1", "hello")
	require.NoError(t, err)
	require.Zero(t, n)
	data, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Empty(t, data)
}

func TestLine(t *testing.T) {
	require.Equal(t, `a\x1b[2Jb\x0ac`, Line("a\x1b[2Jb\nc"))
	long := Line(strings.Repeat("é", MaxMessage))
	require.True(t, strings.HasSuffix(long, "…"))
	require.LessOrEqual(t, len(long), MaxMessage+len("…"))
	require.NotContains(t, long, "\uFFFD")
}

// TestTerminalLines: pseudo-terminals and virtual consoles are written
// to; serial lines, whose opening resets some devices, never are.
func TestTerminalLines(t *testing.T) {
	for _, line := range []string{"pts/0", "pts/123", "tty1", "tty63"} {
		require.True(t, ttyLine.MatchString(line), line)
	}
	for _, line := range []string{"ttyS0", "ttyUSB0", "ttyACM0", "ttyAMA0", "tty", "pts/", "pts/1/x", "console"} {
		require.False(t, ttyLine.MatchString(line), line)
	}
}
