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
// "kill" (PIDs signalled) or "kill_limited" (PIDs spared by the hourly
// limit).
type ViolationAction struct {
	What string    `json:"what"`
	At   time.Time `json:"at"`
	PIDs []int     `json:"pids,omitempty"`
}

// Killed is the PIDs the record says were killed.
func (r ViolationRecord) Killed() []int {
	var out []int
	for _, a := range r.Actions {
		if a.What == "kill" {
			out = append(out, a.PIDs...)
		}
	}
	return out
}
