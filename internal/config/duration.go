package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// durationForms is appended to every duration error so that the user learns
// what to type instead, wherever the value came from (file, environment, flag).
const durationForms = "use a positive number with a unit (s, m, h, d; also ms, us, ns), " +
	"e.g. 30s, 30m, 2h, 1d, 0.5h or 1h30m, each unit once and largest first"

// MaxDuration bounds every duration ParseDuration accepts: 100 years of 365
// days. Anything longer is a typo or an attempt to overflow the arithmetic
// of expiry times, never a reservation anyone means.
const MaxDuration = 36500 * 24 * time.Hour

// unitRank orders the units from largest to smallest: a duration names
// each once, largest first, as "1d12h" and "1h30m" do.
var unitRank = map[string]int{"d": 0, "h": 1, "m": 2, "s": 3, "ms": 4, "us": 5, "\u00b5s": 5, "\u03bcs": 5, "ns": 6}

// ParseDuration parses a positive duration of at most MaxDuration. It
// accepts Go's forms ("1h30m", "0.5h") plus the unit "d" for days of 24
// hours ("1d", "1.5d", "1d12h"), because reservations and history ages are
// naturally counted in days. Each unit may appear once, largest first:
// "1d1d" or "30m1h" is more likely a slip than a sum. Empty, zero, negative,
// malformed and too long values are errors that name the value and what is
// accepted.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("invalid duration %q: %s", s, durationForms)
	tooLong := fmt.Errorf("invalid duration %q: too long: at most %s (100 years)", s, formatDuration(MaxDuration))
	if s == "" {
		return 0, bad
	}
	var total time.Duration
	lastRank, lastUnit := -1, ""
	for rest := s; rest != ""; {
		// Each component is a decimal number followed by a unit. Splitting
		// here lets "d" be handled like the units time.ParseDuration knows.
		numEnd := strings.IndexFunc(rest, func(r rune) bool { return !isNumberRune(r) })
		if numEnd <= 0 {
			return 0, bad // no number, or a number without a unit
		}
		unitEnd := strings.IndexFunc(rest[numEnd:], isNumberRune)
		if unitEnd < 0 {
			unitEnd = len(rest)
		} else {
			unitEnd += numEnd
		}
		num, unit := rest[:numEnd], rest[numEnd:unitEnd]
		rest = rest[unitEnd:]

		rank, known := unitRank[unit]
		if _, err := strconv.ParseFloat(num, 64); !known || err != nil {
			return 0, bad
		}
		switch {
		case unit == lastUnit:
			return 0, fmt.Errorf("invalid duration %q: unit %s given twice; %s", s, unit, durationForms)
		case rank <= lastRank:
			return 0, fmt.Errorf("invalid duration %q: unit %s after %s; %s", s, unit, lastUnit, durationForms)
		}
		lastRank, lastUnit = rank, unit

		// The number and unit are well formed, so time.ParseDuration
		// fails only when the value overflows.
		var part time.Duration
		if unit == "d" {
			hours, err := time.ParseDuration(num + "h")
			if err != nil || hours > math.MaxInt64/24 {
				return 0, tooLong
			}
			part = 24 * hours
		} else {
			var err error
			if part, err = time.ParseDuration(num + unit); err != nil {
				return 0, tooLong
			}
		}
		if part > MaxDuration-total {
			return 0, tooLong
		}
		total += part
	}
	if total <= 0 {
		return 0, bad
	}
	return total, nil
}

func isNumberRune(r rune) bool { return r == '.' || (r >= '0' && r <= '9') }

// formatDuration writes d in the short form ParseDuration reads back:
// "90d", "30m", "1h30m", "1d12h", rather than Go's "2160h0m0s".
func formatDuration(d time.Duration) string {
	if d <= 0 {
		return d.String()
	}
	var b strings.Builder
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d -= days * 24 * time.Hour
	}
	if d > 0 {
		// Go prints whole minutes and hours as "30m0s" and "2h0m0s"; Go's
		// minute field is always below 60, so "h0m" only means zero minutes.
		s := d.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Duration is a time.Duration read with ParseDuration, so that config keys
// and command-line flags accept the same forms. It is a pflag.Value, so a
// command can bind a flag such as --duration to it directly.
type Duration time.Duration

var _ pflag.Value = (*Duration)(nil)

// UnmarshalText parses text with ParseDuration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// String gives the short form, e.g. "30m" or "1d12h".
func (d Duration) String() string { return formatDuration(time.Duration(d)) }

// Set parses s with ParseDuration (pflag.Value).
func (d *Duration) Set(s string) error { return d.UnmarshalText([]byte(s)) }

// Type names the value in flag help (pflag.Value).
func (d *Duration) Type() string { return "duration" }
