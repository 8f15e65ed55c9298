package store

import (
	"context"
	"fmt"

	"canhazgpu/allocator"
)

// SetFlags replaces the node's health-check findings in one step; an
// empty list clears them. Flag.At is set by the store's clock.
func (s *Store) SetFlags(ctx context.Context, flags []allocator.Flag) error {
	if len(flags) > allocator.MaxGPUsPerNode+1 {
		return &allocator.InputError{Field: "flag list", Value: fmt.Sprintf("%d findings", len(flags)),
			Accepted: fmt.Sprintf("at most one per GPU and one for the node (%d)", allocator.MaxGPUsPerNode+1)}
	}
	args := make([]any, 0, 2*len(flags))
	seen := map[string]bool{}
	for _, f := range flags {
		if f.Message == "" {
			return &allocator.InputError{Field: "flag message", Value: "", Accepted: "a non-empty message"}
		}
		if seen[f.GPU] {
			return &allocator.InputError{Field: "flag gpu", Value: f.GPU, Accepted: "one finding per GPU"}
		}
		seen[f.GPU] = true
		args = append(args, f.GPU, f.Message)
	}
	v, err := s.run.run(ctx, flagsOp, []string{s.keys.flags}, args...).Result()
	_, err = count("set flags", v, s.wrap("set flags", err))
	return err
}
