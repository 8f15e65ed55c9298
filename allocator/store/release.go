package store

import (
	"context"
	"encoding/json"
	"fmt"

	"canhazgpu/allocator"
)

type releaseReply struct {
	Released string `json:"released"`
	Refused  string `json:"refused"`
}

// Release ends the reservations r selects, records them in the history and
// returns what it released and which named GPUs belong to someone else.
// Nothing to release is not an error.
func (s *Store) Release(ctx context.Context, r allocator.Release) (allocator.Released, error) {
	if err := r.Validate(); err != nil {
		return allocator.Released{}, err
	}
	kinds := make([]string, len(r.Kinds))
	for i, k := range r.Kinds {
		kinds[i] = string(k)
	}
	maxAge, maxN := s.histArgs()
	k := s.keys
	keys := []string{k.res, k.mru, k.hist, k.req(r.RequestID)}
	args := []any{r.User, joinList(kinds), joinList(r.GPUs), r.JobID, r.Token, maxAge, maxN, replyTTL.Milliseconds()}
	raw, err := releaseScript.Run(ctx, s.rdb, keys, args...).Text()
	if err != nil {
		return allocator.Released{}, s.wrap("release", err)
	}
	var rep releaseReply
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		return allocator.Released{}, fmt.Errorf("release: bad reply %q: %w", raw, err)
	}
	refused, err := decodeReservations(rep.Refused)
	if err != nil {
		return allocator.Released{}, err
	}
	return allocator.Released{GPUs: splitList(rep.Released), Refused: refused}, nil
}
