package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"canhazgpu/allocator"
)

// IdleUpdate is what one health-check run decided about the node's idle
// interactive reservations, one entry per GPU reservation (see
// idle.lua). Each names its reservation by GPU and token, so one that
// ended and was granted again meanwhile is left alone. The clocks of
// those in use were restarted by the run's snapshot (SnapshotMarkingUse).
type IdleUpdate struct {
	// Warned are reservations whose owner was told about the idle spell
	// that began at their IdleSince.
	Warned []allocator.Reservation
	// Release are manual reservations idle past the site's limit: each
	// ends unless its IdleSince has moved since (a keep-alive or a use in
	// between), recorded in the history as "reclaimed_idle".
	Release []allocator.Reservation
}

// Empty: nothing to write, so no round trip.
func (u IdleUpdate) Empty() bool { return len(u.Warned)+len(u.Release) == 0 }

// ApplyIdle writes u in one operation and returns the GPUs it released.
func (s *Store) ApplyIdle(ctx context.Context, u IdleUpdate) ([]string, error) {
	type wire struct {
		Warned  [][]any `json:"warned"`
		Release [][]any `json:"release"`
	}
	w := wire{Warned: [][]any{}, Release: [][]any{}}
	for _, r := range u.Warned {
		w.Warned = append(w.Warned, []any{r.GPU, r.Token, r.IdleSince().UnixMilli()})
	}
	for _, r := range u.Release {
		if r.Kind != allocator.KindManual {
			return nil, &allocator.InputError{Field: "idle release", Value: string(r.Kind) + " reservation of " + r.GPU,
				Accepted: "manual reservations only"}
		}
		w.Release = append(w.Release, []any{r.GPU, r.Token, r.IdleSince().UnixMilli()})
	}
	arg, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	v, err := s.run.run(ctx, idleOp, []string{s.keys.res, s.keys.mru, s.keys.hist}, string(arg)).Result()
	if err != nil {
		return nil, s.wrap("idle reservations", err)
	}
	rep := readReply("idle reservations", v)
	if st := rep.status(); st != "ok" && rep.err == nil {
		return nil, fmt.Errorf("idle reservations: unexpected reply %v", v)
	}
	released := splitList(rep.str(1))
	return released, rep.err
}

// SnapshotMarkingUse is Snapshot for the health check, which first restarts
// the idle clock of every interactive grant with a GPU not named in idle
// (the scan saw it in use, or did not see it), in the same round trip:
// of each of its reservations whose clock is every old or older, or
// whose owner was warned about its current spell. It writes, so it needs
// the admin role.
func (s *Store) SnapshotMarkingUse(ctx context.Context, idle []string, every time.Duration) (*allocator.Snapshot, error) {
	if len(idle) > 0 {
		if err := checkList(idle); err != nil {
			return nil, err
		}
	}
	v, err := s.run.run(ctx, markUseOp, s.keys.snapshotKeys(), joinList(idle), every.Milliseconds()).Slice()
	if err != nil {
		return nil, s.wrap("snapshot", err)
	}
	return decodeSnapshot(s.node, v, 1)
}

// KeepAlive restarts the idle clock of user's manual reservations on
// this node: those on the named GPUs, or all of them when gpus is empty.
// It returns the GPUs kept alive, or, when a named GPU is not one of the
// user's manual reservations, those GPUs and nothing kept alive.
func (s *Store) KeepAlive(ctx context.Context, user string, gpus []string) (kept, refused []string, err error) {
	if err := allocator.ValidateUser(user); err != nil {
		return nil, nil, err
	}
	if len(gpus) > 0 {
		if err := checkList(gpus); err != nil {
			return nil, nil, err
		}
	}
	v, err := s.run.run(ctx, keepAliveOp, []string{s.keys.res}, user, joinList(gpus)).Result()
	if err != nil {
		return nil, nil, s.wrap("keep alive", err)
	}
	rep := readReply("keep alive", v)
	if st := rep.status(); st != "ok" && rep.err == nil {
		return nil, nil, fmt.Errorf("keep alive: unexpected reply %v", v)
	}
	kept, refused = splitList(rep.str(1)), splitList(rep.str(2))
	return kept, refused, rep.err
}
