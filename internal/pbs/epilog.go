package pbs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
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
	// Before anything changes: a state directory others could write stops
	// the epilog with nothing done.
	if err := jobstate.Prepare(cfg.PBS.StateDir); err != nil {
		return fail(err)
	}
	// The job is over whatever the store says: its environment must not
	// outlive it.
	if err := removeEnvFile(a.envFile); err != nil {
		return fail(err)
	}

	ctx, cancel := withDeadline(ctx)
	defer cancel()
	// The epilog needs no GPU scan: the store alone says what the job holds.
	st, err := localnode.OpenStore(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer st.Close()
	rel, err := st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
		Kinds: []allocator.Kind{allocator.KindPBS}, JobID: a.job})
	switch {
	case errors.Is(err, allocator.ErrUnavailable) && cfg.PBS.OnStoreError == "allow":
		m := jobstate.Marker{Op: jobstate.OpRelease, Kind: allocator.KindPBS, JobID: a.job, At: time.Now()}
		if err := jobstate.WriteMarker(cfg.PBS.StateDir, m); err != nil {
			return fail(err)
		}
		if err := jobstate.RemoveJob(cfg.PBS.StateDir, allocator.KindPBS, a.job); err != nil {
			return fail(err)
		}
		logf(stderr, "warning: pbs job %s: release left to the health check (on_store_error = allow; pending marker written): %v", a.job, err)
		return ExitOK
	case errors.Is(err, allocator.ErrUnavailable):
		logf(stderr, "pbs job %s: %v", a.job, err)
		return ExitStoreDown
	case err != nil:
		return fail(err)
	}
	// A reserve marker from a prolog that found the store down stands for
	// this job only: the job is over, so it must never be applied.
	if err := jobstate.RemoveMarker(cfg.PBS.StateDir, allocator.KindPBS, a.job, jobstate.OpReserve); err != nil {
		return fail(err)
	}
	if err := jobstate.RemoveJob(cfg.PBS.StateDir, allocator.KindPBS, a.job); err != nil {
		return fail(err)
	}
	if len(rel.GPUs) == 0 {
		logf(stderr, "pbs job %s held no GPUs on this host", a.job)
	} else {
		logf(stderr, "pbs job %s: released GPUs %s", a.job, strings.Join(rel.GPUs, ","))
	}
	if more := jobstate.SettleLeftovers(ctx, st, cfg.PBS.StateDir); more != "" {
		logf(stderr, "%s", more)
	}
	return ExitOK
}
