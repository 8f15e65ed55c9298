package health

import (
	"slices"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
)

// Find lists the violations on the classified GPUs, in GPU order. exempt
// names accounts whose processes never count (root, the MPS daemon).
//
// A GPU in unreserved use is a violation unless every process on it is
// exempt; no visible process at all still counts, because the memory is
// really in use (a process in another PID namespace, or one NVML cannot
// name) and handing the GPU out would collide with it. On a reserved GPU
// only processes whose owner is known can be judged: one that vanished
// between the GPU scan and the /proc read must not drain a node. A process
// of a job that on_conflict = "warn" let run on the GPU without holding it
// (allowed) counts no more than an exempt one. inJob says whether a
// process of a batch reservation's user runs inside the reservation's job,
// as the job's scheduler tells (batch.JobWatch.InJob).
func Find(gpus []usage.GPU, exempt []string, allowed allowedUse, inJob func(gpu.Process, allocator.Reservation) bool) []Violation {
	var out []Violation
	for _, g := range gpus {
		if !g.Seen {
			continue
		}
		var counted []gpu.Process
		for _, p := range g.Processes {
			if !isExempt(p, exempt) && !allowed.allows(g.UUID, p) {
				counted = append(counted, p)
			}
		}
		if g.Reservation == nil {
			if g.Busy && (len(counted) > 0 || len(g.Processes) == 0) {
				out = append(out, newViolation(Unreserved, g, counted))
			}
			continue
		}
		var foreign, outside []gpu.Process
		for _, p := range counted {
			switch {
			case !known(p):
			case !sameUser(p, *g.Reservation):
				foreign = append(foreign, p)
			case !inJob(p, *g.Reservation):
				outside = append(outside, p)
			}
		}
		if len(foreign) > 0 {
			out = append(out, newViolation(ForeignUser, g, foreign))
		}
		if len(outside) > 0 {
			out = append(out, newViolation(OutsideJob, g, outside))
		}
	}
	return out
}

func newViolation(kind Kind, g usage.GPU, procs []gpu.Process) Violation {
	v := Violation{Kind: kind, GPU: g.Index, UUID: g.UUID, MemoryUsedMB: g.MemoryUsedMB, Reservation: g.Reservation,
		Processes: make([]Process, 0, len(procs))}
	for _, p := range procs {
		v.Processes = append(v.Processes, reportProcess(p))
		if v.Model == "" {
			v.Model = usage.GuessModel(p.Cmdline)
		}
	}
	v.Message = message(v)
	return v
}

func isExempt(p gpu.Process, exempt []string) bool {
	return p.User != "" && slices.Contains(exempt, p.User)
}

// known: the process's owner could be read.
func known(p gpu.Process) bool { return p.User != "" || p.UID >= 0 }

// sameUser compares by account name; a uid without a name on this node
// ("uid:N") still matches the reservation's uid.
func sameUser(p gpu.Process, r allocator.Reservation) bool {
	if p.User != "" && p.User == r.User {
		return true
	}
	nameless := p.User == "" || strings.HasPrefix(p.User, "uid:")
	return nameless && p.UID >= 0 && p.UID == r.UID
}

// who names a process's owner for messages.
func who(p Process) string {
	switch {
	case p.User != "":
		return p.User
	case p.UID >= 0:
		return "uid " + strconv.Itoa(p.UID)
	default:
		return "an unknown user"
	}
}
