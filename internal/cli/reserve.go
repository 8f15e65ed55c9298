package cli

import (
	"context"
	"fmt"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/config"
	"canhazgpu/internal/slurm"
)

type reserveArgs struct {
	requestArgs
	duration  durationValue
	short     bool
	keepAlive bool
}

func reserveCommand() *command {
	var a reserveArgs
	fs := newFlagSet("reserve")
	a.bind(fs)
	fs.VarP(&a.duration, "duration", "d", "how long to hold the GPUs: `D` such as 30m, 4h, 1d (default reserve.duration, 30m)")
	fs.BoolVar(&a.short, "short", false, "print only the GPU indices, comma-separated, for CUDA_VISIBLE_DEVICES (ROCR_VISIBLE_DEVICES on AMD nodes)")
	fs.BoolVar(&a.keepAlive, "keep-alive", false, "reserve nothing: tell the idle check that your manual reservations (or those of --gpu-ids) are in use")
	return &command{
		name:  "reserve",
		usage: "canhazgpu reserve [--gpus N | --gpu-ids LIST] [--duration D] [--wait[=D]] [--short] [--note TEXT]",
		short: "Reserve GPUs for interactive work until they expire or are released",
		long: `A manual reservation holds GPUs for --duration, then ends by itself; release
it earlier with 'canhazgpu release'. GPUs used WITHOUT RESERVATION are never
handed out. Without --wait, a request that cannot be met now fails at once;
with --wait it joins the node's first-come-first-served queue. The health
check releases a manual reservation whose GPUs stay idle too long (site
policy, [idle]); --keep-alive tells it yours are in use.`,
		examples: []string{
			"canhazgpu reserve --gpus 2 --duration 4h",
			"canhazgpu reserve --gpu-ids 0,3 --note 'debugging NCCL'",
			"export CUDA_VISIBLE_DEVICES=$(canhazgpu reserve --short)",
			"canhazgpu reserve --gpus 4 --wait=2h",
			"canhazgpu reserve --keep-alive",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if a.keepAlive {
				for _, f := range keepAliveConflicts {
					if fs.Changed(f) {
						return usagef("--keep-alive and --%s conflict: --keep-alive reserves nothing, it keeps your manual reservations", f)
					}
				}
				if err := noArgs("reserve", args); err != nil {
					return err
				}
				return runKeepAlive(ctx, inv, &a)
			}
			if err := a.check(fs); err != nil {
				return err
			}
			if err := noArgs("reserve", a.takeWaitBound(args, false)); err != nil {
				return err
			}
			return runReserve(ctx, inv, &a)
		},
	}
}

func runReserve(ctx context.Context, inv *invocation, a *reserveArgs) error {
	p, err := a.open(ctx, inv)
	if err != nil {
		return err
	}
	defer p.node.Close()
	env, cfg, user, devs := inv.env, p.cfg, p.user, p.devs
	lease := cfg.Reserve.Duration
	if a.duration.d > 0 {
		lease = a.duration.d
	}
	if lease > cfg.Reserve.MaxDuration {
		return badValue("--duration", a.duration.String(), fmt.Sprintf("at most %s, this site's reserve.max_duration",
			config.Duration(cfg.Reserve.MaxDuration)))
	}
	g, job, err := a.hold(ctx, inv, p, allocator.KindManual, lease, lease)
	if err != nil {
		return err
	}
	held, _ := gpu.SetOf(devs).Pick(g.GPUs)
	ids := gpu.SetOf(devs).List(g.GPUs)
	if a.short {
		_, err := fmt.Fprintln(env.Stdout, ids)
		return err
	}
	who := ""
	if user != env.User.Name {
		who = " for " + user
	}
	them := "them"
	if len(g.GPUs) == 1 {
		them = "it"
	}
	_, err = fmt.Fprintf(env.Stdout, "Reserved %s%s on node %s for %s: %s\n"+
		"Use %s with: %s\n"+
		"Release %s earlier with: %s\n",
		plural(len(g.GPUs), "GPU"), who, cfg.Node, config.Duration(lease), ids, them,
		exportLine(gpu.VendorOf(cfg.GPU.Provider).Exports(held.IDs(), gpu.ByIndex)), them, releaseHint(inv, user))
	if err == nil && job != "" {
		_, err = fmt.Fprintf(env.Stdout, "Slurm sees the hold as job %s (%s), so batch jobs are placed around %s\n", job, slurm.HoldJobName, them)
	}
	return err
}

// releaseHint is the command that ends a reservation early, with the
// --node and --user the reservation was made with: a plain `canhazgpu
// release` would look on the caller's own node, for the caller's own
// reservations.
func releaseHint(inv *invocation, user string) string {
	hint := "canhazgpu release"
	if node := inv.flagSetting("node"); node != "" {
		hint += " --node " + shellWord(node)
	}
	if user != inv.env.User.Name {
		hint += " --user " + shellWord(user)
	}
	return hint
}

// shellWord quotes s for a POSIX shell unless it is plainly one word.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@+=:/") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
