package slurm

import (
	"context"
	"fmt"
	"strings"

	"canhazgpu/internal/batch"
	"canhazgpu/internal/jobstate"
)

// Epilog releases every reservation of the job on this node through the
// batch engine, whatever SLURM_JOB_GPUS says (it may be absent, or the
// Prolog may have chosen other GPUs), and removes the job's files.
func (h *Hook) Epilog(ctx context.Context) (string, error) {
	job, _ := JobFromEnv(h.Env) // a bad SLURM_JOB_GPUS does not matter: release is by job
	if job.ID == "" {
		return "no SLURM_JOB_ID: nothing to do", nil
	}
	if err := jobstate.CheckJobID(job.ID); err != nil {
		return "", err
	}
	prefix := "job " + job.ID + ": "
	rel, err := h.engine().Release(ctx, batch.Job{ID: job.ID, User: job.User, UID: job.UID, Restart: job.Restart})
	switch {
	case err != nil:
		return "", failed(prefix, "nothing released", err)
	case rel.StoreDown != nil:
		return fmt.Sprintf("%s%v; on_store_error=allow: release pending", prefix, rel.StoreDown), nil
	}
	line := prefix + "released " + strings.Join(rel.GPUs, " ")
	if len(rel.GPUs) == 0 {
		line = prefix + "nothing to release"
	}
	if rel.Settled != "" {
		line += "; " + rel.Settled
	}
	return line, nil
}
