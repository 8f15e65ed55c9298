package cli

import (
	"errors"
	"fmt"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/termsafe"
)

// usageError is a bad command line: an unknown command or flag, a bad value,
// flags that conflict. Exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// badValue names a bad value and what is accepted instead, in the same form
// as allocator.InputError so every such message reads alike.
func badValue(flag, value, accepted string) error {
	return &usageError{&allocator.InputError{Field: flag, Value: value, Accepted: accepted}}
}

// exitStatus ends canhazgpu with a given status: the command's own under
// `run`, 128+signal after an interrupt. msg, when set, is printed as the
// usual Error line.
type exitStatus struct {
	code int
	msg  string
}

func (e *exitStatus) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.msg
}

// ExitCode maps an error from Run to the process exit status: 0 success,
// 2 a usage error, the carried status for a command's exit, 1 otherwise
// (not granted, refused, store unreachable).
func ExitCode(err error) int {
	var es *exitStatus
	var ue *usageError
	var ie *allocator.InputError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &es):
		return es.code
	case errors.As(err, &ue), errors.As(err, &ie):
		return 2
	default:
		return 1
	}
}

// ErrorLine is what main prints for err: one line starting "Error: ", or
// "" when there is nothing to say (success, or a command's own exit
// status).
func ErrorLine(err error) string {
	if err == nil {
		return ""
	}
	var es *exitStatus
	if errors.As(err, &es) && es.msg == "" {
		return ""
	}
	msg := err.Error()
	var unconfirmed *store.NotReplicatedError
	var givenBack *givenBackError
	switch {
	case errors.As(err, &givenBack):
		msg += " (try again when the store's replicas answer)"
	case errors.As(err, &unconfirmed):
		// The server answered; only its replicas lagged. The change may
		// stand, which the user can see before trying again.
		msg += " (see 'canhazgpu status' for whether it took effect)"
	case errors.Is(err, allocator.ErrUnavailable):
		msg += " (is the Redis server running, and does redis.url or CANHAZGPU_REDIS_URL point at it?)"
	}
	// One line, whatever a wrapped error carried, and nothing in it that
	// acts on the terminal: errors quote names and values others chose.
	msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
	return "Error: " + termsafe.Escape(msg)
}
