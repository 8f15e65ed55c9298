package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// rootHelp has the shape of `canhazgpu --help`.
const rootHelp = `canhazgpu: share the GPUs of this node through reservations.

Usage: canhazgpu [global flags] COMMAND [flags]

Commands:
  status    Show the GPUs of this node
  run       Run a command on reserved GPUs
  help      Show help

Global flags (also accepted after the command):
      --config file   config file
  -h, --help          help

Run 'canhazgpu COMMAND --help' for a command's flags and examples.
`

// statusHelp has the shape of `canhazgpu status --help`.
const statusHelp = `Usage: canhazgpu status [--json] [--all-nodes]

Show the GPUs of this node.

Flags:
      --json   print JSON

Examples:
  canhazgpu status --all-nodes
`

func TestParseHelp(t *testing.T) {
	tests := []struct {
		name  string
		help  string
		kinds []blockKind
	}{
		{"root", rootHelp, []blockKind{paragraph, usage, heading, preformatted, heading, preformatted, paragraph}},
		{"command", statusHelp, []blockKind{usage, paragraph, heading, preformatted, heading, preformatted}},
		{"flag package default", "Usage of prog:\n  -v\tverbose\n", []blockKind{usage}},
		{"usage continued on indented lines", "Usage:\n  prog --pbs begin\n  prog\n\nText.\n", []blockKind{usage, paragraph}},
		{"colon line without indented lines is text", "Exit status:\n0 ok.\n", []blockKind{paragraph}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var kinds []blockKind
			for _, b := range parseHelp(tt.help) {
				kinds = append(kinds, b.kind)
			}
			require.Equal(t, tt.kinds, kinds)
		})
	}
	require.Equal(t, []string{"prog --pbs begin", "prog"}, parseHelp("Usage:\n  prog --pbs begin\n  prog\n")[0].lines)
}

func TestSubcommands(t *testing.T) {
	tests := []struct {
		name string
		help string
		want []string
	}{
		{"root help lists commands, not help", rootHelp, []string{"status", "run"}},
		{"no commands heading", statusHelp, nil},
		{"flags are not commands", "Usage: x\n\nCommands:\n  --all   everything\n  go      Go\n", []string{"go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, subcommands(tt.help))
		})
	}
}

func TestParseDocs(t *testing.T) {
	out := "Command canhazgpu reserves GPUs of this node.\n\nCommand canhazgpu-prolog reserves a batch job's GPUs.\nPackage main is not a command doc.\n"
	require.Equal(t, map[string]string{
		"canhazgpu":        "reserves GPUs of this node",
		"canhazgpu-prolog": "reserves a batch job's GPUs",
	}, parseDocs(out))
}

func TestRender(t *testing.T) {
	tests := []struct {
		name    string
		page    page
		want    []string
		notWant []string
	}{
		{
			name: "help text with commands",
			page: page{Name: "canhazgpu", Section: "1", Version: "1.2.3", Date: "2025-01-02", Summary: "reserves GPUs",
				Help: rootHelp, Subcommands: []subcommand{{Name: "status", Help: statusHelp}}, SeeAlso: []string{"canhazgpu-prolog(8)"}},
			want: []string{
				`.TH "CANHAZGPU" "1" "2025\-01\-02" "canhazgpu 1.2.3" "canhazgpu"`,
				"canhazgpu \\- reserves GPUs\n",
				".SH SYNOPSIS\n.PP\n.nf\ncanhazgpu [global flags] COMMAND [flags]\n.fi\n",
				`.SH "COMMANDS"`,
				// common indentation goes, columns stay
				"status    Show the GPUs of this node\n",
				"    \\-\\-config file   config file\n",
				`.SS "canhazgpu status"`,
				".nf\n\\fBUsage:\\fR canhazgpu status [\\-\\-json] [\\-\\-all\\-nodes]\n.fi\n",
				"canhazgpu status \\-\\-all\\-nodes\n",
				".BR canhazgpu\\-prolog (8)\n",
				".I /etc/canhazgpu/config.toml\n",
			},
			notWant: []string{"prints no help text"},
		},
		{
			name: "no help text: minimal page from the summary",
			page: page{Name: "canhazgpu-epilog", Section: "8", Version: "dev", Summary: "releases a batch job's GPUs"},
			want: []string{
				"canhazgpu\\-epilog \\- releases a batch job's GPUs\n",
				".SH SYNOPSIS\n.B canhazgpu\\-epilog\n",
				".PP\ncanhazgpu\\-epilog releases a batch job's GPUs.\n",
				"prints no help text",
			},
			notWant: []string{"COMMANDS IN DETAIL", "SEE ALSO"},
		},
		{
			name: "roff control characters in help are escaped",
			page: page{Name: "x", Section: "1", Help: "Usage: x\n\n.not a request\n'nor this\nback\\slash\n"},
			want: []string{"\\&.not a request\n", "\\&'nor this\n", "back\\eslash\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.page.Render()
			for _, w := range tt.want {
				require.Contains(t, got, w)
			}
			for _, w := range tt.notWant {
				require.NotContains(t, got, w)
			}
			checkWithMan(t, got)
		})
	}
}

// checkWithMan formats the page the way lintian checks pages and fails on
// any warning from man or groff.
func checkWithMan(t *testing.T, page string) {
	t.Helper()
	if _, err := exec.LookPath("man"); err != nil {
		t.Log("man (man-db) is not installed: page not formatted")
		return
	}
	f := filepath.Join(t.TempDir(), "page.1")
	require.NoError(t, os.WriteFile(f, []byte(page), 0o644))
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", f)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	require.Empty(t, stderr.String())
}

// TestRun writes pages for two stand-in programs: one with help text and a
// subcommand, one whose --help prints something else and fails.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
		return p
	}
	withHelp := script("canhazgpu", `case "$1" in
status) printf '%s' '`+statusHelp+`' ;;
*) printf '%s' '`+strings.ReplaceAll(rootHelp, "'", `'"'"'`)+`' ;;
esac
`)
	withoutHelp := script("canhazgpu-epilog", "echo 'unexpected argument \"--help\"' >&2; exit 2\n")
	out := filepath.Join(dir, "man")

	require.NoError(t, run([]string{"-out", out, "-version", "9.9", "-date", "2025-01-02", withHelp + ":1", withoutHelp + ":8"}))

	root, err := os.ReadFile(filepath.Join(out, "man1", "canhazgpu.1"))
	require.NoError(t, err)
	require.Contains(t, string(root), `.SS "canhazgpu status"`)
	require.Contains(t, string(root), `"canhazgpu 9.9"`)
	require.Contains(t, string(root), ".BR canhazgpu\\-epilog (8)")
	minimal, err := os.ReadFile(filepath.Join(out, "man8", "canhazgpu-epilog.8"))
	require.NoError(t, err)
	require.Contains(t, string(minimal), "prints no help text")
	require.NotContains(t, string(minimal), "unexpected argument")

	require.ErrorContains(t, run([]string{"-out", out, withHelp}), `bad program "`+withHelp+`": want BIN:SECTION`)
}
