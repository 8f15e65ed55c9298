package allocator

import (
	"fmt"
	"strconv"
	"time"
)

// Request asks for GPUs of one node.
type Request struct {
	// RequestID names one logical call; a retry of the same call reuses it
	// so that the store applies it once.
	RequestID string
	Kind      Kind
	User      string
	UID       int
	JobID     string // batch kinds: the scheduler's job id
	Count     int    // how many GPUs; or
	GPUs      []string
	// Prefer lists UUIDs to take first when they are free (a scheduler's
	// own choice under placement "canhazgpu").
	Prefer []string
	// Exclude lists UUIDs whose memory use reached the threshold. The store
	// skips those without a reservation inside the grant itself, so a GPU
	// someone started using without a reservation is never handed out.
	Exclude []string
	// Lease: manual reservations end after it, run reservations when no
	// heartbeat came for it; batch reservations have none.
	Lease   time.Duration
	Note    string
	Restart int    // scheduler restart count (requeues)
	BootID  string // node boot id, so a reboot marks batch reservations stale
	// QueueEntry is set when the caller waits in the node's queue: only the
	// head entry may take GPUs.
	QueueEntry string
	// Retake: a run taking back, by their ids, the GPUs it held when the
	// store lost its data. It does not wait behind the queue: it held them
	// before anyone who waits now asked.
	Retake bool
}

// MaxNoteLen bounds notes so a reservation stays small in the store.
const MaxNoteLen = 200

// Validate checks a request before it reaches the store.
func (r *Request) Validate() error {
	if err := ValidateID("request id", r.RequestID); err != nil {
		return err
	}
	if r.QueueEntry != "" {
		if err := ValidateID("queue entry id", r.QueueEntry); err != nil {
			return err
		}
	}
	if _, err := ParseKind(string(r.Kind)); err != nil {
		return err
	}
	if r.Retake && (r.Kind != KindRun || len(r.GPUs) == 0 || r.QueueEntry != "") {
		return &InputError{Field: "retake", Value: fmt.Sprintf("kind %s, gpus %v, queue entry %q", r.Kind, r.GPUs, r.QueueEntry),
			Accepted: "a run request naming the GPUs it held, outside the queue"}
	}
	if err := ValidateUser(r.User); err != nil {
		return err
	}
	if r.Count < 0 || r.Count > MaxGPUsPerNode {
		return &InputError{Field: "gpu count", Value: strconv.Itoa(r.Count), Accepted: fmt.Sprintf("a number of GPUs from 1 to %d", MaxGPUsPerNode)}
	}
	switch {
	case r.Count == 0 && len(r.GPUs) == 0:
		return &InputError{Field: "gpu count", Value: "0", Accepted: "a positive number of GPUs, or a list of GPU ids"}
	case r.Count > 0 && len(r.GPUs) > 0:
		return &InputError{Field: "gpu request", Value: fmt.Sprintf("count %d with ids %v", r.Count, r.GPUs), Accepted: "a count or a list of ids, not both"}
	}
	if err := checkUUIDs("gpu id", r.GPUs); err != nil {
		return err
	}
	if err := checkUUIDs("preferred gpu", r.Prefer); err != nil {
		return err
	}
	if err := checkUUIDs("excluded gpu", r.Exclude); err != nil {
		return err
	}
	if r.Kind.Batch() {
		if r.JobID == "" {
			return &InputError{Field: "job id", Value: "", Accepted: "the scheduler's job id for " + string(r.Kind) + " reservations"}
		}
		if r.Lease != 0 {
			return &InputError{Field: "lease", Value: r.Lease.String(), Accepted: "none for batch jobs: they end with the job"}
		}
	} else if r.Lease <= 0 {
		return &InputError{Field: "duration", Value: r.Lease.String(), Accepted: "a positive duration"}
	}
	if r.Restart < 0 {
		return &InputError{Field: "restart count", Value: strconv.Itoa(r.Restart), Accepted: "zero or more"}
	}
	if len(r.Note) > MaxNoteLen {
		return &InputError{Field: "note", Value: r.Note[:20] + "…", Accepted: fmt.Sprintf("at most %d bytes", MaxNoteLen)}
	}
	return nil
}

// ValidateUser checks an account name as used for ownership.
func ValidateUser(u string) error {
	if u == "" {
		return &InputError{Field: "user", Value: "", Accepted: "a non-empty account name"}
	}
	for _, c := range u {
		if c == '\n' || c == ',' || c < ' ' {
			return &InputError{Field: "user", Value: u, Accepted: "an account name without commas or control characters"}
		}
	}
	return nil
}

// checkUUIDs checks a list of GPU UUIDs: each once, at most
// MaxGPUsPerNode of them.
func checkUUIDs(field string, ids []string) error {
	if len(ids) > MaxGPUsPerNode {
		return &InputError{Field: field + " list", Value: fmt.Sprintf("%d GPUs", len(ids)), Accepted: fmt.Sprintf("at most %d GPUs", MaxGPUsPerNode)}
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" {
			return &InputError{Field: field, Value: "", Accepted: "a GPU UUID"}
		}
		for _, c := range id {
			if c == ',' || c <= ' ' {
				return &InputError{Field: field, Value: id, Accepted: "a GPU UUID"}
			}
		}
		if seen[id] {
			return &InputError{Field: field, Value: id, Accepted: "each GPU once"}
		}
		seen[id] = true
	}
	return nil
}

// Grant is what an allocation gave.
type Grant struct {
	GPUs  []string // UUIDs, in the order chosen
	Token int64    // fencing token: needed to renew or release a run lease
	// ExpiresAt is when the reservation ends without a heartbeat or
	// release: the lease asked for, bounded by the node's policy. Zero for
	// batch jobs.
	ExpiresAt time.Time
	// TakenOver lists stale batch reservations of other jobs that the grant
	// replaced (the scheduler never gives one GPU to two jobs).
	TakenOver []Reservation
}

// Release says which reservations to end.
type Release struct {
	RequestID string
	User      string   // "" only for admins and scheduler hooks: any user
	Kinds     []Kind   // empty: any kind
	GPUs      []string // empty: every match
	JobID     string   // "" any job
	Token     int64    // 0 any token
	// Queue also removes the queue entries of User (everyone's when User
	// is empty) whose kind is in Kinds, with the GPUs they hold so far, in
	// the same step: an admin clearing a user leaves nothing waiting.
	// Not with GPUs, JobID or Token, which queue entries do not have.
	Queue bool
}

// Validate checks a release before it reaches the store.
func (r *Release) Validate() error {
	if err := ValidateID("request id", r.RequestID); err != nil {
		return err
	}
	if r.User != "" {
		if err := ValidateUser(r.User); err != nil {
			return err
		}
	}
	for _, k := range r.Kinds {
		if _, err := ParseKind(string(k)); err != nil {
			return err
		}
	}
	if r.Token < 0 {
		return &InputError{Field: "token", Value: strconv.FormatInt(r.Token, 10), Accepted: "a token returned by a grant"}
	}
	if r.Queue && (len(r.GPUs) > 0 || r.JobID != "" || r.Token != 0) {
		return &InputError{Field: "queue release", Value: fmt.Sprintf("gpus %v, job %q, token %d", r.GPUs, r.JobID, r.Token),
			Accepted: "a user or everyone, optionally kinds, without GPU ids, job or token"}
	}
	return checkUUIDs("gpu id", r.GPUs)
}

// Released is the outcome of a release.
type Released struct {
	GPUs    []string      // released UUIDs
	Refused []Reservation // named GPUs held by someone else
	// Dequeued lists the queue entries removed (Release.Queue); the GPUs
	// they held so far were freed with them and are not in GPUs.
	Dequeued []QueueEntry
	// Indices is the registered index of each GPU in GPUs and Refused
	// (a GPU no longer registered has none).
	Indices map[string]int
	// Holds are the released interactive reservations that named a job
	// of their own (a Slurm placeholder), as they were.
	Holds []Reservation
}
