package hookmain

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRunDispatches(t *testing.T) {
	var called string
	p := Program{Name: "canhazgpu-test", Role: "Slurm's Test", Usage: "Usage: canhazgpu-test\n",
		Slurm: func(_ context.Context, env []string, _ io.Writer) int { called = "slurm"; return 3 },
		PBS: func(_ context.Context, args []string, _, _ io.Writer) int {
			called = "pbs " + strings.Join(args, " ")
			return 4
		}}
	cases := []struct {
		args           []string
		rc             int
		called         string
		stdout, stderr string
	}{
		{nil, 3, "slurm", "", ""},
		{[]string{"--pbs", "--job", "1"}, 4, "pbs --job 1", "", ""},
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
