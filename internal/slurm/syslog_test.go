package slurm

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/syslogtest"
)

// The Prolog's and Epilog's one line goes to syslog as well as to slurmd,
// which logs a successful Prolog's output only at debug2; a failure goes
// at priority warning (daemon.warning: <28>), a success at info (<30>).
func TestOutcomeLinesGoToSyslog(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	l := syslogtest.Listen(t)
	run := func(program string, h *Hook, do func(*Hook) (string, error)) (int, string) {
		h.SyslogPath = l.Path
		var out bytes.Buffer
		line, err := do(h)
		return h.report(&out, program, line, err), out.String()
	}
	prolog := func(h *Hook) (string, error) { return h.Prolog(ctx) }
	epilog := func(h *Hook) (string, error) { return h.Epilog(ctx) }

	rc, out := run("canhazgpu-prolog", f.hook(jobEnv("101", "0")...), prolog)
	require.Equal(t, 0, rc)
	require.Equal(t, "canhazgpu-prolog: job 101: reserved "+slurmUUID(0)+" (index 2, slurm 0)\n", out)
	rc, _ = run("canhazgpu-prolog", f.hook(jobEnv("102", "zz")...), prolog)
	require.Equal(t, 1, rc)
	rc, _ = run("canhazgpu-epilog", f.hook(jobEnv("101", "0")...), epilog)
	require.Equal(t, 0, rc)
	requireNoJobFile(t, f, "101")

	lines := l.Lines(3)
	require.Len(t, lines, 3)
	require.Regexp(t, `^<30>.* canhazgpu-prolog\[\d+\]: job 101: reserved `+slurmUUID(0)+` \(index 2, slurm 0\)$`, lines[0])
	require.Regexp(t, `^<28>.* canhazgpu-prolog\[\d+\]: .*"zz"`, lines[1])
	require.Regexp(t, `^<30>.* canhazgpu-epilog\[\d+\]: job 101: released `+slurmUUID(0)+`$`, lines[2])
}

// A job id or user name others chose reaches root's journal escaped.
func TestOutcomeLineEscapedInSyslog(t *testing.T) {
	l := syslogtest.Listen(t)
	var out bytes.Buffer
	rc := (&Hook{SyslogPath: l.Path}).report(&out, "canhazgpu-epilog", "job 5: user \x1b[2Jmallory", nil)
	require.Equal(t, 0, rc)
	lines := l.Lines(1)
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], `canhazgpu-epilog[`)
	require.Contains(t, lines[0], `job 5: user \x1b[2Jmallory`)
	require.NotContains(t, lines[0], "\x1b")
}
