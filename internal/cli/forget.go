package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/localnode"
)

// runForgetNode is admin --forget-node NAME [--force]: it removes a
// decommissioned or renamed node from the store, so that views across
// nodes stop showing it. Root only, like registering: the store's admin
// role alone may do it. A node that still holds reservations is kept
// unless forced, because its GPUs may still be in use.
func runForgetNode(ctx context.Context, inv *invocation, name string, force bool) error {
	cfg, err := inv.config()
	if err != nil {
		return err
	}
	env := inv.env
	if !env.User.Root() {
		return fmt.Errorf("canhazgpu admin --forget-node: only root may remove a node from the store; you are %s", env.User.Name)
	}
	var ie *allocator.InputError
	if err := store.ValidateNode(name); errors.As(err, &ie) {
		return badValue("--forget-node", name, ie.Accepted)
	}
	own, err := localnode.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer own.Close()
	st, err := own.ForNode(name)
	if err != nil {
		return err
	}
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(nodes, name) {
		slices.Sort(nodes)
		known := "a node in the store, but it lists none"
		switch {
		case len(nodes) > maxNodesListed:
			known = fmt.Sprintf("a node in the store: %s, … (%d in all; canhazgpu status --all-nodes shows them)",
				strings.Join(nodes[:maxNodesListed], ", "), len(nodes))
		case len(nodes) > 0:
			known = "a node in the store: " + strings.Join(nodes, ", ")
		}
		return badValue("--forget-node", name, known)
	}
	snap, forgot, err := st.Forget(ctx, force)
	if err != nil {
		return err
	}
	held := heldOn(snap)
	if !forgot {
		them := "them"
		if len(held) == 1 {
			them = "it"
		}
		return fmt.Errorf("node %s holds %s (%s): release %s first, or end %s with the node: canhazgpu admin --forget-node %s --force",
			name, plural(len(held), "reservation"), strings.Join(held, "; "), them, them, name)
	}
	line := fmt.Sprintf("Forgot node %s (%s registered", name, plural(len(snap.GPUs), "GPU"))
	if len(held) > 0 {
		line += "; ended " + strings.Join(held, "; ")
	}
	line += "). If canhazgpu still runs there, its root programs register it again."
	return writeLine(env.Stdout, "%s", line)
}

// maxNodesListed bounds the nodes an error lists, to keep it one readable
// line on a large site.
const maxNodesListed = 20

// heldOn describes each reservation of a snapshot, by GPU index and UUID:
// the registered GPUs in index order, then any GPU no longer registered.
func heldOn(snap *allocator.Snapshot) []string {
	var out []string
	describe := func(name string, r allocator.Reservation) {
		out = append(out, fmt.Sprintf("GPU %s: %s, %s", name, r.User, holding(r)))
	}
	registered := map[string]bool{}
	for _, g := range snap.GPUs {
		registered[g.UUID] = true
		if r, ok := snap.Reservations[g.UUID]; ok {
			describe(fmt.Sprintf("%d (%s)", g.Index, g.UUID), r)
		}
	}
	for _, u := range slices.Sorted(maps.Keys(snap.Reservations)) {
		if !registered[u] {
			describe(u, snap.Reservations[u])
		}
	}
	return out
}
