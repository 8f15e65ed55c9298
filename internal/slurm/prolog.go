package slurm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
)

// Policy is the [slurm] section as the batch engine follows it.
func Policy(cfg *config.Config) batch.Policy {
	s := cfg.Slurm
	return batch.Policy{Kind: allocator.KindSlurm, StateDir: s.StateDir, OnConflict: s.OnConflict,
		OnStoreError: s.OnStoreError, Placement: s.Placement, Deadline: s.Deadline}
}

func (h *Hook) engine() *batch.Engine {
	return &batch.Engine{Config: h.Config, Policy: Policy(h.Config), OpenStore: h.OpenStore,
		BootIDPath: h.BootIDPath, Now: h.Now, Vacate: h.vacate}
}

// Prolog reserves the job's GPUs on this node through the batch engine:
// the GPUs of SLURM_JOB_GPUS, found by their device files. It returns the
// line to log on success; an error means Slurm must see the Prolog fail
// (the node is drained and a batch job requeued), and its text is the line
// to log.
func (h *Hook) Prolog(ctx context.Context) (string, error) {
	job, jobErr := JobFromEnv(h.Env)
	if job.ID == "" {
		return "no SLURM_JOB_ID: nothing to do", nil
	}
	if err := jobstate.CheckJobID(job.ID); err != nil {
		return "", err
	}
	if jobErr == nil && len(job.GPUs) == 0 {
		return "", nil // no GPUs on this node: nothing to reserve, nothing to say
	}
	if token, ok := ParseHoldComment(h.Env["SLURM_JOB_COMMENT"]); ok && jobErr == nil {
		if line, ok := h.placeholder(ctx, job, token); ok {
			return line, nil
		}
	}
	if limit, ok := ParseNewHoldComment(h.Env["SLURM_JOB_COMMENT"]); ok && jobErr == nil {
		if line, ok := h.newHold(ctx, job, limit); ok {
			return line, nil
		}
	}
	prefix := "job " + job.ID + ": "
	p, err := h.engine().Reserve(ctx, batch.Job{ID: job.ID, User: job.User, UID: job.UID, Restart: job.Restart,
		Unusable: jobErr, Slots: func(devs []gpu.Device) ([]batch.Slot, error) {
			found, err := Resolve(gpu.VendorOf(h.Config.GPU.Provider), h.Config.Slurm.GresDevices, job.GPUs, devs)
			if err != nil {
				return nil, err
			}
			slots := make([]batch.Slot, len(found))
			for i, d := range found {
				slots[i] = batch.Slot{Device: d, SchedIndex: job.GPUs[i]}
			}
			return slots, nil
		}})
	if err != nil {
		return "", failed(prefix, "nothing reserved", err)
	}
	switch {
	case p.Unusable != nil:
		return fmt.Sprintf("%s%v; on_conflict=warn: running without a reservation", prefix, p.Unusable), nil
	case p.StoreDown != nil:
		return fmt.Sprintf("%s%v; on_store_error=allow: running on Slurm's GPUs %s, reservation pending",
			prefix, p.StoreDown, describe(p.GPUs)), nil
	}
	var b strings.Builder
	b.WriteString(prefix)
	var held []jobstate.GPU
	for _, g := range p.GPUs {
		if slices.Contains(p.Held, g.UUID) {
			held = append(held, g)
		}
	}
	fmt.Fprintf(&b, "reserved %s", describe(held))
	for _, r := range p.TakenOver {
		fmt.Fprintf(&b, "; took over %s from stale slurm job %s (%s)", p.Name(r.GPU), r.JobID, r.User)
	}
	if len(p.Conflicts) > 0 {
		parts := make([]string, len(p.Conflicts))
		for i, c := range p.Conflicts {
			parts[i] = p.Name(c.GPU) + " " + c.Reason
		}
		b.WriteString("; on_conflict=warn: running without a reservation on " + strings.Join(parts, ", "))
	}
	if p.Settled != "" {
		b.WriteString("; " + p.Settled)
	}
	for _, v := range p.Vacated {
		b.WriteString("; " + v)
	}
	return b.String(), nil
}

// failed is the one line of a Prolog or Epilog that must fail: a policy
// set to "fail" says what was not done.
func failed(prefix, notDone string, err error) error {
	var refused *batch.Refused
	if errors.As(err, &refused) {
		return fmt.Errorf("%s%w: %s", prefix, refused, notDone)
	}
	return fmt.Errorf("%s%w", prefix, err)
}

// describe lists GPUs for the log line: UUID with NVML and Slurm index.
func describe(gpus []jobstate.GPU) string {
	var parts []string
	for _, g := range gpus {
		moved := ""
		if g.Moved {
			moved = ", moved"
		}
		parts = append(parts, fmt.Sprintf("%s (index %d, slurm %d%s)", g.UUID, g.Index, g.SchedIndex, moved))
	}
	if len(parts) == 0 {
		return "no GPU"
	}
	return strings.Join(parts, " ")
}
