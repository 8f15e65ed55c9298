package health

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/internal/slurm"
)

// The [health] action values.
const (
	ActionNone  = "none"
	ActionFlag  = "flag"
	ActionDrain = "drain"
)

// update is one scontrol update of the node, or, with no fields, a note on
// why nothing was changed.
type update struct {
	what   string // drain, undrain, comment, skip
	fields []string
	msg    string
}

// planSlurm decides what to change on the node in Slurm. reason is the
// wanted drain reason or comment ("" when the node is clean).
//
// The check only ever clears or replaces marks it wrote itself (those
// starting with Prefix): a node drained, downed or commented by anyone
// else keeps that, as NHC's node-mark-offline/online do. UNDRAIN rather
// than RESUME so that a node that went DOWN meanwhile stays down. Marks
// already as wanted are left untouched so that Slurm's reason time keeps
// saying since when.
func planSlurm(action string, info slurm.NodeInfo, reason string) []update {
	var out []update
	if reason == "" {
		if info.Drained() && ours(info.Reason) {
			out = append(out, update{what: "undrain", fields: []string{"State=UNDRAIN"},
				msg: "undrained: no violations left"})
		}
		if ours(info.Comment) {
			out = append(out, update{what: "comment", fields: []string{"Comment="}, msg: "cleared the node comment"})
		}
		return out
	}
	switch action {
	case ActionDrain:
		switch {
		case info.Down():
			out = append(out, update{what: "skip", msg: "node is " + strings.Join(info.State, "+") + ": not drained"})
		// Only a drained node's reason is someone's mark: Slurm 24.11 keeps
		// the reason of a node resumed since, e.g. "Prolog error" on an
		// idle node, and that must not keep the node from being drained.
		case info.Drained() && info.Reason != "" && !ours(info.Reason):
			out = append(out, update{what: "skip", msg: fmt.Sprintf("node already has reason %q: left as it is", info.Reason)})
		case info.Drained() && info.Reason == reason:
		default:
			out = append(out, update{what: "drain", fields: []string{"State=DRAIN", "Reason=" + reason},
				msg: "drained: " + reason})
		}
	case ActionFlag:
		switch {
		case info.Comment == reason:
		case info.Comment != "" && !ours(info.Comment):
			out = append(out, update{what: "skip", msg: fmt.Sprintf("node already has comment %q: left as it is", info.Comment)})
		default:
			out = append(out, update{what: "comment", fields: []string{"Comment=" + reason}, msg: "comment: " + reason})
		}
	}
	return out
}

// actSlurm reads the node and applies the plan. When scontrol does not
// answer, nothing is changed this round. Marking the node is Slurm's
// alone: [health] action drains it or sets its comment through scontrol;
// under other schedulers the store's flags are the only mark.
func (c *check) actSlurm(ctx context.Context, reason string) []Action {
	sc := c.scontrol()
	info, err := sc.Show(ctx)
	if err != nil {
		return []Action{{What: "skip", Message: "Slurm actions skipped this round: " + err.Error()}}
	}
	var out []Action
	for _, u := range planSlurm(c.cfg.Health.Action, info, reason) {
		if len(u.fields) == 0 {
			out = append(out, Action{What: u.what, Message: u.msg})
			continue
		}
		if err := sc.Update(ctx, u.fields...); err != nil {
			out = append(out, Action{What: "error", Message: err.Error()})
			return out // Slurm stopped answering: try again next round
		}
		out = append(out, Action{What: u.what, Message: u.msg})
	}
	return out
}

// scontrol runs as the CLI's does: with root's slurm_conf, when the
// config names one, in place of the SLURM_CONF slurmd hands the check.
func (c *check) scontrol() *slurm.Scontrol {
	return &slurm.Scontrol{Path: c.cfg.Health.Scontrol, Node: c.deps.SlurmNode, Timeout: c.cfg.Health.ScontrolTimeout,
		Env: slurm.CommandEnv(c.cfg, c.deps.Env)}
}

// wantFlags is one store flag per GPU with violations, their messages
// joined.
func wantFlags(vs []Violation) []allocator.Flag {
	var out []allocator.Flag
	for _, v := range vs {
		if n := len(out); n > 0 && out[n-1].GPU == v.UUID {
			out[n-1].Message += "; " + v.Message
			continue
		}
		out = append(out, allocator.Flag{GPU: v.UUID, Message: v.Message})
	}
	return out
}

// sameFlags compares findings by GPU and message: rewriting equal flags
// would only reset their times.
func sameFlags(have, want []allocator.Flag) bool {
	key := func(fs []allocator.Flag) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.GPU + "\n" + f.Message
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(have), key(want))
}

// actStore records the findings in the store, shown by
// `canhazgpu status --all-nodes`, and clears them once the node is clean.
func (c *check) actStore(ctx context.Context, have []allocator.Flag, vs []Violation) []Action {
	want := wantFlags(vs)
	if sameFlags(have, want) {
		return nil
	}
	if err := c.deps.Store.SetFlags(ctx, want); err != nil {
		return []Action{{What: "error", Message: err.Error()}}
	}
	if len(want) == 0 {
		return []Action{{What: "flags", Message: "cleared the store flags"}}
	}
	return []Action{{What: "flags", Message: "flagged " + plural(len(want), "GPU") + " in the store"}}
}
