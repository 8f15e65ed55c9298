package store

import (
	"context"
	"fmt"
	"strconv"

	"canhazgpu/allocator"
)

// Register records the node's GPUs. Without force it adds new and changed
// GPUs and drops a registered GPU only when another now has its index;
// with force the list replaces what was registered. Reservations of dropped
// GPUs end in the history. In the same step it stores the node's policy
// (Options.Policy). It also lists the node in the registry. It returns how
// many GPUs changed. A node has at most allocator.MaxGPUsPerNode GPUs.
func (s *Store) Register(ctx context.Context, gpus []allocator.GPU, force bool) (int, error) {
	if len(gpus) == 0 || len(gpus) > allocator.MaxGPUsPerNode {
		return 0, &allocator.InputError{Field: "gpu list", Value: fmt.Sprintf("%d GPUs", len(gpus)),
			Accepted: fmt.Sprintf("1 to %d GPUs", allocator.MaxGPUsPerNode)}
	}
	seenUUID, seenIndex := map[string]bool{}, map[int]bool{}
	for _, g := range gpus {
		if err := checkList([]string{g.UUID}); err != nil {
			return 0, err
		}
		if seenUUID[g.UUID] {
			return 0, &allocator.InputError{Field: "gpu uuid", Value: g.UUID, Accepted: "each GPU once"}
		}
		if g.Index < 0 || seenIndex[g.Index] {
			return 0, &allocator.InputError{Field: "gpu index", Value: strconv.Itoa(g.Index), Accepted: "distinct indexes from 0"}
		}
		if g.Minor < 0 {
			return 0, &allocator.InputError{Field: "gpu minor", Value: strconv.Itoa(g.Minor), Accepted: "zero or more"}
		}
		seenUUID[g.UUID], seenIndex[g.Index] = true, true
	}
	args := append([]any{flag01(force)}, policyArgs(s.policy)...)
	for _, g := range gpus {
		args = append(args, g.UUID, g.Index, g.Minor, g.Name)
	}
	k := s.keys
	v, err := s.run.run(ctx, registerOp, []string{k.gpus, k.res, k.bres, k.mru, k.hist, k.policy}, args...).Result()
	n, err := count("register", v, s.wrap("register", err))
	if err != nil {
		return 0, err
	}
	// The registry is outside the node's slot; adding is idempotent, so a
	// separate call keeps the operation cluster-safe.
	if err := s.rdb.SAdd(ctx, registryKey, s.node).Err(); err != nil {
		return n, s.wrap("register node", err)
	}
	return n, nil
}

// Nodes lists every registered node.
func (s *Store) Nodes(ctx context.Context) ([]string, error) {
	nodes, err := s.rdb.SMembers(ctx, registryKey).Result()
	return nodes, s.wrap("list nodes", err)
}
