package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/usage"
)

// nodeView is one node as `status` shows it, computed before anything is
// printed: the table and --json render the same values.
type nodeView struct {
	Node  string
	Local bool // the GPUs were scanned here, so real usage is known
	Now   time.Time
	GPUs  []usage.GPU
	Flags []allocator.Flag
}

// viewNode joins a node's store state with the devices scanned on this
// machine; devs is nil for other nodes, whose usage cannot be seen here.
func viewNode(snap *allocator.Snapshot, devs []gpu.Device, local bool, thresholdMB int64) nodeView {
	gpus := usage.Classify(snap, devs, thresholdMB)
	if !local {
		// Another node's usage is known here only from its health check's
		// findings: a free GPU it found in use shows in use without
		// reservation, as on the node itself, not available.
		for i, g := range gpus {
			if g.State == usage.Available && flagged(snap.Flags, g.UUID) {
				gpus[i].State = usage.Unreserved
			}
		}
	}
	return nodeView{Node: snap.Node, Local: local, Now: snap.Now, GPUs: gpus, Flags: snap.Flags}
}

// flagged reports whether the health check has a finding about a GPU.
func flagged(flags []allocator.Flag, uuid string) bool {
	return slices.ContainsFunc(flags, func(f allocator.Flag) bool { return f.GPU == uuid })
}

var statusHeader = []string{"GPU", "STATUS", "USER", "DURATION", "TYPE", "MODEL", "DETAILS", "VALIDATION", "UTIL"}

// statusRows are the table cells, one row per GPU in index order.
func statusRows(v nodeView) [][]string {
	rows := make([][]string, 0, len(v.GPUs))
	for _, g := range v.GPUs {
		row := []string{strconv.Itoa(g.Index), "in use", "", "", "", g.Model, "", validation(v, g), util(v, g)}
		switch {
		case g.Reservation != nil:
			r := g.Reservation
			row[2], row[3], row[4], row[6] = r.User, hms(v.Now.Sub(r.StartedAt)), string(r.Kind), reservationDetails(v, g)
		case g.State == usage.Unreserved:
			row[2], row[6] = strings.Join(g.Users, ","), "WITHOUT RESERVATION"
		default:
			row[1], row[6] = "available", freeDetails(v, g)
		}
		rows = append(rows, row)
		for _, m := range g.MIG {
			rows = append(rows, migRow(g, m))
		}
	}
	return rows
}

// migRow details one MIG device under its GPU's row: whose processes run
// on it. It has no reservation of its own; the GPU's row has it.
func migRow(g usage.GPU, m gpu.MIGDevice) []string {
	var procs []gpu.Process
	for _, p := range g.Processes {
		if slices.Contains(m.PIDs, p.PID) {
			procs = append(procs, p)
		}
	}
	use := "no processes"
	if len(procs) > 0 {
		use = processList(procs)
	}
	if m.MemoryTotalMB >= 0 {
		use = fmt.Sprintf("%dMB of %dMB, %s", m.MemoryUsedMB, m.MemoryTotalMB, use)
	}
	return []string{fmt.Sprintf("%d/mig%d", g.Index, m.Slot), "", strings.Join(usage.UsersByLowestPID(procs), ","), "", "", "",
		"MIG device " + m.UUID, use, ""}
}

// util is the GPU's utilisation as the driver last sampled it, "-" when
// it does not say; empty for another node's GPUs, which are not scanned
// from here.
func util(v nodeView, g usage.GPU) string {
	if !v.Local || !g.Seen {
		return ""
	}
	return g.Utilization.String()
}

func freeDetails(v nodeView, g usage.GPU) string {
	if g.FreeSince.IsZero() {
		return "free, never reserved"
	}
	return "free for " + coarse(v.Now.Sub(g.FreeSince))
}

func reservationDetails(v nodeView, g usage.GPU) string {
	r := g.Reservation
	var d string
	switch {
	case r.Queued:
		d = "held for a waiting request"
	case r.Kind == allocator.KindRun:
		d = "heartbeat " + hms(v.Now.Sub(r.HeartbeatAt)) + " ago"
	case r.Kind.Batch():
		d = "job " + r.JobID
	default:
		d = "expires in " + hms(r.ExpiresAt.Sub(v.Now))
	}
	if !r.Kind.Batch() && r.JobID != "" {
		d += "; slurm placeholder job " + r.JobID // what squeue shows for the hold
	}
	if r.Note != "" {
		d += "; note: " + r.Note
	}
	// Beyond the seed: someone else's processes on a reserved GPU are
	// unreserved use too, and the row names both accounts.
	if others := foreignUsers(g); len(others) > 0 {
		d += fmt.Sprintf("; also used by %s WITHOUT RESERVATION (owner %s)", strings.Join(others, ","), r.User)
	}
	return d
}

// foreignUsers lists the accounts other than the owner using a reserved
// GPU, each once, in order of their lowest PID.
func foreignUsers(g usage.GPU) []string {
	var users []string
	seen := map[string]bool{}
	for _, p := range g.Foreign {
		if !seen[p.User] {
			seen[p.User] = true
			users = append(users, p.User)
		}
	}
	return users
}

func validation(v nodeView, g usage.GPU) string {
	switch {
	case !v.Local:
		return "" // usage is checked on that node, not from here
	case !g.Seen:
		return "not reported by the GPU provider"
	case g.Reservation != nil && g.Busy:
		return fmt.Sprintf("%dMB, %d processes", g.MemoryUsedMB, len(g.Processes))
	case g.Reservation != nil:
		return "no usage detected"
	case g.State == usage.Unreserved && len(g.Processes) == 0:
		return fmt.Sprintf("%dMB used (no process information)", g.MemoryUsedMB)
	case g.State == usage.Unreserved:
		return fmt.Sprintf("%dMB used by %s", g.MemoryUsedMB, processList(g.Processes))
	}
	return fmt.Sprintf("%dMB used", g.MemoryUsedMB)
}

// processList names the first two processes and counts the rest:
// "PID 12345 (python3), PID 23456 (pytorch) and 2 more".
func processList(procs []gpu.Process) string {
	const shown = 2
	names := make([]string, 0, shown)
	for _, p := range procs[:min(shown, len(procs))] {
		if p.Name == "" {
			names = append(names, fmt.Sprintf("PID %d", p.PID))
		} else {
			names = append(names, fmt.Sprintf("PID %d (%s)", p.PID, p.Name))
		}
	}
	s := strings.Join(names, ", ")
	if len(procs) > shown {
		s += fmt.Sprintf(" and %d more", len(procs)-shown)
	}
	return s
}

// flagLines describe the health check's findings under a node's table.
func flagLines(v nodeView) []string {
	var out []string
	for _, f := range v.Flags {
		where := "node"
		if f.GPU != "" {
			where = "GPU " + f.GPU // not registered any more: its UUID
			for _, g := range v.GPUs {
				if g.UUID == f.GPU {
					where = "GPU " + strconv.Itoa(g.Index)
				}
			}
		}
		line := where + ": " + f.Message
		if strings.HasPrefix(f.Message, where+" ") {
			line = f.Message // the finding names its GPU already: "GPU 3 used by ..."
		}
		out = append(out, fmt.Sprintf("  %s (found %s ago)", line, coarse(v.Now.Sub(f.At))))
	}
	return out
}

// The JSON form of status (spec: cli.md "JSON").

type statusDoc struct {
	Version     int        `json:"version"`
	Node        string     `json:"node"`
	GeneratedAt *string    `json:"generated_at"`
	GPUs        []jsonGPU  `json:"gpus"`
	Flags       []jsonFlag `json:"flags"`
}

type allNodesDoc struct {
	Version     int        `json:"version"`
	GeneratedAt *string    `json:"generated_at"`
	Nodes       []jsonNode `json:"nodes"`
}

type jsonNode struct {
	Node  string     `json:"node"`
	Local bool       `json:"local"` // usage fields are known only for the node status ran on
	GPUs  []jsonGPU  `json:"gpus"`
	Flags []jsonFlag `json:"flags"`
}

type jsonGPU struct {
	Index        int              `json:"index"`
	UUID         string           `json:"uuid"`
	Name         string           `json:"name"`
	Status       string           `json:"status"` // available, in_use or unreserved
	MemoryUsedMB *int64           `json:"memory_used_mb"`
	Utilization  gpu.Utilization  `json:"utilization_percent"` // null when the driver does not say, or on another node
	Processes    []jsonProcess    `json:"processes"`
	Users        []string         `json:"users"`         // process owners, by lowest PID
	ForeignUsers []string         `json:"foreign_users"` // on a reserved GPU: owners other than the holder
	Model        string           `json:"model"`
	Reservation  *jsonReservation `json:"reservation"`
	FreeSince    *string          `json:"free_since"`    // available GPUs: last release
	MIG          []jsonMIG        `json:"mig,omitempty"` // MIG devices, on this node's GPUs in MIG mode
}

// jsonMIG is one MIG device of a GPU; its processes are also the GPU's.
type jsonMIG struct {
	Slot          int    `json:"slot"`
	UUID          string `json:"uuid"`
	MemoryUsedMB  *int64 `json:"memory_used_mb"` // null when the driver does not say
	MemoryTotalMB *int64 `json:"memory_total_mb"`
	PIDs          []int  `json:"pids"`
}

type jsonProcess struct {
	PID          int    `json:"pid"`
	Name         string `json:"name"`
	User         string `json:"user"`
	UsedMemoryMB *int64 `json:"used_memory_mb"` // null when the driver does not say
}

type jsonReservation struct {
	Kind        string  `json:"kind"`
	User        string  `json:"user"`
	JobID       string  `json:"job_id"`
	Note        string  `json:"note"`
	StartedAt   *string `json:"started_at"`
	ExpiresAt   *string `json:"expires_at"`   // null for batch jobs
	HeartbeatAt *string `json:"heartbeat_at"` // run reservations only
	HeldSeconds int64   `json:"held_seconds"`
	Queued      bool    `json:"queued"` // held for a waiting request, not yet handed out
}

type jsonFlag struct {
	GPU     *int    `json:"gpu"` // index; null for a finding about the node
	UUID    string  `json:"uuid"`
	Message string  `json:"message"`
	At      *string `json:"at"`
}

func jsonNodeOf(v nodeView) jsonNode {
	n := jsonNode{Node: v.Node, Local: v.Local, GPUs: make([]jsonGPU, 0, len(v.GPUs)), Flags: make([]jsonFlag, 0, len(v.Flags))}
	for _, g := range v.GPUs {
		j := jsonGPU{Index: g.Index, UUID: g.UUID, Name: g.Name, Status: string(g.State), Model: g.Model,
			Processes: make([]jsonProcess, 0, len(g.Processes)), Users: nonNil(g.Users), ForeignUsers: nonNil(foreignUsers(g))}
		if v.Local && g.Seen {
			mem := g.MemoryUsedMB
			j.MemoryUsedMB = &mem
			j.Utilization = g.Utilization
		}
		for _, m := range g.MIG {
			jm := jsonMIG{Slot: m.Slot, UUID: m.UUID, PIDs: nonNil(m.PIDs)}
			if m.MemoryTotalMB >= 0 {
				used, total := m.MemoryUsedMB, m.MemoryTotalMB
				jm.MemoryUsedMB, jm.MemoryTotalMB = &used, &total
			}
			j.MIG = append(j.MIG, jm)
		}
		for _, p := range g.Processes {
			jp := jsonProcess{PID: p.PID, Name: p.Name, User: p.User}
			if p.UsedMemoryMB >= 0 {
				m := p.UsedMemoryMB
				jp.UsedMemoryMB = &m
			}
			j.Processes = append(j.Processes, jp)
		}
		if r := g.Reservation; r != nil {
			j.Reservation = &jsonReservation{Kind: string(r.Kind), User: r.User, JobID: r.JobID, Note: r.Note,
				StartedAt: jsonTime(r.StartedAt), ExpiresAt: jsonTime(r.ExpiresAt), HeartbeatAt: jsonTime(r.HeartbeatAt),
				HeldSeconds: int64(max(v.Now.Sub(r.StartedAt), 0) / time.Second), Queued: r.Queued}
		} else if g.State == usage.Available {
			j.FreeSince = jsonTime(g.FreeSince)
		}
		n.GPUs = append(n.GPUs, j)
	}
	for _, f := range v.Flags {
		jf := jsonFlag{UUID: f.GPU, Message: f.Message, At: jsonTime(f.At)}
		for _, g := range v.GPUs {
			if f.GPU != "" && g.UUID == f.GPU {
				i := g.Index
				jf.GPU = &i
			}
		}
		n.Flags = append(n.Flags, jf)
	}
	return n
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
