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
	A int64  `json:"a"`
	W int64  `json:"w"`
}

// idleFrom is when the GPU's last idle spell began, when the health
// check kept its clock: it saw the reservation in use (a), warned about
// it (w) or released it for idleness. Zero when no clock was kept: then
// nothing is known to have been idle.
func (w wireRecord) idleFrom() time.Time {
	if w.A == 0 && w.W == 0 && w.X != "reclaimed_idle" {
		return time.Time{}
	}
	return msTime(max(w.A, w.S))
}

func sinceRange(since time.Time) *redis.ZRangeBy {
	return &redis.ZRangeBy{Min: strconv.FormatInt(since.UnixMilli(), 10), Max: "+inf"}
}

// History returns the node's finished reservations that ended at or after
// since, oldest first.
func (s *Store) History(ctx context.Context, since time.Time) ([]allocator.Record, error) {
	raws, err := s.rdb.ZRangeByScore(ctx, s.keys.hist, sinceRange(since)).Result()
	if err != nil {
		return nil, s.wrap("history", err)
	}
	return decodeRecords(s.node, raws)
}

// Histories is History for many nodes in one pipelined round trip.
func (s *Store) Histories(ctx context.Context, nodes []string, since time.Time) (map[string][]allocator.Record, error) {
	for _, n := range nodes {
		if err := ValidateNode(n); err != nil {
			return nil, err
		}
	}
	cmds := make([]*redis.StringSliceCmd, len(nodes))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			cmds[i] = p.ZRangeByScore(ctx, keysFor(n).hist, sinceRange(since))
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("history of all nodes", err)
	}
	out := make(map[string][]allocator.Record, len(nodes))
	for i, n := range nodes {
		recs, err := decodeRecords(n, cmds[i].Val())
		if err != nil {
			return nil, err
		}
		out[n] = recs
	}
	return out, nil
}

func decodeRecords(node string, raws []string) ([]allocator.Record, error) {
	out := make([]allocator.Record, 0, len(raws))
	for _, raw := range raws {
		var w wireRecord
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("history of %s: %w", node, err)
		}
		out = append(out, allocator.Record{GPU: w.G, Kind: allocator.Kind(w.K), User: w.U, JobID: w.J,
			StartedAt: msTime(w.S), EndedAt: msTime(w.E), End: w.X, IdleFrom: w.idleFrom()})
	}
	return out, nil
}
