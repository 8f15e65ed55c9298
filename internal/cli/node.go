package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
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

// uuidsOf maps --gpu-ids (NVML indices) to UUIDs through the scan.
func uuidsOf(devs []gpu.Device, ids idsValue) ([]string, error) {
	uuids, err := localnode.UUIDsOf(devs, ids.ids)
	var ie *allocator.InputError
	if errors.As(err, &ie) {
		return nil, badValue("--gpu-ids", ids.raw, nodeIndices(devs))
	}
	return uuids, err
}

// registeredUUIDs maps --gpu-ids to UUIDs through the node's registration
// in the store, which needs no GPU scan.
func registeredUUIDs(snap *allocator.Snapshot, ids idsValue) ([]string, error) {
	out := make([]string, 0, len(ids.ids))
	for _, i := range ids.ids {
		g, ok := snap.GPUByIndex(i)
		if !ok {
			return nil, badValue("--gpu-ids", ids.raw, registeredIndices(snap))
		}
		out = append(out, g.UUID)
	}
	return out, nil
}

// nodeIndices says which indices this node has, for error messages.
func nodeIndices(devs []gpu.Device) string {
	if len(devs) == 0 {
		return "an index of this node's GPUs, but the GPU provider reports none"
	}
	idx := make([]string, len(devs))
	for i, d := range devs {
		idx[i] = strconv.Itoa(d.Index)
	}
	return "indices of this node's GPUs: " + strings.Join(idx, ",")
}

// gpuNamer turns UUIDs into the indices users know, from the scan or,
// for GPUs the provider no longer reports, from the store's registration.
type gpuNamer struct {
	byUUID map[string]int
}

func newGPUNamer(devs []gpu.Device, registered []allocator.GPU) gpuNamer {
	n := gpuNamer{byUUID: map[string]int{}}
	for _, g := range registered {
		n.byUUID[g.UUID] = g.Index
	}
	for _, d := range devs {
		n.byUUID[d.UUID] = d.Index
	}
	return n
}

func (n gpuNamer) name(uuid string) string {
	if i, ok := n.byUUID[uuid]; ok {
		return strconv.Itoa(i)
	}
	return uuid
}

// list joins the indices of uuids in ascending order with commas: "0,1",
// as CUDA_VISIBLE_DEVICES takes them.
func (n gpuNamer) list(uuids []string) string {
	sorted := slices.Clone(uuids)
	slices.SortStableFunc(sorted, func(a, b string) int {
		ia, oka := n.byUUID[a]
		ib, okb := n.byUUID[b]
		switch {
		case oka && okb:
			return ia - ib
		case oka:
			return -1
		case okb:
			return 1
		}
		return strings.Compare(a, b)
	})
	names := make([]string, len(sorted))
	for i, u := range sorted {
		names[i] = n.name(u)
	}
	return strings.Join(names, ",")
}

// plural writes "1 GPU" or "3 GPUs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
