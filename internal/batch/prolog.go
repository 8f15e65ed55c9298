package batch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/localnode"
)

// Placed is what a prolog did for a job that may run.
type Placed struct {
	// GPUs are every GPU the job runs on: in the scheduler's order when it
	// named them, else in index order (CUDA's device 0 is the job's
	// lowest GPU).
	GPUs []jobstate.GPU
	// Held are the UUIDs among GPUs the job holds in the store.
	Held      []string
	TakenOver []allocator.Reservation // stale grants of the same scheduler the grant replaced
	// Conflicts are the GPUs the job runs on without holding them
	// (on_conflict = "warn"), or, with an empty GPU, why its GPUs are
	// unknown.
	Conflicts []jobstate.Conflict
	// Shortage is what on_conflict = "warn" let the job run past.
	Shortage *allocator.ShortageError
	// Unusable is set when the scheduler's account of the job's GPUs could
	// not be used and on_conflict = "warn" let the job run.
	Unusable error
	// StoreDown is the store's error when on_store_error = "allow" let the
	// job run unreserved: a pending reserve marker stands in for it.
	StoreDown error
	// Settled sums up the pending markers of earlier outages this run
	// applied ("" for none).
	Settled string
	// Vacated says what Engine.Vacate ended to free the job's GPUs.
	Vacated []string
	// Devices is the scan the prolog placed the job by.
	Devices []gpu.Device
}

// Name names a GPU for an admin: by the index status shows and the UUID
// the store and vendor tools use ("GPU 3 (GPU-6f2b…)").
func (p Placed) Name(uuid string) string {
	if i := indexOf(p.Devices, uuid); i >= 0 {
		return fmt.Sprintf("GPU %d (%s)", i, uuid)
	}
	return "GPU " + uuid
}

// Reserve runs a job's prolog on this node: it reserves the job's GPUs in
// the store and records them in the job's file. An error means the
// scheduler must not start the job here; a *Refused is a policy set to
// "fail".
//
// One atomic store call in the usual case; two when on_conflict = "warn"
// takes what is free after a conflict (three when canhazgpu chooses the
// GPUs, which then needs a snapshot). Everything, store retries included,
// ends within the policy's deadline.
func (e *Engine) Reserve(ctx context.Context, job Job) (Placed, error) {
	if err := jobstate.CheckJobID(job.ID); err != nil {
		return Placed{}, err
	}
	r := &reservation{Engine: e, job: job,
		requestID: string(e.Policy.Kind) + "-prolog-" + job.ID + "-" + allocator.NewRequestID()}
	// Before anything changes: a state directory others could write stops
	// the prolog with the store untouched.
	if err := jobstate.Prepare(e.Policy.StateDir); err != nil {
		return Placed{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, e.Policy.Deadline)
	defer cancel()
	r.boot, _ = jobstate.BootID(e.BootIDPath) // without it the health check ages the reservation by job state alone
	if job.Unusable != nil {
		return r.unusable(job.Unusable)
	}
	st, err := e.openStore(ctx)
	if err != nil {
		return Placed{}, err
	}
	// Run as root (by the scheduler), the node registers its scan.
	node := localnode.New(e.Config, st, nil)
	defer node.Close()
	devs, err := node.Devices(ctx)
	if err != nil {
		// Without a scan no GPU can be named safely: fail whatever the
		// policies say, so the node is drained until its GPUs work.
		return Placed{}, err
	}
	r.node, r.devs = node, devs
	if job.Slots != nil {
		slots, err := job.Slots(devs)
		if err != nil {
			return r.unusable(err)
		}
		r.slots, r.named = slots, true
	}
	p, err := r.reserve(ctx)
	if err != nil || p.StoreDown != nil {
		return p, err
	}
	p.Settled = jobstate.SettleLeftovers(ctx, node.Store, e.Policy.StateDir)
	return p, nil
}

// reservation is one prolog's state between its steps.
type reservation struct {
	*Engine
	job Job
	// requestID names this run's grants. It is fresh for every run: the
	// store keeps a reply per request id for minutes, and a prolog run
	// again for the same job after its epilog must reserve again rather
	// than be told what an earlier run got. A retry stays harmless without
	// it, because the store keeps the GPUs a job already holds. (The job id
	// in it lets a stored reply be traced to its job.)
	requestID string
	node      *localnode.Node
	devs      []gpu.Device
	// slots are the GPUs the job runs on, in the scheduler's order; when
	// the scheduler names none (named false) the engine fills them.
	slots []Slot
	named bool
	boot  string
}

func (r *reservation) request(step string) allocator.Request {
	return allocator.Request{RequestID: r.requestID + step, Kind: r.Policy.Kind, User: r.job.User,
		UID: r.job.UID, JobID: r.job.ID, Restart: r.job.Restart, BootID: r.boot}
}

func (r *reservation) reserve(ctx context.Context) (Placed, error) {
	req := r.request("")
	switch {
	case !r.named:
		req.Count = r.job.Count
	case r.Policy.Placement == PlaceByCount:
		req.Count, req.Prefer = len(r.slots), slotUUIDs(r.slots)
	default:
		req.GPUs = slotUUIDs(r.slots)
	}
	grant, err := r.node.Allocate(ctx, req, r.devs)
	var short *allocator.ShortageError
	var vacated []string
	if errors.As(err, &short) && r.Vacate != nil {
		var taken []allocator.Reservation
		for _, c := range short.Conflicts {
			if c.Holder != nil {
				taken = append(taken, *c.Holder)
			}
		}
		if vacated = r.Vacate(ctx, r.node.Store, taken); len(vacated) > 0 {
			req.RequestID = r.requestID + "-vacated"
			grant, err = r.node.Allocate(ctx, req, r.devs)
		}
	}
	switch {
	case err == nil:
		if !r.named {
			r.slots = r.slotsOf(grant.GPUs)
		}
		p, err := r.granted(ctx, grant, nil)
		p.Vacated = vacated
		return p, err
	case errors.As(err, &short):
		p, err := r.conflict(ctx, short)
		p.Vacated = vacated
		return p, err
	case Unreachable(err):
		return r.storeDown(err)
	default:
		return Placed{}, err
	}
}

// granted records a grant and says what happened. conflicts are the GPUs
// the job runs on without holding them (warn).
func (r *reservation) granted(ctx context.Context, g allocator.Grant, conflicts []jobstate.Conflict) (Placed, error) {
	gpus := r.place(g.GPUs)
	if err := r.record(gpus, conflicts, false); err != nil {
		return Placed{}, r.undo(ctx, err)
	}
	p := Placed{GPUs: gpus, TakenOver: g.TakenOver, Conflicts: conflicts, Devices: r.devs}
	for _, x := range gpus {
		if slices.Contains(g.GPUs, x.UUID) {
			p.Held = append(p.Held, x.UUID)
		}
	}
	return p, nil
}

// place lays the granted GPUs onto the slots: a GPU the scheduler chose
// keeps its slot, the others fill the remaining slots in grant order and
// are marked moved. Slots left over (a partial grant under warn) keep the
// scheduler's choice. Without the scheduler's choice the slots are in
// index order.
func (r *reservation) place(granted []string) []jobstate.GPU {
	out := make([]jobstate.GPU, len(r.slots))
	used := make(map[string]bool, len(granted))
	var open []int
	for i, s := range r.slots {
		out[i] = jobstate.GPU{UUID: s.Device.UUID, Index: s.Device.Index, SchedIndex: s.SchedIndex}
		if slices.Contains(granted, s.Device.UUID) {
			used[s.Device.UUID] = true
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
		out[i].UUID, out[i].Index, out[i].Moved = uuid, indexOf(r.devs, uuid), true
	}
	if !r.named {
		// A GPU the scan lacks (it vanished since the grant) has index -1
		// and goes last.
		slices.SortStableFunc(out, func(x, y jobstate.GPU) int {
			return cmp.Or(cmp.Compare(rank(x.Index < 0), rank(y.Index < 0)), cmp.Compare(x.Index, y.Index))
		})
	}
	return out
}

// slotsOf makes slots of GPUs canhazgpu chose: the scheduler names no
// index for them.
func (r *reservation) slotsOf(uuids []string) []Slot {
	out := make([]Slot, len(uuids))
	for i, u := range uuids {
		out[i] = Slot{Device: gpu.Device{UUID: u, Index: -1}, SchedIndex: -1}
		if j := slices.IndexFunc(r.devs, func(d gpu.Device) bool { return d.UUID == u }); j >= 0 {
			out[i].Device = r.devs[j]
		}
	}
	return out
}

// conflict handles GPUs that are held by others or in unreserved use.
func (r *reservation) conflict(ctx context.Context, short *allocator.ShortageError) (Placed, error) {
	names := Placed{Devices: r.devs}
	what := describeShortage(names, short)
	if r.Policy.OnConflict == Fail {
		return Placed{}, &Refused{Setting: "on_conflict", What: what, Cause: short}
	}
	// warn: the job runs on its GPUs anyway; hold what is free so that
	// nobody else takes it, and record the rest for the health check.
	reason := map[string]string{}
	for _, c := range short.Conflicts {
		reason[c.GPU] = ConflictReason(c.Holder)
	}
	if !r.named {
		if err := r.choose(ctx, reason); err != nil {
			if Unreachable(err) {
				return r.storeDown(err)
			}
			return Placed{}, err
		}
	}
	req := r.request("-partial")
	if r.named && r.Policy.Placement == PlaceByCount {
		req.Count, req.Prefer = short.Available, slotUUIDs(r.slots)
	} else {
		for _, s := range r.slots {
			if _, taken := reason[s.Device.UUID]; !taken {
				req.GPUs = append(req.GPUs, s.Device.UUID)
			}
		}
	}
	var grant allocator.Grant
	if req.Count > 0 || len(req.GPUs) > 0 {
		var err error
		grant, err = r.node.Allocate(ctx, req, r.devs)
		switch {
		case Unreachable(err):
			return r.storeDown(err)
		case err != nil:
			grant = allocator.Grant{} // taken meanwhile: the job holds nothing
		}
	}
	var conflicts []jobstate.Conflict
	for _, g := range r.place(grant.GPUs) {
		if !slices.Contains(grant.GPUs, g.UUID) {
			why := reason[g.UUID]
			if why == "" {
				why = "not granted: " + what
			}
			conflicts = append(conflicts, jobstate.Conflict{GPU: g.UUID, Reason: why})
		}
	}
	p, err := r.granted(ctx, grant, conflicts)
	p.Shortage = short
	return p, err
}

// choose picks the GPUs of a job whose scheduler names none, when not
// all of them are free: the free ones (and those the job already holds)
// first, then taken ones, whose reasons it adds. One snapshot.
func (r *reservation) choose(ctx context.Context, reason map[string]string) error {
	_, gpus, err := r.node.Classify(ctx)
	if err != nil {
		return err
	}
	var free, taken []usage.GPU
	for _, g := range gpus {
		mine := g.Reservation != nil && g.Reservation.Kind == r.Policy.Kind && g.Reservation.JobID == r.job.ID
		if g.State == usage.Available || mine {
			free = append(free, g)
		} else {
			taken = append(taken, g)
			reason[g.UUID] = ConflictReason(g.Reservation)
		}
	}
	pick := slices.Concat(free, taken)[:min(r.job.Count, len(gpus))]
	uuids := make([]string, len(pick))
	for i, g := range pick {
		uuids[i] = g.UUID
	}
	r.slots = r.slotsOf(uuids)
	return nil
}

// describeShortage says which GPUs were not free, for log lines.
func describeShortage(names Placed, short *allocator.ShortageError) string {
	if len(short.Conflicts) == 0 {
		return fmt.Sprintf("%d GPUs wanted, %d free (%d in use without reservation)",
			short.Requested, short.Available, short.Unreserved)
	}
	parts := make([]string, len(short.Conflicts))
	for i, c := range short.Conflicts {
		parts[i] = names.Name(c.GPU) + " " + ConflictReason(c.Holder)
	}
	return strings.Join(parts, ", ")
}

// ConflictReason says why a GPU was not free for a job: held by someone
// (holder), or in use without a reservation (nil).
func ConflictReason(holder *allocator.Reservation) string {
	if holder == nil {
		return "in use without reservation"
	}
	who := fmt.Sprintf("reserved by %s (%s", holder.User, holder.Kind)
	if holder.JobID != "" {
		who += " job " + holder.JobID
	}
	if !holder.StartedAt.IsZero() {
		who += " since " + holder.StartedAt.UTC().Format("2006-01-02T15:04:05Z")
	}
	return who + ")"
}

// unusable handles a scheduler account of the job's GPUs that cannot be
// turned into GPUs: a conflict, because the job's GPUs cannot be known.
func (r *reservation) unusable(cause error) (Placed, error) {
	if r.Policy.OnConflict == Fail {
		return Placed{}, &Refused{Setting: "on_conflict", What: cause.Error(), Cause: cause}
	}
	conflicts := []jobstate.Conflict{{Reason: cause.Error()}}
	if err := r.record(nil, conflicts, false); err != nil {
		return Placed{}, err
	}
	return Placed{Conflicts: conflicts, Unusable: cause}, nil
}

// storeDown handles a store that did not answer within the deadline. With
// on_store_error = "allow" the job runs on the scheduler's GPUs, or, when
// it names none, on GPUs chosen from the scan alone (idle ones first), and
// a pending marker asks for the reservation once the store is back.
func (r *reservation) storeDown(cause error) (Placed, error) {
	if r.Policy.OnStoreError == Fail {
		return Placed{}, &Refused{Setting: "on_store_error", What: cause.Error(), Cause: cause}
	}
	if !r.named {
		busy := usage.Busy(r.devs, r.Config.GPU.MemoryThresholdMB)
		order := slices.Clone(r.devs)
		slices.SortStableFunc(order, func(x, y gpu.Device) int {
			return rank(slices.Contains(busy, x.UUID)) - rank(slices.Contains(busy, y.UUID))
		})
		var pick []string
		for _, d := range order[:min(r.job.Count, len(order))] {
			pick = append(pick, d.UUID)
		}
		r.slots = r.slotsOf(pick)
	}
	gpus := r.place(nil)
	m := jobstate.Marker{Op: jobstate.OpReserve, Kind: r.Policy.Kind, JobID: r.job.ID, User: r.job.User,
		UID: r.job.UID, GPUs: slotUUIDs(r.slots), Restart: r.job.Restart, BootID: r.boot, At: r.now()}
	if err := jobstate.WriteMarker(r.Policy.StateDir, m); err != nil {
		return Placed{}, fmt.Errorf("%w (store unreachable: %v)", err, cause)
	}
	if err := r.record(gpus, nil, true); err != nil {
		return Placed{}, err
	}
	return Placed{GPUs: gpus, StoreDown: cause, Devices: r.devs}, nil
}

// record writes the job file and hands the GPUs to the job.
func (r *reservation) record(gpus []jobstate.GPU, conflicts []jobstate.Conflict, pending bool) error {
	f := jobstate.JobFile{User: r.job.User, UID: r.job.UID, Restart: r.job.Restart, GPUs: gpus,
		Conflicts: conflicts, Pending: pending, BootID: r.boot, At: r.now()}
	if err := jobstate.WriteJob(r.Policy.StateDir, r.Policy.Kind, r.job.ID, f); err != nil {
		return err
	}
	if r.job.Export != nil {
		return r.job.Export(gpus)
	}
	return nil
}

// undo gives back what the job holds when the prolog cannot finish after
// its grant, so a failed start leaves nothing behind, and returns cause
// with what could not be undone (a reservation left behind is settled by
// the health check once the job is gone).
func (r *reservation) undo(ctx context.Context, cause error) error {
	_, err := r.node.Store.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
		Kinds: []allocator.Kind{r.Policy.Kind}, JobID: r.job.ID})
	if err != nil {
		cause = fmt.Errorf("%w; its GPUs could not be given back: %v", cause, err)
	}
	if err := jobstate.RemoveJob(r.Policy.StateDir, r.Policy.Kind, r.job.ID); err != nil {
		cause = fmt.Errorf("%w; %v", cause, err)
	}
	return cause
}

func slotUUIDs(slots []Slot) []string {
	out := make([]string, len(slots))
	for i, s := range slots {
		out[i] = s.Device.UUID
	}
	return out
}

// indexOf is a GPU's index in the scan, or -1 when the scan lacks it.
func indexOf(devs []gpu.Device, uuid string) int {
	if id, ok := gpu.SetOf(devs).ByUUID(uuid); ok {
		return id.Index
	}
	return -1
}

func rank(b bool) int {
	if b {
		return 1
	}
	return 0
}
