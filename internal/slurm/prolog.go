package slurm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
)

// The [slurm] values the programs branch on; the config package checks
// that every value is one it accepts.
const (
	placementCanhazgpu = "canhazgpu"
	policyFail         = "fail"
)

// Prolog reserves the job's GPUs on this node. It returns the line to log
// on success; an error means Slurm must see the Prolog fail (the node is
// drained and a batch job requeued), and its text is the line to log.
//
// One atomic store call in the usual case; two when on_conflict = "warn"
// takes what is free after a conflict. Everything, store retries included,
// ends within [slurm] deadline.
func (h *Hook) Prolog(ctx context.Context) (string, error) {
	cfg := h.Config.Slurm
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
	p := &prologRun{Hook: h, job: job, prefix: "job " + job.ID + ": ", requestID: "slurm-prolog-" + job.ID + "-" + allocator.NewRequestID()}
	// Before anything changes: a state directory others could write
	// stops the Prolog with the store untouched.
	if err := jobstate.Prepare(cfg.StateDir); err != nil {
		return "", fmt.Errorf("%s%w", p.prefix, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	if jobErr != nil {
		return p.unusable(jobErr)
	}

	node, err := h.openNode(ctx)
	if err != nil {
		return "", fmt.Errorf("%s%w", p.prefix, err)
	}
	defer node.Close()
	devs, err := node.Devices(ctx)
	if err != nil {
		// Without a scan no GPU can be named safely: fail whatever the
		// policies say, so the node is drained until its GPUs work.
		return "", fmt.Errorf("%s%w", p.prefix, err)
	}
	p.node, p.devs = node, devs
	slots, err := Resolve(gpu.VendorOf(p.Config.GPU.Provider), cfg.GresDevices, job.GPUs, devs)
	if err != nil {
		return p.unusable(err)
	}
	p.slots = slots
	p.boot, _ = jobstate.BootID(h.BootIDPath) // without it the health check ages the reservation by job state alone
	line, err := p.reserve(ctx)
	if err != nil || p.storeWasDown {
		return line, err
	}
	if more := jobstate.SettleLeftovers(ctx, node.Store, cfg.StateDir); more != "" {
		line += "; " + more
	}
	return line, nil
}

// prologRun is one Prolog's state between its steps.
type prologRun struct {
	*Hook
	job    Job
	prefix string
	// requestID names this run's grants. It is fresh for every run: the
	// store keeps a reply per request id for minutes, and a Prolog run
	// again for the same job after its Epilog must reserve again rather
	// than be told what an earlier run got. A retry stays harmless without
	// it, because the store keeps the GPUs a job already holds. (The job id
	// in it lets a stored reply be traced to its job.)
	requestID    string
	node         *localnode.Node
	devs         []gpu.Device
	slots        []gpu.Device // the GPUs Slurm chose, in SLURM_JOB_GPUS order
	boot         string
	storeWasDown bool // on_store_error = "allow" let the job run unreserved
}

func (p *prologRun) request(step string) allocator.Request {
	return allocator.Request{RequestID: p.requestID + step, Kind: allocator.KindSlurm, User: p.job.User,
		UID: p.job.UID, JobID: p.job.ID, Restart: p.job.Restart, BootID: p.boot}
}

func (p *prologRun) reserve(ctx context.Context) (string, error) {
	chosen := uuidsOf(p.slots)
	req := p.request("")
	if p.Config.Slurm.Placement == placementCanhazgpu {
		req.Count, req.Prefer = len(chosen), chosen
	} else {
		req.GPUs = chosen
	}
	grant, err := p.node.Allocate(ctx, req, p.devs)
	var short *allocator.ShortageError
	switch {
	case err == nil:
		return p.granted(grant, nil)
	case errors.As(err, &short):
		return p.conflict(ctx, short)
	case unreachable(err):
		return p.storeDown(err)
	default:
		return "", fmt.Errorf("%s%w", p.prefix, err)
	}
}

// granted writes the job file for a grant and says what happened.
// conflicts are the GPUs the job runs on without holding them (warn).
func (p *prologRun) granted(g allocator.Grant, conflicts []jobstate.Conflict) (string, error) {
	gpus := p.place(g.GPUs)
	if err := p.writeJob(gpus, conflicts, false); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(p.prefix)
	var held []jobstate.GPU
	for _, x := range gpus {
		if slices.Contains(g.GPUs, x.UUID) {
			held = append(held, x)
		}
	}
	fmt.Fprintf(&b, "reserved %s", describe(held))
	for _, r := range g.TakenOver {
		fmt.Fprintf(&b, "; took over %s from stale slurm job %s (%s)", p.gpuName(r.GPU), r.JobID, r.User)
	}
	if len(conflicts) > 0 {
		parts := make([]string, len(conflicts))
		for i, c := range conflicts {
			parts[i] = p.gpuName(c.GPU) + " " + c.Reason
		}
		b.WriteString("; on_conflict=warn: running without a reservation on " + strings.Join(parts, ", "))
	}
	return b.String(), nil
}

// place lays the granted GPUs onto Slurm's slots: a GPU Slurm chose keeps
// its slot, the others fill the remaining slots in grant order and are
// marked moved. Slots left over (a partial grant under warn) keep Slurm's
// choice.
func (p *prologRun) place(granted []string) []jobstate.GPU {
	out := make([]jobstate.GPU, len(p.slots))
	used := make(map[string]bool, len(granted))
	var open []int
	for i, d := range p.slots {
		out[i] = jobstate.GPU{UUID: d.UUID, Index: d.Index, SchedIndex: p.job.GPUs[i]}
		if slices.Contains(granted, d.UUID) {
			used[d.UUID] = true
		} else {
			open = append(open, i)
		}
	}
	for _, uuid := range granted {
		if used[uuid] || len(open) == 0 {
			continue
		}
		i := open[0]
		open = open[1:]
		out[i].UUID, out[i].Index, out[i].Moved = uuid, -1, true
		if id, ok := gpu.SetOf(p.devs).ByUUID(uuid); ok {
			out[i].Index = id.Index
		}
	}
	return out
}

// gpuName names a GPU for an admin: by the index status shows and the
// UUID the store and NVML tools use ("GPU 3 (GPU-6f2b…)").
func (p *prologRun) gpuName(uuid string) string {
	if id, ok := gpu.SetOf(p.devs).ByUUID(uuid); ok {
		return fmt.Sprintf("GPU %d (%s)", id.Index, uuid)
	}
	return "GPU " + uuid
}

// conflict handles GPUs that are held by others or in unreserved use.
func (p *prologRun) conflict(ctx context.Context, short *allocator.ShortageError) (string, error) {
	what := p.describeShortage(short)
	if p.Config.Slurm.OnConflict == policyFail {
		return "", fmt.Errorf("%s%s; on_conflict=fail: nothing reserved", p.prefix, what)
	}
	// warn: the job runs on Slurm's GPUs anyway; hold what is free so that
	// nobody else takes it, and record the rest for the health check.
	req := p.request("-partial")
	reason := map[string]string{}
	for _, c := range short.Conflicts {
		reason[c.GPU] = conflictReason(c)
	}
	if p.Config.Slurm.Placement == placementCanhazgpu {
		req.Count, req.Prefer = short.Available, uuidsOf(p.slots)
	} else {
		for _, d := range p.slots {
			if _, taken := reason[d.UUID]; !taken {
				req.GPUs = append(req.GPUs, d.UUID)
			}
		}
	}
	var grant allocator.Grant
	if req.Count > 0 || len(req.GPUs) > 0 {
		var err error
		grant, err = p.node.Allocate(ctx, req, p.devs)
		switch {
		case unreachable(err):
			return p.storeDown(err)
		case err != nil:
			grant = allocator.Grant{} // taken meanwhile: the job holds nothing
		}
	}
	var conflicts []jobstate.Conflict
	for _, g := range p.place(grant.GPUs) {
		if !slices.Contains(grant.GPUs, g.UUID) {
			r := reason[g.UUID]
			if r == "" {
				r = "not granted: " + what
			}
			conflicts = append(conflicts, jobstate.Conflict{GPU: g.UUID, Reason: r})
		}
	}
	return p.granted(grant, conflicts)
}

func (p *prologRun) describeShortage(short *allocator.ShortageError) string {
	if len(short.Conflicts) == 0 {
		return fmt.Sprintf("%d GPUs wanted, %d free (%d in use without reservation)",
			short.Requested, short.Available, short.Unreserved)
	}
	parts := make([]string, len(short.Conflicts))
	for i, c := range short.Conflicts {
		parts[i] = p.gpuName(c.GPU) + " " + conflictReason(c)
	}
	return strings.Join(parts, ", ")
}

func conflictReason(c allocator.Conflict) string {
	if c.Holder == nil {
		return "in use without reservation"
	}
	r := c.Holder
	who := fmt.Sprintf("reserved by %s (%s", r.User, r.Kind)
	if r.JobID != "" {
		who += " job " + r.JobID
	}
	return who + " since " + r.StartedAt.UTC().Format("2006-01-02T15:04:05Z") + ")"
}

// unusable handles a SLURM_JOB_GPUS that cannot be turned into GPUs: a
// conflict, because the job's GPUs cannot be known.
func (p *prologRun) unusable(cause error) (string, error) {
	if p.Config.Slurm.OnConflict == policyFail {
		return "", fmt.Errorf("%s%w; on_conflict=fail: nothing reserved", p.prefix, cause)
	}
	conflicts := []jobstate.Conflict{{Reason: cause.Error()}}
	if err := p.writeJob(nil, conflicts, false); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%v; on_conflict=warn: running without a reservation", p.prefix, cause), nil
}

// storeDown handles a store that did not answer within the deadline.
func (p *prologRun) storeDown(cause error) (string, error) {
	if p.Config.Slurm.OnStoreError == policyFail {
		return "", fmt.Errorf("%s%w; on_store_error=fail: nothing reserved", p.prefix, cause)
	}
	gpus := p.place(nil)
	m := jobstate.Marker{Op: jobstate.OpReserve, Kind: allocator.KindSlurm, JobID: p.job.ID, User: p.job.User,
		UID: p.job.UID, GPUs: uuidsOf(p.slots), Restart: p.job.Restart, BootID: p.boot, At: p.now()}
	if err := jobstate.WriteMarker(p.Config.Slurm.StateDir, m); err != nil {
		return "", fmt.Errorf("%s%w (store unreachable: %v)", p.prefix, err, cause)
	}
	if err := p.writeJob(gpus, nil, true); err != nil {
		return "", err
	}
	p.storeWasDown = true
	return fmt.Sprintf("%s%v; on_store_error=allow: running on Slurm's GPUs %s, reservation pending",
		p.prefix, cause, describe(gpus)), nil
}

func (p *prologRun) writeJob(gpus []jobstate.GPU, conflicts []jobstate.Conflict, pending bool) error {
	f := jobstate.JobFile{User: p.job.User, UID: p.job.UID, Restart: p.job.Restart, GPUs: gpus,
		Conflicts: conflicts, Pending: pending, BootID: p.boot, At: p.now()}
	if err := jobstate.WriteJob(p.Config.Slurm.StateDir, allocator.KindSlurm, p.job.ID, f); err != nil {
		return fmt.Errorf("%s%w", p.prefix, err)
	}
	return nil
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

func uuidsOf(devs []gpu.Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.UUID
	}
	return out
}
