// Package termsafe makes text that other people control safe to print on a
// terminal. User names, notes, model names guessed from command lines,
// process names, job ids and error messages quoting them all reach the
// terminals of other users and of root: a raw ESC starts an escape
// sequence that can retitle a window, move the cursor or rewrite what was
// already printed, and a bidirectional override (U+202E) or an invisible
// format character makes a line read differently from what it says.
// Escape shows every such character as a visible escape instead.
package termsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every character a terminal would act on or hide
// written as a visible Go-style escape: C0 controls, DEL and bytes that
// are not UTF-8 as \xNN, other characters as \uNNNN or \UNNNNNNNN. Those
// are the controls (C0, C1, DEL, so every escape sequence loses its ESC
// or CSI), the format characters (bidirectional controls and overrides
// U+202A–U+202E and U+2066–U+2069, zero-width characters U+200B–U+200F,
// U+FEFF, soft hyphen, tags, …), the line and paragraph separators, and
// private-use, surrogate and unassigned code points, whose effect no one
// can know. Letters, marks, digits, punctuation, symbols and spaces of
// every script are kept. Text that needs nothing escaped is returned as
// is, without allocating.
//
// Backslashes are kept as they are: the result is for people to read, and
// a literal backslash can neither act on a terminal nor hide text.
func Escape(s string) string {
	// A bad byte decodes as U+FFFD, which is graphic: look again below.
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || !unicode.IsGraphic(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for rest := s[i:]; rest != ""; {
		r, size := utf8.DecodeRuneInString(rest)
		switch {
		case r == utf8.RuneError && size == 1:
			writeHex(&b, `\x`, rune(rest[0]), 2) // not UTF-8
		case unicode.IsGraphic(r):
			b.WriteString(rest[:size])
		case r < utf8.RuneSelf:
			writeHex(&b, `\x`, r, 2)
		case r <= 0xffff:
			writeHex(&b, `\u`, r, 4)
		default:
			writeHex(&b, `\U`, r, 8)
		}
		rest = rest[size:]
	}
	return b.String()
}

// writeHex writes prefix and v as digits lower-case hex digits.
func writeHex(b *strings.Builder, prefix string, v rune, digits int) {
	const hex = "0123456789abcdef"
	b.WriteString(prefix)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b.WriteByte(hex[v>>shift&0xf])
	}
}
