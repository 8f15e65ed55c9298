package health

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"canhazgpu/allocator"
	"canhazgpu/internal/termsafe"
)

// Prefix starts every drain reason and node comment the check writes. Only
// a node whose reason starts with it is ever undrained: a reason written by
// anyone else is never cleared or overwritten.
const Prefix = "canhazgpu:"

// maxReasonLen keeps drain reasons to one short line in sinfo and
// scontrol show node.
const maxReasonLen = 120

// message is the one-line description of a violation, e.g.
// "GPU 1 used by bob (pid 4242) without reservation".
func message(v Violation) string {
	if len(v.Processes) == 0 {
		return fmt.Sprintf("GPU %d in use (%d MB) without reservation, no process visible", v.GPU, v.MemoryUsedMB)
	}
	p := v.Processes[0]
	detail := fmt.Sprintf("pid %d", p.PID)
	if p.JobID != "" {
		detail += ", job " + p.JobID
	}
	if n := len(v.Processes) - 1; n > 0 {
		detail += fmt.Sprintf(", +%d more", n)
	}
	used := fmt.Sprintf("GPU %d used by %s (%s)", v.GPU, who(p), detail)
	switch v.Kind {
	case ForeignUser:
		return used + " while reserved by " + owner(v.Reservation)
	case OutsideJob:
		return used + " outside job " + v.Reservation.JobID + ", which reserved it"
	default:
		return used + " without reservation"
	}
}

// owner names a reservation's holder: the user, and the job for batch
// kinds.
func owner(r *allocator.Reservation) string {
	if r == nil {
		return "nobody"
	}
	if r.Kind.Batch() && r.JobID != "" {
		return fmt.Sprintf("%s job %s (%s)", r.Kind, r.JobID, r.User)
	}
	return r.User
}

// Reason is the Slurm drain reason (and node comment) for violations: the
// prefix, the first violation and how many more there are, on one line of
// at most maxReasonLen bytes. "" when there are none.
func Reason(vs []Violation) string {
	if len(vs) == 0 {
		return ""
	}
	more := ""
	if n := len(vs) - 1; n > 0 {
		more = fmt.Sprintf(" (+%d more)", n)
	}
	head := Prefix + " "
	room := maxReasonLen - len(head) - len(more)
	return head + truncate(markText(vs[0].Message), room) + more
}

// markText makes text safe for a node mark: a Slurm drain reason or node
// comment, an NHC line and the PBS comment made from it. Slurm stores a
// reason verbatim and sinfo prints it in one column, so line breaks and
// other C0 controls become spaces, and anything else a terminal would act
// on or hide is escaped (termsafe). NHC hands the message of a failed
// check to its marking helper through eval inside single quotes, and site
// wrappers quote reasons for a shell too, so every character a shell
// treats specially inside quotes (' " ` $ \) is written as a visible
// escape such as \x27: a user named o'brien would otherwise end the quote,
// stop NHC from draining, or run what follows.
func markText(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	// Byte by byte: every character replaced here is ASCII, and bytes
	// that are not UTF-8 are left for termsafe to show.
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < ' ' || c == 0x7f:
			b.WriteByte(' ')
		case strings.IndexByte(shellQuoted, c) >= 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	return termsafe.Escape(b.String())
}

// shellQuoted are the characters that end or act inside a shell's single
// or double quotes.
const shellQuoted = "'\"`$\\"

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "..."
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// ours reports whether a drain reason or comment was written by the check.
// Slurm appends " [user@time]" to reasons; the prefix is unaffected.
func ours(text string) bool { return strings.HasPrefix(text, Prefix) }
