package batch

import (
	"context"
	"fmt"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// Released is what an epilog did.
type Released struct {
	GPUs []string // the UUIDs released; none is success
	// StoreDown is the store's error when on_store_error = "allow" left
	// the release to a pending marker.
	StoreDown error
	Settled   string // pending markers of earlier outages applied ("" for none)
}

// Release runs a job's epilog on this node: it releases every reservation
// of the job here, whatever the scheduler says about its GPUs (the prolog
// may have chosen others, or failed), and removes the job's files. Nothing
// to release is success: the epilog also runs after a failed prolog and
// for jobs without GPUs. One store call; no GPU scan.
func (e *Engine) Release(ctx context.Context, job Job) (Released, error) {
	if err := jobstate.CheckJobID(job.ID); err != nil {
		return Released{}, err
	}
	pol := e.Policy
	// Before anything changes: a state directory others could write stops
	// the epilog with the store untouched.
	if err := jobstate.Prepare(pol.StateDir); err != nil {
		return Released{}, err
	}
	if job.Withdraw != nil {
		if err := job.Withdraw(); err != nil {
			return Released{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, pol.Deadline)
	defer cancel()
	st, err := e.openStore(ctx)
	if err != nil {
		return Released{}, err
	}
	defer st.Close()
	// A fresh id: a release is idempotent by nature, and a reused id could
	// replay an older attempt's reply for a job id the scheduler handed
	// out again.
	rel, err := st.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(),
		Kinds: []allocator.Kind{pol.Kind}, JobID: job.ID})
	switch {
	case err == nil:
	case Unreachable(err):
		return e.releaseLater(job, err)
	default:
		return Released{}, err
	}
	// Everything of the job is released now, so no marker of it is left
	// to apply: neither a reserve the store never saw nor an older release.
	for _, op := range []jobstate.Op{jobstate.OpReserve, jobstate.OpRelease} {
		if err := jobstate.RemoveMarker(pol.StateDir, pol.Kind, job.ID, op); err != nil {
			return Released{}, err
		}
	}
	if err := jobstate.RemoveJob(pol.StateDir, pol.Kind, job.ID); err != nil {
		return Released{}, err
	}
	return Released{GPUs: rel.GPUs, Settled: jobstate.SettleLeftovers(ctx, st, pol.StateDir)}, nil
}

// releaseLater handles a store that did not answer the release.
func (e *Engine) releaseLater(job Job, cause error) (Released, error) {
	pol := e.Policy
	if pol.OnStoreError == Fail {
		return Released{}, &Refused{Setting: "on_store_error", What: cause.Error(), Cause: cause}
	}
	m := jobstate.Marker{Op: jobstate.OpRelease, Kind: pol.Kind, JobID: job.ID, User: job.User,
		UID: job.UID, Restart: job.Restart, At: e.now()}
	if f, err := jobstate.ReadJob(pol.StateDir, pol.Kind, job.ID); err == nil {
		// The attempt the prolog reserved for, which is what the marker
		// must release: after a requeue the epilog may already see the
		// next attempt's restart count, whose GPUs settling must not touch.
		// The file also knows the owner where the epilog is not told.
		m.Restart, m.User, m.UID = f.Restart, f.User, f.UID
		for _, g := range f.GPUs {
			m.GPUs = append(m.GPUs, g.UUID)
		}
	}
	if err := jobstate.WriteMarker(pol.StateDir, m); err != nil {
		return Released{}, fmt.Errorf("%w (store unreachable: %v)", err, cause)
	}
	if err := jobstate.RemoveJob(pol.StateDir, pol.Kind, job.ID); err != nil {
		return Released{}, err
	}
	return Released{StoreDown: cause}, nil
}
