package health

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
	"canhazgpu/internal/schedulers"
)

// Deps is everything one run uses. Config, Store and GPUs are required.
type Deps struct {
	Config *config.Config
	Store  *store.Store
	GPUs   gpu.Provider
	// SlurmNode is Slurm's name of this node (SLURMD_NODENAME; default
	// Config.Node): the NodeName of scontrol updates and the prefix of
	// slurmd's step sockets.
	SlurmNode string
	// Env is scontrol's environment; Slurm's SLURM_CONF passes through it.
	Env []string
	// BootID is this boot's id; a batch grant from another boot is stale.
	// "": not compared.
	BootID string
	// Schedulers are the adapters whose jobs the check settles; nil:
	// schedulers.All. Their state dirs hold the job files and pending
	// markers; each dir is settled once.
	Schedulers []batch.Scheduler
	// NHC: NHC marks the node and asks Slurm about batch jobs, so the
	// check does neither; it still settles placeholder jobs, which marks
	// nothing.
	NHC bool
	// SyslogPath is the syslog socket the check's findings and changes
	// also go to; "": the system's (/dev/log), skipped where there is none.
	SyslogPath string
	Now        func() time.Time // default time.Now
	// Processes identifies and stops the processes of violations (the
	// kill action); nil: /proc. Notify writes a line to a user's
	// terminals (the notify action, and idle warnings to owners); nil:
	// the sessions of [violations] utmp_file.
	Processes Processes
	Notify    func(user, message string) (int, error)
}

type check struct {
	deps *Deps
	cfg  *config.Config
	// watches judge each scheduler's jobs this run (see watch)
	watches map[allocator.Kind]batch.JobWatch
	// blind: what the run could not see (a scheduler's signs on this node,
	// a job's state in its scheduler). The check still finds violations and acts, but its
	// status is "error": stale jobs may keep GPUs nobody uses.
	blind []string
}

// Run checks the node once within [health] timeout. Problems reaching the
// GPUs or the store make the report's status "error"; violations make it
// "violations". Settling and actions happen only when the check itself
// succeeded, and an action that fails is reported, not fatal.
func Run(ctx context.Context, deps *Deps) *Report {
	d := *deps
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.SlurmNode == "" {
		d.SlurmNode = d.Config.Node
	}
	if d.Schedulers == nil {
		d.Schedulers = schedulers.All
	}
	c := &check{deps: &d, cfg: d.Config}
	rep := &Report{Node: c.cfg.Node, Started: d.Now(), GPUs: []GPUState{}, Violations: []Violation{},
		Settled: []Settled{}, Warned: []WarnedUse{}, Idle: []IdleFinding{}, Actions: []Action{}}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Health.Timeout)
	defer cancel()
	if err := c.run(ctx, rep); err != nil {
		rep.Status, rep.Error = StatusError, err.Error()
	}
	c.logReport(rep)
	rep.Duration = d.Now().Sub(rep.Started).Seconds()
	return rep
}

func (c *check) run(ctx context.Context, rep *Report) error {
	// Registering is root's: run by anyone else, the check only reads.
	node := localnode.New(c.cfg, c.deps.Store, c.deps.GPUs)
	// Utilisation is asked for: the idle clock judges by it, and the
	// report and textfile show it. The snapshot restarts the idle clock
	// of the grants in use: no round trip of its own.
	snap, devs, err := node.LookMarkingUse(ctx, func(devs []gpu.Device) []string { return seenIdle(devs, c.cfg) },
		idleStampEvery, gpu.ReadUtilization)
	if err != nil {
		// The store may be down while the GPUs answer: their usage, which
		// needs no store, still goes into the report and the textfile.
		if devs, derr := node.Devices(ctx, gpu.ReadUtilization); derr == nil {
			rep.GPUs = deviceStates(devs, c.cfg.GPU.MemoryThresholdMB)
		}
		return err
	}
	rep.StoreUp = true
	settled, settleErr := c.settle(ctx, snap, devs)
	rep.Settled = append(rep.Settled, settled...)
	if settleErr != nil {
		return settleErr
	}
	if changed(settled) {
		// Settling changed reservations: judge the GPUs by the new state.
		if snap, err = c.deps.Store.Snapshot(ctx); err != nil {
			return err
		}
	}
	gpus := usage.Classify(snap, devs, c.cfg.GPU.MemoryThresholdMB)
	warned, allowed := c.warnedUses(snap)
	rep.Warned = append(rep.Warned, warned...)
	rep.Violations = append(rep.Violations, Find(gpus, c.cfg.Health.ExemptUsers, allowed, c.inJob(devs))...)
	rep.GPUs = gpuStates(gpus, rep.Violations)
	rep.Status = StatusHealthy
	if len(rep.Violations) > 0 {
		rep.Status = StatusViolations
	}
	rep.Actions = append(rep.Actions, c.violators(ctx, rep.Violations, func(marked []Violation) []Action {
		return c.act(ctx, snap.Flags, marked)
	})...)
	idle, acts := c.idle(ctx, gpus, snap.Now)
	rep.Idle = append(rep.Idle, idle...)
	rep.Actions = append(rep.Actions, acts...)
	if len(c.blind) > 0 {
		return errors.New("cannot judge slurm jobs: " + strings.Join(c.blind, "; "))
	}
	return nil
}

// settle applies pending markers first (a Prolog's marker makes its job's
// GPUs reserved), then releases gone jobs, then restores running jobs'
// lost reservations, each step judging the state the one before left (a
// GPU released from a gone job can be restored to the job now on it).
func (c *check) settle(ctx context.Context, snap *allocator.Snapshot, devs []gpu.Device) ([]Settled, error) {
	steps := []struct {
		name string
		run  func(context.Context, *allocator.Snapshot, []gpu.Device) ([]Settled, error)
	}{
		{"settle pending markers", func(ctx context.Context, _ *allocator.Snapshot, _ []gpu.Device) ([]Settled, error) {
			return c.applyMarkers(ctx)
		}},
		{"settle stale jobs", c.releaseStale},
		{"settle placeholder jobs", c.settlePlaceholders},
		{"restore lost batch reservations", c.restoreJobs},
	}
	var out []Settled
	for i, step := range steps {
		s, err := step.run(ctx, snap, devs)
		out = append(out, s...)
		if err != nil {
			return out, fmt.Errorf("%s: %w", step.name, err)
		}
		if changed(s) && i < len(steps)-1 {
			if snap, err = c.deps.Store.Snapshot(ctx); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func (c *check) act(ctx context.Context, flags []allocator.Flag, vs []Violation) []Action {
	action := c.cfg.Health.Action
	if action == ActionNone {
		return nil
	}
	out := c.actStore(ctx, flags, vs)
	if c.deps.NHC || !slurmInstalled(c.cfg.Health.Scontrol) {
		return out
	}
	return append(out, c.actSlurm(ctx, Reason(vs))...)
}

// slurmInstalled: a node without scontrol has no Slurm to tell, which is
// no problem worth a line every run (flag then means store flags only).
func slurmInstalled(scontrol string) bool {
	_, err := os.Stat(scontrol)
	return !errors.Is(err, fs.ErrNotExist)
}

func gpuStates(gpus []usage.GPU, vs []Violation) []GPUState {
	count := map[string]int{}
	for _, v := range vs {
		count[v.UUID]++
	}
	out := make([]GPUState, 0, len(gpus))
	for _, g := range gpus {
		s := GPUState{Index: g.Index, UUID: g.UUID, State: string(g.State), Reserved: g.Reservation != nil,
			Busy: g.Busy, MemoryUsedMB: g.MemoryUsedMB, Utilization: g.Utilization, Processes: len(g.Processes),
			Violations: count[g.UUID]}
		if r := g.Reservation; r != nil {
			s.Owner, s.Kind, s.JobID = r.User, string(r.Kind), r.JobID
		}
		out = append(out, s)
	}
	return out
}

// deviceStates are the GPUs' lines without the store: usage only, no
// state, reservation or violations.
func deviceStates(devs []gpu.Device, thresholdMB int64) []GPUState {
	out := make([]GPUState, 0, len(devs))
	for _, d := range devs {
		out = append(out, GPUState{Index: d.Index, UUID: d.UUID, Busy: d.MemoryUsedMB >= thresholdMB,
			MemoryUsedMB: d.MemoryUsedMB, Utilization: d.Utilization, Processes: len(d.Processes)})
	}
	return out
}

// changed: something was written to the store while settling.
func changed(s []Settled) bool {
	return slices.ContainsFunc(s, func(x Settled) bool { return x.What != "unsettled" && x.What != "unrestored" })
}
