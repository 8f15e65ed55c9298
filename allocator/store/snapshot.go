package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

func (k nodeKeys) snapshotKeys() []string {
	return []string{k.gpus, k.res, k.bres, k.mru, k.q, k.qe, k.flags, k.policy}
}

// Snapshot reads the node's state in one round trip.
func (s *Store) Snapshot(ctx context.Context) (*allocator.Snapshot, error) {
	v, err := s.run.run(ctx, snapshotOp, s.keys.snapshotKeys()).Slice()
	if err != nil {
		return nil, s.wrap("snapshot", err)
	}
	return decodeSnapshot(s.node, v, 1)
}

// Snapshots reads every registered node in one round trip however many
// there are: one pipeline of the node registry and the snapshots of the
// nodes it held at the last call. A node that has joined since costs a
// second round trip, for the new nodes only, once; a node that has left
// is dropped from the answer.
func (s *Store) Snapshots(ctx context.Context) ([]*allocator.Snapshot, error) {
	var known []string
	if k := s.registry.Load(); k != nil {
		known = *k
	}
	var members *redis.StringSliceCmd
	snaps, err := s.snapshotsOf(ctx, known, func(p redis.Pipeliner) { members = p.SMembers(ctx, registryKey) })
	if err != nil {
		return nil, err
	}
	nodes, err := members.Result()
	if err != nil {
		return nil, s.wrap("list nodes", err)
	}
	sort.Strings(nodes)
	byNode := make(map[string]*allocator.Snapshot, len(snaps))
	for _, snap := range snaps {
		byNode[snap.Node] = snap
	}
	var joined []string
	for _, n := range nodes {
		if byNode[n] == nil {
			joined = append(joined, n)
		}
	}
	if len(joined) > 0 {
		more, err := s.snapshotsOf(ctx, joined, nil)
		if err != nil {
			return nil, err
		}
		for _, snap := range more {
			byNode[snap.Node] = snap
		}
	}
	s.registry.Store(&nodes)
	out := make([]*allocator.Snapshot, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, byNode[n])
	}
	return out, nil
}

// snapshotsOf reads the given nodes in one pipeline, after the commands
// first queues.
func (s *Store) snapshotsOf(ctx context.Context, nodes []string, first func(redis.Pipeliner)) ([]*allocator.Snapshot, error) {
	keys := make([][]string, len(nodes))
	for i, n := range nodes {
		keys[i] = keysFor(n).snapshotKeys()
	}
	cmds, err := s.run.runAll(ctx, snapshotOp, keys, first)
	if err != nil {
		return nil, s.wrap("snapshot all nodes", err)
	}
	out := make([]*allocator.Snapshot, 0, len(nodes))
	for i, c := range cmds {
		v, err := c.Slice()
		if err != nil {
			return nil, s.wrap("snapshot "+nodes[i], err)
		}
		snap, err := decodeSnapshot(nodes[i], v, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, snap)
	}
	return out, nil
}

// flatHash turns an HGETALL reply inside an operation's reply into a map.
func flatHash(v any) (map[string]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("snapshot: want a list, got %T", v)
	}
	m := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		f, ok1 := list[i].(string)
		val, ok2 := list[i+1].(string)
		if !ok1 || !ok2 {
			return nil, errors.New("snapshot: hash entries must be strings")
		}
		m[f] = val
	}
	return m, nil
}

// wireQueueEntry is a queue entry as the operations encode it.
type wireQueueEntry struct {
	K  string `json:"k"`
	U  string `json:"u"`
	C  int    `json:"c"`
	G  string `json:"g"`
	A  string `json:"a"`
	T  int64  `json:"t"`
	H  int64  `json:"h"`
	To int64  `json:"to"`
}

// decodeQueueEntry reads a stored queue entry (see Encodings in lib.lua).
func decodeQueueEntry(id, raw string) (allocator.QueueEntry, bool) {
	var w wireQueueEntry
	if json.Unmarshal([]byte(raw), &w) != nil {
		return allocator.QueueEntry{}, false
	}
	return w.entry(id), true
}

func (w wireQueueEntry) entry(id string) allocator.QueueEntry {
	return allocator.QueueEntry{ID: id, Kind: allocator.Kind(w.K), User: w.U, Count: w.C, GPUs: splitList(w.G),
		Allocated: splitList(w.A), EnqueuedAt: msTime(w.T), HeartbeatAt: msTime(w.H)}
}

type wireFlag struct {
	M string `json:"m"`
	T int64  `json:"t"`
}

// decodeSnapshot reads node_snapshot's parts (lib.lua), which start at
// v[from]: after the status of snapshot.lua's reply, or after the status
// and the outcome of forget.lua's.
func decodeSnapshot(node string, v []any, from int) (*allocator.Snapshot, error) {
	// status, then now, gpus, res, bres, rel, queue order, qe, flags, policy.
	if len(v) != from+9 || v[0] != "ok" {
		return nil, fmt.Errorf("snapshot of %s: want a status and 9 parts, got %v", node, v)
	}
	v = v[from:]
	nowMS, ok := v[0].(int64)
	if !ok {
		return nil, fmt.Errorf("snapshot of %s: bad time %v", node, v[0])
	}
	var hashes [7]map[string]string
	for i, part := range []int{1, 2, 3, 4, 6, 7, 8} {
		h, err := flatHash(v[part])
		if err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", node, err)
		}
		hashes[i] = h
	}
	gpus, res, bres, rel, qe, flags, policy := hashes[0], hashes[1], hashes[2], hashes[3], hashes[4], hashes[5], hashes[6]
	snap := &allocator.Snapshot{Node: node, Now: msTime(nowMS), Policy: decodePolicy(policy),
		Reservations: map[string]allocator.Reservation{}, LastReleased: map[string]time.Time{}}
	for uuid, raw := range gpus {
		g := allocator.GPU{UUID: uuid}
		// "index minor name", as register.lua writes it.
		if n, err := fmt.Sscan(raw, &g.Index, &g.Minor); n != 2 {
			return nil, fmt.Errorf("snapshot of %s: gpu %s %q: %w", node, uuid, raw, err)
		}
		if _, _, rest, ok := cut2(raw); ok {
			g.Name = rest
		}
		snap.GPUs = append(snap.GPUs, g)
	}
	slices.SortFunc(snap.GPUs, func(a, b allocator.GPU) int { return a.Index - b.Index })
	for uuid, raw := range rel {
		var ms int64
		if _, err := fmt.Sscan(raw, &ms); err != nil {
			return nil, fmt.Errorf("snapshot of %s: release time of %s: %w", node, uuid, err)
		}
		snap.LastReleased[uuid] = msTime(ms)
	}
	for uuid, r := range mergeReservations(bres, res) {
		// Expired but not yet reclaimed: free since its expiry, exactly as
		// the next allocation will see it.
		if !r.Active(snap.Now) {
			if r.ExpiresAt.After(snap.LastReleased[uuid]) && !r.Queued {
				snap.LastReleased[uuid] = r.ExpiresAt
			}
			continue
		}
		snap.Reservations[uuid] = r
	}
	order, ok := v[5].([]any)
	if !ok {
		return nil, fmt.Errorf("snapshot of %s: bad queue", node)
	}
	for _, o := range order {
		id, _ := o.(string)
		raw, ok := qe[id]
		if !ok {
			continue
		}
		var w wireQueueEntry
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("snapshot of %s: queue entry %s: %w", node, id, err)
		}
		if w.H+w.To <= nowMS {
			continue // the waiter is gone; the next writer drops it
		}
		snap.Queue = append(snap.Queue, w.entry(id))
	}
	for field, raw := range flags {
		var w wireFlag
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			return nil, fmt.Errorf("snapshot of %s: flag %s: %w", node, field, err)
		}
		gpu := field
		if field == "node" {
			gpu = ""
		}
		snap.Flags = append(snap.Flags, allocator.Flag{GPU: gpu, Message: w.M, At: msTime(w.T)})
	}
	slices.SortFunc(snap.Flags, func(a, b allocator.Flag) int { return strings.Compare(a.GPU, b.GPU) })
	return snap, nil
}

// cut2 splits "a b rest" at its first two spaces.
func cut2(s string) (string, string, string, bool) {
	a, r, ok1 := strings.Cut(s, " ")
	b, rest, ok2 := strings.Cut(r, " ")
	return a, b, rest, ok1 && ok2
}
