// Package slurm is what canhazgpu-prolog and canhazgpu-epilog do under
// Slurm: the Prolog reserves the job's GPUs in the store, the TaskProlog
// tells each task which GPUs to use, the Epilog releases them
// (spec: scheduler.md; admin guide: docs/slurm.md).
//
// Slurm runs these programs with no arguments and an environment built
// from scratch, without PATH: everything they need comes from SLURM_*
// variables and the system config file. They execute nothing, so they can
// leave no child behind, and each writes at most one line (Prolog, Epilog)
// or only "export" lines (TaskProlog) on stdout.
//
// The package is Slurm's adapter to the batch engine (internal/batch),
// which owns placement, the policies, the job files and markers: Hook turns
// SLURM_* variables into a batch.Job and the engine's outcome into
// Slurm's one line. Its environment, config, output and store are
// injected, so tests run it in process against a real Redis; PrologMain
// and EpilogMain are the thin wrappers the binaries call.
package slurm

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/syslogline"
)

// Hook runs one Slurm program with everything it touches injected.
type Hook struct {
	Config *config.Config
	Env    Env
	// OpenStore opens the store; nil: localnode.OpenStore. The Prolog
	// scans the GPUs through the configured provider, the Epilog never.
	OpenStore func(ctx context.Context, cfg *config.Config) (*store.Store, error)
	// BootIDPath is read for the node's boot id; "": the kernel's.
	BootIDPath string
	// Now stamps the state files; nil: time.Now.
	Now func() time.Time
	// SyslogPath is the syslog socket the Prolog's and Epilog's line also
	// goes to; "": the system's (/dev/log), skipped where there is none.
	SyslogPath string
}

// LoadConfig reads the settings as every scheduler program does: the
// system file (or the one CANHAZGPU_CONFIG names) and CANHAZGPU_*
// variables; never a user's file.
func LoadConfig(environ []string) (*config.Config, error) {
	return config.Load(config.Options{System: true, Env: environ, MayOverride: true})
}

// PrologMain is canhazgpu-prolog under Slurm, which runs it as both Prolog
// and TaskProlog: SLURM_SCRIPT_CONTEXT says which. It returns the exit
// status.
func PrologMain(ctx context.Context, environ []string, stdout io.Writer) int {
	env := ParseEnv(environ)
	switch c := env["SLURM_SCRIPT_CONTEXT"]; c {
	case ContextTaskProlog:
		// A failing TaskProlog kills the task, and slurmd parses whatever
		// it prints: whatever goes wrong, print nothing and succeed.
		cfg, err := LoadConfig(environ)
		if err != nil {
			return 0
		}
		(&Hook{Config: cfg, Env: env}).TaskProlog(stdout)
		return 0
	case ContextProlog:
		return runLogged(stdout, "canhazgpu-prolog", environ, func(h *Hook) (string, error) { return h.Prolog(ctx) })
	default:
		return (&Hook{}).report(stdout, "canhazgpu-prolog", "", fmt.Errorf("SLURM_SCRIPT_CONTEXT=%q: want %s (as Prolog=) or %s (as TaskProlog=); the Epilog is canhazgpu-epilog",
			c, ContextProlog, ContextTaskProlog))
	}
}

// EpilogMain is canhazgpu-epilog under Slurm. It returns the exit status.
func EpilogMain(ctx context.Context, environ []string, stdout io.Writer) int {
	env := ParseEnv(environ)
	if c := env["SLURM_SCRIPT_CONTEXT"]; c != ContextEpilog {
		return (&Hook{}).report(stdout, "canhazgpu-epilog", "", fmt.Errorf("SLURM_SCRIPT_CONTEXT=%q: want %s (as Epilog=); the Prolog and TaskProlog are canhazgpu-prolog",
			c, ContextEpilog))
	}
	return runLogged(stdout, "canhazgpu-epilog", environ, func(h *Hook) (string, error) { return h.Epilog(ctx) })
}

// runLogged loads the settings, runs one program and reports its one line.
func runLogged(stdout io.Writer, program string, environ []string, run func(*Hook) (string, error)) int {
	cfg, err := LoadConfig(environ)
	h := &Hook{Config: cfg, Env: ParseEnv(environ)}
	if err != nil {
		return h.report(stdout, program, "", err)
	}
	line, err := run(h)
	return h.report(stdout, program, line, err)
}

// report prints the program's one line for slurmd and sends the same line
// to syslog: slurmd logs a Prolog's output only at debug levels when it
// succeeds, so without syslog the GPUs a job got (or had moved) show
// nowhere. It returns the exit status: 1 on err.
func (h *Hook) report(stdout io.Writer, program, line string, err error) int {
	sys := syslogline.Open(h.SyslogPath, program)
	defer sys.Close()
	if err != nil {
		printLine(stdout, program, err.Error())
		sys.Warning(err.Error())
		return 1
	}
	if line != "" {
		printLine(stdout, program, line)
		sys.Info(line)
	}
	return 0
}

// printLine writes the program's one line: slurmd logs it, and people grep
// for it, so it never spans lines.
func printLine(w io.Writer, program, msg string) {
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintf(w, "%s: %s\n", program, msg)
}
