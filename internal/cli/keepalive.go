package cli

import (
	"context"
	"fmt"

	"canhazgpu/allocator/usage"
)

// keepAliveConflicts are the reserve flags that ask for new GPUs, which
// --keep-alive does not.
var keepAliveConflicts = []string{"gpus", "duration", "wait", "nonblock", "note", "short"}

// runKeepAlive restarts the idle clock of the acting user's manual
// reservations on this node (all, or those --gpu-ids names), so the
// health check counts them as used now ([idle] in docs/healthcheck.md).
// It neither extends nor shortens them.
func runKeepAlive(ctx context.Context, inv *invocation, a *reserveArgs) error {
	cfg, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	user, _, err := actingUser(inv.env, cfg, a.user.s)
	if err != nil {
		return err
	}
	// Named by the store's registration, as release does: no GPU scan.
	snap, err := node.Store.Snapshot(ctx)
	if err != nil {
		return err
	}
	var named []string
	if len(a.ids.ids) > 0 {
		if named, err = registeredUUIDs(snap, a.ids); err != nil {
			return err
		}
	}
	kept, refused, err := node.Store.KeepAlive(ctx, user, named)
	if err != nil {
		return err
	}
	names := usage.Registered(snap.GPUs)
	switch {
	case len(refused) > 0:
		return badValue("--gpu-ids", a.ids.raw, fmt.Sprintf("GPUs of manual reservations of %s on node %s (not GPU %s); nothing was kept alive",
			user, cfg.Node, names.List(refused)))
	case len(kept) == 0:
		return fmt.Errorf("no manual reservation of %s on node %s to keep alive", user, cfg.Node)
	}
	writeLine(inv.env.Stdout, "Kept %s of %s on node %s alive: %s; the idle clock starts again now",
		plural(len(kept), "GPU"), user, cfg.Node, names.List(kept))
	return nil
}
