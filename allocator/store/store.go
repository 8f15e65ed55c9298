// Package store keeps reservations in Redis.
//
// Every change is one Lua script with all its keys declared (see lua/),
// run by EVALSHA with a fallback to EVAL when the server lost its script
// cache. Times come from the server's clock inside the scripts, so nodes
// with skewed clocks still agree on expiry. Mutating calls carry a request
// id: go-redis retries a command after a timeout, and the stored reply
// makes the retry return what the first attempt did.
package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

// Options bound what the store keeps.
type Options struct {
	HistoryMaxAge     time.Duration // default 90 days
	HistoryMaxRecords int           // default 100000
}

// Store is the reservation store of one node.
type Store struct {
	rdb   redis.UniversalClient
	addr  string // for error messages
	node  string
	keys  nodeKeys
	opts  Options
	owned bool // Close closes rdb
}

// replyTTL is how long a request's reply is kept for retries.
const replyTTL = 10 * time.Minute

// New wraps a client for one node's reservations. addr names the server in
// error messages.
func New(rdb redis.UniversalClient, addr, node string, opts Options) (*Store, error) {
	if err := ValidateNode(node); err != nil {
		return nil, err
	}
	if opts.HistoryMaxAge <= 0 {
		opts.HistoryMaxAge = 90 * 24 * time.Hour
	}
	if opts.HistoryMaxRecords <= 0 {
		opts.HistoryMaxRecords = 100000
	}
	return &Store{rdb: rdb, addr: addr, node: node, keys: keysFor(node), opts: opts}, nil
}

// Node is the node this store serves.
func (s *Store) Node() string { return s.node }

// Client is the underlying Redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// ForNode is a store for another node over the same connection.
func (s *Store) ForNode(node string) (*Store, error) {
	return New(s.rdb, s.addr, node, s.opts)
}

// Close releases the connection when the store opened it.
func (s *Store) Close() error {
	if s.owned {
		return s.rdb.Close()
	}
	return nil
}

// wrap classifies a Redis error: a reply error is a bug or a server
// refusal; anything else means the store could not be reached in time.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !isTransient(rerr) {
		return fmt.Errorf("%s on %s: %w", op, s.addr, err)
	}
	return fmt.Errorf("%s: %w at %s: %w", op, allocator.ErrUnavailable, s.addr, err)
}

// isTransient: replies that mean the server cannot serve right now.
func isTransient(err redis.Error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY"} {
		if len(msg) >= len(p) && msg[:len(p)] == p {
			return true
		}
	}
	return false
}

func (s *Store) histArgs() (int64, int) {
	return s.opts.HistoryMaxAge.Milliseconds(), s.opts.HistoryMaxRecords
}
