package slurm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/localnode"
)

// placeholder decides whether a job whose comment names an interactive
// hold (SLURM_JOB_COMMENT, token) is that hold's placeholder: every GPU
// Slurm gave it is held in the store, interactively, by the job's uid
// under that token. Then the Prolog reserves nothing, writes no job file
// and exports nothing: the GPUs are already the user's. Anything else
// (a doubtful answer included, or a node with interactive_holds off) is an
// ordinary batch job: ok is false.
func (h *Hook) placeholder(ctx context.Context, job Job, token int64) (line string, ok bool) {
	if h.Config.Slurm.Holds.Mode != "placeholder" || job.UID < 0 || len(job.GPUs) == 0 {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, h.Config.Slurm.Deadline)
	defer cancel()
	st, snap, found, err := h.jobGPUsInStore(ctx, job)
	if err != nil {
		return "", false
	}
	defer st.Close()
	var user string
	var names []string
	for _, d := range found {
		r, held := snap.Reservations[d.UUID]
		if !held || r.Kind.Batch() || r.Queued || r.UID != job.UID || r.Token != token || !r.Active(snap.Now) {
			return "", false
		}
		user = r.User
		names = append(names, fmt.Sprintf("GPU %d (%s)", d.Index, d.UUID))
	}
	return fmt.Sprintf("job %s: placeholder of the interactive hold of %s on %s: nothing reserved",
		job.ID, user, strings.Join(names, ", ")), true
}

// newHold makes the interactive hold a placeholder asks for on a node
// where Slurm chooses its GPUs: a manual reservation of exactly the GPUs
// Slurm gave the job, for the job's user and uid, naming the job, as long
// as the comment says (bounded by reserve.max_duration in the store). It
// is what `canhazgpu reserve` would hold, so a comment a user wrote gains
// them nothing they could not take; GPUs not all free make the job an
// ordinary batch job (ok false), which meets on_conflict.
//
// Why any job with such a comment may pass, not only one a `reserve` is
// waiting for: what it gets is bounded as `reserve` is. The owner is
// Slurm's SLURM_JOB_USER and SLURM_JOB_UID, not the comment; the GPUs are
// the ones Slurm gave the job, so the user's own job could use them
// anyway; they must be free in the store; the length is the store's
// max_duration at most; the hold is the same manual reservation of the
// same Allocate, so every store policy applies. What differs from a real
// placeholder is that a batch script may end before its hold: the hold
// then outlives the job, Slurm sees a free GPU the store holds, and a
// later job there meets on_conflict. A user reaches the very same state
// by scancelling the placeholder of their own `reserve`, and the health
// check settles both alike (lost_placeholder: the job is no running
// canhazgpu-hold job of this node). Requiring a pending request would add
// a store round trip to every such Prolog and guard nothing that this
// does not.
func (h *Hook) newHold(ctx context.Context, job Job, limit time.Duration) (line string, ok bool) {
	if h.Config.Slurm.Holds.Mode != "placeholder" || job.UID < 0 || len(job.GPUs) == 0 || job.User == "" {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, h.Config.Slurm.Deadline)
	defer cancel()
	st, _, found, err := h.jobGPUsInStore(ctx, job)
	if err != nil {
		return "", false
	}
	defer st.Close()
	uuids := make([]string, len(found))
	names := make([]string, len(found))
	for i, d := range found {
		uuids[i] = d.UUID
		names[i] = fmt.Sprintf("GPU %d (%s)", d.Index, d.UUID)
	}
	// One request id per job attempt: a retried Prolog is answered from
	// the reservations it made.
	_, err = st.Allocate(ctx, allocator.Request{RequestID: "slurm-hold-" + job.ID + "-" + fmt.Sprint(job.Restart),
		Kind: allocator.KindManual, User: job.User, UID: job.UID, JobID: job.ID, GPUs: uuids, Lease: limit})
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("job %s: placeholder: held %s for %s, as Slurm chose: nothing reserved for the job",
		job.ID, strings.Join(names, ", "), job.User), true
}

// jobGPUsInStore opens the store, reads the node's snapshot and finds the
// GPUs Slurm gave the job among the registered ones: the registration
// names them by minor, so no scan is needed. On success the caller closes
// the store.
func (h *Hook) jobGPUsInStore(ctx context.Context, job Job) (*store.Store, *allocator.Snapshot, []gpu.Device, error) {
	open := h.OpenStore
	if open == nil {
		open = localnode.OpenStore
	}
	st, err := open(ctx, h.Config)
	if err != nil {
		return nil, nil, nil, err
	}
	snap, err := st.Snapshot(ctx)
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	devs := make([]gpu.Device, len(snap.GPUs))
	for i, g := range snap.GPUs {
		devs[i] = gpu.Device{UUID: g.UUID, Index: g.Index, Minor: g.Minor}
	}
	found, err := Resolve(gpu.VendorOf(h.Config.GPU.Provider), h.Config.Slurm.GresDevices, job.GPUs, devs)
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	return st, snap, found, nil
}
