package pbs

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTorqueWrappers runs the shell tests of contrib/torque: the prologue
// and epilogue wrappers with Torque's argument lists and an empty
// environment, calling the programs built by TestMain.
func TestTorqueWrappers(t *testing.T) {
	cmd := exec.Command("/bin/sh", "contrib/torque/tests/test_wrappers.sh")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CANHAZGPU_TEST_BIN_DIR="+binDir, "CANHAZGPU_TEST_REDIS_URL="+srv.URL())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotRegexp(t, `(?m)^not ok`, string(out))
	m := regexp.MustCompile(`(?m)^1\.\.(\d+)$`).FindSubmatch(out)
	require.NotNil(t, m, "the script ended early:\n%s", out)
	ran, _ := strconv.Atoi(string(m[1]))
	require.GreaterOrEqual(t, ran, 22, "%s", out)
}
