package cli

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"syscall"
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
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("--user %s: %w", name, err)
	}
	h.As = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return h, nil
}

// submitPlaceholder makes a fresh hold visible to Slurm: it submits the
// hold's placeholder job, pinned to the held GPUs, with the hold's time
// limit, and records its job id in the hold. The hold is already in the
// store, where the placeholder's Prolog looks for it. When Slurm refuses
// (it gave a GPU to a job, or a job of higher priority waits) or the id
// cannot be recorded, the hold is given back and the error says why.
func submitPlaceholder(ctx context.Context, env *Env, p *opened, g allocator.Grant, limit time.Duration) (string, error) {
	job, err := placeholder(ctx, env, p, g, limit)
	if err == nil {
		return job, nil
	}
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: p.user, GPUs: g.GPUs, Token: g.Token}
	if _, rerr := p.node.Store.Release(context.WithoutCancel(ctx), rel); rerr != nil {
		err = fmt.Errorf("%w; giving the GPUs back failed too: %v (the hold ends at its expiry)", err, rerr)
	}
	return "", err
}

func placeholder(ctx context.Context, env *Env, p *opened, g allocator.Grant, limit time.Duration) (string, error) {
	cfg := p.cfg
	names := gpu.SetOf(p.devs)
	h, err := holdsFor(env, cfg, p.user)
	if err != nil {
		return "", err
	}
	pinned, err := h.PinnedTypes(ctx)
	if err != nil {
		return "", fmt.Errorf("Slurm placeholder for GPU %s: %w", names.List(g.GPUs), err)
	}
	if !pinned {
		return "", fmt.Errorf("node %s: Slurm's node has no GRES type per GPU (gpu:dev0:1,gpu:dev1:1,...), which placeholder holds need (docs/slurm.md); nothing held", cfg.Node)
	}
	indices, err := slurm.Indices(gpu.VendorOf(cfg.GPU.Provider), cfg.Slurm.GresDevices, g.GPUs, p.devs)
	if err != nil {
		return "", err
	}
	job, err := h.Submit(ctx, cfg.Node, slurm.Placeholder{Token: g.Token, Indices: indices, Limit: limit})
	if err != nil {
		return "", fmt.Errorf("Slurm refused the placeholder job for GPU %s, so nothing is held: %w", names.List(g.GPUs), err)
	}
	if err := p.node.Store.SetHoldJob(ctx, p.user, g.Token, g.GPUs, job); err != nil {
		cerr := h.Cancel(context.WithoutCancel(ctx), job)
		return "", errors.Join(fmt.Errorf("record Slurm placeholder job %s: %w", job, err), cerr)
	}
	return job, nil
}

// placeholderJobs are the placeholder jobs of user's interactive holds on
// the GPUs listed, each once.
func placeholderJobs(snap *allocator.Snapshot, user string, gpus []string) []string {
	var jobs []string
	for u, r := range snap.Reservations {
		if r.Kind.Batch() || r.JobID == "" || r.User != user || !slices.Contains(gpus, u) {
			continue
		}
		if !slices.Contains(jobs, r.JobID) {
			jobs = append(jobs, r.JobID)
		}
	}
	slices.Sort(jobs)
	return jobs
}

// cancelPlaceholders ends the placeholder jobs of released holds; one that
// cannot be cancelled ends at its time limit, or the health check cancels
// it. It says so on stderr and does not fail the release.
func cancelPlaceholders(ctx context.Context, env *Env, cfg *config.Config, jobs []string) {
	if len(jobs) == 0 {
		return
	}
	h := slurm.NewHolds(cfg)
	for _, job := range jobs {
		if err := h.Cancel(ctx, job); err != nil {
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
