package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"canhazgpu/allocator"
)

type renewReply struct {
	OK      int              `json:"ok"`
	Expires int64            `json:"expires"`
	GPU     string           `json:"gpu"`
	Holder  *wireReservation `json:"holder"`
}

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
	raw, err := s.run.run(ctx, renewOp, []string{s.keys.res}, user, token, lease.Milliseconds(), joinList(gpus)).Text()
	if err != nil {
		return time.Time{}, s.wrap("renew", err)
	}
	var rep renewReply
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		return time.Time{}, fmt.Errorf("renew: bad reply %q: %w", raw, err)
	}
	if rep.OK == 1 {
		return msTime(rep.Expires), nil
	}
	lost := &allocator.LeaseLostError{GPU: rep.GPU}
	if rep.Holder != nil {
		h := rep.Holder.reservation(rep.GPU)
		lost.Holder = &h
	}
	return time.Time{}, lost
}

// checkList validates a UUID list through the request rules.
func checkList(gpus []string) error {
	r := allocator.Release{RequestID: "check", GPUs: gpus}
	return r.Validate()
}
