package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
)

type runArgs struct {
	requestArgs
	timeout durationValue
}

func runCommand() *command {
	var a runArgs
	fs := newFlagSet("run")
	// Everything after the first argument that is not a flag belongs to the
	// command, so `canhazgpu run python train.py --lr 3e-4` works too.
	fs.SetInterspersed(false)
	a.bind(fs)
	fs.VarP(&a.timeout, "timeout", "t", "stop the command after `D` (TERM, then KILL after run.kill_grace); default run.timeout, none")
	return &command{
		name:  "run",
		usage: "canhazgpu run [--gpus N | --gpu-ids LIST] [--timeout D] [--wait[=D]] [--note TEXT] -- CMD ARGS...",
		short: "Run a command on reserved GPUs and release them when it ends",
		long: `Reserves the GPUs, runs CMD with CUDA_VISIBLE_DEVICES set to their indices and
CUDA_DEVICE_ORDER=PCI_BUS_ID (on AMD nodes, ROCR_VISIBLE_DEVICES set to their
indices and HIP_VISIBLE_DEVICES to 0..N-1), replacing any values you had, keeps the
reservation alive by heartbeat while CMD runs, and releases it when CMD ends,
even when CMD could not be started. The exit status is CMD's own (128+N when
a signal N ended it; 127 when CMD was not found, 126 when it is not
executable). CMD runs in its own process group with your terminal: signals
sent to canhazgpu (INT, TERM, HUP, QUIT) reach CMD's process group. What CMD
leaves running, in its group or not, is stopped before the GPUs are
released, and everything CMD started is killed if canhazgpu is killed. If
the store lost the reservation (Redis restarted without its data),
canhazgpu takes the same GPUs again and CMD runs on; if the reservation was
ended (released by an administrator, or taken over after missed
heartbeats) or the GPUs are someone else's now, canhazgpu warns and stops
CMD.`,
		examples: []string{
			"canhazgpu run --gpus 2 -- python train.py",
			"canhazgpu run --gpu-ids 1 --timeout 2h -- ./benchmark.sh",
			"canhazgpu run --gpus 4 --wait=1h --note 'llama eval' -- python eval.py",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := a.check(fs); err != nil {
				return err
			}
			argv := a.takeWaitBound(args, true)
			if len(argv) > 0 && argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return usagef("no command given: want canhazgpu run [flags] -- CMD ARGS...")
			}
			if argv[0] == "" {
				// Looked up in PATH, "" names each directory itself.
				return badValue("command name", "", "the name or path of a program, as in canhazgpu run [flags] -- CMD ARGS...")
			}
			return runRun(ctx, inv, &a, argv)
		},
	}
}

// takeWaitBound reads `--wait 10m`: pflag takes a bare --wait as
// "forever" and leaves "10m" as an argument. For run it is the bound only
// when "--" follows it (otherwise it could be the command's name).
func (a *requestArgs) takeWaitBound(args []string, beforeDash bool) []string {
	if !a.wait.set || a.wait.bound != 0 || len(args) == 0 {
		return args
	}
	if beforeDash && (len(args) < 2 || args[1] != "--") {
		return args
	}
	if d, err := config.ParseDuration(args[0]); err == nil {
		a.wait.bound = d
		return args[1:]
	}
	return args
}

func runRun(ctx context.Context, inv *invocation, a *runArgs, argv []string) error {
	p, err := a.open(ctx, inv)
	if err != nil {
		return err
	}
	defer p.node.Close()
	env, cfg, node, user, devs := inv.env, p.cfg, p.node, p.user, p.devs
	timeout := cfg.Run.Timeout
	if a.timeout.d > 0 {
		timeout = a.timeout.d
	}
	// A typo should not cost a reservation: find the program first.
	path, err := lookPath(argv[0], env.commandEnviron())
	if err != nil {
		return err
	}
	g, placeholder, err := a.hold(ctx, inv, p, allocator.KindRun, cfg.Run.HeartbeatTimeout, runLimit(cfg, timeout))
	if err != nil {
		return err
	}
	ids := gpu.SetOf(devs).List(g.GPUs)
	l := &runLease{store: node.Store, user: user, uid: p.uid, note: a.note.s, token: g.Token, gpus: g.GPUs, names: ids,
		timeout: cfg.Run.HeartbeatTimeout}
	held, _ := gpu.SetOf(devs).Pick(g.GPUs)
	exports := make(map[string]string)
	for _, e := range gpu.VendorOf(cfg.GPU.Provider).Exports(held.IDs(), gpu.ByIndex) {
		exports[e.Name] = e.Value
	}
	environ := withEnv(env.commandEnviron(), exports)
	stderr := &lockedWriter{w: env.Stderr}
	code, runErr := supervise(ctx, supervision{env: env, stderr: stderr, path: path, argv: argv, environ: environ,
		timeout: timeout, grace: cfg.Run.KillGrace, interval: cfg.Run.HeartbeatInterval, lease: l})
	done, err := l.release(ctx)
	if err != nil {
		writeLine(stderr, "canhazgpu: warning: could not release GPU %s: %v; the reservation lapses %s after the last heartbeat",
			ids, err, config.Duration(cfg.Run.HeartbeatTimeout))
	}
	if placeholder != "" {
		// The hold names its placeholder as the release ended it: the one
		// submitted with it, or one the health check gave it since
		// (lost_placeholder = "resubmit"). Nothing released: the one
		// submitted.
		jobs := placeholderJobs(done.Holds, "")
		if len(jobs) == 0 {
			jobs = []placeholderJob{{id: placeholder, uid: l.uid}}
		}
		cancelPlaceholders(ctx, env, cfg, jobs)
	}
	if runErr != nil {
		return runErr
	}
	return &exitStatus{code: code}
}

// runLease is the run reservation held while the command runs. Only
// keepAlive changes it while the command runs; release reads it after.
type runLease struct {
	store   *store.Store
	user    string
	uid     int
	note    string
	token   int64 // fencing token of the grant: renewals and the release need it
	gpus    []string
	names   string // the GPUs' indices, for messages
	timeout time.Duration
	// beat is the store's time of the last renewal; zero before the first.
	beat time.Time
}

func (l *runLease) renew(ctx context.Context) error {
	expires, err := l.store.Renew(ctx, l.user, l.token, l.gpus, l.timeout)
	if err == nil {
		l.beat = expires.Add(-l.timeout)
	}
	return err
}

// forgottenError: the store no longer has the lease, without having ended
// it, and the GPUs could not be taken again yet.
type forgottenError struct {
	names string
	err   error
}

func (e *forgottenError) Error() string {
	return fmt.Sprintf("the store lost the reservation of GPU %s and it cannot be taken again yet: %v", e.names, e.err)
}

func (e *forgottenError) Unwrap() error { return e.err }

// hold renews the lease. When the store no longer has it and never ended
// it (a Redis that restarted without its data, or a replica promoted
// before it had the lease), hold takes the same GPUs again for the same
// user and reports retaken. The errors: *allocator.LeaseLostError when
// the lease is over for good (ended in the store, or the GPUs are someone
// else's), *forgottenError when the GPUs could not be taken again yet
// (the node is not registered again yet, or someone waits in the queue),
// anything else when the store could not be asked.
func (l *runLease) hold(ctx context.Context) (retaken bool, err error) {
	err = l.renew(ctx)
	var lost *allocator.LeaseLostError
	if !errors.As(err, &lost) || lost.Holder != nil {
		return false, err
	}
	snap, serr := l.store.Snapshot(ctx)
	if serr != nil {
		return false, serr
	}
	// Every end of a reservation (a release, a reclaim after missed
	// heartbeats) records when its GPU was freed. A GPU freed since our
	// last renewal was taken from us on purpose; a store that lost its
	// data has no such record.
	for _, g := range l.gpus {
		if at, ok := snap.LastReleased[g]; ok && !at.Before(l.beat) {
			return false, err
		}
	}
	g, aerr := l.store.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindRun,
		User: l.user, UID: l.uid, GPUs: l.gpus, Lease: l.timeout, Note: l.note, Retake: true})
	var short *allocator.ShortageError
	if errors.As(aerr, &short) {
		for _, c := range short.Conflicts {
			if c.Holder != nil {
				return false, &allocator.LeaseLostError{GPU: c.GPU, Holder: c.Holder}
			}
		}
	}
	switch {
	case aerr == nil:
		l.token = g.Token
		return true, nil
	case errors.Is(aerr, allocator.ErrUnavailable):
		return false, aerr
	}
	return false, &forgottenError{names: l.names, err: aerr}
}

// release ends the lease, retrying with the same request id so that a
// retry after a lost reply applies once. Only this grant's token is
// released: GPUs taken over by someone else stay theirs.
func (l *runLease) release(ctx context.Context) (allocator.Released, error) {
	rel := allocator.Release{RequestID: allocator.NewRequestID(), User: l.user, Kinds: []allocator.Kind{allocator.KindRun},
		GPUs: l.gpus, Token: l.token}
	var done allocator.Released
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		done, err = l.store.Release(rctx, rel)
		cancel()
		if err == nil || !errors.Is(err, allocator.ErrUnavailable) {
			return done, err
		}
	}
	return done, err
}

// supervision is what supervise needs to run the command.
type supervision struct {
	env      *Env
	stderr   io.Writer
	path     string
	argv     []string
	environ  []string
	timeout  time.Duration // 0: none
	grace    time.Duration // between TERM and KILL
	interval time.Duration // between renewals
	lease    *runLease
}

// supervise runs the command to its end and returns its exit status. It
// forwards signals to the command's process group, renews the lease on a
// timer, and stops the command on --timeout or when the lease is lost.
// The lease is held until every process the command started is gone. A
// non-nil error replaces the exit status (the command could not start, or
// ran without its reservation).
func supervise(ctx context.Context, s supervision) (int, error) {
	warn := func(msg string) { writeLine(s.stderr, "canhazgpu: %s", msg) }

	// Catch before starting, so no signal is lost in between. Caught
	// signals return to their defaults in the command when it execs.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	// A closed stderr must not kill canhazgpu (and leak the reservation)
	// when it writes a warning: with SIGPIPE caught, the write just fails.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)

	j, err := startJob(s.path, s.argv, s.environ, s.env.Stdin, s.env.Stdout, s.env.Stderr, s.grace, warn)
	if err != nil {
		return 0, startError(s.argv[0], err)
	}

	renewCtx, stopRenewing := context.WithCancel(ctx)
	lost := make(chan error, 1)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		keepAlive(renewCtx, s.lease, s.interval, lost, warn)
	}()

	var timeoutC, killC <-chan time.Time
	if s.timeout > 0 {
		t := time.NewTimer(s.timeout)
		defer t.Stop()
		timeoutC = t.C
	}
	var lostErr error
	stop := func() {
		if killC != nil {
			return
		}
		j.signal(syscall.SIGTERM)
		killC = time.After(s.grace)
	}
	var ws syscall.WaitStatus
	for done := false; !done; {
		select {
		case ws = <-j.tree.Events:
			if ws.Stopped() {
				j.suspend()
				continue
			}
			done = true
		case sig := <-sigs:
			j.signal(sig.(syscall.Signal))
		case <-timeoutC:
			warn(fmt.Sprintf("--timeout %s reached: stopping the command (TERM, then KILL after %s)", config.Duration(s.timeout), config.Duration(s.grace)))
			stop()
		case err := <-lost:
			lostErr = err
			warn(fmt.Sprintf("warning: %v; stopping the command (TERM, then KILL after %s) so that two owners never share a GPU", err, config.Duration(s.grace)))
			stop()
		case <-killC:
			j.signal(syscall.SIGKILL)
		}
	}
	// Renewing goes on while what the command left running is stopped.
	keeperErr := j.finish(s.grace)
	stopRenewing()
	<-renewed
	code := exitCode(ws)
	switch {
	case lostErr != nil:
		return code, &exitStatus{code: code, msg: fmt.Sprintf("the command was stopped because its reservation was lost: %v", lostErr)}
	case keeperErr != nil:
		return code, &exitStatus{code: code, msg: keeperErr.Error()}
	}
	return code, nil
}

// keepAlive renews the lease every interval until ctx ends or the lease
// is lost. A store that cannot be reached is retried: the lease only
// lapses after heartbeat_timeout, and renew succeeds again if nobody
// took the GPUs meanwhile. A store that forgot the lease gets it back;
// when that fails for longer than heartbeat_timeout since the store last
// confirmed the lease, the lease is lost.
func keepAlive(ctx context.Context, l *runLease, interval time.Duration, lost chan<- error, warn func(string)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	confirmed := time.Now()
	shown := "" // the problem last reported, so that each is said once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		retaken, err := l.hold(ctx)
		var ll *allocator.LeaseLostError
		var forgotten *forgottenError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &ll):
			lost <- err
			return
		case errors.As(err, &forgotten) && time.Since(confirmed) >= l.timeout:
			lost <- fmt.Errorf("the store lost the reservation of GPU %s and it could not be taken again within run.heartbeat_timeout (%s): %w",
				l.names, config.Duration(l.timeout), forgotten.err)
			return
		case err != nil:
			if err.Error() != shown {
				warn(fmt.Sprintf("warning: could not renew the reservation: %v; retrying", err))
				shown = err.Error()
			}
			continue
		case retaken:
			warn(fmt.Sprintf("the store had lost the reservation of GPU %s; it is held again", l.names))
		case shown != "":
			warn("the reservation is renewed again")
		}
		confirmed, shown = time.Now(), ""
	}
}
