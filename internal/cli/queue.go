package cli

import (
	"context"
	"io"
	"strconv"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/usage"
)

type queueArgs struct{ json bool }

func queueCommand() *command {
	var a queueArgs
	fs := newFlagSet("queue")
	fs.BoolVarP(&a.json, "json", "j", false, "print one JSON document instead of the table")
	return &command{
		name:  "queue",
		usage: "canhazgpu queue [--json]",
		short: "Show the requests waiting for GPUs on this node",
		long: `Requests made with --wait wait here, first come first served: only the first
may take GPUs as they become free, and it holds what it gets until its
whole request can be met. Requests whose waiter stopped sending heartbeats
(queue.heartbeat_timeout) are dropped.`,
		examples: []string{
			"canhazgpu queue",
			"canhazgpu queue --json",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("queue", args); err != nil {
				return err
			}
			return runQueue(ctx, inv, a)
		},
	}
}

func runQueue(ctx context.Context, inv *invocation, a queueArgs) error {
	_, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	snap, err := node.Store.Snapshot(ctx)
	if err != nil {
		return err
	}
	if a.json {
		return writeJSON(inv.env.Stdout, queueDocOf(snap))
	}
	return writeQueue(inv.env.Stdout, snap)
}

type queueDoc struct {
	Version     int         `json:"version"`
	Node        string      `json:"node"`
	GeneratedAt *string     `json:"generated_at"`
	Queue       []jsonEntry `json:"queue"`
}

type jsonEntry struct {
	Position       int     `json:"position"`
	ID             string  `json:"id"`
	User           string  `json:"user"`
	Kind           string  `json:"kind"`
	Requested      int     `json:"requested"` // number of GPUs
	GPUIDs         []int   `json:"gpu_ids"`   // when specific GPUs were asked for
	Held           []int   `json:"held"`      // GPUs held so far (the head only)
	EnqueuedAt     *string `json:"enqueued_at"`
	HeartbeatAt    *string `json:"heartbeat_at"`
	WaitingSeconds int64   `json:"waiting_seconds"`
}

func queueDocOf(snap *allocator.Snapshot) queueDoc {
	registered := usage.Registered(snap.GPUs)
	// Indices of the GPUs the registration knows, in index order.
	indicesOf := func(uuids []string) []int {
		known, _ := registered.Pick(uuids)
		return known.Indices()
	}
	doc := queueDoc{Version: jsonVersion, Node: snap.Node, GeneratedAt: jsonTime(snap.Now), Queue: []jsonEntry{}}
	for i, e := range snap.Queue {
		doc.Queue = append(doc.Queue, jsonEntry{Position: i + 1, ID: e.ID, User: e.User, Kind: string(e.Kind),
			Requested: e.Wanted(), GPUIDs: indicesOf(e.GPUs), Held: indicesOf(e.Allocated),
			EnqueuedAt: jsonTime(e.EnqueuedAt), HeartbeatAt: jsonTime(e.HeartbeatAt),
			WaitingSeconds: int64(max(snap.Now.Sub(e.EnqueuedAt), 0) / time.Second)})
	}
	return doc
}

func writeQueue(w io.Writer, snap *allocator.Snapshot) error {
	if len(snap.Queue) == 0 {
		return writeLine(w, "No requests waiting on node %s.", snap.Node)
	}
	names := usage.Registered(snap.GPUs)
	rows := make([][]string, 0, len(snap.Queue))
	total := 0
	for i, e := range snap.Queue {
		requested := plural(e.Wanted(), "GPU")
		if len(e.GPUs) > 0 {
			requested = "GPU " + names.List(e.GPUs)
		}
		held := ""
		if len(e.Allocated) > 0 {
			held = "GPU " + names.List(e.Allocated)
		}
		rows = append(rows, []string{strconv.Itoa(i + 1), e.User, string(e.Kind), requested, held, hms(snap.Now.Sub(e.EnqueuedAt))})
		total += e.Wanted()
	}
	if err := writeTable(w, []string{"POSITION", "USER", "TYPE", "REQUESTED", "HELD", "WAITING"}, rows); err != nil {
		return err
	}
	return writeLine(w, "%s waiting for %s on node %s.", plural(len(snap.Queue), "request"), plural(total, "GPU"), snap.Node)
}
