package syslogline_test

import (
	"path/filepath"
	"regexp"
	"testing"

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
