package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"canhazgpu/internal/termsafe"
)

// jsonVersion is the "version" field of every JSON document canhazgpu
// prints. It changes only when a field changes meaning or disappears;
// new fields may appear without a change.
const jsonVersion = 1

// writeJSON prints one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jsonTime is a time in RFC 3339 (UTC, whole seconds), or null when zero.
func jsonTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Truncate(time.Second).Format(time.RFC3339)
	return &s
}

// writeLine prints one line of human output. The text is escaped as a
// whole (termsafe): user names, notes, node names and errors quoted in it
// come from other people, and the format strings hold nothing to escape.
func writeLine(w io.Writer, format string, args ...any) error {
	_, err := io.WriteString(w, termsafe.Escape(fmt.Sprintf(format, args...))+"\n")
	return err
}

// writeTable prints rows under a header, each column as wide as its widest
// cell, one space between columns, a line of dashes under each header, and
// no trailing spaces. Every cell is escaped (termsafe) before it is
// measured: cells hold user names, notes and command lines of others.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = utf8.RuneCountInString(h)
	}
	safe := make([][]string, len(rows))
	for i, r := range rows {
		safe[i] = make([]string, len(r))
		for j, c := range r {
			safe[i][j] = termsafe.Escape(c)
			widths[j] = max(widths[j], utf8.RuneCountInString(safe[i][j]))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		var l strings.Builder
		for i, c := range cells {
			if i > 0 {
				l.WriteByte(' ')
			}
			l.WriteString(c)
			l.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
		}
		b.WriteString(strings.TrimRight(l.String(), " "))
		b.WriteByte('\n')
	}
	line(header)
	dashes := make([]string, len(header))
	for i := range header {
		dashes[i] = strings.Repeat("-", widths[i])
	}
	line(dashes)
	for _, r := range safe {
		line(r)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// hms writes a duration the way the status table does: "1h 30m 0s",
// "45m 0s", "5s", with days in front past 24 hours. Leading zero units are
// left out, trailing ones kept, so columns read alike.
func hms(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	days, h, m, sec := s/86400, s/3600%24, s/60%60, s%60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh %dm %ds", days, h, m, sec)
	case h > 0:
		return fmt.Sprintf("%dh %dm %ds", h, m, sec)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

// coarse writes a long span with its two largest units, dropping a zero
// second one: "2h", "2h 45m", "3d 4h", "45m", "30s" (as in "free for 2h").
func coarse(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	days, h, m, sec := s/86400, s/3600%24, s/60%60, s%60
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return fmt.Sprintf("%d%s", a, ua)
		}
		return fmt.Sprintf("%d%s %d%s", a, ua, b, ub)
	}
	switch {
	case days > 0:
		return two(days, "d", h, "h")
	case h > 0:
		return two(h, "h", m, "m")
	case m > 0:
		return fmt.Sprintf("%dm", m)
	}
	return fmt.Sprintf("%ds", sec)
}
