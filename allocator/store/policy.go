package store

import (
	"strconv"
	"time"

	"canhazgpu/allocator"
)

// policyField is one field of a node's policy hash. The list below is the
// one description of the hash: register.lua takes the values in this
// order, the operations read these names with these defaults, and Snapshot
// decodes them.
type policyField struct {
	name string
	get  func(allocator.Policy) int64
	set  func(*allocator.Policy, int64)
}

func msField(name string, d func(*allocator.Policy) *time.Duration) policyField {
	return policyField{name: name,
		get: func(p allocator.Policy) int64 { return d(&p).Milliseconds() },
		set: func(p *allocator.Policy, v int64) { *d(p) = time.Duration(v) * time.Millisecond }}
}

var policyFields = []policyField{
	msField("run_lease_ms", func(p *allocator.Policy) *time.Duration { return &p.RunLease }),
	msField("queue_timeout_ms", func(p *allocator.Policy) *time.Duration { return &p.QueueTimeout }),
	msField("max_duration_ms", func(p *allocator.Policy) *time.Duration { return &p.MaxDuration }),
	msField("history_max_age_ms", func(p *allocator.Policy) *time.Duration { return &p.HistoryMaxAge }),
	{name: "history_max_records",
		get: func(p allocator.Policy) int64 { return int64(p.HistoryMaxRecords) },
		set: func(p *allocator.Policy, v int64) { p.HistoryMaxRecords = int(v) }},
}

// policyArgs are the policy's values in policyFields order.
func policyArgs(p allocator.Policy) []any {
	out := make([]any, len(policyFields))
	for i, f := range policyFields {
		out[i] = f.get(p)
	}
	return out
}

// decodePolicy reads a stored policy hash; absent or unreadable fields
// stay zero.
func decodePolicy(h map[string]string) allocator.Policy {
	var p allocator.Policy
	for _, f := range policyFields {
		if v, err := strconv.ParseInt(h[f.name], 10, 64); err == nil && v > 0 {
			f.set(&p, v)
		}
	}
	return p
}
