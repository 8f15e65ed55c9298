package store

import (
	"context"
	"fmt"
	"regexp"
	"strconv"

	"canhazgpu/allocator"
)

// holdJobID is a scheduler's job id as a placeholder records it: digits,
// as Slurm gives an allocation.
var holdJobID = regexp.MustCompile(`^[0-9]{1,20}$`)

// SetHoldJob records the scheduler job standing for an interactive hold
// (its placeholder) in the hold's reservations: every GPU must still be
// held, unexpired, by user under token, else nothing changes and it returns a
// *allocator.LeaseLostError naming the first GPU that is not.
func (s *Store) SetHoldJob(ctx context.Context, user string, token int64, gpus []string, job string) error {
	return s.holdJob(ctx, user, token, gpus, "", job)
}

// ReplaceHoldJob records job in place of was, the hold's placeholder that
// vanished: as SetHoldJob, and every GPU must still name was, so that of
// two checks replacing the same placeholder only one succeeds.
func (s *Store) ReplaceHoldJob(ctx context.Context, user string, token int64, gpus []string, was, job string) error {
	if !holdJobID.MatchString(was) {
		return &allocator.InputError{Field: "job id", Value: was, Accepted: "1-20 digits"}
	}
	return s.holdJob(ctx, user, token, gpus, was, job)
}

func (s *Store) holdJob(ctx context.Context, user string, token int64, gpus []string, was, job string) error {
	if err := allocator.ValidateUser(user); err != nil {
		return err
	}
	if token <= 0 {
		return &allocator.InputError{Field: "token", Value: strconv.FormatInt(token, 10), Accepted: "the token returned by the grant"}
	}
	if len(gpus) == 0 {
		return &allocator.InputError{Field: "gpu list", Value: "", Accepted: "the GPUs of the hold"}
	}
	if err := checkList(gpus); err != nil {
		return err
	}
	if !holdJobID.MatchString(job) {
		return &allocator.InputError{Field: "job id", Value: job, Accepted: "1-20 digits"}
	}
	v, err := s.run.run(ctx, holdJobOp, []string{s.keys.res}, user, token, job, joinList(gpus), was).Result()
	if err != nil {
		return s.wrap("hold_job", err)
	}
	rep := readReply("hold_job", v)
	switch rep.status() {
	case "ok":
		return rep.err
	case "lost":
		if rep.err != nil {
			return rep.err
		}
		return &allocator.LeaseLostError{GPU: rep.str(1)}
	}
	if rep.err != nil {
		return rep.err
	}
	return fmt.Errorf("hold_job: unexpected reply %v", v)
}
