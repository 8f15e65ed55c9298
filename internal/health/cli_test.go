package health

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runMain runs the program as Slurm would: settings from the file named by
// CANHAZGPU_CONFIG, Slurm's node name in SLURMD_NODENAME.
func (n *testNode) runMain(args ...string) (code int, stdout, stderr string) {
	n.t.Helper()
	env := append([]string{"CANHAZGPU_CONFIG=" + n.cfgFile, "SLURMD_NODENAME=n1"}, n.sc.Env()...)
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, env, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestMainExitCodesAndOutputs(t *testing.T) {
	n := newTestNode(t, map[string]string{"health.action": "drain"})
	n.sc.Show("IDLE", "", "")
	code, out, errOut := n.runMain()
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "healthy: 4 GPUs checked on "+n.name+"\n", out)
	require.Empty(t, errOut)

	n.gpus(4, bobOnGPU1)
	code, out, _ = n.runMain()
	require.Equal(t, 1, code)
	require.Equal(t, "problem: GPU 1 used by bob (pid 4242) without reservation\n"+
		"flags: flagged 1 GPU in the store\n"+
		"drain: drained: "+bobReason+"\n"+
		"unhealthy: 1 problem on "+n.name+"\n", out)
	require.Equal(t, [][]string{{"State=DRAIN", "Reason=" + bobReason}}, n.sc.Updates(), "SLURMD_NODENAME names the node")

	code, out, _ = n.runMain("--nhc")
	require.Equal(t, 1, code)
	require.Equal(t, "ERROR:  canhazgpu:  GPU 1 used by bob (pid 4242) without reservation\n", out)
	require.Len(t, n.sc.Updates(), 1, "--nhc leaves marking to NHC")

	prom := filepath.Join(t.TempDir(), "canhazgpu.prom")
	code, out, _ = n.runMain("--json", "--prometheus", prom)
	require.Equal(t, 1, code)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, StatusViolations, rep.Status)
	require.Len(t, rep.Violations, 1)
	data, err := os.ReadFile(prom)
	require.NoError(t, err)
	require.Contains(t, string(data), `canhazgpu_gpu_unreserved{gpu="1",uuid="`+testUUID(1)+`"} 1`)
	require.Contains(t, string(data), "canhazgpu_health_check_success 1\n")
}

func TestMainPrometheusFileFromConfig(t *testing.T) {
	prom := filepath.Join(t.TempDir(), "node.prom")
	n := newTestNode(t, map[string]string{"health.prometheus_file": prom})
	code, _, errOut := n.runMain("--nhc")
	require.Equal(t, 0, code, errOut)
	data, err := os.ReadFile(prom)
	require.NoError(t, err)
	require.Contains(t, string(data), "canhazgpu_gpu_in_use{gpu=\"3\"")
}

// A textfile that cannot be written fails a healthy run; violations keep
// their status.
func TestMainTextfileWriteFails(t *testing.T) {
	n := newTestNode(t, nil)
	code, out, errOut := n.runMain("--prometheus", "/proc/canhazgpu.prom")
	require.Equal(t, 2, code)
	require.Contains(t, out, "healthy: 4 GPUs checked")
	require.True(t, strings.HasPrefix(errOut, "Error: prometheus textfile: open /proc/.canhazgpu.prom."), errOut)
	require.Equal(t, 1, strings.Count(errOut, "\n"))

	n.gpus(4, bobOnGPU1)
	code, _, errOut = n.runMain("--nhc", "--prometheus", "/proc/canhazgpu.prom")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "Error: prometheus textfile: ")
}

func TestMainCouldNotCheck(t *testing.T) {
	prom := filepath.Join(t.TempDir(), "canhazgpu.prom")
	n := newTestNode(t, map[string]string{"redis.url": "redis://127.0.0.1:1/0", "redis.dial_timeout": "200ms",
		"health.prometheus_file": prom})
	code, out, errOut := n.runMain()
	require.Equal(t, 2, code)
	require.Empty(t, out)
	require.True(t, strings.HasPrefix(errOut, "Error: could not check node "+n.name+": "), errOut)
	require.Contains(t, errOut, "reservation store unavailable")
	data, err := os.ReadFile(prom)
	require.NoError(t, err)
	require.Contains(t, string(data), "canhazgpu_health_check_success 0\n")
	require.Contains(t, string(data), "canhazgpu_store_up 0\n")
	require.Contains(t, string(data), `canhazgpu_gpu_memory_used_bytes{gpu="3",`, "the GPU scan needs no store")
	require.NotContains(t, string(data), "canhazgpu_gpu_reserved")
	promtoolCheck(t, data)

	code, out, _ = n.runMain("--nhc")
	require.Equal(t, 2, code)
	require.True(t, strings.HasPrefix(out, "ERROR:  canhazgpu:  could not check: "), out)
	require.Equal(t, 1, strings.Count(out, "\n"))
}

// Under NHC the check, store connection included, ends within half of NHC's
// own limit, whatever [health] timeout and the store's timeouts say: a
// frozen store (a listener that never answers) must not let NHC's watchdog
// fire and drain the node.
func TestMainEndsWithinHalfOfNHCsTimeout(t *testing.T) {
	frozen, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { frozen.Close() })
	n := newTestNode(t, map[string]string{"redis.url": "redis://" + frozen.Addr().String() + "/0",
		"redis.op_timeout": "120s", "redis.dial_timeout": "120s", "health.timeout": "120s"})
	start := time.Now()
	code, out, _ := n.runMain("--nhc", "--nhc-timeout", "4")
	took := time.Since(start)
	require.Equal(t, 2, code)
	require.True(t, strings.HasPrefix(out, "ERROR:  canhazgpu:  could not check: "), out)
	require.Less(t, took, 4*time.Second, "NHC's watchdog would have fired")
	require.GreaterOrEqual(t, took, 2*time.Second, "the check had half of NHC's time")
}

func TestMainBadInput(t *testing.T) {
	n := newTestNode(t, nil)
	tests := []struct {
		name   string
		args   []string
		env    []string
		stderr string
	}{
		{"unknown flag", []string{"--drain"}, nil, "Error: unknown flag: --drain (see canhazgpu-healthcheck --help)\n"},
		{"argument", []string{"now"}, nil, "Error: unexpected argument \"now\": canhazgpu-healthcheck takes only flags\n"},
		{"two outputs", []string{"--nhc", "--json"}, nil, "Error: --nhc and --json cannot be used together: choose one output\n"},
		{"negative NHC timeout", []string{"--nhc", "--nhc-timeout", "-5"}, nil, "Error: --nhc-timeout -5: NHC's timeout is a whole number of seconds, 0 or more\n"},
		{"NHC timeout without NHC", []string{"--nhc-timeout", "30"}, nil, "Error: --nhc-timeout is NHC's time limit: use it with --nhc\n"},
		{"textfile not .prom", []string{"--prometheus", "/tmp/canhazgpu.txt"}, nil,
			"Error: --prometheus /tmp/canhazgpu.txt: node_exporter's textfile collector reads only files named *.prom, e.g. canhazgpu.prom\n"},
		{"textfile in no directory", []string{"--prometheus", "/nonexistent/dir/x.prom"}, nil,
			"Error: --prometheus /nonexistent/dir/x.prom: cannot write there: stat /nonexistent/dir: no such file or directory\n"},
		{"textfile under a file", []string{"--prometheus", "/etc/passwd/x.prom"}, nil,
			"Error: --prometheus /etc/passwd/x.prom: cannot write there: /etc/passwd is not a directory\n"},
		{"textfile setting not .prom", nil, []string{"CANHAZGPU_HEALTH_PROMETHEUS_FILE=/tmp/x"},
			"Error: [health] prometheus_file /tmp/x: node_exporter's textfile collector reads only files named *.prom, e.g. canhazgpu.prom\n"},
		{"bad setting", nil, []string{"CANHAZGPU_HEALTH_ACTION=reboot"}, "Error: config: CANHAZGPU_HEALTH_ACTION: health.action: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"CANHAZGPU_CONFIG=" + n.cfgFile}, tc.env...)
			var out, errOut bytes.Buffer
			code := Main(context.Background(), tc.args, env, &out, &errOut)
			require.Equal(t, 2, code)
			require.Empty(t, out.String())
			require.True(t, strings.HasPrefix(errOut.String(), tc.stderr), errOut.String())
			require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "one line")
		})
	}
	require.Empty(t, n.sc.Calls())
}

func TestMainHelpAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, 0, Main(context.Background(), []string{"--help"}, nil, &out, &errOut))
	require.True(t, strings.HasPrefix(out.String(), "Usage: canhazgpu-healthcheck [flags]\n"))
	require.Contains(t, out.String(), "--prometheus file")
	out.Reset()
	require.Equal(t, 0, Main(context.Background(), []string{"--version"}, nil, &out, &errOut))
	require.True(t, strings.HasPrefix(out.String(), "canhazgpu-healthcheck "), out.String())
	require.Empty(t, errOut.String())
}
