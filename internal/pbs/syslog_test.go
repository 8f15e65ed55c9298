package pbs

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/syslogtest"
)

// What the PBS modes log goes to syslog as well: at info (daemon.info:
// <30>) for a success, at warning (<28>) for a failure.
func TestModesLogToSyslog(t *testing.T) {
	l := syslogtest.Listen(t)
	n := newTestNode(t, nodeOpts{gpus: 4})
	m := Modes{SyslogPath: l.Path}
	type mode func(Modes, context.Context, []string, io.Writer, io.Writer) int
	run := func(mode mode, args ...string) int {
		var out, errb bytes.Buffer
		return mode(m, context.Background(), append([]string{"--config", n.config}, args...), &out, &errb)
	}
	prolog, epilog := Modes.Prolog, Modes.Epilog
	require.Equal(t, ExitOK, run(prolog, "--job", "12.srv", "--user", "alice", "--uid", "1000", "--ngpus", "2"))
	require.Equal(t, ExitOK, run(epilog, "--job", "12.srv"))
	require.Equal(t, ExitError, run(epilog, "--job", "../12"))

	lines := l.Lines(3)
	require.Len(t, lines, 3)
	require.Regexp(t, `^<30>.* canhazgpu-prolog\[\d+\]: pbs job 12\.srv of alice: reserved GPUs 0,1$`, lines[0])
	require.Regexp(t, `^<30>.* canhazgpu-epilog\[\d+\]: pbs job 12\.srv: released GPUs 0,1$`, lines[1])
	require.Regexp(t, `^<28>.* canhazgpu-epilog\[\d+\]: .*\.\./12`, lines[2])
}
