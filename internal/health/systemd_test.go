package health

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const unitDir = "../../contrib/systemd"

// The units start the installed program once per timer tick.
func TestSystemdUnits(t *testing.T) {
	service, err := os.ReadFile(filepath.Join(unitDir, "canhazgpu-healthcheck.service"))
	require.NoError(t, err)
	timer, err := os.ReadFile(filepath.Join(unitDir, "canhazgpu-healthcheck.timer"))
	require.NoError(t, err)
	require.Contains(t, lines(service), "ExecStart=/usr/bin/canhazgpu-healthcheck")
	require.Contains(t, lines(service), "Type=oneshot")
	require.Contains(t, lines(timer), "OnUnitActiveSec=5min")
	require.Contains(t, lines(timer), "WantedBy=timers.target")

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd): the unit syntax is verified where it is")
	}
	// verify wants ExecStart to exist: point copies at a program that does.
	dir := t.TempDir()
	svc := strings.ReplaceAll(string(service), "/usr/bin/canhazgpu-healthcheck", "/bin/true")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "canhazgpu-healthcheck.service"), []byte(svc), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "canhazgpu-healthcheck.timer"), timer, 0o644))
	cmd := exec.Command(analyze, "verify", "--man=no", "canhazgpu-healthcheck.timer", "canhazgpu-healthcheck.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Empty(t, string(out), "systemd-analyze warns about nothing")
}

func lines(b []byte) []string { return strings.Split(string(b), "\n") }
