package termsafe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "alice", "alice"},
		{"empty", "", ""},
		{"spaces and punctuation", "debugging NCCL; 50% (run 2)", "debugging NCCL; 50% (run 2)"},
		{"other scripts", "Jürgen 山田 Ελένη محمد", "Jürgen 山田 Ελένη محمد"},
		{"combining marks and emoji", "e\u0301 🚀", "e\u0301 🚀"},
		{"no-break space", "a\u00a0b", "a\u00a0b"},
		{"backslash kept", `C:\temp \x1b`, `C:\temp \x1b`},
		{"replacement character kept", "\ufffd", "\ufffd"},
		{"window title (OSC)", "\x1b]0;pwned\a", `\x1b]0;pwned\x07`},
		{"colour (CSI)", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"newline, return, tab", "a\nb\rc\td", `a\x0ab\x0dc\x09d`},
		{"NUL and DEL", "a\x00b\x7f", `a\x00b\x7f`},
		{"C1 CSI", "a\u009b31m", `a\u009b31m`},
		{"C1 NEL", "a\u0085b", `a\u0085b`},
		{"right-to-left override", "evil\u202etxt.exe", `evil\u202etxt.exe`},
		{"bidi embeddings and isolates", "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069", `\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069`},
		{"zero width and marks", "a\u200bb\u200cc\u200dd\u200ee\u200ff", `a\u200bb\u200cc\u200dd\u200ee\u200ff`},
		{"byte order mark", "\ufeffname", `\ufeffname`},
		{"arabic letter mark", "a\u061cb", `a\u061cb`},
		{"soft hyphen", "a\u00adb", `a\u00adb`},
		{"line and paragraph separators", "a\u2028b\u2029c", `a\u2028b\u2029c`},
		{"tag characters", "a\U000e0041", `a\U000e0041`},
		{"private use", "a\ue000", `a\ue000`},
		{"unassigned", "a\U000e0080", `a\U000e0080`},
		{"not UTF-8", "a\xffb\xc3", `a\xffb\xc3`},
		{"escaped after kept text", "üü\x1b", `üü\x1b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Escape(tt.in)
			require.Equal(t, tt.want, got)
			require.True(t, utf8.ValidString(got), "the result is UTF-8")
			for _, r := range got {
				require.True(t, unicode.IsGraphic(r), "%q left in %q", r, got)
			}
			require.Equal(t, got, Escape(got), "escaping twice changes nothing more")
		})
	}
}

// Every rune that is not graphic is escaped, whichever category it is in,
// and every graphic one kept: walking Unicode keeps the rule honest when
// new categories or code points appear. Planes 4-13 (unassigned) and 15-16
// (private use) hold one category each and are sampled.
func TestEscapeEveryCodePoint(t *testing.T) {
	var graphic, other strings.Builder
	others := 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if plane := r >> 16; (plane >= 4 && plane <= 13 || plane >= 15) && r&0xff != 0 {
			continue
		}
		switch {
		case !utf8.ValidRune(r):
			// Surrogates cannot appear in UTF-8 text.
		case unicode.IsGraphic(r):
			graphic.WriteRune(r)
		default:
			other.WriteRune(r)
			others++
		}
	}
	require.Equal(t, graphic.String(), Escape(graphic.String()), "graphic characters are kept")
	got := Escape(other.String())
	if i := strings.IndexFunc(got, func(r rune) bool { return !unicode.IsGraphic(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(got[i:])
		t.Fatalf("%U left unescaped", r)
	}
	require.Equal(t, others, strings.Count(got, `\`), "one escape per character")
}

func TestEscapeKeepsCleanTextWithoutAllocating(t *testing.T) {
	s := "meta-llama/Meta-Llama-3-8B-Instruct on gpu-node-01, Jürgen"
	allocs := testing.AllocsPerRun(100, func() { _ = Escape(s) })
	require.Zero(t, allocs)
}
