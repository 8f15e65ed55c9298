// Package store keeps reservations in Redis.
//
// Every change is one Lua operation (NAME.lua, beside its Go caller), run
// as a function of a library named after this build's code (FCALL;
// FCALL_RO for reads) and loaded when the server lacks it; on Redis < 7 the same code runs as
// EVALSHA/EVAL scripts. Times come from the server's clock inside the
// operations, so nodes with skewed clocks still agree on expiry. Mutating
// calls carry a request id: go-redis retries a command after a timeout,
// and the stored reply makes the retry return what the first attempt did.
//
// The store is its own trust boundary: batch reservations, registrations,
// flags and the node's policy live in keys that the CLI's Redis user may
// only read (see ACLRules), and the operations bound what clients ask for
// by the node's stored policy.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

// Options are the node's settings the store writes when registering.
type Options struct {
	// Policy is stored by Register; zero fields mean the defaults.
	Policy allocator.Policy
}

// Store is the reservation store of one node.
type Store struct {
	rdb    redis.UniversalClient
	run    *runner // shared by the stores of one connection
	addr   string  // for error messages
	node   string
	keys   nodeKeys
	policy allocator.Policy // defaults filled in
	owned  bool             // Close closes rdb
	// registry is the node registry as Snapshots last read it, sorted.
	registry atomic.Pointer[[]string]
}

// replyTTL is how long a request's reply is kept for retries.
const replyTTL = 10 * time.Minute

// New wraps a client for one node's reservations. addr names the server in
// error messages.
func New(rdb redis.UniversalClient, addr, node string, opts Options) (*Store, error) {
	return newStore(&runner{rdb: rdb}, addr, node, opts.Policy)
}

func newStore(run *runner, addr, node string, policy allocator.Policy) (*Store, error) {
	if err := ValidateNode(node); err != nil {
		return nil, err
	}
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: run.rdb, run: run, addr: addr, node: node, keys: keysFor(node), policy: policy.WithDefaults()}, nil
}

// Node is the node this store serves.
func (s *Store) Node() string { return s.node }

// Policy is the policy Register stores, defaults filled in: a root program
// compares it with Snapshot.Policy to see whether the stored one is stale.
func (s *Store) Policy() allocator.Policy { return s.policy }

// Client is the underlying Redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// ForNode is a store for another node over the same connection.
func (s *Store) ForNode(node string) (*Store, error) {
	return newStore(s.run, s.addr, node, s.policy)
}

// LoadFunctions loads this build's function library into Redis (every
// primary of a cluster). Operations load it themselves when it is missing
// and the credential allows; root programs call this so that the CLI,
// whose credential does not allow, finds it.
func (s *Store) LoadFunctions(ctx context.Context) error {
	return s.wrap("load functions", s.run.load(ctx))
}

// Close releases the connection when the store opened it.
func (s *Store) Close() error {
	if s.owned {
		return s.rdb.Close()
	}
	return nil
}

// wrap classifies an error: a missing library the credential may not
// load, a refusal by the server's ACL, another reply error (a bug or a
// server refusal), or a store that could not be reached in time.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	switch {
	case errors.Is(err, ErrNoFunctions):
		return fmt.Errorf("%s on %s: %w", op, s.addr, err)
	case errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "NOPERM"):
		return fmt.Errorf("%s on %s: %w: %w", op, s.addr, allocator.ErrNotPermitted, err)
	case errors.As(err, &rerr) && !isTransient(rerr):
		return fmt.Errorf("%s on %s: %w", op, s.addr, err)
	}
	return fmt.Errorf("%s: %w at %s: %w", op, allocator.ErrUnavailable, s.addr, err)
}

// isTransient: replies that mean the server cannot serve right now. A
// change sent to a cluster primary directly (see runner.replicated) meets
// MOVED or ASK while a failover moves its slots.
func isTransient(err redis.Error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "MOVED", "ASK"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
