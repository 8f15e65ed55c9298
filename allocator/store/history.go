package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

type wireRecord struct {
	G string `json:"g"`
	K string `json:"k"`
	U string `json:"u"`
	J string `json:"j"`
	S int64  `json:"s"`
	E int64  `json:"e"`
	X string `json:"x"`
}

// History returns the node's finished reservations that ended at or after
// since, oldest first.
func (s *Store) History(ctx context.Context, since time.Time) ([]allocator.Record, error) {
	raws, err := s.rdb.ZRangeByScore(ctx, s.keys.hist, &redis.ZRangeBy{Min: strconv.FormatInt(since.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, s.wrap("history", err)
	}
	out := make([]allocator.Record, 0, len(raws))
	for _, raw := range raws {
		var w wireRecord
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("history of %s: %w", s.node, err)
		}
		out = append(out, allocator.Record{GPU: w.G, Kind: allocator.Kind(w.K), User: w.U, JobID: w.J,
			StartedAt: msTime(w.S), EndedAt: msTime(w.E), End: w.X})
	}
	return out, nil
}
