package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/config"
	"canhazgpu/internal/slurm"
)

// placeholdersOn: interactive holds on this node are also Slurm jobs
// ([slurm] interactive_holds = "placeholder", docs/slurm.md).
func placeholdersOn(cfg *config.Config) bool { return cfg.Slurm.Holds.Mode == "placeholder" }

// holdsFor is the Slurm runner of placeholders for the account acting:
// the caller's own, or, for root acting with --user, that account's, so
// that squeue and accounting show the hold's owner.
func holdsFor(env *Env, cfg *config.Config, name string) (*slurm.Holds, error) {
	h := slurm.NewHolds(cfg)
	if name == env.User.Name {
		return h, nil
	}
	if !env.User.Root() {
		return nil, fmt.Errorf("--user %s: on a node with slurm.interactive_holds = \"placeholder\" only root may hold GPUs for another account (Slurm's placeholder job must be theirs)", name)
	}
	as, err := slurm.Account(name, -1)
	if err != nil {
		return nil, fmt.Errorf("--user %s: %w", name, err)
	}
	h.As = as
	return h, nil
}

// hold takes the GPUs a describes and, on a node whose holds Slurm sees,
// gets the hold's placeholder job, whose id it returns ("" when there is
// none). limit is the placeholder's time limit.
func (a *requestArgs) hold(ctx context.Context, inv *invocation, p *opened, kind allocator.Kind, lease, limit time.Duration) (allocator.Grant, string, error) {
	if !placeholdersOn(p.cfg) {
		g, err := a.take(ctx, inv, p, kind, lease)
		return g, "", err
	}
	h, err := holdsFor(inv.env, p.cfg, p.user)
	if err != nil {
		return allocator.Grant{}, "", err
	}
	pinned, err := h.PinnedTypes(ctx)
	if err != nil {
		return allocator.Grant{}, "", fmt.Errorf("placeholder job: %w; nothing held", err)
	}
	if !pinned {
		return a.slurmChooses(ctx, h, p, kind, limit)
	}
	// A GPU Slurm refuses (it gave it to a job the store does not know
	// yet, or a job of higher priority waits for it) is left out of the
	// next try, when the request is by count.
	var refused []string
	for {
		g, err := a.take(ctx, inv, p, kind, lease, refused...)
		if err != nil {
			if len(refused) > 0 {
				err = fmt.Errorf("%w (Slurm refused GPU %s)", err, gpu.SetOf(p.devs).List(refused))
			}
			return g, "", err
		}
		job, err := submitPlaceholder(ctx, h, p, g, limit)
		var no *slurmRefusal
		if !errors.As(err, &no) || len(a.ids.ids) > 0 || len(refused)+len(g.GPUs) >= len(p.devs) {
			return g, job, err
		}
		writeLine(inv.env.Stderr, "canhazgpu: %v; trying other GPUs", err)
		refused = append(refused, g.GPUs...)
	}
}

// slurmRefusal: Slurm would not start a placeholder at once.
type slurmRefusal struct{ err error }

func (e *slurmRefusal) Error() string { return e.err.Error() }
func (e *slurmRefusal) Unwrap() error { return e.err }

// slurmChooses holds GPUs on a node without a GRES type per GPU: Slurm
// picks them for the placeholder, whose Prolog makes the hold in the store
// (a manual reservation naming the job); this finds it there.
func (a *requestArgs) slurmChooses(ctx context.Context, h *slurm.Holds, p *opened, kind allocator.Kind, limit time.Duration) (allocator.Grant, string, error) {
	cfg := p.cfg
	switch {
	case kind != allocator.KindManual:
		return allocator.Grant{}, "", fmt.Errorf("node %s: Slurm's node has no GRES type per GPU (gpu:dev0:1,...), which `run` needs with slurm.interactive_holds = \"placeholder\" (docs/slurm.md); use reserve", cfg.Node)
	case len(a.ids.ids) > 0:
		return allocator.Grant{}, "", fmt.Errorf("--gpu-ids %s: Slurm's node %s has no GRES type per GPU (gpu:dev0:1,...), so Slurm chooses the GPUs of a hold: give --gpus N", a.ids.raw, cfg.Node)
	case a.wait.set:
		return allocator.Grant{}, "", fmt.Errorf("--wait: on node %s Slurm chooses the GPUs of a hold, and its queue is Slurm's: reserve without --wait", cfg.Node)
	}
	job, err := h.Submit(ctx, cfg.Node, slurm.Placeholder{Count: a.gpus.n, Limit: limit})
	if err != nil {
		return allocator.Grant{}, "", fmt.Errorf("the placeholder job for %s was refused by Slurm, so nothing is held: %w", plural(a.gpus.n, "GPU"), err)
	}
	// On 22.05 salloc returns after the Prolog; later Slurm may return
	// first: look until the Prolog's deadline has passed.
	deadline := time.Now().Add(cfg.Slurm.Deadline + time.Second)
	for {
		snap, err := p.node.Store.Snapshot(ctx)
		if err == nil {
			if g, ok := heldFor(snap, p.user, job); ok {
				return g, job, nil
			}
		}
		if time.Now().After(deadline) {
			cerr := h.Cancel(context.WithoutCancel(ctx), job)
			return allocator.Grant{}, "", errors.Join(fmt.Errorf("the Prolog of Slurm placeholder job %s made no hold of %s (slurmd's log says why); cancelled it", job, p.user), err, cerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heldFor is the hold the Prolog made for a placeholder job, GPUs in
// index order.
func heldFor(snap *allocator.Snapshot, user, job string) (allocator.Grant, bool) {
	var g allocator.Grant
	for _, reg := range snap.GPUs {
		r, ok := snap.Reservations[reg.UUID]
		if ok && r.Kind == allocator.KindManual && r.User == user && r.JobID == job && !r.Queued {
			g.GPUs, g.Token = append(g.GPUs, reg.UUID), r.Token
		}
	}
	return g, len(g.GPUs) > 0
}

// submitPlaceholder makes a fresh hold visible to Slurm: it submits the
// hold's placeholder job, pinned to the held GPUs, with the hold's time
// limit, and records its job id in the hold. The hold is already in the
// store, where the placeholder's Prolog looks for it. When Slurm refuses
// (it gave a GPU to a job, or a job of higher priority waits) or the id
// cannot be recorded, the hold is given back and the error says why.
func submitPlaceholder(ctx context.Context, h *slurm.Holds, p *opened, g allocator.Grant, limit time.Duration) (string, error) {
	job, err := placeholder(ctx, h, p, g, limit)
	if err == nil {
		return job, nil
	}
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: p.user, GPUs: g.GPUs, Token: g.Token}
	if _, rerr := p.node.Store.Release(context.WithoutCancel(ctx), rel); rerr != nil {
		err = fmt.Errorf("%w; giving the GPUs back failed too: %v (the hold ends at its expiry)", err, rerr)
	}
	return "", err
}

func placeholder(ctx context.Context, h *slurm.Holds, p *opened, g allocator.Grant, limit time.Duration) (string, error) {
	cfg := p.cfg
	names := gpu.SetOf(p.devs)
	indices, err := slurm.Indices(gpu.VendorOf(cfg.GPU.Provider), cfg.Slurm.GresDevices, g.GPUs, p.devs)
	if err != nil {
		return "", err
	}
	job, err := h.Submit(ctx, cfg.Node, slurm.Placeholder{Token: g.Token, Indices: indices, Limit: limit})
	if err != nil {
		return "", &slurmRefusal{fmt.Errorf("the placeholder job for GPU %s was refused by Slurm, so nothing is held: %w", names.List(g.GPUs), err)}
	}
	if err := p.node.Store.SetHoldJob(ctx, p.user, g.Token, g.GPUs, job); err != nil {
		cerr := h.Cancel(context.WithoutCancel(ctx), job)
		return "", errors.Join(fmt.Errorf("record Slurm placeholder job %s: %w", job, err), cerr)
	}
	return job, nil
}

// placeholderJob is a hold's placeholder job and the hold's owner.
type placeholderJob struct {
	id  string
	uid int
}

// placeholderJobs are the placeholder jobs of the holds a release ended
// (Released.Holds), user's only ("" for anyone's), each once.
func placeholderJobs(holds []allocator.Reservation, user string) []placeholderJob {
	var jobs []placeholderJob
	for _, r := range holds {
		j := placeholderJob{id: r.JobID, uid: r.UID}
		if (user == "" || r.User == user) && !slices.Contains(jobs, j) {
			jobs = append(jobs, j)
		}
	}
	slices.SortFunc(jobs, func(a, b placeholderJob) int { return strings.Compare(a.id, b.id) })
	return jobs
}

// cancelPlaceholders ends the placeholder jobs of released holds; one that
// cannot be cancelled ends at its time limit, or the health check cancels
// it. It says so on stderr and does not fail the release. Root cancels as
// each hold's owner: Slurm then refuses a job id that is not the owner's,
// which a stored hold could name (the id comes from the output of the
// owner's own salloc).
func cancelPlaceholders(ctx context.Context, env *Env, cfg *config.Config, jobs []placeholderJob) {
	h := slurm.NewHolds(cfg)
	for _, j := range jobs {
		var err error
		if env.User.Root() && j.uid != env.User.UID {
			err = h.CancelAsOwner(ctx, j.id, j.uid)
		} else {
			err = h.Cancel(ctx, j.id)
		}
		if err != nil {
			writeLine(env.Stderr, "canhazgpu: warning: %v; Slurm ends the placeholder at its time limit", err)
		}
	}
}

// runLimit is the time limit of a run's placeholder: the command's
// timeout plus the lease that outlives its last heartbeat, or, without a
// timeout, the longest hold the site allows.
func runLimit(cfg *config.Config, timeout time.Duration) time.Duration {
	if timeout > 0 {
		return timeout + cfg.Run.HeartbeatTimeout
	}
	return cfg.Reserve.MaxDuration
}
