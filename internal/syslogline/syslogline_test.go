package syslogline_test

import (
	"net"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/syslogline"
	"canhazgpu/internal/syslogtest"
)

// A line arrives in the local format (as to /dev/log), tagged with the
// program, at its priority (facility
// daemon: 3<<3, plus info 6 or warning 4), on one line with controls
// escaped.
func TestSendsOneEscapedLine(t *testing.T) {
	l := syslogtest.Listen(t)
	s := syslogline.Open(l.Path, "canhazgpu-epilog")
	defer s.Close()
	s.Info("job 7: released GPU 0")
	s.Warning("job 8 of \x1b]0;evil\x07 failed\nsecond line")
	lines := l.Lines(2)
	require.Len(t, lines, 2)
	require.Regexp(t, `^<30>.* canhazgpu-epilog\[\d+\]: job 7: released GPU 0$`, lines[0])
	require.Regexp(t, `^<28>.* canhazgpu-epilog\[\d+\]: `+regexp.QuoteMeta(`job 8 of \x1b]0;evil\x07 failed second line`)+`$`, lines[1])
}

// Without a socket nothing fails and nothing is sent.
func TestNoSocketDropsLines(t *testing.T) {
	s := syslogline.Open(filepath.Join(t.TempDir(), "missing"), "canhazgpu-prolog")
	s.Info("dropped")
	s.Warning("dropped")
	s.Close()
	var zero *syslogline.Sender
	zero.Info("dropped")
	zero.Close()
}

// A syslog that stops reading (a stalled journald) fills the socket's
// queue; a Sender then gives up on it rather than hold up a Prolog: the
// line that blocks costs at most sendTimeout, the ones after it nothing,
// and Close does not wait for the blocked write.
func TestStalledSyslogDoesNotBlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close() // never read
	s := syslogline.Open(path, "canhazgpu-prolog")
	start := time.Now()
	for range 5000 { // far above the queue of a unix datagram socket (net.unix.max_dgram_qlen)
		s.Info("job 7: reserved GPU 0")
	}
	s.Close()
	require.Less(t, time.Since(start), 10*time.Second)
}

// The socket is opened at the first line, not at Open: a run with nothing
// to tell never connects, and one that tells connects once.
func TestConnectsAtTheFirstLine(t *testing.T) {
	l := syslogtest.Listen(t)
	s := syslogline.Open(l.Path, "canhazgpu-prolog")
	require.Equal(t, 0, l.Connected(t), "Open alone connects to nothing")
	s.Close()
	require.Equal(t, 0, l.Connected(t))

	s = syslogline.Open(l.Path, "canhazgpu-prolog")
	s.Info("job 7: reserved GPU 0")
	s.Info("job 8: reserved GPU 1")
	require.Equal(t, 1, l.Connected(t), "one connection for every line")
	require.Len(t, l.Lines(2), 2)
	s.Close()
	require.Equal(t, 0, l.Connected(t))
}

// A socket that appears after Open, before the first line, gets it: the
// Sender looks for it only when there is something to send.
func TestASocketMadeAfterOpenGetsTheLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	s := syslogline.Open(path, "canhazgpu-epilog")
	defer s.Close()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()
	s.Info("job 7: released GPU 0")
	buf := make([]byte, 1024)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := conn.Read(buf)
	require.NoError(t, err)
	require.Contains(t, string(buf[:n]), "job 7: released GPU 0")
}
