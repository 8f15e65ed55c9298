package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/proctest"
)

// TestDemoServesTheDashboard: `make demo` ends by printing the
// dashboard's URL, which answers with the demo's node until Enter ends
// the demo and stops it.
func TestDemoServesTheDashboard(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "CANHAZGPU="+bin, "CANHAZGPU_HEALTHCHECK="+healthcheck)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr proctest.SyncBuffer // read while the demo runs
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	url := ""
	lines := bufio.NewScanner(stdout)
	for url == "" && lines.Scan() {
		if u, ok := strings.CutPrefix(lines.Text(), "The dashboard: "); ok {
			url = u
		}
	}
	if url == "" {
		err := cmd.Wait() // so that stderr is all there
		require.FailNow(t, "no URL printed", "exit: %v; stderr: %s", err, stderr.String())
	}
	require.Regexp(t, `^http://127\.0\.0\.1:\d+/$`, url)

	for path, want := range map[string]string{
		"":               `data-node="demo-node"`,
		"node/demo-node": "WITHOUT RESERVATION",
		"api/v1/status":  `"node":"demo-node"`,
		"usage?days=1":   `<svg class="chart"`,
	} {
		resp, err := http.Get(url + path)
		require.NoError(t, err, path)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		require.Contains(t, string(body), want, path)
	}

	_, err = io.WriteString(stdin, "\n")
	require.NoError(t, err)
	go io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	require.NoError(t, err, "stderr: %s", stderr.String())
	_, err = http.Get(url)
	require.Error(t, err, "the dashboard stops with the demo")
}
