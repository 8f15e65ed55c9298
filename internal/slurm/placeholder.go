package slurm

import (
	"context"
	"fmt"
	"strings"

	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/localnode"
)

// placeholder decides whether a job whose comment names an interactive
// hold (SLURM_JOB_COMMENT, token) is that hold's placeholder: every GPU
// Slurm gave it is held in the store, interactively, by the job's uid
// under that token. Then the Prolog reserves nothing, writes no job file
// and exports nothing: the GPUs are already the user's. Anything else
// (a doubtful answer included, or a node with interactive_holds off) is an
// ordinary batch job: ok is false.
func (h *Hook) placeholder(ctx context.Context, job Job, token int64) (line string, ok bool) {
	if h.Config.Slurm.Holds.Mode != "placeholder" || job.UID < 0 || len(job.GPUs) == 0 {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, h.Config.Slurm.Deadline)
	defer cancel()
	open := h.OpenStore
	if open == nil {
		open = localnode.OpenStore
	}
	st, err := open(ctx, h.Config)
	if err != nil {
		return "", false
	}
	defer st.Close()
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return "", false
	}
	// The store's registration names the GPUs by minor: no scan needed.
	devs := make([]gpu.Device, len(snap.GPUs))
	for i, g := range snap.GPUs {
		devs[i] = gpu.Device{UUID: g.UUID, Index: g.Index, Minor: g.Minor}
	}
	found, err := Resolve(gpu.VendorOf(h.Config.GPU.Provider), h.Config.Slurm.GresDevices, job.GPUs, devs)
	if err != nil {
		return "", false
	}
	var user string
	var names []string
	for _, d := range found {
		r, held := snap.Reservations[d.UUID]
		if !held || r.Kind.Batch() || r.Queued || r.UID != job.UID || r.Token != token || !r.Active(snap.Now) {
			return "", false
		}
		user = r.User
		names = append(names, fmt.Sprintf("GPU %d (%s)", d.Index, d.UUID))
	}
	return fmt.Sprintf("job %s: placeholder of the interactive hold of %s on %s: nothing reserved",
		job.ID, user, strings.Join(names, ", ")), true
}
