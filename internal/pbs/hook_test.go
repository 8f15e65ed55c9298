package pbs

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator/gpu"
)

// TestPBSHook runs the Python tests of contrib/pbs/canhazgpu_hook.py: the
// hook against the stand-in pbs module, calling the programs built by
// TestMain on this package's redis-server.
func TestPBSHook(t *testing.T) {
	py, err := exec.LookPath("python3")
	require.NoError(t, err, "python3 runs the PBS hook tests: install it (scripts/install-deps.sh does)")
	cmd := exec.Command(py, "-m", "unittest", "discover", "-v", "-s", "contrib/pbs/tests")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CANHAZGPU_TEST_BIN_DIR="+binDir, "CANHAZGPU_TEST_REDIS_URL="+srv.URL(),
		"PYTHONDONTWRITEBYTECODE=1") // no __pycache__ in the tree
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	// Discovery that finds nothing also exits 0: count what ran.
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in`).FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	ran, _ := strconv.Atoi(string(m[1]))
	require.GreaterOrEqual(t, ran, 22, "%s", out)
	require.Regexp(t, `(?m)^OK$`, string(out))
}

// TestInstallCommandsMatchTheHook keeps the qmgr commands of docs/pbs.md
// and of the hook's own docstring (illustrative: there is no PBS here) in
// step with each other and with the events the hook handles.
func TestInstallCommandsMatchTheHook(t *testing.T) {
	doc, err := os.ReadFile(repoRoot + "/docs/pbs.md")
	require.NoError(t, err)
	hook, err := os.ReadFile(repoRoot + "/contrib/pbs/canhazgpu_hook.py")
	require.NoError(t, err)
	qmgr := regexp.MustCompile(`(?m)^\s*(qmgr -c ".*hook canhazgpu.*")$`)
	var inHook []string
	for _, m := range qmgr.FindAllSubmatch(hook, -1) {
		inHook = append(inHook, string(m[1]))
	}
	require.Len(t, inHook, 7)
	for _, line := range inHook {
		require.Contains(t, string(doc), line)
	}
	events := regexp.MustCompile(`create hook canhazgpu event='([a-z_,]+)'`).FindSubmatch(hook)
	require.NotNil(t, events)
	for _, e := range strings.Split(string(events[1]), ",") {
		require.Contains(t, string(hook), "pbs."+strings.ToUpper(e)+":", "the hook handles %s", e)
	}
}

// TestHookExportsWhatTheEnvFileHolds: the hook copies into a job only the
// variables of its EXPORTS, which must be every variable the env file can
// hold (each vendor's, and the indices).
func TestHookExportsWhatTheEnvFileHolds(t *testing.T) {
	hook, err := os.ReadFile(repoRoot + "/contrib/pbs/canhazgpu_hook.py")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?s)\nEXPORTS = \(([^)]*)\)`).FindSubmatch(hook)
	require.NotNil(t, m, "EXPORTS in the hook")
	var exports []string
	for _, q := range regexp.MustCompile(`"([A-Z_]+)"`).FindAllSubmatch(m[1], -1) {
		exports = append(exports, string(q[1]))
	}
	want := append(gpu.VendorOf(gpu.ProviderNVML).Variables(), gpu.VendorOf(gpu.ProviderAMDSMI).Variables()...)
	want = append(want, "CANHAZGPU_GPU_INDICES")
	require.ElementsMatch(t, want, exports)
	require.Contains(t, envLines(gpu.VendorOf(gpu.ProviderNVML), gpu.Set{}), "CANHAZGPU_GPU_INDICES=")
}
