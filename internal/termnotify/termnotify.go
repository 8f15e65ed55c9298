// Package termnotify writes a one-line message to every terminal a user is
// logged in on, as write(1) does: the health check tells people that they
// use a GPU without a reservation, or that someone uses theirs.
//
// It runs as root and writes to terminals that belong to other people, so
// it trusts neither the message nor the session list: the message is
// escaped (termsafe) and cut to one bounded line, and a terminal is written
// only when, opened without following links and without becoming a
// controlling terminal, it is a character device under /dev/pts or a
// /dev/tty* owned by the user whose session utmp says it is, with group
// write on (its owner did not run `mesg n`).
package termnotify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"canhazgpu/internal/termsafe"
)

// MaxMessage bounds the message's length on the terminal, in bytes before
// escaping; a longer one is cut and ends with "…".
const MaxMessage = 300

// Notifier finds sessions in a utmp file.
type Notifier struct {
	Utmp string // e.g. /run/utmp
}

// Notify writes "canhazgpu: <message>" on a line of its own to each of the
// user's terminals that accepts messages and returns how many it wrote to.
// A user with no such terminal is no error; a utmp that cannot be read is.
func (n Notifier) Notify(account, message string) (int, error) {
	u, err := user.Lookup(account)
	if err != nil {
		return 0, fmt.Errorf("notify %s: %w", termsafe.Escape(account), err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, fmt.Errorf("notify %s: uid %q", termsafe.Escape(account), u.Uid)
	}
	lines, err := n.sessions(account)
	if err != nil {
		return 0, err
	}
	text := []byte("\r\ncanhazgpu: " + Line(message) + "\r\n")
	written := 0
	for _, line := range lines {
		if n.write(line, uid, text) == nil {
			written++
		}
	}
	return written, nil
}

// Line is message as Notify shows it: escaped, one line, at most
// MaxMessage bytes of the original.
func Line(message string) string {
	if len(message) > MaxMessage {
		cut := MaxMessage
		for cut > 0 && !isRuneStart(message[cut]) {
			cut--
		}
		message = message[:cut] + "…"
	}
	return termsafe.Escape(message)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// ttyLine is a utmp ut_line Notify may write to: a pseudo-terminal pts/N
// or a virtual console ttyN. Not serial lines (ttyS0, ttyUSB0, ttyACM0):
// opening one raises its modem lines, which resets some devices.
var ttyLine = regexp.MustCompile(`^(pts/[0-9]{1,6}|tty[0-9]{1,3})$`)

// errNotTerminal: the session's line is not a terminal of the user that
// accepts messages.
var errNotTerminal = errors.New("not a terminal of the user that accepts messages")

func (Notifier) write(line string, uid int, text []byte) error {
	if !ttyLine.MatchString(line) {
		return errNotTerminal
	}
	// Checked before it is opened for writing (an O_PATH descriptor opens
	// no device), then opened through that descriptor: the same file.
	path, err := unix.Open("/dev/"+line, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(path)
	var st unix.Stat_t
	if err := unix.Fstat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || int(st.Uid) != uid || st.Mode&0o020 == 0 {
		return errNotTerminal
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(path), unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// A plain write on the non-blocking descriptor (not an os.File, whose
	// poller would wait): a terminal that is not read (a stopped ssh
	// client) must not hold up the health check.
	_, err = unix.Write(fd, text)
	return err
}

// The utmp record layout of glibc on Linux (struct utmp, 384 bytes, with
// 32-bit times on 64-bit ABIs too). utmptest writes records of this layout.
const (
	utmpSize     = 384
	utTypeOff    = 0
	utLineOff    = 8
	utLineLen    = 32
	utUserOff    = 44
	utUserLen    = 32
	userProcess  = 7
	maxUtmpBytes = 4 << 20 // a sane bound: 10000 sessions
)

// sessions are the ttys of the user's login sessions, once each.
func (n Notifier) sessions(account string) ([]string, error) {
	f, err := os.Open(n.Utmp)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no one logged in, as on a node without logins
	}
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxUtmpBytes))
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	var out []string
	seen := map[string]bool{}
	for rec := data; len(rec) >= utmpSize; rec = rec[utmpSize:] {
		if int16(binary.NativeEndian.Uint16(rec[utTypeOff:])) != userProcess {
			continue
		}
		if cstr(rec[utUserOff:utUserOff+utUserLen]) != account {
			continue
		}
		line := strings.TrimPrefix(cstr(rec[utLineOff:utLineOff+utLineLen]), "/dev/")
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
