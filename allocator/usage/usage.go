// Package usage joins what the store says (reservations) with what the
// GPUs say (memory and processes) into one state per GPU: available,
// in use under a reservation, or in use without one.
package usage

import (
	"slices"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

// State of one GPU as users see it.
type State string

// The states. A GPU without a reservation whose memory use reached the
// threshold is Unreserved: taking it would collide with its users.
const (
	Available  State = "available"
	InUse      State = "in_use"
	Unreserved State = "unreserved"
)

// GPU is the joined view of one GPU.
type GPU struct {
	allocator.GPU
	State       State
	Reservation *allocator.Reservation // nil when not reserved
	// Seen is false when the provider did not report this registered GPU
	// (fallen off the bus, or the provider file lost it).
	Seen         bool
	MemoryUsedMB int64
	// Utilization is the GPU's own figure; unknown when the driver does
	// not say or the GPU was not seen.
	Utilization gpu.Utilization
	Processes   []gpu.Process // by PID
	// Users of the processes, each once, in the order of their lowest PID.
	Users []string
	// Foreign lists processes on a reserved GPU run by someone other than
	// the reservation's owner.
	Foreign []gpu.Process
	// MIG are the GPU's MIG devices; their processes are in Processes,
	// since the whole GPU is what a reservation holds.
	MIG []gpu.MIGDevice
	// Busy: memory use reached the threshold.
	Busy  bool
	Model string
	// FreeSince is when an available GPU was last released (zero: never).
	FreeSince time.Time
}

// Classify joins a node's snapshot with the devices the provider sees.
// Registered GPUs come out in index order.
func Classify(snap *allocator.Snapshot, devices []gpu.Device, thresholdMB int64) []GPU {
	byUUID := make(map[string]gpu.Device, len(devices))
	for _, d := range devices {
		byUUID[d.UUID] = d
	}
	out := make([]GPU, 0, len(snap.GPUs))
	for _, g := range snap.GPUs {
		v := GPU{GPU: g}
		if d, ok := byUUID[g.UUID]; ok {
			v.Seen = true
			v.MemoryUsedMB = d.MemoryUsedMB
			v.Utilization = d.Utilization
			v.Processes = slices.Clone(d.Processes)
			slices.SortFunc(v.Processes, func(a, b gpu.Process) int { return a.PID - b.PID })
			v.Busy = d.MemoryUsedMB >= thresholdMB
			v.MIG = d.MIG
		}
		v.Users = UsersByLowestPID(v.Processes)
		v.Model = modelOf(v.Processes)
		if r, ok := snap.Reservations[g.UUID]; ok {
			v.Reservation = &r
			v.State = InUse
			for _, p := range v.Processes {
				if p.User != "" && p.User != r.User {
					v.Foreign = append(v.Foreign, p)
				}
			}
		} else if v.Busy {
			v.State = Unreserved
		} else {
			v.State = Available
			v.FreeSince = snap.LastReleased[g.UUID]
		}
		out = append(out, v)
	}
	return out
}

// Busy lists the UUIDs whose memory use reached the threshold.
func Busy(devices []gpu.Device, thresholdMB int64) []string {
	return BusyFor(devices, thresholdMB, "")
}

// BusyFor lists the busy GPUs that user may not take: the store excludes
// those without a reservation from the grant. A GPU whose every process
// belongs to user stays available to that user, so someone who started
// without a reservation can reserve the GPU they already use and turn
// their use into a proper one.
func BusyFor(devices []gpu.Device, thresholdMB int64, user string) []string {
	var out []string
	for _, d := range devices {
		if d.MemoryUsedMB >= thresholdMB && !onlyUser(d.Processes, user) {
			out = append(out, d.UUID)
		}
	}
	return out
}

func onlyUser(procs []gpu.Process, user string) bool {
	if user == "" || len(procs) == 0 {
		return false
	}
	for _, p := range procs {
		if p.User != user {
			return false
		}
	}
	return true
}

// Registration turns the provider's devices into the GPUs to register.
func Registration(devices []gpu.Device) []allocator.GPU {
	out := make([]allocator.GPU, len(devices))
	for i, d := range devices {
		out[i] = allocator.GPU{UUID: d.UUID, Index: d.Index, Minor: d.Minor, Name: d.Name}
	}
	return out
}

// Registered is the set of a node's registered GPUs, for naming GPUs
// without a scan.
func Registered(gpus []allocator.GPU) gpu.Set {
	ids := make([]gpu.ID, len(gpus))
	for i, g := range gpus {
		ids[i] = gpu.ID{UUID: g.UUID, Index: g.Index}
	}
	return gpu.NewSet(ids...)
}

// NeedsRegistration reports whether the store's GPUs differ from the
// devices, so callers register only when something changed.
func NeedsRegistration(snap *allocator.Snapshot, devices []gpu.Device) bool {
	if len(devices) == 0 {
		return false
	}
	for _, d := range devices {
		g, ok := snap.GPUByUUID(d.UUID)
		if !ok || g.Index != d.Index || g.Minor != d.Minor || g.Name != d.Name {
			return true
		}
	}
	return false
}

// UsersByLowestPID names the owners of procs (sorted by PID), each once,
// in the order of their lowest PID.
func UsersByLowestPID(procs []gpu.Process) []string {
	var users []string
	seen := map[string]bool{}
	for _, p := range procs { // sorted by PID
		if p.User == "" || seen[p.User] {
			continue
		}
		seen[p.User] = true
		users = append(users, p.User)
	}
	return users
}

func modelOf(procs []gpu.Process) string {
	for _, p := range procs {
		if m := GuessModel(p.Cmdline); m != "" {
			return m
		}
	}
	return ""
}
