package health

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const unitDir = "../../contrib/systemd"

// hardening is what every service sets: the list, without what
// would blind the GPU and process scan (PrivateDevices, ProtectProc,
// PrivateUsers).
var hardening = []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
	"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
	"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictNamespaces=yes", "LockPersonality=yes",
	"SystemCallArchitectures=native"}

// The units start the installed programs, hardened, and systemd accepts
// them; the exposure systemd-analyze security reports is the one
// docs/healthcheck.md records.
func TestSystemdUnits(t *testing.T) {
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(unitDir, name))
		require.NoError(t, err)
		return string(data)
	}
	service, register, timer := read("canhazgpu-healthcheck.service"), read("canhazgpu-register.service"), read("canhazgpu-healthcheck.timer")
	require.Contains(t, lines(service), "ExecStart=/usr/bin/canhazgpu-healthcheck")
	require.Contains(t, lines(service), "Type=oneshot")
	require.Contains(t, lines(service), "ReadWritePaths=-/run/canhazgpu -/var/lib/prometheus/node-exporter")
	require.Contains(t, lines(register), "ExecStart=/usr/bin/canhazgpu admin --register")
	require.Contains(t, lines(timer), "OnUnitActiveSec=5min")
	require.Contains(t, lines(timer), "WantedBy=timers.target")
	for _, unit := range []string{service, register} {
		for _, h := range hardening {
			require.Contains(t, lines(unit), h)
		}
		for _, blind := range []string{"PrivateDevices=", "ProtectProc=", "PrivateUsers="} {
			require.NotContains(t, unit, "\n"+blind, "it would hide the GPUs or the processes")
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	require.NoError(t, err, "systemd-analyze is missing: install Debian's systemd package")
	// verify wants ExecStart to exist: point copies at a program that does.
	dir := t.TempDir()
	installed := strings.NewReplacer("/usr/bin/canhazgpu-healthcheck", "/bin/true", "/usr/bin/canhazgpu admin --register", "/bin/true")
	for name, text := range map[string]string{"canhazgpu-healthcheck.service": service, "canhazgpu-register.service": register,
		"canhazgpu-healthcheck.timer": timer} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(installed.Replace(text)), 0o644))
	}
	cmd := exec.Command(analyze, "verify", "--man=no", "canhazgpu-healthcheck.timer", "canhazgpu-healthcheck.service",
		"canhazgpu-register.service")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Empty(t, string(out), "systemd-analyze warns about nothing")

	exposure := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) `)
	for _, name := range []string{"canhazgpu-healthcheck.service", "canhazgpu-register.service"} {
		cmd := exec.Command(analyze, "security", "--offline=true", "--no-pager", name)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		m := exposure.FindSubmatch(out)
		require.NotNil(t, m, string(out))
		score, err := strconv.ParseFloat(string(m[1]), 64)
		require.NoError(t, err)
		require.LessOrEqual(t, score, 4.6, "%s: exposure %s; docs/healthcheck.md records 4.6", name, m[1])
	}
}

func lines(s string) []string { return strings.Split(s, "\n") }
