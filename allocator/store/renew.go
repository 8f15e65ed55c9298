package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"canhazgpu/allocator"
)

// Renew extends a run lease: every GPU must still be held by user under
// token. It returns the new expiry (the lease is bounded by the node's
// stored policy), or a *allocator.LeaseLostError naming
// the first GPU that is no longer the caller's (then nothing is renewed).
func (s *Store) Renew(ctx context.Context, user string, token int64, gpus []string, lease time.Duration) (time.Time, error) {
	if err := allocator.ValidateUser(user); err != nil {
		return time.Time{}, err
	}
	if token <= 0 {
		return time.Time{}, &allocator.InputError{Field: "token", Value: strconv.FormatInt(token, 10), Accepted: "the token returned by the grant"}
	}
	if len(gpus) == 0 {
		return time.Time{}, &allocator.InputError{Field: "gpu list", Value: "", Accepted: "the GPUs of the lease"}
	}
	if err := checkList(gpus); err != nil {
		return time.Time{}, err
	}
	if lease <= 0 {
		return time.Time{}, &allocator.InputError{Field: "lease", Value: lease.String(), Accepted: "a positive duration"}
	}
	v, err := s.run.run(ctx, renewOp, []string{s.keys.res}, user, token, lease.Milliseconds(), joinList(gpus)).Result()
	if err != nil {
		return time.Time{}, s.wrap("renew", err)
	}
	rep := readReply("renew", v)
	switch rep.status() {
	case "ok":
		expires := rep.int(1)
		return msTime(expires), rep.err
	case "lost":
		lost := &allocator.LeaseLostError{GPU: rep.str(1)}
		if raw := rep.str(2); raw != "" {
			h, ok := decodeReservation(lost.GPU, raw)
			if !ok {
				return time.Time{}, fmt.Errorf("renew: bad holder %q", raw)
			}
			lost.Holder = &h
		}
		if rep.err != nil {
			return time.Time{}, rep.err
		}
		return time.Time{}, lost
	}
	if rep.err != nil {
		return time.Time{}, rep.err
	}
	return time.Time{}, fmt.Errorf("renew: unexpected reply %v", v)
}

// checkList validates a UUID list through the request rules.
func checkList(gpus []string) error {
	r := allocator.Release{RequestID: "check", GPUs: gpus}
	return r.Validate()
}
