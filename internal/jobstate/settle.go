package jobstate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

// Settle applies one marker to the store of the node that wrote it.
//
// A reserve marker grants the job its GPUs as the Prolog would have, by
// UUID and without excluding GPUs in use: the job's own processes may be
// using them by now. A GPU taken meanwhile by someone else fails the whole
// grant with *allocator.ShortageError, which the health check reports as a
// conflict; the marker should then stay for the next round.
//
// A release marker ends the job's reservations made by the attempt it was
// written for or an earlier one. A requeued job may already hold GPUs again
// under a higher restart count; those stay. This costs a snapshot and a
// release (two round trips).
func Settle(ctx context.Context, st *store.Store, m Marker) error {
	if err := m.check(); err != nil {
		return err
	}
	switch m.Op {
	case OpReserve:
		return settleReserve(ctx, st, m)
	default:
		return settleRelease(ctx, st, m)
	}
}

// settleRequestID is the same for every attempt to settle one marker, so a
// retry after a lost reply is applied once.
func settleRequestID(m Marker) string {
	return "settle-" + string(m.Op) + "-" + string(m.Kind) + "-" + m.JobID + "-" +
		strconv.Itoa(m.Restart) + "-" + strconv.FormatInt(m.At.UnixNano(), 36)
}

func settleReserve(ctx context.Context, st *store.Store, m Marker) error {
	if len(m.GPUs) == 0 {
		return nil
	}
	user := m.User
	if user == "" {
		user = "uid:" + strconv.Itoa(m.UID)
	}
	_, err := st.Allocate(ctx, allocator.Request{RequestID: settleRequestID(m), Kind: m.Kind, User: user,
		UID: m.UID, JobID: m.JobID, GPUs: m.GPUs, Restart: m.Restart, BootID: m.BootID})
	if err != nil {
		return fmt.Errorf("settle reserve of %s job %s: %w", m.Kind, m.JobID, err)
	}
	return nil
}

func settleRelease(ctx context.Context, st *store.Store, m Marker) error {
	snap, err := st.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("settle release of %s job %s: %w", m.Kind, m.JobID, err)
	}
	var gpus []string
	for uuid, r := range snap.Reservations {
		if r.Kind == m.Kind && r.JobID == m.JobID && r.Restart <= m.Restart {
			gpus = append(gpus, uuid)
		}
	}
	if len(gpus) == 0 {
		return nil
	}
	_, err = st.Release(ctx, allocator.Release{RequestID: settleRequestID(m), Kinds: []allocator.Kind{m.Kind},
		JobID: m.JobID, GPUs: gpus})
	if err != nil {
		return fmt.Errorf("settle release of %s job %s: %w", m.Kind, m.JobID, err)
	}
	return nil
}

// SettleAll settles every pending marker of the state directory and
// removes those it applied. It stops at the first sign that the store is
// unreachable; other failures are collected and the rest still settled.
// It returns the markers it applied.
func SettleAll(ctx context.Context, st *store.Store, stateDir string) ([]Marker, error) {
	markers, listErr := Markers(stateDir)
	var done []Marker
	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
	for _, m := range markers {
		if err := Settle(ctx, st, m); err != nil {
			errs = append(errs, err)
			if errors.Is(err, allocator.ErrUnavailable) || ctx.Err() != nil {
				break
			}
			continue
		}
		if err := RemoveMarker(stateDir, m.Kind, m.JobID, m.Op); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, m)
	}
	return done, errors.Join(errs...)
}

// String names a marker for log lines: "release of slurm job 41".
func (m Marker) String() string {
	return string(m.Op) + " of " + string(m.Kind) + " job " + m.JobID
}

// SettleLeftovers settles what SettleAll does and sums it up in one phrase
// for a program's log line; "" when there was nothing to settle. Root
// programs that reached the store call it after their own work, so that a
// change recorded during an outage is applied on nodes without a health
// check too. It costs no store call when there are no markers.
func SettleLeftovers(ctx context.Context, st *store.Store, stateDir string) string {
	done, err := SettleAll(ctx, st, stateDir)
	var parts []string
	if len(done) > 0 {
		names := make([]string, len(done))
		for i, m := range done {
			names[i] = m.String()
		}
		parts = append(parts, "settled the pending "+strings.Join(names, ", "))
	}
	if err != nil {
		parts = append(parts, "pending markers not settled: "+strings.Join(strings.Fields(err.Error()), " "))
	}
	return strings.Join(parts, "; ")
}
