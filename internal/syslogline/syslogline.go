// Package syslogline sends the one-line outcomes of the root programs (the
// scheduler hooks and the health check) to the local syslog, and so to the
// journal. Their callers keep little of it: slurmd logs a Prolog's or a
// health check's output only on failure or at debug levels, so without
// syslog what a successful run did (GPUs reserved, moved, released,
// settled, a node drained) is seen nowhere.
//
// A node without a syslog socket (a container, a test) loses the lines
// silently: syslog is a copy of what the programs already print, never a
// reason for a job or a check to fail.
package syslogline

import (
	"log/syslog"
	"strings"
	"time"

	"canhazgpu/internal/termsafe"
)

// sendTimeout bounds one line: a datagram to a stalled journald blocks
// once the socket's buffer is full, and a Prolog must not wait on it.
const sendTimeout = time.Second

// Sender sends lines tagged with one program's name. It connects at its
// first line, so a run with nothing to tell (most Prologs' and Epilogs'
// runs on a busy node) never opens the socket. The zero Sender, and one
// whose socket was missing, drops them.
type Sender struct {
	path, tag string
	pending   bool // Open was called and no line was sent yet
	w         *syslog.Writer
}

// Open returns a Sender for the syslog datagram socket at path, or with
// "" the system's (/dev/log). It never fails: without a socket the Sender
// drops every line.
func Open(path, tag string) *Sender {
	return &Sender{path: path, tag: tag, pending: true}
}

// connect opens the socket for the first line.
func (s *Sender) connect() {
	s.pending = false
	var err error
	if s.path == "" {
		s.w, err = syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, s.tag)
	} else {
		s.w, err = syslog.Dial("unixgram", s.path, syslog.LOG_DAEMON|syslog.LOG_INFO, s.tag)
	}
	if err != nil {
		s.w = nil
	}
}

// Info sends one line at priority info.
func (s *Sender) Info(msg string) { s.send(msg, (*syslog.Writer).Info) }

// Warning sends one line at priority warning: something an admin must
// look at (a drain, a violation, a failed hook).
func (s *Sender) Warning(msg string) { s.send(msg, (*syslog.Writer).Warning) }

// send writes msg as one line with what a terminal would act on escaped:
// journalctl prints it on admins' terminals, and it quotes user names,
// job ids and process names that others chose.
func (s *Sender) send(msg string, write func(*syslog.Writer, string) error) {
	if s == nil {
		return
	}
	if s.pending {
		s.connect()
	}
	if s.w == nil {
		return
	}
	line := termsafe.Escape(strings.Join(strings.Fields(msg), " "))
	w := s.w
	done := make(chan struct{})
	go func() {
		_ = write(w, line) // best effort: see the package comment
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(sendTimeout):
		// The write holds the Writer's lock until syslog drains: drop
		// the rest, and leave the socket to the process's exit rather
		// than wait on it in Close.
		s.w = nil
	}
}

// Close releases the socket.
func (s *Sender) Close() {
	if s != nil && s.w != nil {
		_ = s.w.Close()
	}
}
