package store

import (
	"context"
	"errors"
	"fmt"

	"canhazgpu/allocator"
)

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
// credential that may not write batch reservations. A grant the primary
// made that too few replicas confirmed is returned with a
// *NotReplicatedError.
func (s *Store) Allocate(ctx context.Context, r allocator.Request) (allocator.Grant, error) {
	if err := r.Validate(); err != nil {
		return allocator.Grant{}, err
	}
	k := s.keys
	keys := []string{k.res, k.mru, k.hist, k.meta, k.q, k.qe, k.qx, k.reply(r.RequestID, r.Kind.Batch())}
	args := []any{string(r.Kind), r.User, r.UID, r.JobID, r.Count, joinList(r.GPUs), joinList(r.Prefer),
		joinList(r.Exclude), r.Lease.Milliseconds(), r.Note, r.Restart, r.BootID, r.QueueEntry,
		replyTTL.Milliseconds(), flag01(r.Retake), flag01(r.Kind.Batch()), r.RequestID}
	v, err := s.run.run(ctx, allocateOp, keys, args...).Result()
	var unconfirmed *NotReplicatedError
	switch {
	case errors.As(err, &unconfirmed) && v != nil:
		// The primary decided; a grant comes back with the error, so the
		// caller can confirm it or give it back.
		g, _ := s.allocateReply(v)
		return g, s.wrap("allocate", err)
	case err != nil:
		return allocator.Grant{}, s.wrap("allocate", err)
	}
	return s.allocateReply(v)
}

// allocateReply decodes allocate's reply.
func (s *Store) allocateReply(v any) (allocator.Grant, error) {
	rep := readReply("allocate", v)
	var g allocator.Grant
	var fail error
	switch rep.status() {
	case "ok":
		g = allocator.Grant{GPUs: splitList(rep.str(1)), Token: rep.int(2), ExpiresAt: msTime(rep.int(3)),
			TakenOver: rep.reservations(4)}
	case "shortage":
		e := &allocator.ShortageError{Requested: int(rep.int(1)), Available: int(rep.int(2)),
			Unreserved: int(rep.int(3)), Waiting: int(rep.int(4))}
		for _, c := range rep.pairs(5) {
			ac := allocator.Conflict{GPU: c[0], Unreserved: c[1] == ""}
			if c[1] != "" {
				h, ok := decodeReservation(c[0], c[1])
				if !ok {
					return allocator.Grant{}, fmt.Errorf("allocate: bad conflict %q", c[1])
				}
				ac.Holder = &h
			}
			e.Conflicts = append(e.Conflicts, ac)
		}
		fail = e
	case "pending":
		fail = &allocator.PendingError{Allocated: splitList(rep.str(1)), Position: int(rep.int(2))}
	case "not_registered":
		fail = fmt.Errorf("node %s: %w", s.node, allocator.ErrNotRegistered)
	case "unknown_gpu":
		fail = &allocator.InputError{Field: "gpu id", Value: rep.str(1), Accepted: "a GPU registered for node " + s.node,
			Err: allocator.ErrUnknownGPU}
	case "not_queued":
		fail = allocator.ErrNotQueued
	case "bad_kind":
		fail = &allocator.InputError{Field: "kind", Value: rep.str(1),
			Accepted: "a batch request of a scheduler's kind, or an interactive one of run or manual"}
	default:
		fail = fmt.Errorf("allocate: unexpected reply %v", v)
	}
	if rep.err != nil {
		return allocator.Grant{}, rep.err
	}
	return g, fail
}

// flag01 is how a boolean travels to the operations.
func flag01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
