package config

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"30s", 30 * time.Second},
		{"30m", 30 * time.Minute},
		{"2h", 2 * time.Hour},
		{"1d", 24 * time.Hour},
		{"0.5h", 30 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"1.5d", 36 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"90d", 90 * 24 * time.Hour},
		{"250ms", 250 * time.Millisecond},
		{"1h30m10s500ms", time.Hour + 30*time.Minute + 10*time.Second + 500*time.Millisecond},
		{"1d0h10s", 24*time.Hour + 10*time.Second},
		{"2us", 2 * time.Microsecond},
		{"2\u00b5s", 2 * time.Microsecond},
		{"36500d", MaxDuration},
		{"876000h", MaxDuration},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseDurationRejects(t *testing.T) {
	for _, in := range []string{"", "0", "0s", "-5m", "abc", "5x", "1e400h", "5", "h", "1h-5m", "1d 2h", ".h", "1.2.3h", "1hh"} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseDuration(in)
			require.Error(t, err)
			require.Contains(t, err.Error(), `"`+in+`"`, "the error names the value")
			require.Contains(t, err.Error(), "30s, 30m, 2h, 1d, 0.5h or 1h30m, each unit once and largest first", "the error names the accepted forms")
		})
	}
}

// A unit given twice or out of order is a slip, not a sum: "1d1d" was
// more likely meant as 1d than 2d.
func TestParseDurationRejectsRepeatedAndUnorderedUnits(t *testing.T) {
	for in, problem := range map[string]string{
		"1d1d":        "unit d given twice",
		"1h30m1h":     "unit h after m",
		"30m1h":       "unit h after m",
		"1s1m":        "unit m after s",
		"5ms2s":       "unit s after ms",
		"1us1\u00b5s": "unit \u00b5s after us",
		"1h1h":        "unit h given twice",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseDuration(in)
			require.EqualError(t, err, fmt.Sprintf("invalid duration %q: %s; %s", in, problem, durationForms))
		})
	}
}

// Values past MaxDuration, including those that overflow a time.Duration,
// are refused as too long rather than wrapped or called malformed.
func TestParseDurationRejectsTooLong(t *testing.T) {
	for _, in := range []string{"36500d1ns", "36501d", "876001h", "9223372036s", "9223372037s", "999999999d", "106751d24h", "99999999999999999999.5h"} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseDuration(in)
			require.EqualError(t, err, fmt.Sprintf("invalid duration %q: too long: at most 36500d (100 years)", in))
		})
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"30s", "30s"},
		{"30m", "30m"},
		{"2h", "2h"},
		{"1h30m", "1h30m"},
		{"90d", "90d"},
		{"1.5d", "1d12h"},
		{"1d0h10s", "1d10s"},
		{"10m10s", "10m10s"},
		{"1500ms", "1.5s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			require.NoError(t, d.UnmarshalText([]byte(tt.in)))
			require.Equal(t, tt.want, d.String())

			// What String writes, ParseDuration reads back.
			back, err := ParseDuration(d.String())
			require.NoError(t, err)
			require.Equal(t, time.Duration(d), back)
		})
	}
}

func TestDurationStringZero(t *testing.T) {
	// A Duration made in code rather than parsed may be zero or negative.
	require.Equal(t, "0s", Duration(0).String())
	require.Equal(t, "-5m0s", Duration(-5*time.Minute).String())
}

func TestDurationFlagValue(t *testing.T) {
	d := Duration(time.Minute)
	require.Error(t, d.Set("-1m"))
	require.Equal(t, Duration(time.Minute), d, "a rejected value leaves the old one")
	require.NoError(t, d.Set("2h"))
	require.Equal(t, Duration(2*time.Hour), d)
	require.Equal(t, "duration", d.Type())
}
