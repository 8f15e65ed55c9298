// Package batch is the scheduler-neutral side of the scheduler programs:
// what a batch job's prolog and epilog do in the store and on the node,
// whatever scheduler runs them. It owns placement (which GPUs a job gets),
// the on_conflict and on_store_error policies, the pending markers and job
// files (through jobstate), the undo of a prolog that cannot finish, and
// the rules that find a batch job's reservation stale.
//
// A scheduler is an adapter around it (internal/slurm, internal/pbs): it
// turns its environment or arguments into a Job, says how its settings map
// onto a Policy, hands the job's GPUs to the job the scheduler's way, and
// answers "does this job still run here?". The adapters are listed once,
// in internal/schedulers.
package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
)

// The values of the policy settings the engine branches on; the config
// package checks that every value is one it accepts.
const (
	// PlaceByCount (placement = "canhazgpu"): the store picks the job's
	// GPUs, the scheduler's choice preferred.
	PlaceByCount = "canhazgpu"
	// Fail is the on_conflict and on_store_error value that stops the job.
	Fail = "fail"
)

// Policy is one scheduler's settings, as its adapter reads them from the
// config.
type Policy struct {
	Kind allocator.Kind // the scheduler's reservations: "slurm", "pbs"
	// StateDir holds the job files and pending markers.
	StateDir string
	// OnConflict: "fail" stops a job whose GPUs are not all free; "warn"
	// runs it, holding the free ones and recording the rest.
	OnConflict string
	// OnStoreError: "fail" stops a job when the store does not answer;
	// "allow" runs it and leaves a pending marker.
	OnStoreError string
	// Placement applies when the scheduler names the job's GPUs:
	// PlaceByCount lets the store choose; anything else reserves exactly
	// the scheduler's GPUs.
	Placement string
	// Deadline bounds one prolog or epilog, store retries included.
	Deadline time.Duration
}

// Slot is one GPU the scheduler chose for a job, in the scheduler's order.
type Slot struct {
	Device     gpu.Device
	SchedIndex int // the scheduler's own index of the GPU
}

// Job is one batch job on this node as its scheduler describes it.
type Job struct {
	ID      string
	User    string
	UID     int // -1 when unknown
	Restart int // grows with every requeue or rerun
	// Count is the number of GPUs the job has on this node. A scheduler
	// that names the GPUs gives Slots instead.
	Count int
	// Slots resolves the GPUs the scheduler chose among the scanned ones;
	// nil when the scheduler names none (canhazgpu chooses).
	Slots func(devs []gpu.Device) ([]Slot, error)
	// Unusable, when set, is why the scheduler's account of the job's
	// GPUs cannot be used: a conflict, since its GPUs cannot be known.
	Unusable error
	// Export hands the job's GPUs to the job the scheduler's way (an
	// environment file, say) while the store is still open: when it fails
	// the grant is undone. nil: the scheduler reads the job file.
	Export func(gpus []jobstate.GPU) error
	// Withdraw takes the GPUs back from the job the scheduler's way (it
	// removes an environment file, say). The epilog runs it once the
	// state directory is found safe and before the store is asked: the job
	// is over whatever the store says. nil: nothing to withdraw.
	Withdraw func() error
}

// Engine runs the prolog and epilog of one scheduler's jobs.
type Engine struct {
	Config *config.Config
	Policy Policy
	// OpenStore opens the store; nil: localnode.OpenStore. The prolog
	// scans the GPUs through the configured provider, the epilog never.
	OpenStore func(ctx context.Context, cfg *config.Config) (*store.Store, error)
	// BootIDPath is read for the node's boot id; "": the kernel's.
	BootIDPath string
	// Now stamps the state files; nil: time.Now.
	Now func() time.Time
	// Vacate, when set, is shown the reservations holding GPUs a job
	// found taken, before on_conflict applies. It ends those its scheduler
	// knows to be over (an interactive hold whose Slurm placeholder job no
	// longer runs: Slurm gave its GPUs to this job because of that) and
	// says what it did, a line each; when it ended any, the grant is asked
	// for once more.
	Vacate func(ctx context.Context, st *store.Store, taken []allocator.Reservation) []string
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) openStore(ctx context.Context) (*store.Store, error) {
	if e.OpenStore != nil {
		return e.OpenStore(ctx, e.Config)
	}
	return localnode.OpenStore(ctx, e.Config)
}

// Unreachable reports whether err means the store did not answer in time:
// the case on_store_error decides. It is the one classification of store
// errors for every scheduler.
func Unreachable(err error) bool {
	return errors.Is(err, allocator.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// Refused is a job stopped by a policy set to "fail".
type Refused struct {
	Setting string // "on_conflict" or "on_store_error"
	// What says why for people, GPUs named by index and UUID.
	What  string
	Cause error // *allocator.ShortageError, the unusable reason, or the store's error
}

func (r *Refused) Error() string {
	return fmt.Sprintf("%s; %s=fail", r.What, r.Setting)
}

func (r *Refused) Unwrap() error { return r.Cause }
