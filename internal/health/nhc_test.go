package health

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/buildtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

// healthcheckBinary builds the program once per test binary.
func healthcheckBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = buildtest.Build(map[string]string{"canhazgpu-healthcheck": "canhazgpu/cmd/canhazgpu-healthcheck"})
		binPath = filepath.Join(binDir, "canhazgpu-healthcheck")
	})
	require.NoError(t, buildErr)
	return binPath
}

// nhcStandIn loads contrib/nhc/canhazgpu.nhc into bash next to stand-ins
// for the NHC functions it calls, runs check_canhazgpu and records every
// call and the function's return status.
const nhcStandIn = `
die() { echo "die $1 $2" >> "$NHC_RECORD"; }
log() { echo "log $*" >> "$NHC_RECORD"; }
dbg() { echo "dbg $*" >> "$NHC_RECORD"; }
. "$NHC_SCRIPT"
check_canhazgpu "$@"
echo "return $?" >> "$NHC_RECORD"
`

func TestNHCCheck(t *testing.T) {
	bin := healthcheckBinary(t)
	script, err := filepath.Abs("../../contrib/nhc/canhazgpu.nhc")
	require.NoError(t, err)
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	down := newTestNode(t, map[string]string{"redis.url": "redis://127.0.0.1:1/0", "redis.dial_timeout": "200ms"})

	run := func(extraEnv ...string) string {
		t.Helper()
		record := filepath.Join(t.TempDir(), "record")
		cmd := exec.Command("/bin/bash", "-c", nhcStandIn, "nhc")
		// NHC's own environment: a fixed PATH, root, the check's settings.
		cmd.Env = append([]string{"PATH=/sbin:/usr/sbin:/bin:/usr/bin", "NHC_RECORD=" + record, "NHC_SCRIPT=" + script,
			"CANHAZGPU_HEALTHCHECK=" + bin}, extraEnv...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		require.Empty(t, string(out), "the check prints nothing itself")
		data, err := os.ReadFile(record)
		require.NoError(t, err)
		return string(data)
	}

	require.Equal(t, "dbg check_canhazgpu:  no GPU used without its reservation\nreturn 0\n",
		run("CANHAZGPU_CONFIG="+n.cfgFile))

	n.gpus(4, map[int][]fakeProc{
		1: {{PID: 4242, User: "bob", UID: 1001, MB: 2048}},
		2: {{PID: 4243, User: "carol", UID: 1003, MB: 2048}},
	})
	require.Equal(t, "die 1 check_canhazgpu:  GPU 1 used by bob (pid 4242) without reservation\nreturn 1\n",
		run("CANHAZGPU_CONFIG="+n.cfgFile))
	require.Empty(t, n.sc.calls(), "NHC marks the node, not the check")

	got := run("CANHAZGPU_CONFIG=" + down.cfgFile)
	require.True(t, strings.HasPrefix(got, "log check_canhazgpu:  "+bin+" could not check (exit status 2):  could not check: "), got)
	require.Contains(t, got, "reservation store unavailable")
	require.True(t, strings.HasSuffix(got, "\nreturn 0\n"), "a store outage does not fail the check")

	got = run("CANHAZGPU_CONFIG="+n.cfgFile, "CANHAZGPU_HEALTHCHECK_TIMEOUT=soon")
	require.Contains(t, got, "CANHAZGPU_HEALTH_TIMEOUT", "the timeout reaches the program")
	require.True(t, strings.HasSuffix(got, "\nreturn 0\n"))
}
