// Package localnode is every program's one door to this node: it opens
// the reservation store (OpenStore, the only opener there is), starts the
// GPU provider only when something scans, and keeps the steps that always
// go together: register the node's GPUs when the store lacks them, then try
// once more; exclude GPUs in unreserved use from every grant.
//
// Opening costs no GPU work, so the commands that only read or release
// what the store holds work on a machine without GPUs or NVML.
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
	"time"

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
	// MayRegister: this program runs as root and so may write the node's
	// GPUs to the store.
	MayRegister bool
	gpus        gpu.Provider
}

// ErrNeedsRoot is joined to a call's error when the store's registration
// of this node lacks what the call needed and the caller may not
// register: it says who does.
var ErrNeedsRoot = errors.New("root registers them: at boot (canhazgpu-register.service), in the Prolog or the health check, or with 'canhazgpu admin --register'")

// Conn turns the [redis] settings into the store's connection settings.
func Conn(c config.RedisConfig) store.Conn {
	return store.Conn{URL: c.URL, SentinelMaster: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs,
		ClusterAddrs: c.ClusterAddrs, Username: c.Username, Password: c.Password, PasswordFile: c.PasswordFile,
		TLSCAFile: c.TLSCAFile, DialTimeout: c.DialTimeout, OpTimeout: c.OpTimeout,
		WaitReplicas: c.WaitReplicas, WaitTimeout: c.WaitTimeout}
}

// OpenStore opens this node's store as the settings name it, holding
// every client to the site's policy. Nothing is sent to Redis yet.
func OpenStore(ctx context.Context, cfg *config.Config) (*store.Store, error) {
	return store.Open(ctx, Conn(cfg.Redis), cfg.Node, store.Options{Policy: Policy(cfg)})
}

// Open opens the node's store; the GPU provider starts at the first scan.
// Nothing is sent to Redis yet.
func Open(ctx context.Context, cfg *config.Config) (*Node, error) {
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return New(cfg, st, nil), nil
}

// New is a node on a store opened elsewhere (OpenStore, or a test's) and
// the given provider; nil gpus: the configured provider, started at the
// first scan. The node may register when the program runs as root.
func New(cfg *config.Config, st *store.Store, gpus gpu.Provider) *Node {
	if gpus == nil {
		gpus = &lazyProvider{open: func() (gpu.Provider, error) {
			return gpu.Open(gpu.Options{Provider: cfg.GPU.Provider, FakeFile: cfg.GPU.FakeFile, AMDSMIPath: cfg.GPU.AMDSMIPath})
		}}
	}
	return &Node{Config: cfg, Store: st, gpus: gpus, MayRegister: os.Geteuid() == 0}
}

// GPUs is the node's GPU provider. Scanning through it starts it (once);
// Close closes it.
func (n *Node) GPUs() gpu.Provider { return n.gpus }

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

// Close releases the provider (when a scan started it) and the connection.
func (n *Node) Close() error {
	return errors.Join(n.gpus.Close(), n.Store.Close())
}

// Devices scans the GPUs now, starting the provider on the first scan,
// reading what extras ask for besides memory and processes.
func (n *Node) Devices(ctx context.Context, extras ...gpu.Extra) ([]gpu.Device, error) {
	devs, err := n.gpus.Devices(ctx, extras...)
	if err != nil {
		return nil, fmt.Errorf("scan GPUs: %w", err)
	}
	return devs, nil
}

// lacksRegistration: a call failed because the store's registration of
// this node lacks what it needed: the node is not registered at all, or a
// GPU named is not among its registered ones.
func lacksRegistration(err error) bool {
	return errors.Is(err, allocator.ErrNotRegistered) || errors.Is(err, allocator.ErrUnknownGPU)
}

// registering runs op and, when stale says that the store's registration of
// this node is what stood in op's way, registers the scan devs and runs op
// once more. It is the one place where "register when needed, then retry
// once" lives, for the CLI, the hooks and the health check alike. Only root
// registers: for anyone else, a call that failed for want of registration
// says who does, and a read is returned as the store has it.
func registering[T any](ctx context.Context, n *Node, devs []gpu.Device, op func() (T, error), stale func(T, error) bool) (T, error) {
	v, err := op()
	switch {
	case !stale(v, err):
		return v, err
	case !n.MayRegister && err != nil:
		return v, fmt.Errorf("%w; %w", err, ErrNeedsRoot)
	case !n.MayRegister, len(devs) == 0: // nothing detected is never registered
		return v, err
	}
	if _, err := n.Store.Register(ctx, usage.Registration(devs), false); err != nil {
		var zero T
		return zero, err
	}
	return op()
}

// Look scans the GPUs (with extras, as Devices) and reads the node's
// store state, registering the GPUs first when the store does not know
// them as they are and the caller may register. One store round trip when
// nothing changed. A caller that may not register gets the store's state
// as it is; Drift tells it apart.
func (n *Node) Look(ctx context.Context, extras ...gpu.Extra) (*allocator.Snapshot, []gpu.Device, error) {
	devs, err := n.Devices(ctx, extras...)
	if err != nil {
		return nil, nil, err
	}
	return n.look(ctx, devs, n.Store.Snapshot)
}

// LookMarkingUse is Look for the health check: root's snapshot also
// restarts, in the same round trip, the idle clock of the interactive
// grants in use (store.SnapshotMarkingUse, with every), idle naming the
// GPUs the scan saw idle. Anyone else only reads, as Look; so does root
// with a credential that may not write (then at one round trip more).
func (n *Node) LookMarkingUse(ctx context.Context, idle func([]gpu.Device) []string, every time.Duration,
	extras ...gpu.Extra) (*allocator.Snapshot, []gpu.Device, error) {
	devs, err := n.Devices(ctx, extras...)
	if err != nil {
		return nil, nil, err
	}
	if !n.MayRegister {
		return n.look(ctx, devs, n.Store.Snapshot)
	}
	seenIdle := idle(devs)
	return n.look(ctx, devs, func(ctx context.Context) (*allocator.Snapshot, error) {
		snap, err := n.Store.SnapshotMarkingUse(ctx, seenIdle, every)
		if errors.Is(err, allocator.ErrNotPermitted) {
			return n.Store.Snapshot(ctx)
		}
		return snap, err
	})
}

// look reads the node's state with read, registering the scan devs first
// when the store does not know them as they are and the caller may.
func (n *Node) look(ctx context.Context, devs []gpu.Device, read func(context.Context) (*allocator.Snapshot, error)) (*allocator.Snapshot, []gpu.Device, error) {
	snap, err := registering(ctx, n, devs, func() (*allocator.Snapshot, error) { return read(ctx) },
		func(snap *allocator.Snapshot, err error) bool { return err == nil && n.outdated(snap, devs) })
	if err != nil {
		return nil, nil, err
	}
	return snap, devs, nil
}

// LookAll reads every node in the store, this one registered first when
// the scan devs (nil where nothing could be scanned) says the store lacks
// it as it is and the caller may register. One round trip however many
// nodes there are (store.Snapshots: one more the first time, and when
// nodes have joined since the last call), plus four when this node is
// registered.
func (n *Node) LookAll(ctx context.Context, devs []gpu.Device) ([]*allocator.Snapshot, error) {
	return registering(ctx, n, devs, func() ([]*allocator.Snapshot, error) { return n.Store.Snapshots(ctx) },
		func(snaps []*allocator.Snapshot, err error) bool {
			if err != nil {
				return false
			}
			local := &allocator.Snapshot{Node: n.Store.Node()}
			if i := slices.IndexFunc(snaps, func(s *allocator.Snapshot) bool { return s.Node == local.Node }); i >= 0 {
				local = snaps[i]
			}
			return n.outdated(local, devs)
		})
}

// Classify is Look followed by usage.Classify with the configured
// threshold. It reads no utilisation: its callers, the hooks, judge
// memory and processes only.
func (n *Node) Classify(ctx context.Context) (*allocator.Snapshot, []usage.GPU, error) {
	snap, devs, err := n.Look(ctx)
	if err != nil {
		return nil, nil, err
	}
	return snap, usage.Classify(snap, devs, n.Config.GPU.MemoryThresholdMB), nil
}

// Allocate grants req with the GPUs in unreserved use by others excluded
// (besides those req excludes itself), from the given scan (nil: scan
// now). When the store does not know the
// node, or a GPU the request names, root's call registers the scan and
// tries again with the same request id, so the usual grant costs one
// round trip.
func (n *Node) Allocate(ctx context.Context, req allocator.Request, devs []gpu.Device) (allocator.Grant, error) {
	if devs == nil {
		var err error
		if devs, err = n.Devices(ctx); err != nil {
			return allocator.Grant{}, err
		}
	}
	req.Exclude = append(slices.Clone(req.Exclude), usage.BusyFor(devs, n.Config.GPU.MemoryThresholdMB, req.User)...)
	return registering(ctx, n, devs, func() (allocator.Grant, error) { return n.Store.Allocate(ctx, req) },
		func(_ allocator.Grant, err error) bool { return lacksRegistration(err) })
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
