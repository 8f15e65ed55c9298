package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// TestReportDaily: each reservation's time inside the window is split at
// UTC midnights, and each kind's seconds over the days add up to the
// user's seconds of that kind exactly, however the milliseconds fall.
func TestReportDaily(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	start := now.Add(-3 * 24 * time.Hour)
	at := func(day, hour, minute int) time.Time { return time.Date(2025, 6, day, hour, minute, 0, 0, time.UTC) }
	spans := []span{
		{"alice", allocator.KindRun, at(8, 23, 0), at(9, 1, 30), time.Time{}}, // 1h on the 8th, 1.5h on the 9th
		{"alice", allocator.KindSlurm, at(6, 0, 0), at(8, 0, 0), time.Time{}}, // from the window's start (7th 12:00): 12h
		{"alice", allocator.KindSlurm, at(9, 10, 0), now, time.Time{}},        // in progress: 14h on the 9th, 12h on the 10th
		{"bob", allocator.KindManual, at(8, 10, 0), at(8, 10, 0).Add(1500 * time.Millisecond), time.Time{}},
		{"bob", allocator.KindManual, at(9, 10, 0), at(9, 10, 0).Add(1700 * time.Millisecond), time.Time{}},
	}
	doc := buildReport(start, now, 3, nil, spans).json()
	require.Equal(t, "alice", doc.Users[0].User)
	days := map[string]map[string]int64{}
	for _, d := range doc.Users[0].Daily {
		days[d.Date] = d.Seconds
	}
	require.Equal(t, []string{"2025-06-07", "2025-06-08", "2025-06-09", "2025-06-10"}, dates(doc.Users[0].Daily))
	require.Equal(t, int64(12*3600), days["2025-06-07"]["slurm"])
	require.Equal(t, int64(3600), days["2025-06-08"]["run"])
	require.Equal(t, int64(0), days["2025-06-08"]["slurm"])
	require.Equal(t, int64(5400), days["2025-06-09"]["run"])
	require.Equal(t, int64(14*3600), days["2025-06-09"]["slurm"])
	require.Equal(t, int64(12*3600), days["2025-06-10"]["slurm"])

	for _, u := range doc.Users {
		sum := kindSeconds()
		for _, d := range u.Daily {
			for k, s := range d.Seconds {
				sum[k] += s
			}
		}
		require.Equal(t, u.Seconds, sum, u.User)
	}
	bob := doc.Users[1]
	require.Equal(t, int64(3), bob.Seconds["manual"], "1.5 s and 1.7 s")
	require.Equal(t, int64(1), bob.Daily[0].Seconds["manual"])
	require.Equal(t, int64(2), bob.Daily[1].Seconds["manual"], "the day that completes the third second")
}

func dates(days []jsonDayUsage) []string {
	var out []string
	for _, d := range days {
		out = append(out, d.Date)
	}
	return out
}
