package health

import (
	"fmt"
	"slices"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/jobstate"
)

// WarnedUse is a GPU a batch job runs on without holding it, because the
// scheduler's on_conflict = "warn" ([slurm], [pbs]) let the job start
// anyway: the prolog wrote it into the job's file. The check reports it, but it is no violation:
// the site chose to let the job share the GPU.
type WarnedUse struct {
	JobID   string `json:"job_id"`
	User    string `json:"user"`
	GPU     int    `json:"gpu"`            // -1 when the job's GPUs could not be known
	UUID    string `json:"uuid,omitempty"` // "" when the job's GPUs could not be known
	Message string `json:"message"`
}

// allowedUse says which job may use which GPU without a reservation:
// GPU UUID -> job id -> the job file's owner.
type allowedUse map[string]map[string]jobstate.JobFile

// allows: p runs in a job whose file lets it use this GPU unreserved, as
// the job's user.
func (a allowedUse) allows(uuid string, p gpu.Process) bool {
	f, ok := a[uuid][p.JobID]
	if !ok || p.JobID == "" {
		return false
	}
	return sameUser(p, allocator.Reservation{User: f.User, UID: f.UID})
}

// warnedUses reads the conflicts the prologs recorded in the job files of
// this boot, of every scheduler. Files it cannot read are left out here:
// restoring reports them.
func (c *check) warnedUses(snap *allocator.Snapshot) ([]WarnedUse, allowedUse) {
	var out []WarnedUse
	allowed := allowedUse{}
	for _, sched := range c.deps.Schedulers {
		kind, dir := sched.Kind(), sched.Policy(c.cfg).StateDir
		ids, _ := jobstate.Jobs(dir, kind)
		slices.Sort(ids)
		for _, id := range ids {
			f, err := jobstate.ReadJob(dir, kind, id)
			if err != nil || (c.deps.BootID != "" && f.BootID != "" && f.BootID != c.deps.BootID) {
				continue
			}
			for _, cf := range f.Conflicts {
				w := WarnedUse{JobID: id, User: f.User, GPU: -1, UUID: cf.GPU}
				if cf.GPU == "" {
					w.Message = fmt.Sprintf("%s job %s of %s runs without a reservation (on_conflict=warn): %s", kind, id, f.User, cf.Reason)
					out = append(out, w)
					continue
				}
				if g, ok := snap.GPUByUUID(cf.GPU); ok {
					w.GPU = g.Index
				}
				w.Message = fmt.Sprintf("%s job %s of %s uses %s without a reservation (on_conflict=warn): %s",
					kind, id, f.User, gpuList(snap, []string{cf.GPU}), cf.Reason)
				out = append(out, w)
				if allowed[cf.GPU] == nil {
					allowed[cf.GPU] = map[string]jobstate.JobFile{}
				}
				allowed[cf.GPU][id] = f
			}
		}
	}
	return out, allowed
}
