package health

import (
	"encoding/json"
	"fmt"
	"io"

	"canhazgpu/internal/termsafe"
)

// WriteHuman prints one line per finding: problems, then what was settled,
// the uses on_conflict = "warn" allowed, idle reservations warned about or
// released, and what was done, then a summary. A run that could not check prints no summary:
// its error belongs on stderr. Messages are escaped (termsafe): they quote
// account names, job ids and errors that others chose.
func WriteHuman(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	for _, v := range r.Violations {
		ew.printf("problem: %s\n", termsafe.Escape(v.Message))
	}
	for _, s := range r.Settled {
		ew.printf("settled: %s\n", termsafe.Escape(s.Message))
	}
	for _, u := range r.Warned {
		ew.printf("warned: %s\n", termsafe.Escape(u.Message))
	}
	for _, f := range r.Idle {
		ew.printf("idle: %s\n", termsafe.Escape(f.Message))
	}
	for _, a := range r.Actions {
		ew.printf("%s: %s\n", a.What, termsafe.Escape(a.Message))
	}
	switch r.Status {
	case StatusHealthy:
		ew.printf("healthy: %s checked on %s\n", plural(len(r.GPUs), "GPU"), r.Node)
	case StatusViolations:
		ew.printf("unhealthy: %s on %s\n", plural(len(r.Violations), "problem"), r.Node)
	}
	return ew.err
}

// NHCPrefix starts every line of --nhc output, in the "ERROR:  nhc:  "
// shape of NHC's own log lines (two spaces after each colon).
const NHCPrefix = "ERROR:  canhazgpu:  "

// WriteNHC prints only problems, one line each, for NHC's check function,
// which dies with the first. Nothing at all for a healthy node.
func WriteNHC(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	if r.Status == StatusError {
		ew.printf("%scould not check: %s\n", NHCPrefix, markText(r.Error))
	}
	for _, v := range r.Violations {
		ew.printf("%s%s\n", NHCPrefix, markText(v.Message))
	}
	return ew.err
}

// WriteJSON prints the whole report as one JSON object.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// errWriter keeps the first write error, so a run of lines needs one
// check.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
