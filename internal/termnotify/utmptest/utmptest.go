// Package utmptest stages a login session for tests of terminal
// notifications: a pseudo-terminal owned by an account, and its record in
// a utmp file, as login and sshd write them.
package utmptest

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// glibc's struct utmp on Linux: 384 bytes, ut_type at 0, ut_pid at 4,
// ut_line at 8 (32 bytes), ut_user at 44 (32 bytes).
const (
	size        = 384
	userProcess = 7
)

// Record is a USER_PROCESS record of a session of account on line (pts/N).
func Record(account, line string, pid int) []byte {
	rec := make([]byte, size)
	binary.NativeEndian.PutUint16(rec[0:], userProcess)
	binary.NativeEndian.PutUint32(rec[4:], uint32(pid))
	copy(rec[8:8+31], line)
	copy(rec[44:44+31], account)
	return rec
}

// Session is a staged login session: the pseudo-terminal's master end,
// which reads what is written to the session's terminal.
type Session struct {
	Master *os.File
	Slave  *os.File // kept open, as the session's shell would
	Line   string   // pts/N
}

// Login opens a pseudo-terminal owned by uid with mode, chowned as login
// does (0620: messages on; 0600: `mesg n`), and appends its session
// record for account to utmp. Everything is undone at cleanup. Needs root
// for the chown.
func Login(t testing.TB, utmp, account string, uid int, mode os.FileMode) *Session {
	t.Helper()
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	master := os.NewFile(uintptr(mfd), "ptmx")
	t.Cleanup(func() { master.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	require.NoError(t, err)
	line := fmt.Sprintf("pts/%d", n)
	slave, err := os.OpenFile("/dev/"+line, os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { slave.Close() })
	require.NoError(t, os.Chown("/dev/"+line, uid, -1))
	require.NoError(t, os.Chmod("/dev/"+line, mode))
	f, err := os.OpenFile(utmp, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	require.NoError(t, err)
	_, err = f.Write(Record(account, line, os.Getpid()))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return &Session{Master: master, Slave: slave, Line: line}
}

// Sent returns what the terminal has been sent so far. It writes a mark
// to the terminal itself and reads up to it: anything sent before comes
// before the mark, so no wait for "nothing more" is needed.
func (s *Session) Sent(t testing.TB) string {
	t.Helper()
	const mark = "--utmptest-mark--"
	_, err := s.Slave.WriteString(mark + "\n")
	require.NoError(t, err)
	var got []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(got), mark) {
		n, err := s.Master.Read(buf)
		require.NoError(t, err)
		got = append(got, buf[:n]...)
	}
	out, _, _ := strings.Cut(string(got), mark)
	return out
}
