package allocator

import (
	"strconv"
	"time"
)

// MaxGPUsPerNode bounds what one node may register and what one request,
// release or renewal may name, so that every list the store handles has a
// known size.
const MaxGPUsPerNode = 256

// Policy is a node's limits. Root programs write it to the store with the
// node's GPUs; the store then bounds what any client asks for by it, so a
// client cannot hold GPUs or queue places longer than the node allows.
// A zero field means its default.
type Policy struct {
	RunLease          time.Duration // longest lease of a run reservation between heartbeats
	QueueTimeout      time.Duration // longest a queue entry lives without a heartbeat
	MaxDuration       time.Duration // longest manual reservation
	HistoryMaxAge     time.Duration // finished reservations older than this are dropped
	HistoryMaxRecords int           // at most this many finished reservations are kept
}

// The defaults of a Policy's zero fields. The store's operations use the same
// values for a field missing from the stored policy.
const (
	DefaultRunLease          = 60 * time.Second
	DefaultQueueTimeout      = 30 * time.Second
	DefaultMaxDuration       = 7 * 24 * time.Hour
	DefaultHistoryMaxAge     = 90 * 24 * time.Hour
	DefaultHistoryMaxRecords = 100000
)

// WithDefaults fills the zero fields with their defaults.
func (p Policy) WithDefaults() Policy {
	fill := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	fill(&p.RunLease, DefaultRunLease)
	fill(&p.QueueTimeout, DefaultQueueTimeout)
	fill(&p.MaxDuration, DefaultMaxDuration)
	fill(&p.HistoryMaxAge, DefaultHistoryMaxAge)
	if p.HistoryMaxRecords == 0 {
		p.HistoryMaxRecords = DefaultHistoryMaxRecords
	}
	return p
}

// Validate checks a policy: the store keeps durations in milliseconds, so
// a duration is zero (the default) or at least one millisecond.
func (p Policy) Validate() error {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"run lease", p.RunLease}, {"queue timeout", p.QueueTimeout}, {"maximum duration", p.MaxDuration},
		{"history max age", p.HistoryMaxAge}} {
		if d.v != 0 && d.v < time.Millisecond {
			return &InputError{Field: d.field, Value: d.v.String(), Accepted: "a duration of at least 1ms, or zero for the default"}
		}
	}
	if p.HistoryMaxRecords < 0 {
		return &InputError{Field: "history max records", Value: strconv.Itoa(p.HistoryMaxRecords), Accepted: "a positive count, or zero for the default"}
	}
	return nil
}
