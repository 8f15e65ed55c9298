// Package docs holds the project's guides. Its test checks that the
// commands the README and the benchmark page give still exist: each make
// target in the Makefile, each benchmark pattern in its package. The other
// guides test their own examples or mark them illustrative.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// commands returns the indented code lines of a Markdown file that are not
// preceded by a paragraph marked "(illustrative)".
func commands(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []string
	illustrative := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "    "):
			if !illustrative {
				out = append(out, strings.TrimSpace(line))
			}
		case strings.TrimSpace(line) != "":
			illustrative = strings.Contains(line, "(illustrative)")
		}
	}
	return out
}

func TestReadmeMakeTargetsExist(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	cmds := commands(t, "../README.md")
	require.Len(t, cmds, 2, "the two set-up commands")
	for _, c := range cmds {
		fields := strings.Fields(c)
		require.Equal(t, "make", fields[0], c)
		require.Regexp(t, regexp.MustCompile(`(?m)^`+fields[1]+`:`), string(mk), "Makefile target %s", fields[1])
	}
}

var benchCmd = regexp.MustCompile(`^go test -run '\^\$' -bench '?([^ ']+)'? .*?(\./\S+/)$`)

func TestBenchmarkCommandsExist(t *testing.T) {
	cmds := commands(t, "benchmarks.md")
	require.NotEmpty(t, cmds)
	for _, c := range cmds {
		m := benchCmd.FindStringSubmatch(c)
		require.NotNil(t, m, "not a benchmark command: %s", c)
		pattern := regexp.MustCompile(m[1])
		files, err := filepath.Glob(filepath.Join("..", m[2], "*_test.go"))
		require.NoError(t, err)
		found := false
		for _, f := range files {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			for _, name := range regexp.MustCompile(`(?m)^func Benchmark(\w+)\(`).FindAllStringSubmatch(string(src), -1) {
				if pattern.MatchString(name[1]) {
					found = true
				}
			}
		}
		require.True(t, found, "%s: no benchmark matching %q in %s", c, m[1], m[2])
	}
}
