package cli

import (
	"context"
	"fmt"
	"strconv"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
)

type adminArgs struct {
	acl         bool
	checkConfig bool
	forgetNode  string
	gpus        countValue
	force       bool
	register    bool
	release     bool
	ids         idsValue
	user        userValue
}

func adminCommand() *command {
	a := adminArgs{gpus: gpuCount()}
	fs := newFlagSet("admin")
	fs.VarP(&a.gpus, "gpus", "g", "register this node's GPUs: `N` must be the number the GPU provider detects")
	fs.BoolVar(&a.force, "force", false, "with --gpus: register exactly the detected GPUs even when N differs, and drop registered GPUs no longer detected (their reservations end); with --forget-node: forget the node even while it holds reservations (they end)")
	fs.BoolVar(&a.acl, "acl", false, "create the store roles' passwords in "+SecretsDir+" where missing, with their modes, and print the Redis ACL users for them (root only; docs/security.md)")
	fs.BoolVar(&a.checkConfig, "check-config", false, "check the system config file (or the FILE given) as the scheduler programs and the health check read it; run it after every edit")
	fs.StringVar(&a.forgetNode, "forget-node", "", "remove the decommissioned node `NAME` from the store; refused while it holds reservations unless --force (root only)")
	fs.BoolVar(&a.register, "register", false, "register the GPUs the provider detects and the site's limits, as root's programs do when they find them changed (root only; the boot unit runs it)")
	fs.BoolVar(&a.release, "release", false, "release reservations of any user: those on --gpu-ids, or all of --user")
	fs.VarP(&a.ids, "gpu-ids", "G", "with --release: the GPUs, a comma-separated `LIST` of indices")
	fs.VarP(&a.user, "user", "u", "with --release: only the reservations of account `NAME`")
	return &command{
		name:  "admin",
		usage: "canhazgpu admin --register | --gpus N [--force] | --release [--gpu-ids LIST] [--user NAME] | --acl | --check-config [FILE] | --forget-node NAME [--force]",
		short: "Register this node's GPUs, or release anyone's reservations",
		long: `Registering is for root only: the GPUs in the store are what everyone is
handed. --register records what the provider detects, with the site's limits
from the system config; root's programs (the boot unit, the Prolog, the
health check, root's canhazgpu) do the same by themselves whenever they find
the store differs, and an ordinary user's canhazgpu only reports a
difference. --gpus N registers only when the provider detects exactly N GPUs,
because a GPU that is not there must never be handed out; --force is for
replacing hardware: the registration becomes exactly what is detected now,
and GPUs no longer present are dropped. --release, for root and members of
admin.group, ends reservations of any user and, without --gpu-ids, their
places in the queue; reservations of batch jobs only root can end. --acl
(root) makes the store credentials of the admin, cli and monitor roles and
prints their Redis ACL users (docs/security.md). --check-config loads the
system config file (or FILE) exactly as the Prolog, Epilog and health check
will, ownership check included, and names the file and line of the first
mistake: run it after every edit, before a job's Prolog finds the mistake
and drains the node. --forget-node (root) removes a decommissioned or
renamed node, with its reservations, queue, findings and history, from the
store and from status --all-nodes; while the node holds reservations it is
refused unless --force.`,
		examples: []string{
			"canhazgpu admin --register",
			"canhazgpu admin --gpus 8",
			"canhazgpu admin --gpus 8 --force",
			"canhazgpu admin --release --gpu-ids 1",
			"canhazgpu admin --release --user bob",
			"canhazgpu admin --acl > canhazgpu.acl",
			"canhazgpu admin --check-config",
			"canhazgpu admin --check-config /etc/canhazgpu/config.toml.new",
			"canhazgpu admin --forget-node gpu02",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if a.checkConfig {
				if fs.NFlag() > 1 {
					return usagef("--check-config goes alone: want canhazgpu admin --check-config [FILE]")
				}
				return runCheckConfig(inv.env, args)
			}
			if fs.Changed("forget-node") {
				if err := noArgs("admin", args); err != nil {
					return err
				}
				if n := fs.NFlag(); n > 2 || (n == 2 && !a.force) {
					return usagef("--forget-node goes alone or with --force: want canhazgpu admin --forget-node NAME [--force]")
				}
				return runForgetNode(ctx, inv, a.forgetNode, a.force)
			}
			if err := noArgs("admin", args); err != nil {
				return err
			}
			if a.acl {
				if fs.NFlag() > 1 {
					return usagef("--acl goes alone: want canhazgpu admin --acl")
				}
				return runACL(inv)
			}
			if err := a.check(fs.Changed("gpus") || a.register); err != nil {
				return err
			}
			return runAdmin(ctx, inv, &a)
		},
	}
}

func (a *adminArgs) check(gpusSet bool) error {
	switch {
	case gpusSet == a.release:
		return usagef("canhazgpu admin needs one of --register, --gpus N (register GPUs), --release (release reservations), --acl (store credentials), --check-config (check the config file) or --forget-node NAME (remove a node)")
	case a.register && a.gpus.n != 0:
		return usagef("--register and --gpus %d conflict: --register takes what is detected, --gpus N checks the count first", a.gpus.n)
	case a.force && a.gpus.n == 0:
		return usagef("--force goes with --gpus: want canhazgpu admin --gpus N --force")
	case gpusSet && (len(a.ids.ids) > 0 || a.user.s != ""):
		return usagef("--gpu-ids and --user go with --release, not with --gpus or --register")
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
	if !a.release && !env.User.Root() {
		return fmt.Errorf("canhazgpu admin --register/--gpus: only root may register GPUs; you are %s", env.User.Name)
	}
	out := env.Stdout
	if a.release {
		return adminRelease(ctx, env, cfg, node.Store, a)
	}

	devs, err := node.Devices(ctx)
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return fmt.Errorf("node %s: the GPU provider reports no GPUs; nothing to register", cfg.Node)
	}
	if a.gpus.n != len(devs) && !a.force && !a.register {
		return badValue("--gpus", strconv.Itoa(a.gpus.n), fmt.Sprintf(
			"%d, the number of GPUs the provider detects on node %s (with --force, the detected GPUs are registered whatever N says)",
			len(devs), cfg.Node))
	}
	// Loaded explicitly, so that users' CLIs (whose role may not load them)
	// find this version's functions before their first call.
	if err := node.Store.LoadFunctions(ctx); err != nil {
		return err
	}
	changed, err := node.Store.Register(ctx, usage.Registration(devs), a.force)
	if err != nil {
		return err
	}
	if a.gpus.n != len(devs) && !a.register {
		fmt.Fprintf(env.Stderr, "canhazgpu: --gpus %d differs from the %d GPUs detected; registered the detected ones (--force)\n", a.gpus.n, len(devs))
	}
	rows := make([][]string, len(devs))
	for i, d := range devs {
		rows[i] = []string{strconv.Itoa(d.Index), d.UUID, d.Name}
	}
	fmt.Fprintf(out, "Registered %s on node %s (%d changed):\n", plural(len(devs), "GPU"), cfg.Node, changed)
	return writeTable(out, []string{"GPU", "UUID", "NAME"}, rows)
}

// adminRelease ends reservations of any user (of --user) and, without
// --gpu-ids, their places in the queue with what those hold. Root ends any
// kind; the admin group, whose CLI credential may not write batch
// reservations, interactive ones only. The placeholder jobs of released
// holds are cancelled (root may cancel anyone's; for the admin group the
// health check does).
func adminRelease(ctx context.Context, env *Env, cfg *config.Config, st *store.Store, a *adminArgs) error {
	nodeName := cfg.Node
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return err
	}
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: a.user.s, Queue: len(a.ids.ids) == 0}
	if !env.User.Root() {
		rel.Kinds = []allocator.Kind{allocator.KindManual, allocator.KindRun}
	}
	names := usage.Registered(snap.GPUs)
	if rel.GPUs, err = registeredUUIDs(snap, a.ids); err != nil {
		return err
	}
	for _, u := range rel.GPUs {
		if r, held := snap.Reservations[u]; held && r.Kind.Batch() && !env.User.Root() {
			return fmt.Errorf("GPU %s is held by %s job %s of %s: only root may end a batch job's reservation", names.Name(u), r.Kind, r.JobID, r.User)
		}
	}
	done, err := st.Release(ctx, rel)
	if err != nil {
		return err
	}
	if placeholdersOn(cfg) {
		// A member of the admin group is no Slurm operator: scancel
		// would refuse another user's placeholder, which the health check
		// cancels once its hold is gone. Root cancels them all, each as
		// its owner.
		owner := ""
		if !env.User.Root() {
			owner = env.User.Name
		}
		cancelPlaceholders(ctx, env, cfg, placeholderJobs(done.Holds, owner))
	}
	out := env.Stdout
	for _, u := range done.GPUs {
		r := snap.Reservations[u]
		if err := writeLine(out, "Released GPU %s on node %s (held by %s, %s).", names.Name(u), nodeName, r.User, r.Kind); err != nil {
			return err
		}
	}
	for _, e := range done.Dequeued {
		if err := writeLine(out, "Removed %s's request for %s from the queue of node %s.", e.User, plural(max(e.Count, len(e.GPUs)), "GPU"), nodeName); err != nil {
			return err
		}
	}
	if len(done.GPUs) == 0 && len(done.Dequeued) == 0 {
		if err := writeLine(out, "Nothing to release on node %s.", nodeName); err != nil {
			return err
		}
	}
	if len(done.Refused) > 0 {
		r := done.Refused[0]
		return fmt.Errorf("GPU %s is reserved by %s (%s), not by %s: nothing of it was released", names.Name(r.GPU), r.User, r.Kind, a.user.s)
	}
	return nil
}

// runACL is admin --acl: root only, and it needs no store.
func runACL(inv *invocation) error {
	cfg, err := inv.config()
	if err != nil {
		return err
	}
	if !inv.env.User.Root() {
		return fmt.Errorf("canhazgpu admin --acl: only root may make the store credentials; you are %s", inv.env.User.Name)
	}
	return writeACL(inv.env.Stdout, cfg, SecretsDir)
}
