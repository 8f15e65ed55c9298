package store

import (
	"context"
	"encoding/json"
	"fmt"

	"canhazgpu/allocator"
)

type allocateReply struct {
	OK         int    `json:"ok"`
	Err        string `json:"err"`
	GPUs       string `json:"gpus"`
	Token      int64  `json:"token"`
	Expires    int64  `json:"expires"`
	Taken      string `json:"taken"`
	Requested  int    `json:"requested"`
	Available  int    `json:"available"`
	Unreserved int    `json:"unreserved"`
	Waiting    int    `json:"waiting"`
	Conflicts  string `json:"conflicts"`
	Allocated  string `json:"allocated"`
	Position   int    `json:"position"`
	Value      string `json:"value"`
}

type wireConflict struct {
	GPU        string           `json:"gpu"`
	Holder     *wireReservation `json:"holder"`
	Unreserved bool             `json:"unreserved"`
}

// Allocate grants GPUs, all or nothing, in one atomic step: expired and
// stale reservations are reclaimed, GPUs in unreserved use are skipped, and
// the chosen GPUs are reserved together. The lease is bounded by the
// node's stored policy (Grant.ExpiresAt says what was granted). It returns a *allocator.ShortageError
// when the request cannot be met now, a *allocator.PendingError when the
// caller heads the queue and holds part of its request, and
// allocator.ErrNotRegistered when the node has no GPUs in the store, an
// *allocator.InputError wrapping allocator.ErrUnknownGPU for a GPU the
// registration lacks, and
// allocator.ErrNotPermitted, writing nothing, for a batch kind through a
// credential that may not write batch reservations.
func (s *Store) Allocate(ctx context.Context, r allocator.Request) (allocator.Grant, error) {
	if err := r.Validate(); err != nil {
		return allocator.Grant{}, err
	}
	k := s.keys
	keys := []string{k.res, k.mru, k.hist, k.meta, k.q, k.qe, k.reply(r.RequestID, r.Kind.Batch())}
	args := []any{string(r.Kind), r.User, r.UID, r.JobID, r.Count, joinList(r.GPUs), joinList(r.Prefer),
		joinList(r.Exclude), r.Lease.Milliseconds(), r.Note, r.Restart, r.BootID, r.QueueEntry,
		replyTTL.Milliseconds(), flag01(r.Retake), flag01(r.Kind.Batch())}
	raw, err := s.run.run(ctx, allocateOp, keys, args...).Text()
	if err != nil {
		return allocator.Grant{}, s.wrap("allocate", err)
	}
	var rep allocateReply
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		return allocator.Grant{}, fmt.Errorf("allocate: bad reply %q: %w", raw, err)
	}
	switch rep.Err {
	case "":
		taken, err := decodeReservations(rep.Taken)
		if err != nil {
			return allocator.Grant{}, err
		}
		return allocator.Grant{GPUs: splitList(rep.GPUs), Token: rep.Token, ExpiresAt: msTime(rep.Expires), TakenOver: taken}, nil
	case "shortage":
		e := &allocator.ShortageError{Requested: rep.Requested, Available: rep.Available,
			Unreserved: rep.Unreserved, Waiting: rep.Waiting}
		if rep.Conflicts != "" {
			var wc []wireConflict
			if err := json.Unmarshal([]byte(rep.Conflicts), &wc); err != nil {
				return allocator.Grant{}, fmt.Errorf("allocate: bad conflicts %q: %w", rep.Conflicts, err)
			}
			for _, c := range wc {
				ac := allocator.Conflict{GPU: c.GPU, Unreserved: c.Unreserved}
				if c.Holder != nil {
					h := c.Holder.reservation(c.GPU)
					ac.Holder = &h
				}
				e.Conflicts = append(e.Conflicts, ac)
			}
		}
		return allocator.Grant{}, e
	case "pending":
		return allocator.Grant{}, &allocator.PendingError{Allocated: splitList(rep.Allocated), Position: rep.Position}
	case "not_registered":
		return allocator.Grant{}, fmt.Errorf("node %s: %w", s.node, allocator.ErrNotRegistered)
	case "unknown_gpu":
		return allocator.Grant{}, &allocator.InputError{Field: "gpu id", Value: rep.Value, Accepted: "a GPU registered for node " + s.node,
			Err: allocator.ErrUnknownGPU}
	case "not_queued":
		return allocator.Grant{}, allocator.ErrNotQueued
	case "bad_kind":
		return allocator.Grant{}, &allocator.InputError{Field: "kind", Value: rep.Value,
			Accepted: "a batch request of a scheduler's kind, or an interactive one of run or manual"}
	}
	return allocator.Grant{}, fmt.Errorf("allocate: unexpected reply %q", raw)
}

// flag01 is how a boolean travels to the operations.
func flag01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
