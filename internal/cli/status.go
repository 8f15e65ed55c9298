package cli

import (
	"context"
	"io"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
)

type statusArgs struct {
	json       bool
	allNodes   bool
	prometheus bool
}

func statusCommand() *command {
	var a statusArgs
	fs := newFlagSet("status")
	fs.BoolVarP(&a.json, "json", "j", false, "print one JSON document instead of the table")
	fs.BoolVarP(&a.allNodes, "all-nodes", "a", false, "show every node known to the store, grouped by node")
	fs.BoolVar(&a.prometheus, "prometheus", false, "print the Prometheus text format of canhazgpu web's /metrics (for a node exporter's textfile directory)")
	return &command{
		name:  "status",
		usage: "canhazgpu status [--json | --prometheus] [--all-nodes]",
		short: "Show who holds and who uses each GPU",
		long: `One row per GPU: its reservation (run, manual, slurm, pbs), its real use
(memory and processes, from NVML or the fake provider), and use WITHOUT
RESERVATION: a GPU whose memory use reached gpu.memory_threshold_mb while
nobody reserved it. MODEL is the AI model its processes serve or train,
guessed from their command lines. Other nodes (--all-nodes) show what the
store knows: their reservations and their health check findings.`,
		examples: []string{
			"canhazgpu status",
			"canhazgpu status --json",
			"canhazgpu status --all-nodes",
			"canhazgpu status --all-nodes --prometheus",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("status", args); err != nil {
				return err
			}
			if a.json && a.prometheus {
				return usagef("--json and --prometheus: want one output format")
			}
			return runStatus(ctx, inv, a)
		},
	}
}

func runStatus(ctx context.Context, inv *invocation, a statusArgs) error {
	cfg, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	threshold := cfg.GPU.MemoryThresholdMB
	out := inv.env.Stdout
	if !a.allNodes {
		snap, devs, err := node.Look(ctx, gpu.ReadUtilization)
		if err != nil {
			return err
		}
		if drift := node.Drift(snap, devs); drift != "" {
			if err := writeLine(inv.env.Stderr, "canhazgpu: note: %s", drift); err != nil {
				return err
			}
		}
		v := viewNode(snap, devs, true, threshold)
		if a.prometheus {
			return writePrometheus(out, []nodeView{v}, []*allocator.Snapshot{snap})
		}
		if a.json {
			n := jsonNodeOf(v)
			return writeJSON(out, statusDoc{Version: jsonVersion, Node: n.Node, GeneratedAt: jsonTime(v.Now), GPUs: n.GPUs, Flags: n.Flags})
		}
		return writeNodeStatus(out, v)
	}

	// Every node in two round trips (the registry, then the nodes); only this node's GPUs can be scanned,
	// and a machine that has none (a login node) still shows the others.
	devs, scanErr := node.Devices(ctx, gpu.ReadUtilization)
	if scanErr != nil {
		if err := writeLine(inv.env.Stderr, "canhazgpu: note: %v; showing what the store holds, without this node's GPU usage", scanErr); err != nil {
			return err
		}
	}
	snaps, err := node.LookAll(ctx, devs)
	if err != nil {
		return err
	}
	views := viewAllNodes(snaps, cfg.Node, devs, scanErr == nil, threshold)
	if a.prometheus {
		return writePrometheus(out, views, snaps)
	}
	if a.json {
		return writeJSON(out, allNodesDocOf(views))
	}
	return writeAllNodes(out, views)
}

// viewAllNodes views every node; only this node's GPUs were scanned, and
// only when scanned says the scan worked.
func viewAllNodes(snaps []*allocator.Snapshot, local string, devs []gpu.Device, scanned bool, threshold int64) []nodeView {
	views := make([]nodeView, len(snaps))
	for i, s := range snaps {
		if s.Node == local && scanned {
			views[i] = viewNode(s, devs, true, threshold)
		} else {
			views[i] = viewNode(s, nil, false, threshold)
		}
	}
	return views
}

// allNodesDocOf is the document of status --json --all-nodes.
func allNodesDocOf(views []nodeView) allNodesDoc {
	doc := allNodesDoc{Version: jsonVersion, Nodes: make([]jsonNode, len(views))}
	for i, v := range views {
		doc.Nodes[i] = jsonNodeOf(v)
		if v.Local || doc.GeneratedAt == nil {
			doc.GeneratedAt = jsonTime(v.Now)
		}
	}
	return doc
}

// writeNodeStatus prints one node's table and its health findings.
func writeNodeStatus(w io.Writer, v nodeView) error {
	if len(v.GPUs) == 0 {
		return writeLine(w, "No GPUs registered for node %s.", v.Node)
	}
	if err := writeTable(w, statusHeader, statusRows(v)); err != nil {
		return err
	}
	lines := flagLines(v)
	if len(lines) == 0 {
		return nil
	}
	if _, err := io.WriteString(w, "Health check findings:\n"); err != nil {
		return err
	}
	for _, l := range lines {
		if err := writeLine(w, "%s", l); err != nil {
			return err
		}
	}
	return nil
}

func writeAllNodes(w io.Writer, views []nodeView) error {
	var b strings.Builder
	for i, v := range views {
		if i > 0 {
			b.WriteByte('\n')
		}
		if v.Local {
			writeLine(&b, "%s (this node)", v.Node)
		} else {
			writeLine(&b, "%s (reservations from the store; GPU usage is seen only on %s itself)", v.Node, v.Node)
		}
		if err := writeNodeStatus(&b, v); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
