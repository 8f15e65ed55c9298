package store

import (
	"context"
	"fmt"

	"canhazgpu/allocator"
)

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
	keys := []string{k.res, k.mru, k.hist, k.q, k.qe, k.qx, k.reply(r.RequestID, batchOnly(r.Kinds))}
	args := []any{r.User, joinList(kinds), joinList(r.GPUs), r.JobID, r.Token, flag01(r.Queue), replyTTL.Milliseconds()}
	v, err := s.run.run(ctx, releaseOp, keys, args...).Result()
	if err != nil {
		return allocator.Released{}, s.wrap("release", err)
	}
	rep := readReply("release", v)
	if st := rep.status(); st != "ok" && rep.err == nil {
		return allocator.Released{}, fmt.Errorf("release: unexpected reply %v", v)
	}
	out := allocator.Released{GPUs: splitList(rep.str(1)), Refused: rep.reservations(2)}
	for _, p := range rep.pairs(3) {
		e, ok := decodeQueueEntry(p[0], p[1])
		if !ok {
			return allocator.Released{}, fmt.Errorf("release: bad queue entry %s %q", p[0], p[1])
		}
		out.Dequeued = append(out.Dequeued, e)
	}
	indices := rep.list(4)
	for i := 0; i+1 < len(indices); i += 2 {
		uuid, ok1 := indices[i].(string)
		index, ok2 := indices[i+1].(int64)
		if !ok1 || !ok2 {
			return allocator.Released{}, fmt.Errorf("release: bad GPU indices %v", indices)
		}
		if out.Indices == nil {
			out.Indices = map[string]int{}
		}
		out.Indices[uuid] = int(index)
	}
	out.Holds = rep.reservations(5)
	return out, rep.err
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
