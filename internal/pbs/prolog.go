package pbs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
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
	p := &prolog{args: a, cfg: cfg, stdout: stdout, stderr: stderr}
	return p.run(ctx)
}

type prolog struct {
	args   *prologArgs
	cfg    *config.Config
	stdout io.Writer
	stderr io.Writer
	ngpus  int
	boot   string
}

func (p *prolog) run(ctx context.Context) int {
	a := p.args
	// Before anything changes: a state directory others could write stops
	// the prolog with nothing done.
	if err := jobstate.Prepare(p.cfg.PBS.StateDir); err != nil {
		return p.fail(err)
	}
	p.ngpus = a.ngpus
	if p.ngpus < 0 {
		host, _ := os.Hostname() // "" only matches nothing
		n, err := torqueShare(a.torque, []string{p.cfg.Node, host})
		if err != nil {
			return p.fail(err)
		}
		p.ngpus = n
	}
	if p.ngpus == 0 {
		// A rerun may have left the env file of an earlier run here.
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
	boot, err := jobstate.BootID("")
	if err != nil {
		return p.fail(err)
	}
	p.boot = boot

	ctx, cancel := withDeadline(ctx)
	defer cancel()
	node, err := localnode.Open(ctx, p.cfg)
	if err != nil {
		return p.fail(err)
	}
	defer node.Close()
	devs, err := node.Devices(ctx)
	if err != nil {
		return p.fail(err)
	}
	req := allocator.Request{RequestID: requestID(a.job), Kind: allocator.KindPBS,
		User: a.user, UID: a.uid, JobID: a.job, Count: p.ngpus, Restart: max(a.runCount, 0), BootID: boot}
	grant, err := node.Allocate(ctx, req, devs)
	var short *allocator.ShortageError
	switch {
	case err == nil:
		if err := p.record(grant.GPUs, devs, nil, false); err != nil {
			p.undo(ctx, node)
			return p.fail(err)
		}
		logf(p.stderr, "pbs job %s of %s: reserved GPUs %s", a.job, a.user, gpu.SetOf(devs).List(grant.GPUs))
		if more := jobstate.SettleLeftovers(ctx, node.Store, p.cfg.PBS.StateDir); more != "" {
			logf(p.stderr, "%s", more)
		}
		return ExitOK
	case errors.As(err, &short):
		return p.shortage(ctx, node, devs, short)
	case errors.Is(err, allocator.ErrUnavailable):
		return p.storeDown(devs, err)
	default:
		return p.fail(err)
	}
}

// requestID names one grant call. It carries the job id so the store's
// reply keys can be traced to a job, and a fresh random part because a
// replayed reply would be wrong here: once a run of the job has been
// released, a later prolog of the same job (a rerun, or a retry after the
// hook gave up) must reserve again, not be told what an earlier call got.
// Retrying prologs of one run stay idempotent through the store itself,
// which keeps the GPUs a job already holds.
func requestID(job string) string {
	return "pbs-" + job + "-" + allocator.NewRequestID()
}

// shortage handles a node without enough free GPUs for the job.
func (p *prolog) shortage(ctx context.Context, node *localnode.Node, devs []gpu.Device, short *allocator.ShortageError) int {
	a := p.args
	if p.cfg.PBS.OnConflict == "fail" {
		logf(p.stderr, "pbs job %s of %s: %v", a.job, a.user, short)
		return ExitShortage
	}
	// on_conflict = "warn": the job runs anyway, on GPUs chosen here. It
	// holds the free ones; the others are recorded as conflicts for the
	// health check.
	_, gpus, err := node.Classify(ctx)
	if errors.Is(err, allocator.ErrUnavailable) {
		return p.storeDown(devs, err)
	}
	if err != nil {
		return p.fail(err)
	}
	var free, taken []usage.GPU
	for _, g := range gpus {
		mine := g.Reservation != nil && g.Reservation.Kind == allocator.KindPBS && g.Reservation.JobID == a.job
		if g.State == usage.Available || mine {
			free = append(free, g)
		} else {
			taken = append(taken, g)
		}
	}
	pick := slices.Concat(free, taken)[:min(p.ngpus, len(gpus))]
	var hold, run []string
	var conflicts []jobstate.Conflict
	for _, g := range pick {
		run = append(run, g.UUID)
		if slices.ContainsFunc(free, func(f usage.GPU) bool { return f.UUID == g.UUID }) {
			hold = append(hold, g.UUID)
		} else {
			conflicts = append(conflicts, jobstate.Conflict{GPU: g.UUID, Reason: conflictReason(g)})
		}
	}
	if len(hold) > 0 {
		req := allocator.Request{RequestID: requestID(a.job), Kind: allocator.KindPBS, User: a.user,
			UID: a.uid, JobID: a.job, GPUs: hold, Restart: max(a.runCount, 0), BootID: p.boot}
		if _, err := node.Allocate(ctx, req, devs); err != nil {
			// Taken meanwhile: the job runs on all of them unreserved.
			for _, u := range hold {
				conflicts = append(conflicts, jobstate.Conflict{GPU: u, Reason: "taken while the job started"})
			}
		}
	}
	if err := p.record(run, devs, conflicts, false); err != nil {
		p.undo(ctx, node)
		return p.fail(err)
	}
	logf(p.stderr, "warning: pbs job %s of %s runs on GPUs %s without holding all of them (on_conflict = warn): %v",
		a.job, a.user, gpu.SetOf(devs).List(run), short)
	return ExitOK
}

func conflictReason(g usage.GPU) string {
	if g.Reservation != nil {
		return fmt.Sprintf("reserved by %s (%s)", g.Reservation.User, g.Reservation.Kind)
	}
	return "in use without reservation"
}

// storeDown handles an unreachable store. With on_store_error = "allow"
// the job runs on GPUs chosen from the scan alone (idle ones first) and a
// pending marker asks the health check to reserve them once the store is
// back.
func (p *prolog) storeDown(devs []gpu.Device, cause error) int {
	a := p.args
	if p.cfg.PBS.OnStoreError == "fail" {
		logf(p.stderr, "pbs job %s: %v", a.job, cause)
		return ExitStoreDown
	}
	busy := usage.Busy(devs, p.cfg.GPU.MemoryThresholdMB)
	order := slices.Clone(devs)
	slices.SortStableFunc(order, func(x, y gpu.Device) int {
		return boolRank(slices.Contains(busy, x.UUID)) - boolRank(slices.Contains(busy, y.UUID))
	})
	var pick []string
	for _, d := range order[:min(p.ngpus, len(order))] {
		pick = append(pick, d.UUID)
	}
	m := jobstate.Marker{Op: jobstate.OpReserve, Kind: allocator.KindPBS, JobID: a.job, User: a.user, UID: a.uid,
		GPUs: pick, Restart: max(a.runCount, 0), BootID: p.boot, At: time.Now()}
	if err := jobstate.WriteMarker(p.cfg.PBS.StateDir, m); err != nil {
		return p.fail(err)
	}
	if err := p.record(pick, devs, nil, true); err != nil {
		return p.fail(err)
	}
	logf(p.stderr, "warning: pbs job %s of %s runs on GPUs %s unreserved (on_store_error = allow; pending marker written): %v",
		a.job, a.user, gpu.SetOf(devs).List(pick), cause)
	return ExitOK
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// record writes the job file and the env file and prints the environment.
func (p *prolog) record(uuids []string, devs []gpu.Device, conflicts []jobstate.Conflict, pending bool) error {
	a := p.args
	// In index order, so that the runtime's device 0 is the job's lowest
	// GPU; a GPU the scan lacks (it vanished since the grant) goes last.
	held, vanished := gpu.SetOf(devs).Pick(uuids)
	f := jobstate.JobFile{User: a.user, UID: a.uid, Restart: max(a.runCount, 0), Conflicts: conflicts,
		Pending: pending, BootID: p.boot, At: time.Now()}
	for _, id := range held.IDs() {
		f.GPUs = append(f.GPUs, jobstate.GPU{UUID: id.UUID, Index: id.Index, SchedIndex: -1})
	}
	for _, u := range vanished {
		f.GPUs = append(f.GPUs, jobstate.GPU{UUID: u, Index: -1, SchedIndex: -1})
	}
	if err := jobstate.WriteJob(p.cfg.PBS.StateDir, allocator.KindPBS, a.job, f); err != nil {
		return err
	}
	text := envLines(gpu.VendorOf(p.cfg.GPU.Provider), held)
	if a.envFile != "" {
		if err := writeEnvFile(a.envFile, text); err != nil {
			return err
		}
	}
	_, err := io.WriteString(p.stdout, text)
	return err
}

// undo gives back what the job holds when the prolog cannot finish, so a
// failed start leaves nothing behind.
func (p *prolog) undo(ctx context.Context, node *localnode.Node) {
	_, err := node.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
		Kinds: []allocator.Kind{allocator.KindPBS}, JobID: p.args.job})
	if err != nil {
		logf(p.stderr, "pbs job %s: could not release its GPUs after the failure below: %v", p.args.job, err)
	}
	if err := jobstate.RemoveJob(p.cfg.PBS.StateDir, allocator.KindPBS, p.args.job); err != nil {
		logf(p.stderr, "pbs job %s: %v", p.args.job, err)
	}
}

func (p *prolog) fail(err error) int {
	logf(p.stderr, "error: pbs job %s: %v", p.args.job, err)
	return ExitError
}
