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
	return head + truncate(oneLine(vs[0].Message), room) + more
}

// oneLine makes text safe for a reason: Slurm stores it verbatim and NHC
// and sinfo print it in one column, so no line breaks or other controls,
// nothing else that acts on a terminal (escaped by termsafe), and no double
// quotes (shell wrappers quote reasons with them).
func oneLine(s string) string {
	return termsafe.Escape(strings.Map(func(r rune) rune {
		switch {
		case r < ' ' || r == 0x7f:
			return ' '
		case r == '"':
			return '\''
		}
		return r
	}, s))
}

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
