package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
)

// requestArgs are the flags run and reserve share.
type requestArgs struct {
	gpus     countValue
	ids      idsValue
	wait     waitValue
	nonblock bool
	note     noteValue
	user     userValue
}

func (a *requestArgs) bind(fs *pflag.FlagSet) {
	a.gpus = gpuCount()
	a.gpus.n = 1
	fs.VarP(&a.gpus, "gpus", "g", "how many GPUs to reserve: `N`")
	fs.VarP(&a.ids, "gpu-ids", "G", "reserve exactly these GPUs: a comma-separated `LIST` of indices, as nvidia-smi numbers them")
	fs.VarPF(&a.wait, "wait", "w", "when not enough GPUs are free, wait in the node's FCFS queue, giving up after `D` (no value: as long as it takes)").NoOptDefVal = waitForever
	fs.BoolVar(&a.nonblock, "nonblock", false, "fail at once when not enough GPUs are free (the default without --wait)")
	fs.VarP(&a.note, "note", "n", "a short `TEXT` shown with the reservation")
	fs.VarP(&a.user, "user", "u", "reserve for another account `NAME` (root and the admin group only)")
}

// check rejects flags that contradict each other.
func (a *requestArgs) check(fs *pflag.FlagSet) error {
	if fs.Changed("gpus") && fs.Changed("gpu-ids") {
		return usagef("--gpus %d and --gpu-ids %s conflict: give either a number of GPUs or the GPUs themselves", a.gpus.n, a.ids.raw)
	}
	if a.wait.set && a.nonblock {
		return usagef("--wait and --nonblock conflict: give one of them")
	}
	return nil
}

// opened is what reserve and run know before they ask: the node, the
// account acting, and one scan of the GPUs (reused for the grant, so the
// request costs no second scan).
type opened struct {
	cfg  *config.Config
	node *localnode.Node
	user string
	uid  int
	devs []gpu.Device
}

// open opens the node, settles who acts and scans the GPUs. The caller
// closes p.node.
func (a *requestArgs) open(ctx context.Context, inv *invocation) (*opened, error) {
	cfg, node, err := inv.openNode(ctx)
	if err != nil {
		return nil, err
	}
	user, uid, err := actingUser(inv.env, cfg, a.user.s)
	if err == nil {
		var devs []gpu.Device
		if devs, err = node.Devices(ctx); err == nil {
			return &opened{cfg: cfg, node: node, user: user, uid: uid, devs: devs}, nil
		}
	}
	node.Close()
	return nil, err
}

// take asks for the GPUs a describes, waiting in the queue when a says so,
// never granting the GPUs in exclude.
func (a *requestArgs) take(ctx context.Context, inv *invocation, p *opened, kind allocator.Kind, lease time.Duration, exclude ...string) (allocator.Grant, error) {
	req, err := a.request(p.cfg, kind, p.user, p.uid, lease, p.devs)
	if err != nil {
		return allocator.Grant{}, err
	}
	req.Exclude = exclude
	return acquire(ctx, inv.env, p.cfg, p.node, req, p.devs, a.wait)
}

// request builds the allocation request from the flags and the scan.
func (a *requestArgs) request(cfg *config.Config, kind allocator.Kind, user string, uid int, lease time.Duration, devs []gpu.Device) (allocator.Request, error) {
	req := allocator.Request{Kind: kind, User: user, UID: uid, Lease: lease, Note: a.note.s}
	if len(devs) == 0 {
		return req, fmt.Errorf("node %s: the GPU provider reports no GPUs", cfg.Node)
	}
	if len(a.ids.ids) > 0 {
		uuids, err := uuidsOf(devs, a.ids)
		req.GPUs = uuids
		return req, err
	}
	// More than the node has can never be granted, not even by waiting.
	if a.gpus.n > len(devs) {
		return req, badValue("--gpus", strconv.Itoa(a.gpus.n), fmt.Sprintf("at most %d, the number of GPUs of node %s", len(devs), cfg.Node))
	}
	req.Count = a.gpus.n
	return req, nil
}

// acquire asks for the GPUs once and, with --wait, keeps asking from the
// node's FCFS queue. devs is the scan the request was built from.
func acquire(ctx context.Context, env *Env, cfg *config.Config, node *localnode.Node, req allocator.Request, devs []gpu.Device, w waitValue) (allocator.Grant, error) {
	req.RequestID = allocator.NewRequestID()
	g, err := node.Allocate(ctx, req, devs)
	g, err = confirmed(ctx, node, req, devs, g, err)
	var short *allocator.ShortageError
	switch {
	case err == nil:
		return g, nil
	case !errors.As(err, &short):
		return g, err
	case !w.set:
		return g, explainShortage(short, devs)
	}
	return waitInQueue(ctx, env, cfg, node, req, w.bound)
}

// confirmed settles the outcome g, err of allocating req when the primary
// made a grant but fewer replicas confirmed it than redis.wait_replicas
// asks for: asked once more with the
// same request id, it is confirmed now (the stored reply, waited for
// again), or else given back, so that a failed command leaves nothing
// reserved that nobody uses and that a failover may yet lose.
//
// The retry goes through node.Allocate as the first try did (devs, the
// scan it was made from; nil: scan again), so that a new primary that
// lost the first grant and decides afresh leaves out GPUs in unreserved
// use too.
func confirmed(ctx context.Context, node *localnode.Node, req allocator.Request, devs []gpu.Device, g allocator.Grant, err error) (allocator.Grant, error) {
	var unconfirmed *store.NotReplicatedError
	if !errors.As(err, &unconfirmed) || len(g.GPUs) == 0 {
		return g, err
	}
	if again, aerr := node.Allocate(ctx, req, devs); aerr == nil {
		return again, nil
	}
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: req.User, GPUs: g.GPUs, Token: g.Token}
	_, rerr := node.Store.Release(context.WithoutCancel(ctx), rel)
	var still *store.NotReplicatedError
	if rerr == nil || errors.As(rerr, &still) {
		// A release the replicas lag on is still applied: a failover
		// that loses it loses the grant too.
		return allocator.Grant{}, &givenBackError{err}
	}
	return allocator.Grant{}, err
}

// givenBackError: a grant too few replicas confirmed, given back.
type givenBackError struct{ err error }

func (e *givenBackError) Error() string {
	return e.err.Error() + "; the GPUs were given back, so nothing is reserved"
}

func (e *givenBackError) Unwrap() error { return e.err }

// namedShortage is a refusal of GPUs named by index, with who holds each.
type namedShortage struct {
	*allocator.ShortageError
	detail string
}

func (e *namedShortage) Error() string { return e.ShortageError.Error() + ": " + e.detail }
func (e *namedShortage) Unwrap() error { return e.ShortageError }

// explainShortage says, for a request of named GPUs, who holds each GPU
// that could not be granted, so that the user knows whom to ask; a
// request by count gets the counts alone.
func explainShortage(short *allocator.ShortageError, devs []gpu.Device) error {
	if len(short.Conflicts) == 0 {
		return short
	}
	names := gpu.SetOf(devs)
	parts := make([]string, len(short.Conflicts))
	for i, c := range short.Conflicts {
		name := "GPU " + names.Name(c.GPU)
		if c.Holder != nil {
			parts[i] = fmt.Sprintf("%s is reserved by %s (%s)", name, c.Holder.User, holding(*c.Holder))
			continue
		}
		parts[i] = name + " is in use without reservation"
		if users := processUsers(devs, c.GPU); users != "" {
			parts[i] += " by " + users
		}
	}
	return &namedShortage{ShortageError: short, detail: strings.Join(parts, "; ")}
}

// processUsers lists the accounts of the processes on a GPU, each once.
func processUsers(devs []gpu.Device, uuid string) string {
	var users []string
	for _, d := range devs {
		if d.UUID != uuid {
			continue
		}
		for _, p := range d.Processes {
			if p.User != "" && !slices.Contains(users, p.User) {
				users = append(users, p.User)
			}
		}
	}
	return strings.Join(users, ", ")
}

// timerFunc starts a timer that fires once after d.
type timerFunc func(d time.Duration) <-chan time.Time

// start is f, or time.After when f is nil.
func (f timerFunc) start(d time.Duration) <-chan time.Time {
	if f != nil {
		return f(d)
	}
	return time.After(d)
}

// waitInQueue joins the queue and polls until the request is granted, the
// bound passes or a signal arrives; the last two leave the queue, giving
// back what the entry held so far.
func waitInQueue(ctx context.Context, env *Env, cfg *config.Config, node *localnode.Node, req allocator.Request, bound time.Duration) (allocator.Grant, error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	st := node.Store
	entry := allocator.QueueEntry{ID: allocator.NewRequestID(), Kind: req.Kind, User: req.User, Count: req.Count, GPUs: req.GPUs}
	pos, err := st.Enqueue(ctx, entry, cfg.Queue.HeartbeatTimeout)
	if err != nil {
		return allocator.Grant{}, err
	}
	leave := func() error {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return st.LeaveQueue(lctx, entry.ID)
	}
	wanted := plural(entry.Wanted(), "GPU")
	var deadline <-chan time.Time
	if bound > 0 {
		deadline = env.waitTimer.start(bound)
	}
	tick := time.NewTicker(cfg.Queue.PollInterval)
	defer tick.Stop()

	shownPos, shownHeld, held := 0, 0, 0
	var lastErr string
	for {
		if pos > 0 && (pos != shownPos || held != shownHeld) {
			msg := fmt.Sprintf("Waiting for %s on node %s: position %d in the queue", wanted, cfg.Node, pos)
			if held > 0 {
				msg += fmt.Sprintf(", holding %d so far", held)
			}
			fmt.Fprintln(env.Stderr, msg+" (Ctrl-C to give up)")
			shownPos, shownHeld = pos, held
		}
		select {
		case s := <-sigs:
			return allocator.Grant{}, interrupted(env, s, leave())
		case <-deadline:
			if err := leave(); err != nil {
				return allocator.Grant{}, fmt.Errorf("no %s within --wait %s, and leaving the queue failed: %w", wanted, config.Duration(bound), err)
			}
			return allocator.Grant{}, fmt.Errorf("no %s within --wait %s on node %s; left the queue", wanted, config.Duration(bound), cfg.Node)
		case <-tick.C:
		}
		// A waiter that stops sending heartbeats (stopped, or cut off from
		// the store for too long) is dropped; it joins again at the back.
		p, err := st.QueueHeartbeat(ctx, entry.ID)
		if errors.Is(err, allocator.ErrNotQueued) {
			fmt.Fprintln(env.Stderr, "canhazgpu: the queue dropped this request after missed heartbeats; joining again")
			held = 0
			p, err = st.Enqueue(ctx, entry, cfg.Queue.HeartbeatTimeout)
		}
		if err != nil {
			if err.Error() != lastErr {
				writeLine(env.Stderr, "canhazgpu: warning: %v; still waiting", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr, pos = "", p
		if pos != 1 {
			continue // only the head of the queue may take GPUs
		}
		req.RequestID = allocator.NewRequestID()
		req.QueueEntry = entry.ID
		g, err := node.Allocate(ctx, req, nil)
		g, err = confirmed(ctx, node, req, nil, g, err)
		var pending *allocator.PendingError
		var short *allocator.ShortageError
		var input *allocator.InputError
		switch {
		case err == nil:
			select {
			case s := <-sigs:
				// Interrupted while the grant was on its way: give it back.
				rel := allocator.Release{RequestID: allocator.NewRequestID(), User: req.User, GPUs: g.GPUs, Token: g.Token}
				_, rerr := st.Release(context.WithoutCancel(ctx), rel)
				return allocator.Grant{}, interrupted(env, s, rerr)
			default:
			}
			return g, nil
		case errors.As(err, &pending):
			held = len(pending.Allocated)
		case errors.As(err, &short), errors.Is(err, allocator.ErrNotQueued):
		case errors.As(err, &input), errors.Is(err, allocator.ErrNotRegistered):
			_ = leave()
			return allocator.Grant{}, err
		default:
			if err.Error() != lastErr {
				writeLine(env.Stderr, "canhazgpu: warning: %v; still waiting", err)
				lastErr = err.Error()
			}
		}
	}
}

// interrupted ends a wait cut short by a signal: exit 128+signal, after
// saying that the queue was left (or why not).
func interrupted(env *Env, s os.Signal, leaveErr error) error {
	code := 128
	if n, ok := s.(syscall.Signal); ok {
		code += int(n)
	}
	if leaveErr != nil {
		return &exitStatus{code: code, msg: fmt.Sprintf("interrupted by %v; leaving the queue failed: %v (the entry lapses after queue.heartbeat_timeout)", s, leaveErr)}
	}
	fmt.Fprintf(env.Stderr, "Interrupted by %v: left the queue.\n", s)
	return &exitStatus{code: code}
}
