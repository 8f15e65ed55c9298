package allocator

import (
	"errors"
	"fmt"
	"strings"
)

// InputError is a bad value given to the core. Nothing was written.
type InputError struct {
	Field    string
	Value    string
	Accepted string
	// Err, when set, says what kind of bad value this is (ErrUnknownGPU),
	// so that callers branch on errors.Is rather than on the text.
	Err error
}

func (e *InputError) Error() string {
	return fmt.Sprintf("invalid %s %q: want %s", e.Field, e.Value, e.Accepted)
}

func (e *InputError) Unwrap() error { return e.Err }

// Conflict says why one GPU could not be granted.
type Conflict struct {
	GPU        string       `json:"gpu"`
	Holder     *Reservation `json:"holder,omitempty"` // nil when free but in unreserved use
	Unreserved bool         `json:"unreserved"`
}

// ShortageError: the request could not be granted now. Nothing was written.
type ShortageError struct {
	Requested int
	// Available is what could really be granted now: free, registered, not
	// in unreserved use, and not promised to the head of the queue.
	Available int
	// Unreserved counts GPUs excluded because they are used without a
	// reservation.
	Unreserved int
	// Waiting counts queue entries ahead of the caller (interactive
	// requests yield to the queue's head).
	Waiting   int
	Conflicts []Conflict // for requests by id: the GPUs that are taken
}

func (e *ShortageError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Not enough GPUs available. Requested: %d, Available: %d", e.Requested, e.Available)
	var notes []string
	if e.Unreserved > 0 {
		notes = append(notes, fmt.Sprintf("%d GPUs in use without reservation - run 'canhazgpu status' for details", e.Unreserved))
	}
	if e.Waiting > 0 {
		notes = append(notes, fmt.Sprintf("%d requests waiting in the queue - run 'canhazgpu queue' for details", e.Waiting))
	}
	if len(notes) > 0 {
		b.WriteString(" (" + strings.Join(notes, "; ") + ")")
	}
	return b.String()
}

// PendingError: the caller is the queue's head and holds part of its
// request; it should keep its entry alive and ask again.
type PendingError struct {
	Allocated []string
	Position  int
}

func (e *PendingError) Error() string {
	return fmt.Sprintf("waiting in queue at position %d with %d GPUs held so far", e.Position, len(e.Allocated))
}

// LeaseLostError: a run lease is no longer the caller's.
type LeaseLostError struct {
	GPU    string
	Holder *Reservation // nil when nobody holds it now
}

func (e *LeaseLostError) Error() string {
	if e.Holder == nil {
		return fmt.Sprintf("reservation of GPU %s was lost: it is no longer held", e.GPU)
	}
	return fmt.Sprintf("reservation of GPU %s was lost: now held by %s (%s)", e.GPU, e.Holder.User, e.Holder.Kind)
}

// Sentinel errors.
var (
	// ErrNotRegistered: the node has no GPUs in the store yet.
	ErrNotRegistered = errors.New("node has no GPUs registered")
	// ErrUnknownGPU: a request named a GPU the node's registration lacks
	// (the node's GPUs changed since root registered them). It comes
	// inside an InputError naming the GPU.
	ErrUnknownGPU = errors.New("GPU not registered for this node")
	// ErrNotQueued: the queue entry is gone (left, or dropped after missing
	// heartbeats).
	ErrNotQueued = errors.New("queue entry no longer exists")
	// ErrUnavailable: the store could not be reached or answered an error.
	ErrUnavailable = errors.New("reservation store unavailable")
	// ErrNotPermitted: the store's access rules refused the change to this
	// credential (the CLI's may not change batch reservations,
	// registrations, flags or the node's policy). Nothing was written.
	ErrNotPermitted = errors.New("not permitted to this store credential")
)
