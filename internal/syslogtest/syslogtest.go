// Package syslogtest is a syslog listener for tests: a unix datagram
// socket in a private directory that collects what the programs send, so
// that a test can show their lines arrive without a syslog daemon.
package syslogtest

import (
	"net"
	"path/filepath"
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
	return l
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
