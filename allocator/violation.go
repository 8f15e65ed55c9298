package allocator

import "time"

// ViolationRecord is one violation as the store remembers it: one rule
// (Kind) broken on one GPU by one user, merged across the health check's
// runs from the first sighting to the last, with what was done about it.
// A violation not seen for a while (store.ViolationRun.Gap) is closed: the
// next sighting starts a new record.
type ViolationRecord struct {
	ID        string             `json:"id"`
	Node      string             `json:"node"`
	Kind      string             `json:"kind"` // unreserved, foreign_user, outside_job
	GPU       string             `json:"gpu"`  // UUID
	Index     int                `json:"index"`
	User      string             `json:"user"`             // the offender; "" when no process could be named
	Holder    string             `json:"holder,omitempty"` // the reservation's user
	JobID     string             `json:"job_id,omitempty"` // the reservation's job
	Model     string             `json:"model,omitempty"`  // guessed from the command lines; the offender's text
	Processes []ViolationProcess `json:"processes"`
	FirstSeen time.Time          `json:"first_seen"`
	LastSeen  time.Time          `json:"last_seen"`
	Actions   []ViolationAction  `json:"actions"`
}

// ViolationProcess is an offending process as first seen. Start (clock
// ticks since boot, /proc/<pid>/stat) tells it from a later process that
// reuses the PID; 0 when unknown.
type ViolationProcess struct {
	PID   int    `json:"pid"`
	Name  string `json:"name"`
	Start uint64 `json:"start,omitempty"`
}

// ViolationAction is one thing done about a violation: "notify", "exec",
// "kill" (one process, with its Outcome) or "kill_limited" (PIDs spared
// by the hourly limit).
type ViolationAction struct {
	What    string    `json:"what"`
	At      time.Time `json:"at"`
	PIDs    []int     `json:"pids,omitempty"`
	Outcome string    `json:"outcome,omitempty"` // of a kill: one of the Kill… outcomes
	Error   string    `json:"error,omitempty"`   // of a failed kill
}

// How a kill went. The health check claims a kill in the store before it
// signals the process and writes the outcome after.
const (
	KillPending = "pending"  // claimed; the check has not said how it went yet
	KillTerm    = "sigterm"  // SIGTERM ended the process
	KillKill    = "sigkill"  // SIGKILL ended it, SIGTERM did not within kill_wait
	KillEnded   = "ended"    // it had already ended: no signal sent
	KillNotSame = "not_same" // the PID named another process by then: no signal sent
	KillFailed  = "failed"   // a signal could not be sent, or did not end it (Error says)
	KillUnknown = "unknown"  // the check that claimed it stopped before saying how it went
)

// Killed is the PIDs the record says were killed: ended by SIGTERM or
// SIGKILL (or recorded before outcomes were).
func (r ViolationRecord) Killed() []int {
	var out []int
	for _, a := range r.Actions {
		if a.What == "kill" && (a.Outcome == KillTerm || a.Outcome == KillKill || a.Outcome == "") {
			out = append(out, a.PIDs...)
		}
	}
	return out
}
