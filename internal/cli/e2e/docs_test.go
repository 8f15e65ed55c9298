package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var repoRoot = filepath.Join("..", "..", "..")

// docBlock is one fenced block of a markdown page.
type docBlock struct {
	info         string // the fence's info string: sh, text, ...
	lines        []string
	line         int  // where it starts, for messages
	illustrative bool // the paragraph just before it says "illustrative"
	follows      bool // only blank lines since the previous block
}

func readBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var blocks []docBlock
	var cur *docBlock
	lastText, onlyBlank := "", false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			low := strings.ToLower(lastText)
			cur = &docBlock{info: strings.TrimPrefix(l, "```"), line: n, follows: onlyBlank,
				illustrative: strings.Contains(low, "illustrative")}
		case cur != nil && l == "```":
			blocks = append(blocks, *cur)
			cur, lastText, onlyBlank = nil, "", true
		case cur != nil:
			cur.lines = append(cur.lines, l)
		case strings.TrimSpace(l) == "":
			if !onlyBlank {
				lastText += "\n" // a paragraph ends; the next one replaces it
			}
		default:
			if strings.HasSuffix(lastText, "\n") {
				lastText = ""
			}
			lastText, onlyBlank = lastText+" "+l, false
		}
	}
	require.NoError(t, sc.Err())
	require.Nil(t, cur, "unclosed block in %s", path)
	return blocks
}

var expectExit = regexp.MustCompile(`\s+# exit (\d+)$`)

// TestDocsExamplesRun runs every command example of docs/cli.md, in order,
// on one fake node, and checks the output shown right after a block. Any
// example not meant to run must be marked illustrative.
func TestDocsExamplesRun(t *testing.T) {
	n := newNode(t, `{"gpus": [{"index": 0}, {"index": 1}, {"index": 2},
		{"index": 3, "memory_used_mb": 4096, "processes": [{"pid": 4711, "name": "python3", "user": "bob", "used_memory_mb": 4096, "cmdline": ["python3", "train.py"]}]}]}`)
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	blocks := readBlocks(t, filepath.Join(root, "docs", "cli.md"))
	ran := 0
	for i, b := range blocks {
		runnable := b.info == "sh" || b.info == "bash" || b.info == "console"
		if !runnable || b.illustrative {
			for _, l := range b.lines {
				require.False(t, !b.illustrative && strings.HasPrefix(strings.TrimPrefix(l, "$ "), "canhazgpu "),
					"docs/cli.md:%d: a command example that neither runs (```sh) nor is marked illustrative: %q", b.line, l)
			}
			continue
		}
		var output strings.Builder
		for _, l := range b.lines {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
				continue
			}
			want := 0
			if m := expectExit.FindStringSubmatch(l); m != nil {
				want, _ = strconv.Atoi(m[1])
				l = strings.TrimSuffix(l, m[0])
			}
			cmd := exec.Command("bash", "-c", l)
			cmd.Env, cmd.Dir = n.environ, root
			r := runCmd(t, cmd)
			require.Equal(t, want, r.code, "docs/cli.md:%d: %s\nstdout: %s\nstderr: %s", b.line, l, r.stdout, r.stderr)
			output.WriteString(r.stdout + r.stderr)
			ran++
		}
		if i+1 < len(blocks) && blocks[i+1].follows && blocks[i+1].info == "text" {
			require.Equal(t, strings.Join(blocks[i+1].lines, "\n")+"\n", output.String(), "docs/cli.md:%d: output shown for the block at line %d", blocks[i+1].line, b.line)
		}
	}
	require.Greater(t, ran, 30)
}

// TestDemoScript runs what `make demo` runs, with the binary under test.
func TestDemoScript(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "CANHAZGPU="+bin, "CANHAZGPU_HEALTHCHECK="+healthcheck)
	r := runCmd(t, cmd)
	require.Equal(t, 0, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	for _, want := range []string{
		"3   in use    bob                mistralai/Mistral-7B-Instruct-v0.1 WITHOUT RESERVATION  20480MB used by PID 12345 (python3), PID 67890 (jupyter) 87%\n",
		"problem: GPU 3 used by bob (pid 12345, +1 more) without reservation\n",
		"the command runs with CUDA_VISIBLE_DEVICES=0,1 CUDA_DEVICE_ORDER=PCI_BUS_ID\n",
		"Reserved 1 GPU on node demo-node for 2h: ",
	} {
		require.Contains(t, r.stdout, want)
	}
	require.Regexp(t, `(?m)^\d   in use    root \d+s +manual +expires in (1h 59m \d+s|2h 0m 0s); note: demo notebook`, r.stdout)
	require.Regexp(t, `(?m)^\d   in use    root \d+s +run +heartbeat \d+s ago`, r.stdout)
	// The health check warns about the demo notebook's idle reservation
	// (the demo warns after 2s).
	require.Regexp(t, `(?m)^idle: manual reservation of GPU \d by root on demo-node idle for \d+s \(no process above 1024 MB and under 5% utilisation\): released in (1h59m|2h) unless used or kept with 'canhazgpu reserve --keep-alive'$`, r.stdout)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 2, Available: 1 (1 GPUs in use without reservation - run 'canhazgpu status' for details)\n", r.stderr)
}
