// Package cli implements the canhazgpu command line: one file per command,
// all listed in commands below. Commands return errors and never exit;
// main prints ErrorLine and exits with ExitCode.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"canhazgpu/internal/config"
)

// command is one subcommand. Each file builds its command with a fresh flag
// set bound to its own argument struct, so every Run starts clean.
type command struct {
	name     string
	usage    string // "canhazgpu reserve [--gpus N | ...]"
	short    string // one line, starting with a capitalised verb, no period
	long     string // what it does, in a few sentences
	examples []string
	flags    *pflag.FlagSet
	run      func(ctx context.Context, inv *invocation, args []string) error
}

// commands lists every subcommand in the order --help shows them.
func commands() []*command {
	return []*command{
		statusCommand(),
		runCommand(),
		reserveCommand(),
		releaseCommand(),
		queueCommand(),
		reportCommand(),
		violationsCommand(),
		webCommand(),
		adminCommand(),
		versionCommand(),
	}
}

func findCommand(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames(cmds []*command) string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// invocation is one parsed command line: the environment and the global
// flags given before or after the command name.
type invocation struct {
	env    *Env
	global []*config.Flags // root flags first: later ones win
}

// config loads the settings: flags, then CANHAZGPU_* variables, then the
// files, then the defaults; for a caller that is not root, site policy
// from the system file alone, and the CLI role's store credential. A bad
// setting is a usage error.
func (inv *invocation) config() (*config.Config, error) {
	cfg, err := inv.settings()
	if err != nil {
		return nil, err
	}
	if !inv.env.User.Root() {
		if err := useCLICredential(cfg, inv.env.CLICredential); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// settings loads the settings as config does, with the store credential
// the files give.
func (inv *invocation) settings() (*config.Config, error) {
	overrides := map[string]string{}
	file := ""
	for _, g := range inv.global {
		for k, v := range g.Overrides() {
			overrides[k] = v
		}
		if g.ConfigFile() != "" {
			file = g.ConfigFile()
		}
	}
	opts := config.Options{Env: inv.env.Environ, Home: inv.env.Home, Overrides: overrides, ConfigFile: file,
		MayOverride: inv.env.User.Root(), SystemConfig: inv.env.SystemConfig}
	if inv.env.SystemFile != "" {
		opts.DefaultFile, opts.FileOwner = inv.env.SystemFile, os.Getuid()
	}
	cfg, err := config.Load(opts)
	if err != nil {
		return nil, &usageError{err}
	}
	return cfg, nil
}

// flagSetting is the value a global flag gave the setting key ("node"),
// the last one winning as in config; "" when no flag set it.
func (inv *invocation) flagSetting(key string) string {
	v := ""
	for _, g := range inv.global {
		if s, ok := g.Overrides()[key]; ok {
			v = s
		}
	}
	return v
}

// Run runs the canhazgpu command line args (without the program name).
func Run(ctx context.Context, args []string, env *Env) error {
	cmds := commands()
	root := newFlagSet("canhazgpu")
	root.SetInterspersed(false)
	rootGlobal := config.AddFlags(root)
	version := root.Bool("version", false, "print the version and exit")
	if err := parseFlags(root, args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return writeRootHelp(env.Stdout, cmds, root)
		}
		return flagError("canhazgpu", root, err)
	}
	rest := root.Args()
	if *version {
		rest = []string{"version"}
	}
	if len(rest) == 0 {
		return usagef("no command given: want one of %s (see canhazgpu --help)", commandNames(cmds))
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		return runHelp(env.Stdout, cmds, root, rest)
	}
	cmd := findCommand(cmds, name)
	if cmd == nil {
		return usagef("unknown command %q: want one of %s (see canhazgpu --help)", name, commandNames(cmds))
	}
	inv := &invocation{env: env, global: []*config.Flags{rootGlobal}}
	global := newFlagSet(name)
	inv.global = append(inv.global, config.AddFlags(global))
	cmd.flags.AddFlagSet(global)
	if err := parseFlags(cmd.flags, rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return writeHelp(env.Stdout, cmd, global)
		}
		return flagError("canhazgpu "+name, cmd.flags, err)
	}
	if err := checkGlobalFlags(root, global); err != nil {
		return err
	}
	return cmd.run(ctx, inv, cmd.flags.Args())
}

// noArgs rejects positional arguments for commands that take none.
func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: canhazgpu %s takes no arguments", args[0], cmd)
	}
	return nil
}

func runHelp(w io.Writer, cmds []*command, root *pflag.FlagSet, args []string) error {
	if len(args) == 0 {
		return writeRootHelp(w, cmds, root)
	}
	cmd := findCommand(cmds, args[0])
	if cmd == nil {
		return usagef("unknown command %q: want one of %s", args[0], commandNames(cmds))
	}
	global := newFlagSet(cmd.name)
	config.AddFlags(global)
	return writeHelp(w, cmd, global)
}

func writeRootHelp(w io.Writer, cmds []*command, root *pflag.FlagSet) error {
	var b strings.Builder
	b.WriteString("canhazgpu: share the GPUs of this node through reservations.\n\n")
	b.WriteString("Usage: canhazgpu [global flags] COMMAND [flags]\n\nCommands:\n")
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-*s   %s\n", width, c.name, c.short)
	}
	b.WriteString("\nGlobal flags (also accepted after the command):\n")
	b.WriteString(flagUsages(root, true))
	b.WriteString("\nRun 'canhazgpu COMMAND --help' for a command's flags and examples.\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeHelp(w io.Writer, cmd *command, global *pflag.FlagSet) error {
	own := newFlagSet(cmd.name)
	cmd.flags.VisitAll(func(f *pflag.Flag) {
		if global.Lookup(f.Name) == nil {
			own.AddFlag(f)
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n%s.\n", cmd.usage, cmd.short)
	if cmd.long != "" {
		fmt.Fprintf(&b, "\n%s\n", cmd.long)
	}
	fmt.Fprintf(&b, "\nFlags:\n%s", flagUsages(own, true))
	fmt.Fprintf(&b, "\nGlobal flags:\n%s", flagUsages(global, false))
	if len(cmd.examples) > 0 {
		b.WriteString("\nExamples:\n")
		for _, e := range cmd.examples {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
