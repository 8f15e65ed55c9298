package main

import (
	"fmt"
	"slices"
	"strings"
)

// page is one man page: a program's help text and that of its subcommands.
type page struct {
	Name    string
	Section string
	Version string
	Date    string
	Summary string // one line for NAME, from the package documentation
	Help    string // the program's --help output; "" when it has none
	// Subcommands holds the --help of each command listed under the
	// program's "Commands:" heading, in that order.
	Subcommands []subcommand
	SeeAlso     []string // other pages as "name(section)"
}

type subcommand struct {
	Name string
	Help string
}

type blockKind int

const (
	paragraph    blockKind = iota // running text, refilled by man
	preformatted                  // indented lines: tables of flags, commands, examples
	heading                       // "Flags:" and the like
	usage                         // the text after "Usage:"
)

// block is a run of help lines of one kind.
type block struct {
	kind  blockKind
	lines []string
}

// parseHelp splits help text into blocks. It relies only on what every
// help text of the project does: a "Usage:" line, headings that end with a
// colon and are followed by indented lines, and blank lines between parts.
func parseHelp(text string) []block {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var blocks []block
	var cur *block
	flush := func() {
		if cur != nil {
			blocks = append(blocks, *cur)
			cur = nil
		}
	}
	for i, l := range lines {
		l = strings.TrimRight(l, " \t")
		switch {
		case l == "":
			flush()
		case isUsageLine(l):
			flush()
			rest := strings.TrimSpace(l[strings.Index(l, ":")+1:])
			cur = &block{kind: usage}
			if rest != "" {
				cur.lines = append(cur.lines, rest)
			}
		case indented(l) && cur != nil && cur.kind == usage:
			cur.lines = append(cur.lines, strings.TrimSpace(l))
		case indented(l):
			if cur == nil || cur.kind != preformatted {
				flush()
				cur = &block{kind: preformatted}
			}
			cur.lines = append(cur.lines, l)
		case strings.HasSuffix(l, ":") && i+1 < len(lines) && indented(lines[i+1]):
			flush()
			blocks = append(blocks, block{kind: heading, lines: []string{strings.TrimSuffix(l, ":")}})
		default:
			if cur == nil || cur.kind != paragraph {
				flush()
				cur = &block{kind: paragraph}
			}
			cur.lines = append(cur.lines, l)
		}
	}
	flush()
	return blocks
}

func indented(l string) bool {
	return strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")
}

// isUsageLine matches "Usage: …" and Go's flag package default "Usage of …:".
func isUsageLine(l string) bool {
	low := strings.ToLower(strings.TrimSpace(l))
	return strings.HasPrefix(low, "usage:") || strings.HasPrefix(low, "usage of ")
}

func hasUsage(text string) bool {
	return slices.ContainsFunc(strings.Split(text, "\n"), isUsageLine)
}

// subcommands lists the command names under the "Commands:" heading of a
// program's help (the first word of each line), without "help".
func subcommands(help string) []string {
	var names []string
	blocks := parseHelp(help)
	for i, b := range blocks {
		if b.kind != heading || !strings.EqualFold(b.lines[0], "commands") || i+1 >= len(blocks) || blocks[i+1].kind != preformatted {
			continue
		}
		for _, l := range blocks[i+1].lines {
			f := strings.Fields(l)
			if len(f) > 0 && isCommandName(f[0]) && f[0] != "help" {
				names = append(names, f[0])
			}
		}
	}
	return names
}

func isCommandName(s string) bool {
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return s != "" && s[0] != '-'
}

// Render writes the page in man(7) markup.
func (p page) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, ".\\\" Generated from the output of %s --help by packaging/manpage: edit the help text, not this file.\n", p.Name)
	fmt.Fprintf(&b, ".TH %s %s %s %s %s\n", quote(strings.ToUpper(p.Name)), quote(p.Section), quote(p.Date), quote("canhazgpu "+p.Version), quote("canhazgpu"))
	b.WriteString(".SH NAME\n")
	summary := p.Summary
	if summary == "" {
		summary = "part of canhazgpu"
	}
	fmt.Fprintf(&b, "%s \\- %s\n", escape(p.Name), escape(summary))

	blocks := parseHelp(p.Help)
	b.WriteString(".SH SYNOPSIS\n")
	synopsis := false
	for _, bl := range blocks {
		if bl.kind == usage {
			writePre(&b, bl.lines)
			synopsis = true
		}
	}
	if !synopsis {
		fmt.Fprintf(&b, ".B %s\n", escape(p.Name))
	}

	b.WriteString(".SH DESCRIPTION\n")
	described := false
	for _, bl := range blocks {
		switch bl.kind {
		case heading:
			fmt.Fprintf(&b, ".SH %s\n", quote(strings.ToUpper(bl.lines[0])))
		case paragraph, preformatted:
			writeBlock(&b, bl)
			described = true
		}
	}
	if !described {
		fmt.Fprintf(&b, ".PP\n%s %s.\n", escape(p.Name), escape(summary))
	}
	if p.Help == "" {
		b.WriteString(".PP\nThis program prints no help text. How to set it up is described in\n.IR /usr/share/doc/canhazgpu/install.md .\n")
	}

	if len(p.Subcommands) > 0 {
		b.WriteString(".SH \"COMMANDS IN DETAIL\"\n")
		for _, s := range p.Subcommands {
			fmt.Fprintf(&b, ".SS %s\n", quote(p.Name+" "+s.Name))
			for _, bl := range parseHelp(s.Help) {
				switch bl.kind {
				case usage:
					// Further usage lines line up under the first.
					b.WriteString(".PP\n.nf\n")
					for i, l := range bl.lines {
						prefix := "       "
						if i == 0 {
							prefix = `\fBUsage:\fR `
						}
						b.WriteString(prefix + escape(l) + "\n")
					}
					b.WriteString(".fi\n")
				case heading:
					fmt.Fprintf(&b, ".PP\n.B %s\n", quote(bl.lines[0]+":"))
				default:
					writeBlock(&b, bl)
				}
			}
		}
	}

	b.WriteString(".SH FILES\n")
	b.WriteString(".TP\n.I /etc/canhazgpu/config.toml\n")
	b.WriteString("The settings of every canhazgpu program, each key described in a comment.\n")
	b.WriteString("The environment variable\n.B CANHAZGPU_CONFIG\nnames another file.\n")
	b.WriteString(".TP\n.I /usr/share/canhazgpu\nScheduler integration files and examples.\n")
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH \"SEE ALSO\"\n")
		refs := make([]string, len(p.SeeAlso))
		for i, r := range p.SeeAlso {
			name, sec, _ := strings.Cut(strings.TrimSuffix(r, ")"), "(")
			refs[i] = fmt.Sprintf(".BR %s (%s)", escape(name), sec)
		}
		b.WriteString(strings.Join(refs, ",\n") + "\n")
	}
	return b.String()
}

func writeBlock(b *strings.Builder, bl block) {
	if bl.kind == preformatted {
		writePre(b, bl.lines)
		return
	}
	b.WriteString(".PP\n")
	for _, l := range bl.lines {
		b.WriteString(escape(l) + "\n")
	}
}

// writePre keeps the lines as they are, less their common indentation
// (the page indents them already), so the help's columns stay aligned.
func writePre(b *strings.Builder, lines []string) {
	common := -1
	for _, l := range lines {
		if n := len(l) - len(strings.TrimLeft(l, " ")); strings.TrimSpace(l) != "" && (common < 0 || n < common) {
			common = n
		}
	}
	b.WriteString(".PP\n.nf\n")
	for _, l := range lines {
		b.WriteString(escape(l[min(max(common, 0), len(l)):]) + "\n")
	}
	b.WriteString(".fi\n")
}

// escape makes text safe as a line of man(7) input: backslashes and
// hyphens are escaped (so flags copy as ASCII '-'), and a leading dot or
// apostrophe is not taken for a request.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// quote makes s one macro argument.
func quote(s string) string {
	return `"` + strings.ReplaceAll(escape(s), `"`, `\(dq`) + `"`
}
