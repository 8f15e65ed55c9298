package store

import (
	"context"
	"time"

	"canhazgpu/allocator"
)

// Enqueue joins the node's FCFS queue (joining twice keeps the first
// place) and returns the 1-based position. The entry disappears when no
// heartbeat came within timeout, bounded by the node's stored policy.
func (s *Store) Enqueue(ctx context.Context, e allocator.QueueEntry, timeout time.Duration) (int, error) {
	if err := allocator.ValidateID("queue entry id", e.ID); err != nil {
		return 0, err
	}
	req := allocator.Request{RequestID: e.ID, Kind: e.Kind, User: e.User, Count: e.Count, GPUs: e.GPUs, Lease: timeout}
	if err := req.Validate(); err != nil {
		return 0, err
	}
	if e.Kind.Batch() {
		return 0, &allocator.InputError{Field: "kind", Value: string(e.Kind), Accepted: "run or manual: batch jobs never queue"}
	}
	k := s.keys
	pos, err := s.run.run(ctx, enqueueOp, []string{k.q, k.qe, k.meta},
		e.ID, string(e.Kind), e.User, e.Count, joinList(e.GPUs), timeout.Milliseconds()).Int()
	return pos, s.wrap("enqueue", err)
}

// QueueHeartbeat keeps an entry and its partial holds alive and returns its
// position, or allocator.ErrNotQueued when the entry is gone.
func (s *Store) QueueHeartbeat(ctx context.Context, id string) (int, error) {
	if err := allocator.ValidateID("queue entry id", id); err != nil {
		return 0, err
	}
	k := s.keys
	pos, err := s.run.run(ctx, queueBeatOp, []string{k.q, k.qe, k.res}, id).Int()
	if err != nil {
		return 0, s.wrap("queue heartbeat", err)
	}
	if pos == 0 {
		return 0, allocator.ErrNotQueued
	}
	return pos, nil
}

// LeaveQueue removes an entry and frees the GPUs it held so far. Leaving
// twice is fine.
func (s *Store) LeaveQueue(ctx context.Context, id string) error {
	if err := allocator.ValidateID("queue entry id", id); err != nil {
		return err
	}
	k := s.keys
	return s.wrap("leave queue", s.run.run(ctx, leaveOp, []string{k.q, k.qe, k.res}, id).Err())
}
