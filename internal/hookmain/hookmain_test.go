package hookmain

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
)

// fakeScheduler is an adapter that records its calls.
type fakeScheduler struct {
	flag   string
	rc     int
	called *string
}

func (f fakeScheduler) Kind() allocator.Kind {
	return allocator.Kind("fake" + strings.TrimPrefix(f.flag, "--"))
}
func (f fakeScheduler) Policy(*config.Config) batch.Policy { return batch.Policy{} }
func (f fakeScheduler) Flag() string                       { return f.flag }
func (f fakeScheduler) Prolog(_ context.Context, args []string, _, _ io.Writer) int {
	*f.called = strings.TrimSpace(string(f.Kind()) + " " + strings.Join(args, " "))
	return f.rc
}
func (f fakeScheduler) Epilog(context.Context, []string, io.Writer, io.Writer) int { return -1 }

func TestRunDispatches(t *testing.T) {
	var called string
	p := Program{Name: "canhazgpu-test", Role: "Slurm's Test", Usage: "Usage: canhazgpu-test\n",
		Schedulers: []batch.Scheduler{fakeScheduler{"", 3, &called}, fakeScheduler{"--pbs", 4, &called}},
		Mode:       batch.Scheduler.Prolog}
	cases := []struct {
		args           []string
		rc             int
		called         string
		stdout, stderr string
	}{
		{nil, 3, "fake", "", ""},
		{[]string{"--pbs", "--job", "1"}, 4, "fakepbs --job 1", "", ""},
		{[]string{"--help"}, 0, "", "Usage: canhazgpu-test\n", ""},
		{[]string{"-h"}, 0, "", "Usage: canhazgpu-test\n", ""},
		{[]string{"--version"}, 0, "", "canhazgpu-test dev (commit unknown, built unknown)\n", ""},
		{[]string{"--help", "x"}, 2, "", "", "canhazgpu-test: unexpected argument \"--help\": as Slurm's Test it takes none\n"},
		{[]string{"7"}, 2, "", "", "canhazgpu-test: unexpected argument \"7\": as Slurm's Test it takes none\n"},
	}
	for _, c := range cases {
		called = ""
		var out, errOut bytes.Buffer
		rc := p.Run(context.Background(), c.args, &out, &errOut)
		require.Equal(t, c.rc, rc, "%q", c.args)
		require.Equal(t, c.called, called, "%q", c.args)
		require.Equal(t, c.stdout, out.String(), "%q", c.args)
		require.Equal(t, c.stderr, errOut.String(), "%q", c.args)
	}
}
