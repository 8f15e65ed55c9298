// Package health is the node health check behind canhazgpu-healthcheck: it
// compares what the GPUs are doing with the reservations in the store,
// settles state the scheduler hooks could not write, and reports or acts on
// what it finds (Slurm drain, node comment, store flags, NHC lines, JSON, a
// node-exporter textfile).
//
// Everything the check touches comes in through Deps (store, GPU provider,
// scontrol path, spool dir, boot id, clock, writers), so tests run it against
// a real Redis, the fake GPU file and a stand-in scontrol.
package health

import (
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

// Kind says what rule a violation breaks.
type Kind string

// The violation kinds.
const (
	// Unreserved: a GPU whose memory use reached the threshold has no
	// reservation.
	Unreserved Kind = "unreserved"
	// ForeignUser: a reserved GPU runs a process of another user than the
	// reservation's owner.
	ForeignUser Kind = "foreign_user"
	// OutsideJob: a GPU reserved by a batch job runs a process of the
	// job's user that is not part of that job (only where the scheduler
	// tells a process's job, as Slurm does: batch.JobWatch.InJob).
	OutsideJob Kind = "outside_job"
)

// Violation is one broken rule on one GPU. Processes are the offending
// ones, by PID; an Unreserved violation without processes means the memory
// is used but no process is visible.
type Violation struct {
	Kind         Kind                   `json:"kind"`
	GPU          int                    `json:"gpu"`
	UUID         string                 `json:"uuid"`
	MemoryUsedMB int64                  `json:"memory_used_mb"`
	Reservation  *allocator.Reservation `json:"reservation,omitempty"`
	Processes    []Process              `json:"processes"`
	// Model is the AI model the offending processes' command lines name
	// (usage.GuessModel), "" when none does: their owners' text.
	Model   string `json:"model,omitempty"`
	Message string `json:"message"`
}

// Process is a GPU process as the report shows it.
type Process struct {
	PID          int    `json:"pid"`
	Name         string `json:"name"`
	User         string `json:"user"` // "" when unknown
	UID          int    `json:"uid"`  // -1 when unknown
	JobID        string `json:"job_id"`
	UsedMemoryMB int64  `json:"used_memory_mb"` // -1 when the driver does not say
	// Utilization is the process's share of the GPU where the driver
	// samples processes; null otherwise.
	Utilization gpu.Utilization `json:"utilization_percent"`
}

func reportProcess(p gpu.Process) Process {
	return Process{PID: p.PID, Name: p.Name, User: p.User, UID: p.UID, JobID: p.JobID, UsedMemoryMB: p.UsedMemoryMB,
		Utilization: p.Utilization}
}

// Settled is one change the check made to bring the store in line with
// this node (a pending marker applied, a gone job's reservations released,
// a running job's lost reservations restored), or one it could not make.
type Settled struct {
	What    string         `json:"what"`           // one of SettleKinds
	Kind    allocator.Kind `json:"kind,omitempty"` // the job's scheduler: slurm or pbs
	JobID   string         `json:"job_id"`
	GPUs    []string       `json:"gpus,omitempty"`
	Message string         `json:"message"`
}

// SettleKinds are the values of Settled.What: "marker" (a pending marker
// applied), "stale_job" (a gone batch job's GPUs released), "restored" (a
// running batch job given back the reservations the store had lost),
// "placeholder" (a Slurm placeholder job without its hold cancelled, or a
// hold without its placeholder released), and
// what could not be done: "unsettled" (a marker left for the next round)
// and "unrestored" (a running job's GPUs that could not be given back).
var SettleKinds = []string{"marker", "stale_job", "restored", "unsettled", "unrestored", "placeholder"}

// Action is what the check did, or chose not to do, about the node in
// Slurm and in the store.
type Action struct {
	What    string `json:"what"` // drain, undrain, comment, flags, skip, error
	Message string `json:"message"`
}

// GPUState is one GPU's line in the report and the textfile.
type GPUState struct {
	Index        int    `json:"index"`
	UUID         string `json:"uuid"`
	State        string `json:"state,omitempty"` // available, in_use, unreserved (usage.State); "" when the store did not answer
	Reserved     bool   `json:"reserved"`
	Owner        string `json:"owner,omitempty"` // reservation's user
	Kind         string `json:"kind,omitempty"`  // reservation's kind
	JobID        string `json:"job_id,omitempty"`
	Busy         bool   `json:"busy"` // memory use reached the threshold
	MemoryUsedMB int64  `json:"memory_used_mb"`
	// Utilization is the GPU's, in percent; null when the driver does
	// not say.
	Utilization gpu.Utilization `json:"utilization_percent"`
	Processes   int             `json:"processes"`
	Violations  int             `json:"violations"`
}

// Report is the outcome of one run.
type Report struct {
	Node       string        `json:"node"`
	Status     string        `json:"status"` // healthy, violations, error
	Error      string        `json:"error,omitempty"`
	StoreUp    bool          `json:"store_up"` // the store answered this run
	GPUs       []GPUState    `json:"gpus"`
	Violations []Violation   `json:"violations"`
	Settled    []Settled     `json:"settled"`
	Warned     []WarnedUse   `json:"warned"` // uses on_conflict = "warn" allowed: reported, no violation
	Idle       []IdleFinding `json:"idle"`   // idle interactive reservations warned about or released
	Actions    []Action      `json:"actions"`
	Started    time.Time     `json:"-"`
	Duration   float64       `json:"duration_seconds"`
}

// The report statuses and the exit codes they map to.
const (
	StatusHealthy    = "healthy"
	StatusViolations = "violations"
	StatusError      = "error"
)

// ExitCode is 0 for a healthy node, 1 for violations, 2 when the node could
// not be checked.
func (r *Report) ExitCode() int {
	switch r.Status {
	case StatusHealthy:
		return 0
	case StatusViolations:
		return 1
	default:
		return 2
	}
}
