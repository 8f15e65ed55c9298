package store

import (
	"regexp"

	"canhazgpu/allocator"
)

// prefix starts every key the store writes.
const prefix = "chg:"

// registryKey lists every node, for views across nodes. It is the one key
// outside a node's hash tag, so it is written in its own call.
const registryKey = prefix + "nodes"

// nodeKeys are the keys of one node. All carry the node in a hash tag, so a
// node's scripts run on one Redis Cluster slot.
type nodeKeys struct {
	base                                     string
	gpus, res, mru, hist, meta, q, qe, flags string
}

func keysFor(node string) nodeKeys {
	b := prefix + "{" + node + "}:"
	return nodeKeys{base: b, gpus: b + "gpus", res: b + "res", mru: b + "mru",
		hist: b + "hist", meta: b + "meta", q: b + "q", qe: b + "qe", flags: b + "flags"}
}

// req is where the reply to one request id is kept, so a retry returns it.
func (k nodeKeys) req(id string) string { return k.base + "req:" + id }

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateNode checks a node name: it becomes part of every key.
func ValidateNode(node string) error {
	if !nodeName.MatchString(node) {
		return &allocator.InputError{Field: "node name", Value: node,
			Accepted: "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}
