// Package allocator is the reservation core of canhazgpu: the domain types
// shared by every program, the validation of requests, and the
// classification of GPUs from reservations and real usage.
//
// The Redis store lives in allocator/store and the GPU providers (NVML and
// the fake file) in allocator/gpu; this package imports neither, so the CLI
// formatting and the scheduler hooks can use its types without pulling in a
// driver or a client.
package allocator

import (
	"time"
)

// Kind says who owns a reservation and how it ends.
type Kind string

// The owner kinds. Run leases end by missed heartbeats, manual ones by
// expiry, batch ones (a scheduler's: slurm, pbs) only when the scheduler's
// epilog releases them or the health check settles a job that is gone.
// The batch kinds are named by their scheduler packages; these two are
// listed here for the displays that order kinds.
const (
	KindRun    Kind = "run"
	KindManual Kind = "manual"
	KindSlurm  Kind = "slurm"
	KindPBS    Kind = "pbs"
)

// Kinds lists every kind, in display order.
var Kinds = []Kind{KindRun, KindManual, KindSlurm, KindPBS}

// maxKindLen bounds a scheduler's kind name.
const maxKindLen = 16

// ParseKind checks a kind name: run, manual, or a batch scheduler's name
// (a lowercase letter, then lowercase letters and digits), so that a new
// scheduler needs no change here.
func ParseKind(s string) (Kind, error) {
	if s == string(KindRun) || s == string(KindManual) {
		return Kind(s), nil
	}
	ok := s != "" && len(s) <= maxKindLen && 'a' <= s[0] && s[0] <= 'z'
	for _, c := range s {
		ok = ok && ('a' <= c && c <= 'z' || '0' <= c && c <= '9')
	}
	if !ok {
		return "", &InputError{Field: "kind", Value: s,
			Accepted: "run, manual, or a scheduler's name such as slurm or pbs (lowercase letters and digits)"}
	}
	return Kind(s), nil
}

// Batch reports whether reservations of this kind belong to scheduler jobs:
// every kind but the interactive ones, whose leases the store ends itself.
// The store keeps batch reservations apart from interactive ones, where
// only root programs may write, and learns which a request is from the
// batch flag the store package sends with it.
func (k Kind) Batch() bool { return k != KindRun && k != KindManual }

// GPU is a device as registered for a node in the store.
type GPU struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"`
	Minor int    `json:"minor"`
	Name  string `json:"name"`
}

// Reservation is one GPU held by an owner.
type Reservation struct {
	GPU         string    `json:"gpu"` // UUID
	Kind        Kind      `json:"kind"`
	User        string    `json:"user"`
	UID         int       `json:"uid"`
	JobID       string    `json:"job_id"`
	Note        string    `json:"note"`
	Token       int64     `json:"token"` // fencing token of the grant
	StartedAt   time.Time `json:"started_at"`
	ExpiresAt   time.Time `json:"expires_at"`   // zero: no expiry (batch jobs)
	HeartbeatAt time.Time `json:"heartbeat_at"` // run leases: last renewal
	Restart     int       `json:"restart"`      // scheduler restart count of the job
	BootID      string    `json:"boot_id"`      // node boot the batch job was granted in
	Queued      bool      `json:"queued"`       // held for a waiting queue entry, not yet handed out
	// ActiveAt is when the health check last saw the reservation's GPUs in
	// use, or its owner kept it alive (interactive kinds); zero: never.
	ActiveAt time.Time `json:"active_at,omitzero"`
	// IdleWarned is the IdleSince the owner was last warned about: one
	// warning per idle spell. Zero: not warned.
	IdleWarned time.Time `json:"idle_warned,omitzero"`
}

// IdleSince is when the reservation's current idle spell began: its last
// sign of use, or its start when it has shown none.
func (r Reservation) IdleSince() time.Time {
	if r.ActiveAt.After(r.StartedAt) {
		return r.ActiveAt
	}
	return r.StartedAt
}

// Active reports whether the reservation still holds its GPU at now.
func (r Reservation) Active(now time.Time) bool {
	return r.ExpiresAt.IsZero() || now.Before(r.ExpiresAt)
}

// Record is a finished reservation, kept in the bounded usage history.
type Record struct {
	GPU       string    `json:"gpu"`
	Kind      Kind      `json:"kind"`
	User      string    `json:"user"`
	JobID     string    `json:"job_id"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
	// How it ended: "released", "expired" (reclaimed after expiry or a
	// stale heartbeat), "taken_over" (a batch job's stale reservation) or
	// "reclaimed_idle" (a manual reservation the health check released
	// after [idle] manual_release_after without use).
	End string `json:"end"`
	// IdleFrom is when the GPU's last idle spell began, as the health
	// check's idle clock kept it (interactive kinds); zero when no clock
	// was kept, so nothing is known to have been idle.
	IdleFrom time.Time `json:"idle_from,omitzero"`
}

// QueueEntry is one request waiting in a node's FCFS queue.
type QueueEntry struct {
	ID          string    `json:"id"`
	Kind        Kind      `json:"kind"`
	User        string    `json:"user"`
	Count       int       `json:"count"`
	GPUs        []string  `json:"gpus"`      // requested UUIDs, when by id
	Allocated   []string  `json:"allocated"` // UUIDs held so far
	EnqueuedAt  time.Time `json:"enqueued_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
}

// Wanted is the number of GPUs the entry asks for.
func (e QueueEntry) Wanted() int {
	if len(e.GPUs) > 0 {
		return len(e.GPUs)
	}
	return e.Count
}

// Flag is a health-check finding recorded for a node.
type Flag struct {
	GPU     string    `json:"gpu"` // UUID, "" for the node
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Snapshot is the store state of one node, read in one round trip.
type Snapshot struct {
	Node         string
	Now          time.Time // the store's clock
	GPUs         []GPU     // by index
	Reservations map[string]Reservation
	// LastReleased is when each GPU was last freed; an expired but not yet
	// reclaimed reservation counts as freed at its expiry.
	LastReleased map[string]time.Time
	Queue        []QueueEntry // FCFS order, live entries only
	Flags        []Flag
	// Policy is the node's policy as the last registration stored it
	// (zero when none was stored), so root programs see when their own
	// differs and register again.
	Policy Policy
}

// GPUByIndex finds a registered GPU by index.
func (s *Snapshot) GPUByIndex(i int) (GPU, bool) {
	for _, g := range s.GPUs {
		if g.Index == i {
			return g, true
		}
	}
	return GPU{}, false
}

// GPUByUUID finds a registered GPU by UUID.
func (s *Snapshot) GPUByUUID(uuid string) (GPU, bool) {
	for _, g := range s.GPUs {
		if g.UUID == uuid {
			return g, true
		}
	}
	return GPU{}, false
}
