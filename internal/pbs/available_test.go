package pbs

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// TestAvailableCountsWhatPBSMayPlace: the count the hook gives PBS as
// resources_available.ngpus leaves out interactive holds, unreserved use
// and GPUs the scan lost, and keeps the GPUs of PBS jobs (PBS subtracts
// those itself).
func TestAvailableCountsWhatPBSMayPlace(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 5})
	count := func() string {
		t.Helper()
		r := n.prolog("--available")
		require.Equal(t, ExitOK, r.code, r.stderr)
		require.Empty(t, r.stderr)
		return r.stdout
	}
	require.Equal(t, "5\n", count(), "registers the node on first use")

	r := n.prolog("--job", "1.srv", "--user", "bob", "--uid", "1001", "--ngpus", "2")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "5\n", count(), "a PBS job's GPUs stay in the count")

	_, err := n.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: "alice", UID: 1000, GPUs: []string{uuid(2)}, Lease: time.Hour})
	require.NoError(t, err)
	require.Equal(t, "4\n", count(), "an interactive hold leaves the count")

	n.setUsed(5, map[int]int{3: 4096})
	require.Equal(t, "3\n", count(), "so does a GPU in use without a reservation")

	n.setUsed(4, map[int]int{3: 4096})
	require.Equal(t, "2\n", count(), "and a GPU the scan no longer sees")

	r = n.epilog("--job", "1.srv")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "2\n", count(), "the released GPUs were counted already")
}

func TestAvailableStoreDown(t *testing.T) {
	n := newTestNode(t, nodeOpts{gpus: 2, redisURL: deadURL(t)})
	r := n.prolog("--available")
	require.Equal(t, ExitStoreDown, r.code)
	require.Empty(t, r.stdout)
	require.Regexp(t, `^canhazgpu: error: cannot count the GPUs PBS may use on this host: .+\n$`, r.stderr)
}
