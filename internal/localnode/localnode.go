// Package localnode wires what every program of this node needs: the
// settings, the reservation store and the GPU provider, with the steps
// they always take together (register the node's GPUs when the store lacks
// them; exclude GPUs in unreserved use from every grant).
//
// Only root registers: the node's GPUs in the store are what everyone is
// handed, so an ordinary user's scan (whatever provider or file they might
// have pointed it at) is compared with the registration and never applied.
package localnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
)

// Node is this machine as the programs see it.
type Node struct {
	Config *config.Config
	Store  *store.Store
	GPUs   gpu.Provider
	// MayRegister: this program runs as root and so may write the node's
	// GPUs to the store.
	MayRegister bool
}

// ErrNeedsRoot wraps allocator.ErrNotRegistered for a caller that may not
// register: it says who does.
var ErrNeedsRoot = errors.New("root registers them: at boot (canhazgpu-register.service), in the Prolog or the health check, or with 'canhazgpu admin --register'")

// Conn turns the [redis] settings into the store's connection settings.
func Conn(c config.RedisConfig) store.Conn {
	return store.Conn{URL: c.URL, SentinelMaster: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs,
		ClusterAddrs: c.ClusterAddrs, Username: c.Username, Password: c.Password, PasswordFile: c.PasswordFile,
		TLSCAFile: c.TLSCAFile, DialTimeout: c.DialTimeout, OpTimeout: c.OpTimeout}
}

// Open opens the provider and the store. Nothing is sent to Redis yet.
func Open(ctx context.Context, cfg *config.Config) (*Node, error) {
	st, err := store.Open(ctx, Conn(cfg.Redis), cfg.Node, store.Options{Policy: Policy(cfg)})
	if err != nil {
		return nil, err
	}
	prov, err := gpu.Open(gpu.Options{Provider: cfg.GPU.Provider, FakeFile: cfg.GPU.FakeFile})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Node{Config: cfg, Store: st, GPUs: prov, MayRegister: os.Geteuid() == 0}, nil
}

// Policy is the node's policy from the site's settings: what root's
// programs register, and what the store then holds every client to.
func Policy(cfg *config.Config) allocator.Policy {
	return allocator.Policy{RunLease: cfg.Run.HeartbeatTimeout, QueueTimeout: cfg.Queue.HeartbeatTimeout,
		MaxDuration: cfg.Reserve.MaxDuration, HistoryMaxAge: cfg.History.MaxAge,
		HistoryMaxRecords: cfg.History.MaxRecords}
}

// outdated: the store's registration of this node lacks a detected GPU,
// or its policy is not the site's (root edited the config).
func (n *Node) outdated(snap *allocator.Snapshot, devs []gpu.Device) bool {
	return usage.NeedsRegistration(snap, devs) ||
		(len(devs) > 0 && snap.Policy != Policy(n.Config).WithDefaults())
}

// Close releases the provider and the connection.
func (n *Node) Close() error {
	return errors.Join(n.GPUs.Close(), n.Store.Close())
}

// Devices scans the GPUs now.
func (n *Node) Devices(ctx context.Context) ([]gpu.Device, error) {
	devs, err := n.GPUs.Devices(ctx)
	if err != nil {
		return nil, fmt.Errorf("scan GPUs: %w", err)
	}
	return devs, nil
}

// Look scans the GPUs and reads the node's store state, registering the
// GPUs first when the store does not know them as they are and the caller
// may register. One store round trip when nothing changed. A caller that
// may not register gets the store's state as it is; Drift tells it apart.
func (n *Node) Look(ctx context.Context) (*allocator.Snapshot, []gpu.Device, error) {
	devs, err := n.Devices(ctx)
	if err != nil {
		return nil, nil, err
	}
	snap, err := n.Store.Snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	if n.MayRegister && n.outdated(snap, devs) {
		if _, err := n.Store.Register(ctx, usage.Registration(devs), false); err != nil {
			return nil, nil, err
		}
		if snap, err = n.Store.Snapshot(ctx); err != nil {
			return nil, nil, err
		}
	}
	return snap, devs, nil
}

// LookAll is Look for every node in the store: this node's GPUs are
// scanned (and registered when the store lacks them), the others are read
// as the store has them. Two round trips however many nodes there are,
// plus two when this node must be registered.
func (n *Node) LookAll(ctx context.Context) ([]*allocator.Snapshot, []gpu.Device, error) {
	devs, err := n.Devices(ctx)
	if err != nil {
		return nil, nil, err
	}
	snaps, err := n.Store.Snapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	i := slices.IndexFunc(snaps, func(s *allocator.Snapshot) bool { return s.Node == n.Store.Node() })
	if len(devs) == 0 || !n.MayRegister || (i >= 0 && !n.outdated(snaps[i], devs)) {
		return snaps, devs, nil
	}
	if _, err := n.Store.Register(ctx, usage.Registration(devs), false); err != nil {
		return nil, nil, err
	}
	local, err := n.Store.Snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	if i >= 0 {
		snaps[i] = local
		return snaps, devs, nil
	}
	snaps = append(snaps, local)
	slices.SortFunc(snaps, func(a, b *allocator.Snapshot) int { return strings.Compare(a.Node, b.Node) })
	return snaps, devs, nil
}

// Classify is Look followed by usage.Classify with the configured
// threshold.
func (n *Node) Classify(ctx context.Context) (*allocator.Snapshot, []usage.GPU, error) {
	snap, devs, err := n.Look(ctx)
	if err != nil {
		return nil, nil, err
	}
	return snap, usage.Classify(snap, devs, n.Config.GPU.MemoryThresholdMB), nil
}

// Allocate grants req with the GPUs in unreserved use by others excluded,
// from the given scan (nil: scan now). A node the store does not know yet
// is registered and the request tried again, with the same request id, so
// the usual grant costs one round trip.
func (n *Node) Allocate(ctx context.Context, req allocator.Request, devs []gpu.Device) (allocator.Grant, error) {
	if devs == nil {
		var err error
		if devs, err = n.Devices(ctx); err != nil {
			return allocator.Grant{}, err
		}
	}
	req.Exclude = usage.BusyFor(devs, n.Config.GPU.MemoryThresholdMB, req.User)
	g, err := n.Store.Allocate(ctx, req)
	if errors.Is(err, allocator.ErrNotRegistered) && !n.MayRegister {
		return g, fmt.Errorf("%w; %w", err, ErrNeedsRoot)
	}
	if errors.Is(err, allocator.ErrNotRegistered) && len(devs) > 0 {
		if _, err := n.Store.Register(ctx, usage.Registration(devs), false); err != nil {
			return allocator.Grant{}, err
		}
		g, err = n.Store.Allocate(ctx, req)
	}
	return g, err
}

// Drift says, for a caller that may not register, how the scan differs
// from the node's registration ("" when it does not, or when the node is
// not registered at all, which Allocate reports). Such a difference is
// reported, never applied.
func (n *Node) Drift(snap *allocator.Snapshot, devs []gpu.Device) string {
	if n.MayRegister || len(snap.GPUs) == 0 || !usage.NeedsRegistration(snap, devs) {
		return ""
	}
	return fmt.Sprintf("the GPUs detected here differ from node %s's registration in the store (%d registered, %d detected); "+
		"the store's registration stands until root registers again ('canhazgpu admin --register')", snap.Node, len(snap.GPUs), len(devs))
}

// UUIDsOf maps NVML indices to UUIDs through a scan; an index the node
// does not have is an input error naming it.
func UUIDsOf(devs []gpu.Device, indices []int) ([]string, error) {
	out := make([]string, 0, len(indices))
	for _, i := range indices {
		found := false
		for _, d := range devs {
			if d.Index == i {
				out = append(out, d.UUID)
				found = true
				break
			}
		}
		if !found {
			return nil, &allocator.InputError{Field: "gpu id", Value: fmt.Sprint(i),
				Accepted: fmt.Sprintf("an index of this node's GPUs (0-%d)", len(devs)-1)}
		}
	}
	return out, nil
}
