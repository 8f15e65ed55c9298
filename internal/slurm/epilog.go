package slurm

import (
	"context"
	"fmt"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// Epilog releases every reservation of the job on this node, whatever
// SLURM_JOB_GPUS says (it may be absent, or the Prolog may have chosen
// other GPUs), and removes the job's files. Nothing to release is success:
// the Epilog also runs after a failed Prolog and for jobs without GPUs.
// One store call.
func (h *Hook) Epilog(ctx context.Context) (string, error) {
	cfg := h.Config.Slurm
	job, _ := JobFromEnv(h.Env) // a bad SLURM_JOB_GPUS does not matter: release is by job
	if job.ID == "" {
		return "no SLURM_JOB_ID: nothing to do", nil
	}
	if err := jobstate.CheckJobID(job.ID); err != nil {
		return "", err
	}
	prefix := "job " + job.ID + ": "
	// Before anything changes: a state directory others could write
	// stops the Epilog with the store untouched.
	if err := jobstate.Prepare(cfg.StateDir); err != nil {
		return "", fmt.Errorf("%s%w", prefix, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	st, err := h.openStore(ctx)
	if err != nil {
		return "", fmt.Errorf("%s%w", prefix, err)
	}
	defer st.Close()
	// A fresh id: a release is idempotent by nature, and a reused id could
	// replay an older attempt's reply for a job id Slurm handed out again.
	rel, err := st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
		Kinds: []allocator.Kind{allocator.KindSlurm}, JobID: job.ID})
	switch {
	case err == nil:
	case unreachable(err):
		return h.epilogStoreDown(job, prefix, err)
	default:
		return "", fmt.Errorf("%s%w", prefix, err)
	}
	// Everything of the job is released now, so no marker of it is left
	// to apply: neither a reserve the store never saw nor an older release.
	for _, op := range []jobstate.Op{jobstate.OpReserve, jobstate.OpRelease} {
		if err := jobstate.RemoveMarker(cfg.StateDir, allocator.KindSlurm, job.ID, op); err != nil {
			return "", fmt.Errorf("%s%w", prefix, err)
		}
	}
	if err := jobstate.RemoveJob(cfg.StateDir, allocator.KindSlurm, job.ID); err != nil {
		return "", fmt.Errorf("%s%w", prefix, err)
	}
	line := prefix + "released " + strings.Join(rel.GPUs, " ")
	if len(rel.GPUs) == 0 {
		line = prefix + "nothing to release"
	}
	if more := jobstate.SettleLeftovers(ctx, st, cfg.StateDir); more != "" {
		line += "; " + more
	}
	return line, nil
}

func (h *Hook) epilogStoreDown(job Job, prefix string, cause error) (string, error) {
	cfg := h.Config.Slurm
	if cfg.OnStoreError == policyFail {
		return "", fmt.Errorf("%s%w; on_store_error=fail: nothing released", prefix, cause)
	}
	m := jobstate.Marker{Op: jobstate.OpRelease, Kind: allocator.KindSlurm, JobID: job.ID, User: job.User,
		UID: job.UID, Restart: job.Restart, At: h.now()}
	if f, err := jobstate.ReadJob(cfg.StateDir, allocator.KindSlurm, job.ID); err == nil {
		// The attempt the Prolog reserved for, which is what the marker
		// must release: after a requeue the Epilog may already see the
		// next attempt's restart count, whose GPUs settling must not touch.
		m.Restart = f.Restart
		for _, g := range f.GPUs {
			m.GPUs = append(m.GPUs, g.UUID)
		}
	}
	if err := jobstate.WriteMarker(cfg.StateDir, m); err != nil {
		return "", fmt.Errorf("%s%w (store unreachable: %v)", prefix, err, cause)
	}
	if err := jobstate.RemoveJob(cfg.StateDir, allocator.KindSlurm, job.ID); err != nil {
		return "", fmt.Errorf("%s%w", prefix, err)
	}
	return fmt.Sprintf("%s%v; on_store_error=allow: release pending", prefix, cause), nil
}
