package store

import (
	"context"

	"canhazgpu/allocator"
)

// SetFlags replaces the node's health-check findings in one step; an
// empty list clears them. Flag.At is set by the store's clock.
func (s *Store) SetFlags(ctx context.Context, flags []allocator.Flag) error {
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
	return s.wrap("set flags", flagsScript.Run(ctx, s.rdb, []string{s.keys.flags}, args...).Err())
}
