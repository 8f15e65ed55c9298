// Package syslogtest is a syslog listener for tests: a unix datagram
// socket in a private directory that collects what the programs send, so
// that a test can show their lines arrive without a syslog daemon.
package syslogtest

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Listener collects the datagrams sent to Path.
type Listener struct {
	Path  string
	mu    sync.Mutex
	lines []string
	refs  int // the socket's reference count with no sender connected
}

// Listen starts a listener that stops when the test ends.
func Listen(t testing.TB) *Listener {
	t.Helper()
	l := &Listener{Path: filepath.Join(t.TempDir(), "log")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: l.Path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("syslog listener: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed at the end of the test
			}
			l.mu.Lock()
			l.lines = append(l.lines, strings.TrimRight(string(buf[:n]), "\n"))
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	l.refs = l.refCount(t)
	return l
}

// Connected is how many sockets are connected to the listener now. A
// datagram sender's connect leaves no trace the listener could read, but
// the kernel holds a reference to the listening socket for each, which
// /proc/net/unix shows (RefCount).
func (l *Listener) Connected(t testing.TB) int {
	t.Helper()
	return l.refCount(t) - l.refs
}

func (l *Listener) refCount(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatalf("syslog listener: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == l.Path {
			n, err := strconv.ParseInt(f[1], 16, 64)
			if err != nil {
				t.Fatalf("syslog listener: /proc/net/unix: %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatalf("syslog listener: %s is not in /proc/net/unix", l.Path)
	return 0
}

// Lines returns the messages received so far. Sending returns once the
// datagram is in the socket's buffer, so it waits up to a second for
// want messages to be read.
func (l *Listener) Lines(want int) []string {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		out := append([]string(nil), l.lines...)
		l.mu.Unlock()
		if len(out) >= want || time.Now().After(deadline) {
			return out
		}
	}
}
