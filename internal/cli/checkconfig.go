package cli

import (
	"cmp"
	"os"

	"canhazgpu/internal/config"
)

// runCheckConfig is admin --check-config [FILE]: it loads the system
// config file (or FILE) as the scheduler programs and the health check do,
// so that a typo is found by the admin who made it and not by the next
// job's Prolog, which would drain the node. Like those programs it refuses
// a file someone other than root could have written. The caller's
// CANHAZGPU_* variables are not applied: the programs run with the
// scheduler's environment, not this shell's.
func runCheckConfig(env *Env, args []string) error {
	if len(args) > 1 {
		return usagef("unexpected argument %q: canhazgpu admin --check-config takes at most one FILE", args[1])
	}
	opts := config.Options{System: true, MayOverride: true}
	if env.SystemFile != "" {
		opts.DefaultFile, opts.FileOwner = env.SystemFile, os.Getuid()
	}
	path := cmp.Or(opts.DefaultFile, config.SystemFile)
	if len(args) == 1 {
		path, opts.ConfigFile = args[0], args[0]
	}
	cfg, err := config.Load(opts)
	if err != nil {
		return err
	}
	if cfg.File == "" {
		return writeLine(env.Stdout, "config OK: %s does not exist; the scheduler programs use the built-in defaults (node %s).", path, cfg.Node)
	}
	return writeLine(env.Stdout, "config OK: %s loads as the scheduler programs and the health check read it (node %s).", cfg.File, cfg.Node)
}
