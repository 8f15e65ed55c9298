package store

import (
	"context"
	"fmt"

	"canhazgpu/allocator"
)

// Forget removes the node from the store: its GPUs, reservations, queue,
// findings, policy and history, and its entry in the registry of nodes, so
// that views across nodes no longer show it. While the node holds a
// reservation that has not expired, nothing changes unless force is set:
// the snapshot returned then shows what it holds. The snapshot is the
// node as it was before; forgot reports whether it is gone.
//
// Root programs on the node register it again when they next run, so a
// node is forgotten once it no longer runs canhazgpu.
func (s *Store) Forget(ctx context.Context, force bool) (snap *allocator.Snapshot, forgot bool, err error) {
	force01 := "0"
	if force {
		force01 = "1"
	}
	k := s.keys
	keys := []string{k.gpus, k.res, k.bres, k.mru, k.q, k.qe, k.flags, k.policy, k.hist, k.qx}
	v, err := s.run.run(ctx, forgetOp, keys, force01).Slice()
	if err != nil {
		return nil, false, s.wrap("forget node "+s.node, err)
	}
	var done int64
	if len(v) > 1 {
		done, _ = v[1].(int64)
	}
	if len(v) < 2 || (done != 0 && done != 1) {
		return nil, false, fmt.Errorf("forget node %s: bad reply %v", s.node, v)
	}
	snap, err = decodeSnapshot(s.node, v, 2)
	if err != nil || done == 0 {
		return snap, false, err
	}
	// The registry is outside the node's slot: a call of its own, as in
	// Register. Removing is idempotent, so running Forget again after a
	// failure here finishes the job.
	if err := s.rdb.SRem(ctx, registryKey, s.node).Err(); err != nil {
		return snap, false, s.wrap("forget node "+s.node+" in the registry", err)
	}
	return snap, true, nil
}
