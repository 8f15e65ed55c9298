package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
)

type releaseArgs struct {
	ids  idsValue
	user userValue
}

func releaseCommand() *command {
	var a releaseArgs
	fs := newFlagSet("release")
	fs.VarP(&a.ids, "gpu-ids", "G", "release only these GPUs (manual or run reservations): a comma-separated `LIST` of indices")
	fs.VarP(&a.user, "user", "u", "release for another account `NAME` (root and the admin group only)")
	return &command{
		name:  "release",
		usage: "canhazgpu release [--gpu-ids LIST]",
		short: "Release your manual reservations early",
		long: `Without --gpu-ids, every manual reservation of yours on this node ends. With
--gpu-ids, the listed GPUs are released when they are yours, run reservations
included; a listed GPU held by someone else, batch jobs included, is refused
and reported with its holder, and the exit status is then 1. Only the owner,
root or the admin group can release a reservation ('canhazgpu admin
--release').`,
		examples: []string{
			"canhazgpu release",
			"canhazgpu release --gpu-ids 0,3",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("release", args); err != nil {
				return err
			}
			return runRelease(ctx, inv, &a)
		},
	}
}

func runRelease(ctx context.Context, inv *invocation, a *releaseArgs) error {
	cfg, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	env := inv.env
	user, _, err := actingUser(env, cfg, a.user.s)
	if err != nil {
		return err
	}
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: user, Kinds: []allocator.Kind{allocator.KindManual}}
	// The store's registration names the GPUs: release scans nothing, so it
	// works wherever the store can be reached. Without --gpu-ids it is one
	// round trip, the reply naming the GPUs by index and the placeholder
	// jobs of the holds it ended.
	var registered []allocator.GPU
	if len(a.ids.ids) > 0 {
		snap, err := node.Store.Snapshot(ctx)
		if err != nil {
			return err
		}
		registered = snap.GPUs
		if rel.GPUs, err = registeredUUIDs(snap, a.ids); err != nil {
			return err
		}
		rel.Kinds = append(rel.Kinds, allocator.KindRun)
	}
	done, err := node.Store.Release(ctx, rel)
	if err != nil {
		return err
	}
	if placeholdersOn(cfg) {
		cancelPlaceholders(ctx, env, cfg, placeholderJobs(done.Holds, user))
	}
	released := make([]gpu.ID, 0, len(done.Indices))
	for u, i := range done.Indices {
		released = append(released, gpu.ID{UUID: u, Index: i})
	}
	names := usage.Registered(registered).Union(gpu.NewSet(released...))
	return reportRelease(env, names, cfg.Node, user, rel.GPUs, done)
}

// reportRelease prints what was released, notes named GPUs that had
// nothing to release, and fails naming each GPU held by someone else.
func reportRelease(env *Env, names gpu.Set, node, user string, named []string, done allocator.Released) error {
	if len(done.GPUs) > 0 {
		writeLine(env.Stdout, "Released %s on node %s: %s", plural(len(done.GPUs), "GPU"), node, names.List(done.GPUs))
	}
	var untouched []string
	for _, u := range named {
		refused := slices.ContainsFunc(done.Refused, func(r allocator.Reservation) bool { return r.GPU == u })
		if !refused && !slices.Contains(done.GPUs, u) {
			untouched = append(untouched, u)
		}
	}
	switch {
	case len(untouched) > 0:
		writeLine(env.Stdout, "No manual or run reservation of %s to release on GPU %s.", user, names.List(untouched))
	case len(named) == 0 && len(done.GPUs) == 0:
		writeLine(env.Stdout, "No manual reservations of %s to release on node %s.", user, node)
	}
	if len(done.Refused) == 0 {
		return nil
	}
	var parts []string
	for _, r := range done.Refused {
		parts = append(parts, fmt.Sprintf("GPU %s is reserved by %s (%s), not by %s", names.Name(r.GPU), r.User, holding(r), user))
	}
	return errors.New(strings.Join(parts, "; ") + ": only the owner, root or the admin group may release it")
}

// holding says what kind of reservation holds a GPU: "manual", "run",
// "slurm job 42", or that it is held for a request waiting in the queue.
func holding(r allocator.Reservation) string {
	switch {
	case r.Queued:
		return string(r.Kind) + ", held for a waiting request"
	case r.Kind.Batch():
		return string(r.Kind) + " job " + r.JobID
	}
	return string(r.Kind)
}
