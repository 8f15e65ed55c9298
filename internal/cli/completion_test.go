package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// The completion scripts in contrib/completion are written by hand; these
// tests keep them in step with the command list.

var completionDir = filepath.Join("..", "..", "contrib", "completion")

func ownFlags(c *command) []string {
	names := []string{}
	c.flags.VisitAll(func(f *pflag.Flag) { names = append(names, "--"+f.Name) })
	return names
}

func TestBashCompletionKnowsEveryCommandAndFlag(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(completionDir, "canhazgpu.bash"))
	require.NoError(t, err)
	script := string(b)
	list := regexp.MustCompile(`local commands="([^"]*)"`).FindStringSubmatch(script)
	require.NotNil(t, list)
	for _, c := range commands() {
		require.Contains(t, strings.Fields(list[1]), c.name, "commands list has %s", c.name)
		m := regexp.MustCompile(`(?m)^\t` + c.name + `\) flags="([^"]*)" ;;$`).FindStringSubmatch(script)
		require.NotNil(t, m, "a flags line for %s", c.name)
		got := strings.Fields(m[1])
		want := ownFlags(c)
		slices.Sort(got)
		slices.Sort(want)
		require.Equal(t, want, got, "flags of %s", c.name)
	}

	complete := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _canhazgpu; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", append([]string{"-c", script, "bash", filepath.Join(completionDir, "canhazgpu.bash")}, words...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return strings.Fields(string(out))
	}
	require.Equal(t, []string{"reserve", "release", "report"}, complete("canhazgpu re"))
	require.Equal(t, []string{"--duration"}, complete("canhazgpu reserve --gpus 2 --du"))
	require.Equal(t, []string{"auto", "nvml", "fake"}, complete("canhazgpu status --gpu-provider "))
	require.Contains(t, complete("canhazgpu run --gpus 1 -- bas"), "bash", "after --, programs")
	// Each program once, even when PATH lists its directory twice and it
	// is also a builtin (echo).
	script = `source "$1"; PATH="$PATH:$PATH"; COMP_WORDS=(canhazgpu run -- ech); COMP_CWORD=3; _canhazgpu; printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.Command("bash", "-c", script, "bash", filepath.Join(completionDir, "canhazgpu.bash")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	programs := strings.Fields(string(out))
	require.Contains(t, programs, "echo")
	require.Equal(t, slices.Compact(slices.Sorted(slices.Values(programs))), programs, "no duplicates")
	require.Equal(t, []string{"--json"}, complete("canhazgpu --node n1 queue --j"))
}

func TestZshCompletionKnowsEveryCommandAndFlag(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(completionDir, "_canhazgpu"))
	require.NoError(t, err)
	script := string(b)
	require.True(t, strings.HasPrefix(script, "#compdef canhazgpu\n"))
	for _, c := range commands() {
		quoted := strings.ReplaceAll(c.short, "'", `'"'"'`) // zsh's way to put ' in '...'
		require.Contains(t, script, "'"+c.name+":"+quoted+"'", "described like --help does")
		require.Contains(t, script, "\t"+c.name+") _arguments", "a branch for %s", c.name)
		for _, f := range ownFlags(c) {
			require.Contains(t, script, f, "%s of %s", f, c.name)
		}
	}
}
