package integration

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// TestSlurmPlaceholderCancelledByItsOwner: the owner of a hold on GPU 1
// cancels its placeholder job with scancel. Slurm then places a job on
// GPU 1 at once, before any health check: its Prolog finds the hold, asks
// Slurm about the placeholder, releases the hold and reserves GPU 1 for
// the job, which runs; the node is not drained (on_conflict = "fail").
func TestSlurmPlaceholderCancelledByItsOwner(t *testing.T) {
	h := newHoldsSite(t)
	hold := h.hold(1)
	h.cancelPlaceholder(h.user, hold)

	job := h.submit("--gres=gpu:dev1:1", "--wrap", h.jobScript())
	h.seen(job, "BATCH")
	ev := h.waitEvent("prolog", job)
	require.Equal(t, "0", ev.RC, ev.Out)
	require.Contains(t, ev.Out, "released "+h.user+"'s manual hold of "+slurmUUID(1)+": its placeholder job "+hold+" no longer runs")
	snap, err := h.st.Snapshot(context.Background())
	require.NoError(t, err)
	r, held := snap.Reservations[slurmUUID(1)]
	require.True(t, held)
	require.Equal(t, allocator.KindSlurm, r.Kind)
	require.Equal(t, job, r.JobID)

	h.letGo(job, 0)
	h.finish(job, "COMPLETED")
	h.requireClean()
	snap, err = h.st.Snapshot(context.Background())
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "the hold ended with its placeholder")
}
