package store

import (
	"context"
	"encoding/json"
	"fmt"

	"canhazgpu/allocator"
)

type releaseReply struct {
	Released string         `json:"released"`
	Refused  string         `json:"refused"`
	Dequeued string         `json:"dequeued"`
	Indices  map[string]int `json:"indices"`
}

// Release ends the reservations r selects, records them in the history and
// returns what it released and which named GPUs belong to someone else;
// with r.Queue it also removes the matching queue entries. Nothing to
// release is not an error. When a matching reservation is a batch job's
// and the credential may not write batch reservations, it returns
// allocator.ErrNotPermitted and changes nothing.
func (s *Store) Release(ctx context.Context, r allocator.Release) (allocator.Released, error) {
	if err := r.Validate(); err != nil {
		return allocator.Released{}, err
	}
	kinds := make([]string, len(r.Kinds))
	for i, k := range r.Kinds {
		kinds[i] = string(k)
	}
	k := s.keys
	keys := []string{k.res, k.mru, k.hist, k.q, k.qe, k.reply(r.RequestID, batchOnly(r.Kinds))}
	args := []any{r.User, joinList(kinds), joinList(r.GPUs), r.JobID, r.Token, flag01(r.Queue), replyTTL.Milliseconds()}
	raw, err := s.run.run(ctx, releaseOp, keys, args...).Text()
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
	out := allocator.Released{GPUs: splitList(rep.Released), Refused: refused, Indices: rep.Indices}
	if rep.Dequeued != "" {
		var ws []wireQueueEntry
		if err := json.Unmarshal([]byte(rep.Dequeued), &ws); err != nil {
			return allocator.Released{}, fmt.Errorf("release: bad queue entries %q: %w", rep.Dequeued, err)
		}
		for _, w := range ws {
			out.Dequeued = append(out.Dequeued, w.entry(w.ID))
		}
	}
	return out, nil
}

// batchOnly: a release limited to batch kinds is a scheduler program's,
// whose request ids derive from job ids; its reply is kept with the batch
// replies. Every other request id is random.
func batchOnly(kinds []allocator.Kind) bool {
	for _, k := range kinds {
		if !k.Batch() {
			return false
		}
	}
	return len(kinds) > 0
}
