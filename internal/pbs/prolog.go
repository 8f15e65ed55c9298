package pbs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
)

// RunProlog is canhazgpu-prolog --pbs; args are the flags after --pbs. It
// returns the exit status (see the package comment).
func RunProlog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Modes{}.Prolog(ctx, args, stdout, stderr)
}

// Prolog is RunProlog with the log lines also sent to m's syslog.
func (m Modes) Prolog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return m.logged("canhazgpu-prolog", stderr, func(stderr io.Writer) int { return runProlog(ctx, args, stdout, stderr) })
}

func runProlog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, err := parseProlog(args)
	if errors.Is(err, pflag.ErrHelp) {
		printUsage(a.fs, stdout)
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "canhazgpu-prolog: %v\n", err)
		return ExitError
	}
	cfg, err := loadConfig(a.cf, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "canhazgpu-prolog: %v\n", err)
		return ExitError
	}
	if a.available {
		return printAvailable(ctx, cfg, stdout, stderr)
	}
	p := &prolog{args: a, cfg: cfg, stdout: stdout, stderr: stderr}
	return p.run(ctx)
}

type prolog struct {
	args   *prologArgs
	cfg    *config.Config
	stdout io.Writer
	stderr io.Writer
}

// Policy is the [pbs] section as the batch engine follows it. PBS never
// names a job's GPUs, so canhazgpu chooses them: placement does not apply.
func Policy(cfg *config.Config) batch.Policy {
	return batch.Policy{Kind: allocator.KindPBS, StateDir: cfg.PBS.StateDir, OnConflict: cfg.PBS.OnConflict,
		OnStoreError: cfg.PBS.OnStoreError, Deadline: deadline}
}

func (p *prolog) run(ctx context.Context) int {
	a := p.args
	ngpus := a.ngpus
	if ngpus < 0 {
		host, _ := os.Hostname() // "" only matches nothing
		n, err := torqueShare(a.torque, []string{p.cfg.Node, host})
		if err != nil {
			return p.fail(err)
		}
		ngpus = n
	}
	if ngpus == 0 {
		// A rerun may have left the env file of an earlier run here; a
		// state directory others could write stops even that.
		if err := jobstate.Prepare(p.cfg.PBS.StateDir); err != nil {
			return p.fail(err)
		}
		if err := removeEnvFile(a.envFile); err != nil {
			return p.fail(err)
		}
		logf(p.stderr, "pbs job %s has no GPUs on this host: nothing to reserve", a.job)
		return ExitOK
	}
	if a.uid < 0 {
		uid, err := lookupUID(a.user)
		if err != nil {
			return p.fail(err)
		}
		a.uid = uid
	}
	e := &batch.Engine{Config: p.cfg, Policy: Policy(p.cfg)}
	placed, err := e.Reserve(ctx, batch.Job{ID: a.job, User: a.user, UID: a.uid, Restart: max(a.runCount, 0),
		Count: ngpus, Export: p.export})
	var refused *batch.Refused
	switch {
	case errors.As(err, &refused) && refused.Setting == "on_conflict":
		logf(p.stderr, "pbs job %s of %s: %v", a.job, a.user, refused.Cause)
		return ExitShortage
	case errors.As(err, &refused):
		logf(p.stderr, "pbs job %s: %v", a.job, refused.Cause)
		return ExitStoreDown
	case err != nil:
		return p.fail(err)
	case placed.StoreDown != nil:
		logf(p.stderr, "warning: pbs job %s of %s runs on GPUs %s unreserved (on_store_error = allow; pending marker written): %v",
			a.job, a.user, indexList(placed.GPUs), placed.StoreDown)
		return ExitOK
	case placed.Shortage != nil:
		logf(p.stderr, "warning: pbs job %s of %s runs on GPUs %s without holding all of them (on_conflict = warn): %v",
			a.job, a.user, indexList(placed.GPUs), placed.Shortage)
	default:
		logf(p.stderr, "pbs job %s of %s: reserved GPUs %s", a.job, a.user, indexList(placed.GPUs))
	}
	if placed.Settled != "" {
		logf(p.stderr, "%s", placed.Settled)
	}
	return ExitOK
}

// export writes the env file and prints the environment: the job's GPUs
// reach its processes this way (the hook or the Torque wrapper reads it).
func (p *prolog) export(gpus []jobstate.GPU) error {
	// A GPU the scan lacks (it vanished since the grant) cannot be used.
	var ids []gpu.ID
	for _, g := range gpus {
		if g.Index >= 0 {
			ids = append(ids, gpu.ID{UUID: g.UUID, Index: g.Index})
		}
	}
	text := envLines(gpu.VendorOf(p.cfg.GPU.Provider), gpu.NewSet(ids...))
	if p.args.envFile != "" {
		if err := writeEnvFile(p.args.envFile, text); err != nil {
			return err
		}
	}
	_, err := io.WriteString(p.stdout, text)
	return err
}

func (p *prolog) fail(err error) int {
	logf(p.stderr, "error: pbs job %s: %v", p.args.job, err)
	return ExitError
}

// indexList is "0,2" for log lines; a GPU the scan lacks is named by UUID.
func indexList(gpus []jobstate.GPU) string {
	parts := make([]string, len(gpus))
	for i, g := range gpus {
		if g.Index < 0 {
			parts[i] = g.UUID
		} else {
			parts[i] = strconv.Itoa(g.Index)
		}
	}
	return strings.Join(parts, ",")
}
