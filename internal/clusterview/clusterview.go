// Package clusterview reads the JSON documents of status --json
// --all-nodes and queue --json back into one typed view of the cluster,
// for the programs that present them again: the dashboard pages and the
// metrics. They present the documents the API serves, field for field.
package clusterview

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Cluster is every node of one store read.
type Cluster struct {
	GeneratedAt string `json:"generated_at"`
	Nodes       []Node `json:"nodes"`
}

// Node is one node's GPUs, health check findings and queue.
type Node struct {
	Node  string  `json:"node"`
	Local bool    `json:"local"`
	GPUs  []GPU   `json:"gpus"`
	Flags []Flag  `json:"flags"`
	Queue []Entry `json:"-"` // from the node's queue document
}

// GPU is one row of status.
type GPU struct {
	Index        int          `json:"index"`
	UUID         string       `json:"uuid"`
	Name         string       `json:"name"`
	Status       string       `json:"status"`
	MemoryUsedMB *int64       `json:"memory_used_mb"`
	Processes    []Process    `json:"processes"`
	Users        []string     `json:"users"`
	ForeignUsers []string     `json:"foreign_users"`
	Model        string       `json:"model"`
	Reservation  *Reservation `json:"reservation"`
	FreeSince    *string      `json:"free_since"`
}

// Process is one process on a GPU.
type Process struct {
	PID  int    `json:"pid"`
	Name string `json:"name"`
	User string `json:"user"`
}

// Reservation is who holds a GPU.
type Reservation struct {
	Kind        string  `json:"kind"`
	User        string  `json:"user"`
	JobID       string  `json:"job_id"`
	Note        string  `json:"note"`
	StartedAt   *string `json:"started_at"`
	HeldSeconds int64   `json:"held_seconds"`
	Queued      bool    `json:"queued"`
}

// Flag is a health check finding.
type Flag struct {
	GPU     *int    `json:"gpu"`
	UUID    string  `json:"uuid"`
	Message string  `json:"message"`
	At      *string `json:"at"`
}

// Entry is one waiting request.
type Entry struct {
	Position       int    `json:"position"`
	ID             string `json:"id"`
	User           string `json:"user"`
	Kind           string `json:"kind"`
	Requested      int    `json:"requested"`
	WaitingSeconds int64  `json:"waiting_seconds"`
}

// Decode reads a status --json --all-nodes document and the queue --json
// document of each node.
func Decode(status []byte, queues map[string][]byte) (*Cluster, error) {
	var c Cluster
	if err := json.Unmarshal(status, &c); err != nil {
		return nil, fmt.Errorf("status document: %w", err)
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		q, ok := queues[n.Node]
		if !ok {
			continue
		}
		var doc struct {
			Queue []Entry `json:"queue"`
		}
		if err := json.Unmarshal(q, &doc); err != nil {
			return nil, fmt.Errorf("queue document of node %s: %w", n.Node, err)
		}
		n.Queue = doc.Queue
	}
	return &c, nil
}

// The states a GPU cell shows, beyond the reservation kinds run, manual,
// slurm and pbs.
const (
	Free       = "free"
	Unreserved = "unreserved" // in use without a reservation
	Foreign    = "foreign"    // reserved, and used by someone else too
	Waiting    = "waiting"    // held for a waiting request
)

// State is the one word a GPU's cell is coloured by.
func (g GPU) State() string {
	switch {
	case g.Reservation != nil && len(g.ForeignUsers) > 0:
		return Foreign
	case g.Reservation != nil && g.Reservation.Queued:
		return Waiting
	case g.Reservation != nil:
		return g.Reservation.Kind
	case g.Status == "unreserved":
		return Unreserved
	}
	return Free
}

// Holder is the user a GPU's cell names: the reservation's owner, else
// the accounts using it without one.
func (g GPU) Holder() []string {
	if g.Reservation != nil {
		return append([]string{g.Reservation.User}, g.ForeignUsers...)
	}
	return g.Users
}

// Flagged reports whether the node has a finding about itself (drained
// or flagged as a whole) rather than about one GPU.
func (n Node) Flagged() bool {
	for _, f := range n.Flags {
		if f.UUID == "" {
			return true
		}
	}
	return false
}

// Counts are the totals at the top of the overview.
type Counts struct {
	GPUs, Free, Held, Unreserved, Waiting int
}

// Count sums the GPUs of the given nodes by state.
func Count(nodes []Node) Counts {
	var c Counts
	for _, n := range nodes {
		for _, g := range n.GPUs {
			c.GPUs++
			switch g.State() {
			case Free:
				c.Free++
			case Unreserved:
				c.Unreserved++
			default:
				c.Held++
			}
		}
		c.Waiting += len(n.Queue)
	}
	return c
}

// Users lists every user holding or using a GPU, sorted.
func (c *Cluster) Users() []string {
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			for _, u := range g.Holder() {
				seen[u] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}
