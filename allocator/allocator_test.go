package allocator

import (
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
	_, err := ParseKind("interactive")
	require.EqualError(t, err, `invalid kind "interactive": want run, manual, slurm or pbs`)
	require.True(t, KindSlurm.Batch())
	require.False(t, KindRun.Batch())
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
