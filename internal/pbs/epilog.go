package pbs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/jobstate"
)

// RunEpilog is canhazgpu-epilog --pbs; args are the flags after --pbs. It
// releases every reservation of the job on this node. Nothing to release
// is success, so the epilogue and the end step may both run it.
func RunEpilog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return Modes{}.Epilog(ctx, args, stdout, stderr)
}

// Epilog is RunEpilog with the log lines also sent to m's syslog.
func (m Modes) Epilog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return m.logged("canhazgpu-epilog", stderr, func(stderr io.Writer) int { return runEpilog(ctx, args, stdout, stderr) })
}

func runEpilog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, err := parseEpilog(args)
	if errors.Is(err, pflag.ErrHelp) {
		printUsage(a.fs, stdout)
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "canhazgpu-epilog: %v\n", err)
		return ExitError
	}
	cfg, err := loadConfig(a.cf, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "canhazgpu-epilog: %v\n", err)
		return ExitError
	}
	fail := func(err error) int {
		logf(stderr, "error: pbs job %s: %v", a.job, err)
		return ExitError
	}
	// The job file knows the GPUs' indices; read it before the release
	// removes it, so that the log line names them as the prolog's did.
	// Without it (a prolog that never ran here) the line names UUIDs.
	held, _ := jobstate.ReadJob(cfg.PBS.StateDir, allocator.KindPBS, a.job)
	e := &batch.Engine{Config: cfg, Policy: Policy(cfg)}
	rel, err := e.Release(ctx, batch.Job{ID: a.job, UID: -1,
		Withdraw: func() error { return removeEnvFile(a.envFile) }})
	var refused *batch.Refused
	switch {
	case errors.As(err, &refused):
		logf(stderr, "pbs job %s: %v", a.job, refused.Cause)
		return ExitStoreDown
	case err != nil:
		return fail(err)
	case rel.StoreDown != nil:
		logf(stderr, "warning: pbs job %s: release left to the health check (on_store_error = allow; pending marker written): %v", a.job, rel.StoreDown)
		return ExitOK
	case len(rel.GPUs) == 0:
		logf(stderr, "pbs job %s held no GPUs on this host", a.job)
	default:
		logf(stderr, "pbs job %s: released GPUs %s", a.job, indexList(named(rel.GPUs, held.GPUs)))
	}
	if rel.Settled != "" {
		logf(stderr, "%s", rel.Settled)
	}
	return ExitOK
}

// named gives each released UUID its index from the job's GPUs; one the
// job file lacks keeps index -1, and indexList names it by UUID.
func named(uuids []string, known []jobstate.GPU) []jobstate.GPU {
	out := make([]jobstate.GPU, len(uuids))
	for i, u := range uuids {
		out[i] = jobstate.GPU{UUID: u, Index: -1}
		for _, g := range known {
			if g.UUID == u {
				out[i].Index = g.Index
			}
		}
	}
	return out
}
