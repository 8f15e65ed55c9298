package store

import (
	"regexp"
	"strings"

	"canhazgpu/allocator"
)

// prefix starts every key the store writes.
const prefix = "chg:"

// registryKey lists every node, for views across nodes. It is the one key
// outside a node's hash tag, so it is written in its own call.
const registryKey = prefix + "nodes"

// nodeKeys are the keys of one node. All carry the node in a hash tag, so a
// node's operations run on one Redis Cluster slot. Batch reservations
// (bres) are apart from interactive ones (res): the CLI's Redis user may
// write res but only read bres, gpus, flags and policy.
type nodeKeys struct {
	base                                                       string
	gpus, res, bres, mru, hist, meta, q, qe, qx, flags, policy string
	// viol: the violation records by id; violt: their ids by last seen;
	// kills: the processes the health check killed, by time, for its
	// hourly limit. Written by the health check only.
	viol, violt, kills string
}

func keysFor(node string) nodeKeys {
	b := prefix + "{" + node + "}:"
	return nodeKeys{base: b, gpus: b + "gpus", res: b + "res", bres: b + "bres", mru: b + "mru",
		hist: b + "hist", meta: b + "meta", q: b + "q", qe: b + "qe", qx: b + "qx", flags: b + "flags", policy: b + "policy",
		viol: b + "viol", violt: b + "violt", kills: b + "kills"}
}

// reply is where the reply to one request id is kept, so a retry returns
// it: batch requests' replies apart (breq:ID), where the CLI's user cannot
// write one in advance for a request id derived from a job id.
func (k nodeKeys) reply(id string, batch bool) string {
	if batch {
		return k.base + "breq:" + id
	}
	return k.base + "req:" + id
}

// replyKey is the stored reply among an operation's keys, "" when it
// keeps none.
func replyKey(keys []string) string {
	for _, k := range keys {
		if strings.HasPrefix(k, prefix+"{") && (strings.Contains(k, "}:req:") || strings.Contains(k, "}:breq:")) {
			return k
		}
	}
	return ""
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateNode checks a node name: it becomes part of every key.
func ValidateNode(node string) error {
	if !nodeName.MatchString(node) {
		return &allocator.InputError{Field: "node name", Value: node,
			Accepted: "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}
