package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/usage"
)

type adminArgs struct {
	gpus    countValue
	force   bool
	release bool
	ids     idsValue
	user    userValue
}

func adminCommand() *command {
	a := adminArgs{gpus: gpuCount()}
	fs := newFlagSet("admin")
	fs.VarP(&a.gpus, "gpus", "g", "register this node's GPUs: `N` must be the number the GPU provider detects")
	fs.BoolVar(&a.force, "force", false, "with --gpus: register exactly the detected GPUs even when N differs, and drop registered GPUs no longer detected (their reservations end)")
	fs.BoolVar(&a.release, "release", false, "release reservations of any user: those on --gpu-ids, or all of --user")
	fs.VarP(&a.ids, "gpu-ids", "G", "with --release: the GPUs, a comma-separated `LIST` of indices")
	fs.VarP(&a.user, "user", "u", "with --release: only the reservations of account `NAME`")
	return &command{
		name:  "admin",
		usage: "canhazgpu admin --gpus N [--force] | --release [--gpu-ids LIST] [--user NAME]",
		short: "Register this node's GPUs, or release anyone's reservations",
		long: `For root and members of admin.group only. --gpus registers the GPUs the
provider detects (UUIDs, indices, names); it refuses a count the hardware
does not have, because a GPU that is not there must never be handed out.
Every command registers newly detected GPUs by itself, so a fresh node needs
no admin step; --force is for replacing hardware: the registration becomes
exactly what is detected now, and GPUs no longer present are dropped.
--release ends reservations of any kind and any user.`,
		examples: []string{
			"canhazgpu admin --gpus 8",
			"canhazgpu admin --gpus 8 --force",
			"canhazgpu admin --release --gpu-ids 1",
			"canhazgpu admin --release --user bob",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("admin", args); err != nil {
				return err
			}
			if err := a.check(fs.Changed("gpus")); err != nil {
				return err
			}
			return runAdmin(ctx, inv, &a)
		},
	}
}

func (a *adminArgs) check(gpusSet bool) error {
	switch {
	case gpusSet == a.release:
		return usagef("canhazgpu admin needs one of --gpus N (register GPUs) or --release (release reservations)")
	case a.force && !gpusSet:
		return usagef("--force goes with --gpus: want canhazgpu admin --gpus N --force")
	case gpusSet && (len(a.ids.ids) > 0 || a.user.s != ""):
		return usagef("--gpu-ids and --user go with --release, not with --gpus")
	case a.release && len(a.ids.ids) == 0 && a.user.s == "":
		return usagef("--release needs --gpu-ids LIST, --user NAME or both, to say whose reservations to end")
	}
	return nil
}

func runAdmin(ctx context.Context, inv *invocation, a *adminArgs) error {
	cfg, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	env := inv.env
	if err := requireAdmin(env, cfg, "canhazgpu admin"); err != nil {
		return err
	}
	out := env.Stdout
	if a.release {
		snap, err := node.Store.Snapshot(ctx)
		if err != nil {
			return err
		}
		rel := allocator.Release{RequestID: allocator.NewRequestID(), User: a.user.s}
		for _, i := range a.ids.ids {
			g, ok := snap.GPUByIndex(i)
			if !ok {
				return badValue("--gpu-ids", a.ids.raw, registeredIndices(snap))
			}
			rel.GPUs = append(rel.GPUs, g.UUID)
		}
		done, err := node.Store.Release(ctx, rel)
		if err != nil {
			return err
		}
		if len(done.GPUs) == 0 {
			_, err := fmt.Fprintf(out, "Nothing to release on node %s.\n", cfg.Node)
			return err
		}
		names := newGPUNamer(nil, snap.GPUs)
		for _, u := range done.GPUs {
			r := snap.Reservations[u]
			writeLine(out, "Released GPU %s on node %s (held by %s, %s).", names.name(u), cfg.Node, r.User, r.Kind)
		}
		return nil
	}

	devs, err := node.Devices(ctx)
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return fmt.Errorf("node %s: the GPU provider reports no GPUs; nothing to register", cfg.Node)
	}
	if a.gpus.n != len(devs) && !a.force {
		return badValue("--gpus", strconv.Itoa(a.gpus.n), fmt.Sprintf(
			"%d, the number of GPUs the provider detects on node %s (with --force, the detected GPUs are registered whatever N says)",
			len(devs), cfg.Node))
	}
	changed, err := node.Store.Register(ctx, usage.Registration(devs), a.force)
	if err != nil {
		return err
	}
	if a.gpus.n != len(devs) {
		fmt.Fprintf(env.Stderr, "canhazgpu: --gpus %d differs from the %d GPUs detected; registered the detected ones (--force)\n", a.gpus.n, len(devs))
	}
	rows := make([][]string, len(devs))
	for i, d := range devs {
		rows[i] = []string{strconv.Itoa(d.Index), d.UUID, d.Name}
	}
	fmt.Fprintf(out, "Registered %s on node %s (%d changed):\n", plural(len(devs), "GPU"), cfg.Node, changed)
	return writeTable(out, []string{"GPU", "UUID", "NAME"}, rows)
}

func registeredIndices(snap *allocator.Snapshot) string {
	idx := make([]string, len(snap.GPUs))
	for i, g := range snap.GPUs {
		idx[i] = strconv.Itoa(g.Index)
	}
	if len(idx) == 0 {
		return "a registered GPU, but node " + snap.Node + " has none"
	}
	return "indices of GPUs registered for node " + snap.Node + ": " + strings.Join(idx, ",")
}
