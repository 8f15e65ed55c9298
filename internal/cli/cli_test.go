package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

// splitWords splits an example command line like a shell would for the
// simple quoting used in help texts.
func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestHelpTexts walks the command list: every command documents itself
// the same way, and every example parses with the command's own flags.
func TestHelpTexts(t *testing.T) {
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			require.True(t, strings.HasPrefix(c.usage, "canhazgpu "+c.name), c.usage)
			require.True(t, unicode.IsUpper(rune(c.short[0])), "short help starts with a capital: %q", c.short)
			require.False(t, strings.HasSuffix(c.short, "."), "short help has no period: %q", c.short)
			require.NotEmpty(t, c.examples)
			for _, e := range c.examples {
				i := strings.Index(e, "canhazgpu "+c.name)
				require.GreaterOrEqual(t, i, 0, "example %q runs canhazgpu %s", e, c.name)
				words := splitWords(strings.TrimSuffix(e[i:], ")"))
				fresh := findCommand(commands(), c.name)
				require.NoError(t, fresh.flags.Parse(words[2:]), "example %q", e)
			}
			var out bytes.Buffer
			require.NoError(t, Run(context.Background(), []string{c.name, "--help"}, &Env{Stdout: &out}))
			help := out.String()
			require.True(t, strings.HasPrefix(help, "Usage: "+c.usage+"\n"), help)
			c.flags.VisitAll(func(f *pflag.Flag) {
				require.Contains(t, help, "--"+f.Name, "help of %s lists --%s", c.name, f.Name)
			})
			require.Contains(t, help, "--redis-url")
			require.Contains(t, help, "Examples:\n  "+c.examples[0]+"\n")
		})
	}
	var out bytes.Buffer
	require.NoError(t, Run(context.Background(), []string{"--help"}, &Env{Stdout: &out}))
	for _, c := range commands() {
		require.Contains(t, out.String(), "\n  "+c.name+" ")
	}
	out.Reset()
	require.NoError(t, Run(context.Background(), []string{"help", "reserve"}, &Env{Stdout: &out}))
	require.True(t, strings.HasPrefix(out.String(), "Usage: canhazgpu reserve"))
}

func TestExitCodesAndErrorLines(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		line string
	}{
		{nil, 0, ""},
		{&exitStatus{code: 3}, 3, ""},
		{&exitStatus{code: 127, msg: "foo: command not found"}, 127, "Error: foo: command not found"},
		{badValue("--gpus", "0", "a positive whole number of GPUs"), 2, `Error: invalid --gpus "0": want a positive whole number of GPUs`},
		{&allocator.ShortageError{Requested: 3, Available: 1, Unreserved: 2}, 1,
			"Error: Not enough GPUs available. Requested: 3, Available: 1 (2 GPUs in use without reservation - run 'canhazgpu status' for details)"},
		{errors.New("two\nlines"), 1, "Error: two lines"},
		{errors.New("GPU 0 is reserved by \u202eeve\x1b]0;x\a"), 1, `Error: GPU 0 is reserved by \u202eeve\x1b]0;x\x07`},
		{allocator.ErrUnavailable, 1, "Error: reservation store unavailable (is the Redis server running, and does redis.url or CANHAZGPU_REDIS_URL point at it?)"},
		{fmt.Errorf("allocate: %w at sentinel master chg via s1:26379: %w", allocator.ErrUnavailable,
			&store.NotReplicatedError{Want: 1, Got: 0, Timeout: time.Second}), 1,
			"Error: allocate: reservation store unavailable at sentinel master chg via s1:26379: the change was confirmed by 0 of " +
				"the 1 replicas redis.wait_replicas asks for within 1s, so a failover may lose it " +
				"(see 'canhazgpu status' for whether it took effect)"},
		{&givenBackError{fmt.Errorf("allocate: %w at 10.0.0.5:6379: %w", allocator.ErrUnavailable,
			&store.NotReplicatedError{Want: 1, Got: 0, Timeout: time.Second})}, 1,
			"Error: allocate: reservation store unavailable at 10.0.0.5:6379: the change was confirmed by 0 of " +
				"the 1 replicas redis.wait_replicas asks for within 1s, so a failover may lose it; the GPUs were given back, " +
				"so nothing is reserved (try again when the store's replicas answer)"},
	} {
		require.Equal(t, c.code, ExitCode(c.err), "%v", c.err)
		require.Equal(t, c.line, ErrorLine(c.err), "%v", c.err)
	}
}

// Command lines pflag would accept but the user cannot have meant: a flag
// given twice (the last would silently win), a global flag given an empty
// value (the default would silently be used), an empty command name. Each
// is one usage line naming the flag or value, before anything is opened.
func TestRepeatedFlagsEmptyGlobalsAndEmptyCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		line string
	}{
		{[]string{"reserve", "--gpus", "1", "--gpus", "2"}, `Error: flag --gpus given twice ("1", then "2"): want each flag at most once`},
		{[]string{"reserve", "-g", "1", "-g2"}, `Error: flag --gpus given twice ("1", then "2"): want each flag at most once`},
		{[]string{"run", "--timeout", "1h", "--timeout=1h", "--", "true"}, `Error: flag --timeout given twice ("1h", then "1h"): want each flag at most once`},
		{[]string{"reserve", "--wait", "--wait=1h"}, `Error: flag --wait given twice ("forever", then "1h"): want each flag at most once`},
		{[]string{"--memory-threshold", "1", "--memory-threshold", "2", "status"}, `Error: flag --memory-threshold given twice ("1", then "2"): want each flag at most once`},
		{[]string{"--redis-url", "redis://a:1/0", "queue", "--redis-url", "redis://b:1/0"}, `Error: flag --redis-url given twice ("redis://a:1/0", then "redis://b:1/0"): want each flag at most once`},
		{[]string{"--version", "--version"}, `Error: flag --version given twice ("true", then "true"): want each flag at most once`},
		{[]string{"--node", "", "status"}, `Error: invalid --node "": want a non-empty value, or no --node at all for the default`},
		{[]string{"status", "--node", ""}, `Error: invalid --node "": want a non-empty value, or no --node at all for the default`},
		{[]string{"report", "--fake-file="}, `Error: invalid --fake-file "": want a non-empty value, or no --fake-file at all for the default`},
		{[]string{"run", "--", ""}, `Error: invalid command name "": want the name or path of a program, as in canhazgpu run [flags] -- CMD ARGS...`},
		{[]string{"run", ""}, `Error: invalid command name "": want the name or path of a program, as in canhazgpu run [flags] -- CMD ARGS...`},
		{[]string{"run", "--"}, `Error: no command given: want canhazgpu run [flags] -- CMD ARGS...`},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out strings.Builder
			err := Run(context.Background(), c.args, &Env{Stdout: &out, Stderr: &out})
			require.Equal(t, 2, ExitCode(err), "%v", err)
			require.Equal(t, c.line, ErrorLine(err))
			require.Empty(t, out.String())
		})
	}
}

func TestLookPathLikeAShell(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "data")
	require.NoError(t, os.WriteFile(plain, nil, 0o644))
	env := []string{"PATH=relative:" + dir}

	p, err := lookPath("tool", env)
	require.NoError(t, err)
	require.Equal(t, exe, p)
	for _, c := range []struct {
		name string
		code int
	}{
		{"missing-tool", 127},
		{"data", 126},
		{plain, 126},
		{dir, 126},
		{filepath.Join(dir, "nope"), 127},
	} {
		_, err := lookPath(c.name, env)
		require.Equal(t, c.code, ExitCode(err), "%s: %v", c.name, err)
	}
}

func TestWithEnvReplacesTheCallersValues(t *testing.T) {
	got := withEnv([]string{"A=1", "CUDA_VISIBLE_DEVICES=7", "B=2", "CUDA_VISIBLE_DEVICES=8"},
		map[string]string{"CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
	require.Equal(t, []string{"A=1", "B=2", "CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=0,1"}, got)
}
