package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
	"canhazgpu/internal/termsafe"
	"canhazgpu/internal/version"
)

const helpText = `Usage: canhazgpu-healthcheck [flags]

Check this node's GPUs against the reservations: find GPUs used without a
reservation or by someone other than their owner, record them, settle what
the Slurm and PBS hooks left pending, act on the people behind them per
[violations] actions (notify, exec, kill) and on the node per [health]
action (none, flag, drain).
Exit status: 0 healthy, 1 violations, 2 the node could not be checked.

Flags:
`

// Main runs canhazgpu-healthcheck: args are the arguments after the
// program name, env the process environment (settings, SLURMD_NODENAME,
// and SLURM_CONF for scontrol). It returns the exit status.
func Main(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("canhazgpu-healthcheck", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	nhc := fs.Bool("nhc", false, "print only problems, as NHC lines (ERROR:  canhazgpu:  …), and leave marking the node to NHC")
	asJSON := fs.Bool("json", false, "print the whole report as JSON")
	nhcTimeout := fs.Int("nhc-timeout", 0, "NHC's own time limit for its whole run, in `seconds` (its TIMEOUT): the check takes at most half of it, leaving the rest to NHC's other checks (0: no limit)")
	prom := fs.String("prometheus", "", "also write a node-exporter textfile to `file` (default [health] prometheus_file)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	cfgFlags := config.AddFlags(fs)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fmt.Fprint(stdout, helpText+fs.FlagUsages())
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "Error: %v (see canhazgpu-healthcheck --help)\n", err)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "Error: unexpected argument %q: canhazgpu-healthcheck takes only flags\n", fs.Arg(0))
		return 2
	case *nhc && *asJSON:
		fmt.Fprintln(stderr, "Error: --nhc and --json cannot be used together: choose one output")
		return 2
	case *nhcTimeout < 0:
		fmt.Fprintf(stderr, "Error: --nhc-timeout %d: NHC's timeout is a whole number of seconds, 0 or more\n", *nhcTimeout)
		return 2
	case *nhcTimeout > 0 && !*nhc:
		fmt.Fprintln(stderr, "Error: --nhc-timeout is NHC's time limit: use it with --nhc")
		return 2
	case *showVersion:
		fmt.Fprintln(stdout, "canhazgpu-healthcheck "+version.String())
		return 0
	}

	if *prom != "" {
		if err := checkTextfilePath(*prom); err != nil {
			fmt.Fprintf(stderr, "Error: --prometheus %s\n", termsafe.Escape(err.Error()))
			return 2
		}
	}
	rep, textfile := checkNode(ctx, env, *nhc, time.Duration(*nhcTimeout)*time.Second, *prom, cfgFlags)
	var werr error
	switch {
	case *asJSON:
		werr = WriteJSON(stdout, rep)
	case *nhc:
		werr = WriteNHC(stdout, rep)
	default:
		werr = WriteHuman(stdout, rep)
		switch {
		case rep.Status != StatusError:
		case rep.Node == "": // the settings did not load
			fmt.Fprintf(stderr, "Error: %s\n", termsafe.Escape(rep.Error))
		default:
			fmt.Fprintf(stderr, "Error: could not check node %s: %s\n", rep.Node, termsafe.Escape(rep.Error))
		}
	}
	code := rep.ExitCode()
	if werr != nil {
		fmt.Fprintf(stderr, "Error: write report: %v\n", werr)
		code = max(code, 2)
	}
	if textfile != "" {
		if err := WriteTextfile(textfile, rep); err != nil {
			fmt.Fprintf(stderr, "Error: %s\n", termsafe.Escape(err.Error()))
			if code == 0 { // violations keep their status
				code = 2
			}
		}
	}
	return code
}

// checkNode loads the settings, opens the node and runs one check. It returns
// the report and the textfile to write ("" for none). nhcLimit is NHC's
// limit for its whole run (0: none): the check, store connection included,
// takes at most [health] timeout and at most half of nhcLimit, so that
// NHC's watchdog never fires inside it (NHC would drain the node with
// "Script timed out") and the other checks keep the other half.
// timeLimit is the check's limit: configured, but with NHC's limit for its
// whole run (0: none) at most half of that.
func timeLimit(configured, nhcLimit time.Duration) time.Duration {
	if nhcLimit > 0 {
		return min(configured, nhcLimit/2)
	}
	return configured
}

func checkNode(ctx context.Context, env []string, nhc bool, nhcLimit time.Duration, prom string, flags *config.Flags) (*Report, string) {
	fail := func(node string, err error) *Report {
		return &Report{Node: node, Status: StatusError, Error: err.Error(), GPUs: []GPUState{},
			Violations: []Violation{}, Settled: []Settled{}, Warned: []WarnedUse{}, Actions: []Action{}}
	}
	cfg, err := config.Load(config.Options{Env: env, System: true, ConfigFile: flags.ConfigFile(), Overrides: flags.Overrides(), MayOverride: true})
	if err != nil {
		return fail("", err), prom
	}
	if prom == "" && cfg.Health.PrometheusFile != "" {
		if err := checkTextfilePath(cfg.Health.PrometheusFile); err != nil {
			return fail("", fmt.Errorf("[health] prometheus_file %w", err)), ""
		}
		prom = cfg.Health.PrometheusFile
	}
	cfg.Health.Timeout = timeLimit(cfg.Health.Timeout, nhcLimit)
	ctx, cancel := context.WithTimeout(ctx, cfg.Health.Timeout)
	defer cancel()
	node, err := localnode.Open(ctx, cfg)
	if err != nil {
		return fail(cfg.Node, err), prom
	}
	defer node.Close()
	deps := &Deps{Config: cfg, Store: node.Store, GPUs: node.GPUs(), Env: env, NHC: nhc,
		SlurmNode: lookupEnv(env, "SLURMD_NODENAME")}
	if id, err := jobstate.BootID(""); err == nil {
		deps.BootID = id
	}
	return Run(ctx, deps), prom
}

// lookupEnv finds a variable in an os.Environ-style list; the last wins,
// as in exec.
func lookupEnv(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if val, ok := strings.CutPrefix(kv, name+"="); ok {
			v = val
		}
	}
	return v
}
