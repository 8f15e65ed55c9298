package allocator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestShortageMessages(t *testing.T) {
	cases := []struct {
		err  ShortageError
		want string
	}{
		{ShortageError{Requested: 3, Available: 1, Unreserved: 2},
			"Not enough GPUs available. Requested: 3, Available: 1 (2 GPUs in use without reservation - run 'canhazgpu status' for details)"},
		{ShortageError{Requested: 2, Available: 0},
			"Not enough GPUs available. Requested: 2, Available: 0"},
		{ShortageError{Requested: 1, Available: 0, Waiting: 2},
			"Not enough GPUs available. Requested: 1, Available: 0 (2 requests waiting in the queue - run 'canhazgpu queue' for details)"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, c.err.Error())
	}
}

func TestParseKind(t *testing.T) {
	for _, k := range Kinds {
		got, err := ParseKind(string(k))
		require.NoError(t, err)
		require.Equal(t, k, got)
	}
	got, err := ParseKind("lsf")
	require.NoError(t, err, "a new scheduler's kind needs no change in this package")
	require.True(t, got.Batch())
	for _, bad := range []string{"", "Slurm", "1pbs", "slurm job", "a-b", "abcdefghijklmnopq"} {
		_, err = ParseKind(bad)
		require.EqualError(t, err, fmt.Sprintf("invalid kind %q: want run, manual, or a scheduler's name such as slurm or pbs (lowercase letters and digits)", bad))
	}
	require.True(t, KindSlurm.Batch())
	require.False(t, KindRun.Batch())
	require.False(t, KindManual.Batch())
}

func TestReservationActive(t *testing.T) {
	now := time.Unix(1000, 0)
	require.True(t, Reservation{}.Active(now), "no expiry: batch jobs")
	require.True(t, Reservation{ExpiresAt: now.Add(time.Second)}.Active(now))
	require.False(t, Reservation{ExpiresAt: now}.Active(now), "expiry is exclusive")
}

func TestValidateNamesTheBadValue(t *testing.T) {
	long := make([]byte, MaxNoteLen+1)
	for i := range long {
		long[i] = 'x'
	}
	r := Request{RequestID: "r", Kind: KindManual, User: "alice", Count: 1, Lease: time.Minute, Note: string(long)}
	err := r.Validate()
	require.ErrorContains(t, err, "invalid note")
	require.ErrorContains(t, err, "at most 200 bytes")

	rel := Release{RequestID: "r", User: "a\nb"}
	require.ErrorContains(t, rel.Validate(), "invalid user")
	rel = Release{RequestID: "r", Token: -1}
	require.ErrorContains(t, rel.Validate(), `invalid token "-1"`)
	rel = Release{RequestID: "r", GPUs: []string{"GPU-1", "GPU-1"}}
	require.ErrorContains(t, rel.Validate(), `invalid gpu id "GPU-1": want each GPU once`)
}

func TestNewRequestIDIsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewRequestID()
		require.Len(t, id, 24)
		require.False(t, seen[id])
		seen[id] = true
	}
}

func TestValidateIDAcceptsOnlyKeySafeIDs(t *testing.T) {
	for _, id := range []string{NewRequestID(), "slurm-prolog-12-0-1700000000", "pbs-12[3].server-ab", "settle-release-slurm-77_3-0-k2x:r"} {
		require.NoError(t, ValidateID("request id", id), id)
	}
	for _, id := range []string{"", "a}b", "a{b", "a*", "a?", `a\b`, "a b", "a,b", "ü", strings.Repeat("x", MaxIDLen+1)} {
		err := ValidateID("request id", id)
		var in *InputError
		require.ErrorAs(t, err, &in, "%q", id)
		require.Contains(t, err.Error(), "want 1-256 letters, digits")
		require.LessOrEqual(t, len(in.Value), 45, "a long id is shortened in the message")
	}
}

func TestRequestBounds(t *testing.T) {
	r := Request{RequestID: "r", Kind: KindManual, User: "alice", Count: MaxGPUsPerNode + 1, Lease: time.Minute}
	require.EqualError(t, r.Validate(), `invalid gpu count "257": want a number of GPUs from 1 to 256`)
	r.Count = 1
	r.Exclude = make([]string, MaxGPUsPerNode+1)
	require.EqualError(t, r.Validate(), `invalid excluded gpu list "257 GPUs": want at most 256 GPUs`)
	r.Exclude = nil
	r.QueueEntry = "q}"
	require.ErrorContains(t, r.Validate(), `invalid queue entry id "q}"`)
	rel := Release{RequestID: "r", Queue: true, JobID: "7"}
	require.ErrorContains(t, rel.Validate(), "invalid queue release")
	rel = Release{RequestID: "r", Queue: true, User: "bob", Kinds: []Kind{KindRun}}
	require.NoError(t, rel.Validate())
}

func TestPolicyDefaultsAndValidation(t *testing.T) {
	p := Policy{RunLease: 2 * time.Minute}.WithDefaults()
	require.Equal(t, Policy{RunLease: 2 * time.Minute, QueueTimeout: 30 * time.Second, MaxDuration: 7 * 24 * time.Hour,
		HistoryMaxAge: 90 * 24 * time.Hour, HistoryMaxRecords: 100000}, p)
	require.NoError(t, p.Validate())
	require.NoError(t, Policy{}.Validate())
	require.EqualError(t, Policy{QueueTimeout: -time.Second}.Validate(), `invalid queue timeout "-1s": want a duration of at least 1ms, or zero for the default`)
	require.EqualError(t, Policy{HistoryMaxRecords: -1}.Validate(), `invalid history max records "-1": want a positive count, or zero for the default`)
}
