package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoFunctions: the server lacks this build's function library and the
// credential may not load it (the CLI and monitor roles).
var ErrNoFunctions = errors.New("the store lacks this canhazgpu version's functions")

// runner runs the operations. On Redis 7 they are functions of the
// versioned library (FCALL, or FCALL_RO for reads), loaded when the server
// lacks them. A server without FCALL (Redis < 7) gets the same code as
// EVALSHA/EVAL scripts, a choice made at the first sign and kept for the
// rest of the runner's life.
type runner struct {
	rdb  redis.UniversalClient
	eval atomic.Bool
	wait durability
	// mayWait: the credential was seen allowed PEXPIRE and WAIT, which
	// replicated checks before its first change.
	mayWait atomic.Bool
}

// durability is how many replicas must confirm a change before it is
// acknowledged (redis.wait_replicas, redis.wait_timeout); 0: none, the
// primary's reply is enough.
type durability struct {
	replicas int
	timeout  time.Duration
}

// NotReplicatedError: a change was applied by the primary, but fewer
// replicas than required confirmed it within the timeout. Its outcome is
// uncertain: a failover now may lose it. The caller retries with the same
// request id, which returns the stored reply when the change survived and
// decides afresh on a new primary when it did not, or gives up and leaves
// the change to expire or be settled (docs/store.md#failover).
type NotReplicatedError struct {
	Want, Got int
	Timeout   time.Duration
}

func (e *NotReplicatedError) Error() string {
	return fmt.Sprintf("the change was confirmed by %d of the %d replicas redis.wait_replicas asks for within %s, "+
		"so a failover may lose it", e.Got, e.Want, e.Timeout)
}

// maxAttempts bounds one operation's tries: a missing library (load,
// retry), or no FCALL (switch to scripts, retry) then a pipeline's NOSCRIPT
// (load the script, retry).
const maxAttempts = 3

func (r *runner) call(ctx context.Context, c redis.Cmdable, o *op, keys []string, args ...any) *redis.Cmd {
	if o.readOnly {
		return c.FCallRO(ctx, o.function, keys, args...)
	}
	return c.FCall(ctx, o.function, keys, args...)
}

// run runs one operation in one round trip when the server has its code.
func (r *runner) run(ctx context.Context, o *op, keys []string, args ...any) *redis.Cmd {
	for attempt := 1; ; attempt++ {
		var cmd *redis.Cmd
		switch {
		case r.wait.replicas > 0 && !o.readOnly && !o.unconfirmed:
			cmd = r.replicated(ctx, o, keys, args...)
		case r.eval.Load():
			cmd = o.script.Run(ctx, r.rdb, keys, args...) // EVALSHA, then EVAL on NOSCRIPT
		default:
			cmd = r.call(ctx, r.rdb, o, keys, args...)
		}
		retry, err := r.settle(ctx, o, cmd.Err())
		switch {
		case err != nil:
			failed := redis.NewCmd(ctx)
			failed.SetErr(err)
			return failed
		case !retry || attempt == maxAttempts:
			return cmd
		}
	}
}

// replicated runs a change and WAIT in one pipeline on one connection (WAIT
// counts the replicas that have this connection's writes), and fails it
// with a *NotReplicatedError when too few confirm it. Under the EVAL
// fallback the pipeline carries EVALSHA; its NOSCRIPT is settled by run.
func (r *runner) replicated(ctx context.Context, o *op, keys []string, args ...any) *redis.Cmd {
	var cmd *redis.Cmd
	var wait *redis.IntCmd
	c, err := r.primary(ctx, keys[0])
	if err == nil && !r.mayWait.Load() {
		err = r.checkMayWait(ctx, c, replyKey(keys))
	}
	if err == nil {
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			if r.eval.Load() {
				cmd = o.script.EvalSha(ctx, p, keys, args...)
			} else {
				cmd = r.call(ctx, p, o, keys, args...)
			}
			// WAIT counts replicas that reached this connection's last
			// write. A retry answered from the stored reply writes
			// nothing, and may come on another connection than the first
			// attempt: touching the reply (when there is one) makes it a
			// write here, so the wait covers the change it stands for.
			if reply := replyKey(keys); reply != "" {
				p.PExpire(ctx, reply, replyTTL)
			}
			// Not p.Wait, which the Pipeliner interface lacks. The socket's
			// read timeout (redis.op_timeout) must outlast the wait, which
			// the settings check.
			wait = redis.NewIntCmd(ctx, "wait", r.wait.replicas, r.wait.timeout.Milliseconds())
			return p.Process(ctx, wait)
		})
	}
	switch {
	case cmd != nil && cmd.Err() != nil:
		r.moved(ctx, cmd.Err())
		return cmd
	case err != nil:
		r.moved(ctx, err)
	case wait.Val() < int64(r.wait.replicas):
		// The reply stays with the error: what the primary applied may
		// have to be undone, and the reply says what it was.
		cmd.SetErr(&NotReplicatedError{Want: r.wait.replicas, Got: int(wait.Val()), Timeout: r.wait.timeout})
		return cmd
	default:
		return cmd
	}
	failed := redis.NewCmd(ctx)
	failed.SetErr(err)
	return failed
}

// checkMayWait asks, once per runner and before any change, for the two
// commands a durable change adds, so that a Redis user made from an
// earlier version's rules is refused (NOPERM) with nothing changed,
// instead of after its change was applied. WAIT 0 0 answers at once; the
// reply key, if any, is this request's: touching it is what the change
// does anyway.
func (r *runner) checkMayWait(ctx context.Context, c redis.Cmdable, reply string) error {
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if reply != "" {
			p.PExpire(ctx, reply, replyTTL)
		}
		return p.Process(ctx, redis.NewIntCmd(ctx, "wait", 0, 0))
	})
	if err == nil {
		r.mayWait.Store(true)
	}
	return err
}

// primary is the connection a change and its WAIT share: the client
// itself, or in a cluster the client of the primary that serves the
// operation's keys (all in one slot: they share the node's hash tag). A
// cluster pipeline would send the keyless WAIT to any primary.
func (r *runner) primary(ctx context.Context, key string) (redis.Cmdable, error) {
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, key)
	}
	return r.rdb, nil
}

// moved: a change sent to a cluster primary directly failed, perhaps
// because its slots moved in a failover, which the cluster client learns
// only when told to reload.
func (r *runner) moved(ctx context.Context, err error) {
	if cc, ok := r.rdb.(*redis.ClusterClient); ok && err != nil {
		cc.ReloadState(ctx)
	}
}

// runAll runs one operation for many key sets, each with the same args,
// in one pipeline. first, when not nil, queues commands of its own ahead
// of them, in the same round trip (and again when the pipeline is
// retried).
func (r *runner) runAll(ctx context.Context, o *op, keys [][]string, first func(redis.Pipeliner), args ...any) ([]*redis.Cmd, error) {
	for attempt := 1; ; attempt++ {
		cmds := make([]*redis.Cmd, len(keys))
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			if first != nil {
				first(p)
			}
			for i, k := range keys {
				if r.eval.Load() {
					cmds[i] = o.script.EvalSha(ctx, p, k, args...) // a pipeline has no EVAL fallback
				} else {
					cmds[i] = r.call(ctx, p, o, k, args...)
				}
			}
			return nil
		})
		retry, serr := r.settle(ctx, o, err)
		switch {
		case serr != nil:
			return nil, serr
		case !retry || attempt == maxAttempts:
			return cmds, err
		}
	}
}

// settle reacts to an operation's error and reports whether running it
// again may succeed: it loads what the server lacks, or switches to
// scripts when the server has no FCALL.
func (r *runner) settle(ctx context.Context, o *op, err error) (bool, error) {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false, nil
	}
	msg := rerr.Error()
	switch {
	case r.eval.Load() && strings.HasPrefix(msg, "NOSCRIPT"):
		return true, onEveryPrimary(ctx, r.rdb, func(ctx context.Context, c redis.Cmdable) error {
			return o.script.Load(ctx, c).Err()
		})
	case r.eval.Load():
		return false, nil
	case strings.HasPrefix(msg, "ERR Function not found"):
		return true, r.load(ctx)
	case isUnknownFCall(msg):
		r.eval.Store(true)
		return true, nil
	}
	return false, nil
}

// isUnknownFCall recognises Redis 6's answer to FCALL and FCALL_RO
// ("ERR unknown command `FCALL`, ..."; Redis 7 quotes with ').
func isUnknownFCall(msg string) bool {
	m := strings.ToLower(msg)
	return strings.HasPrefix(m, "err unknown command") && strings.Contains(m, "fcall")
}

// load loads this build's library on every primary (REPLACE: loading
// twice, or from many programs at once, is harmless).
func (r *runner) load(ctx context.Context) error {
	err := onEveryPrimary(ctx, r.rdb, func(ctx context.Context, c redis.Cmdable) error {
		return c.FunctionLoadReplace(ctx, library.code).Err()
	})
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOPERM") {
		return fmt.Errorf("%w (library %s), and this credential may not load them: a root program does "+
			"(canhazgpu admin --register, the scheduler prolog or the health check)", ErrNoFunctions, library.name)
	}
	if err != nil {
		return fmt.Errorf("load function library %s: %w", library.name, err)
	}
	return nil
}

// onEveryPrimary runs f on the server, or on every primary of a cluster.
func onEveryPrimary(ctx context.Context, rdb redis.UniversalClient, f func(context.Context, redis.Cmdable) error) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return f(ctx, c) })
	}
	return f(ctx, rdb)
}
