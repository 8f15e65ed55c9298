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
	v, err := s.run.run(ctx, enqueueOp, []string{k.q, k.qe, k.qx, k.meta},
		e.ID, string(e.Kind), e.User, e.Count, joinList(e.GPUs), timeout.Milliseconds()).Result()
	return count("enqueue", v, s.wrap("enqueue", err))
}

// QueueHeartbeat keeps an entry and its partial holds alive and returns its
// position, or allocator.ErrNotQueued when the entry is gone.
func (s *Store) QueueHeartbeat(ctx context.Context, id string) (int, error) {
	if err := allocator.ValidateID("queue entry id", id); err != nil {
		return 0, err
	}
	k := s.keys
	v, err := s.run.run(ctx, queueBeatOp, []string{k.q, k.qe, k.qx, k.res}, id).Result()
	if err != nil {
		return 0, s.wrap("queue heartbeat", err)
	}
	if rep := readReply("queue heartbeat", v); rep.status() == "not_queued" {
		return 0, allocator.ErrNotQueued
	}
	return count("queue heartbeat", v, nil)
}

// LeaveQueue removes an entry and frees the GPUs it held so far. Leaving
// twice is fine.
func (s *Store) LeaveQueue(ctx context.Context, id string) error {
	if err := allocator.ValidateID("queue entry id", id); err != nil {
		return err
	}
	k := s.keys
	v, err := s.run.run(ctx, leaveOp, []string{k.q, k.qe, k.qx, k.res}, id).Result()
	_, err = count("leave queue", v, s.wrap("leave queue", err))
	return err
}
