package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
)

// openNode loads the settings and opens this node's store; the GPU
// provider starts only when a command scans, so the commands that only
// read or release what the store holds work on machines without GPUs.
func (inv *invocation) openNode(ctx context.Context) (*config.Config, *localnode.Node, error) {
	cfg, err := inv.config()
	if err != nil {
		return nil, nil, err
	}
	node, err := localnode.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	// Only root registers GPUs; the identity, not the process's euid,
	// decides, so that in-process tests act as the users they name.
	node.MayRegister = inv.env.User.Root()
	return cfg, node, nil
}

// isAdmin: root, or a member of the configured admin group.
func isAdmin(id Identity, cfg *config.Config) bool {
	return id.Root() || id.inGroup(cfg.Admin.Group)
}

// whoMayAdmin says who may do what the caller may not.
func whoMayAdmin(cfg *config.Config) string {
	if cfg.Admin.Group == "" {
		return "only root may (no admin.group is configured)"
	}
	return fmt.Sprintf("only root and members of the admin group %q may", cfg.Admin.Group)
}

// requireAdmin refuses callers who are neither root nor in the admin group.
func requireAdmin(env *Env, cfg *config.Config, what string) error {
	if isAdmin(env.User, cfg) {
		return nil
	}
	return fmt.Errorf("%s: %s; you are %s", what, whoMayAdmin(cfg), env.User.Name)
}

// actingUser is the account a request is made for: the caller, or the
// account named by --user when the caller is an administrator.
func actingUser(env *Env, cfg *config.Config, requested string) (string, int, error) {
	if requested == "" || requested == env.User.Name {
		return env.User.Name, env.User.UID, nil
	}
	if !isAdmin(env.User, cfg) {
		return "", 0, fmt.Errorf("--user %s: %s act for another user; you are %s", requested, whoMayAdmin(cfg), env.User.Name)
	}
	return requested, uidOf(requested), nil
}

// uuidsOf maps --gpu-ids (indices) to UUIDs through the scan.
func uuidsOf(devs []gpu.Device, ids idsValue) ([]string, error) {
	uuids, err := gpu.SetOf(devs).UUIDsAt(ids.ids)
	if err != nil {
		return nil, badValue("--gpu-ids", ids.raw, nodeIndices(devs))
	}
	return uuids, nil
}

// registeredUUIDs maps --gpu-ids to UUIDs through the node's registration
// in the store, which needs no GPU scan.
func registeredUUIDs(snap *allocator.Snapshot, ids idsValue) ([]string, error) {
	uuids, err := usage.Registered(snap.GPUs).UUIDsAt(ids.ids)
	if err != nil {
		return nil, badValue("--gpu-ids", ids.raw, registeredIndices(snap))
	}
	return uuids, nil
}

// nodeIndices says which indices this node has, for error messages.
func nodeIndices(devs []gpu.Device) string {
	if len(devs) == 0 {
		return "an index of this node's GPUs, but the GPU provider reports none"
	}
	return "indices of this node's GPUs: " + gpu.SetOf(devs).IndexList()
}

// registeredIndices says which indices the node's registration has, for
// error messages.
func registeredIndices(snap *allocator.Snapshot) string {
	if len(snap.GPUs) == 0 {
		return "a registered GPU, but node " + snap.Node + " has none"
	}
	return "indices of GPUs registered for node " + snap.Node + ": " + usage.Registered(snap.GPUs).IndexList()
}

// exportLine is the shell command that sets envs: "export A=1 B=2".
func exportLine(envs []gpu.Env) string {
	parts := make([]string, len(envs))
	for i, e := range envs {
		parts[i] = e.Name + "=" + e.Value
	}
	return "export " + strings.Join(parts, " ")
}

// plural writes "1 GPU" or "3 GPUs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
