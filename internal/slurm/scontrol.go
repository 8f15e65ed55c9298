package slurm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Scontrol runs Slurm's scontrol for one node. Every call has its own
// timeout: HealthCheckProgram also runs before slurmd has registered, when
// scontrol can hang on the controller, and Slurm kills the check after 60 s.
type Scontrol struct {
	Path    string        // absolute: Slurm gives health checks no PATH
	Node    string        // Slurm's NodeName of this node
	Timeout time.Duration // per call
	Env     []string      // passed to scontrol (SLURM_CONF, when set)
}

// NodeInfo is what the check needs from `scontrol show node`.
type NodeInfo struct {
	State   []string // base state and flags, e.g. ["IDLE", "DRAIN"]
	Reason  string   // without Slurm's " [user@time]" suffix
	Comment string
	Gres    string // the node's configured GRES, e.g. "gpu:dev0:1,gpu:dev1:1"
}

// Drained: the node has the DRAIN flag (draining or drained).
func (n NodeInfo) Drained() bool {
	return slices.ContainsFunc(n.State, func(s string) bool {
		return s == "DRAIN" || s == "DRAINED" || s == "DRAINING"
	})
}

// Down: the node's base state is DOWN (or FAIL); the check leaves such
// nodes alone, as NHC does.
func (n NodeInfo) Down() bool {
	return len(n.State) > 0 && (n.State[0] == "DOWN" || n.State[0] == "FAIL" || n.State[0] == "FAILING")
}

// Show reads the node's state, reason and comment.
func (s *Scontrol) Show(ctx context.Context) (NodeInfo, error) {
	out, err := s.run(ctx, "show", "node", s.Node)
	if err != nil {
		return NodeInfo{}, err
	}
	return parseShowNode(out)
}

// Update sets fields of the node, e.g. "State=DRAIN", "Reason=...".
func (s *Scontrol) Update(ctx context.Context, fields ...string) error {
	_, err := s.run(ctx, append([]string{"update", "NodeName=" + s.Node}, fields...)...)
	return err
}

// JobEnded asks Slurm whether a job no longer runs: it ended, waits in
// the queue again (requeued), or Slurm has forgotten it (state ""). A job
// that is running, completing, suspended or in a state not known here
// counts as running, so a doubtful answer never releases its GPUs.
//
// It asks squeue (beside scontrol) for the state alone: `scontrol show
// job` prints the job's name before its state and its comment after, both
// the user's text, in which "JobState=COMPLETED" would pass for Slurm's.
func (s *Scontrol) JobEnded(ctx context.Context, job string) (ended bool, state string, err error) {
	args := []string{"--noheader", "--states=all", "--jobs=" + job, "--format=%A|%T"}
	out, _, err := command{path: s.squeue(), name: "squeue", args: args, env: s.Env, timeout: s.Timeout}.run(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "Invalid job id") {
			return true, "", nil
		}
		return false, "", err
	}
	// The id of an array's first task, or of a heterogeneous job's
	// leader, lists the other tasks or components too, each by its own id.
	for line := range strings.SplitSeq(out, "\n") {
		if id, st, ok := strings.Cut(strings.TrimSpace(line), "|"); ok && id == job && st != "" && !strings.Contains(st, " ") {
			return endedStates[st], st, nil
		}
	}
	return false, "", fmt.Errorf("squeue --jobs=%s: no state of that job in %q", job, strings.TrimSpace(out))
}

// SpoolDir reads slurmd's SlurmdSpoolDir from `scontrol show config`,
// expanding %n to the node's name and %h to host, as slurmd does.
func (s *Scontrol) SpoolDir(ctx context.Context, host string) (string, error) {
	out, err := s.run(ctx, "show", "config")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(out, "\n") {
		key, val, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) != "SlurmdSpoolDir" {
			continue
		}
		dir := strings.NewReplacer("%n", s.Node, "%h", host).Replace(strings.TrimSpace(val))
		if !filepath.IsAbs(dir) {
			return "", fmt.Errorf("scontrol show config: SlurmdSpoolDir %q is not an absolute path", dir)
		}
		return filepath.Clean(dir), nil
	}
	return "", errors.New("scontrol show config: no SlurmdSpoolDir in its output")
}

// endedStates are the job states in which no step of the job runs.
var endedStates = map[string]bool{
	"COMPLETED": true, "CANCELLED": true, "FAILED": true, "TIMEOUT": true, "NODE_FAIL": true,
	"PREEMPTED": true, "BOOT_FAIL": true, "DEADLINE": true, "OUT_OF_MEMORY": true,
	"PENDING": true, "REQUEUED": true, "REQUEUE_HOLD": true, "REQUEUE_FED": true, "REVOKED": true, "SPECIAL_EXIT": true,
}

// run runs scontrol with args, each one argv element: reasons need no
// quoting.
func (s *Scontrol) run(ctx context.Context, args ...string) (string, error) {
	out, _, err := command{path: s.Path, name: "scontrol " + args[0], args: args, env: s.Env, timeout: s.Timeout}.run(ctx)
	return out, err
}

// parseShowNode reads the multi-line `scontrol show node` format. Values
// with spaces (Reason, Comment, OS) stand alone on their line there, while
// the one-line format (-o) runs them into the next key.
func parseShowNode(out string) (NodeInfo, error) {
	var n NodeInfo
	seen := false
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "Reason="); ok {
			n.Reason = stripReasonStamp(rest)
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Comment="); ok {
			n.Comment = rest
			continue
		}
		for _, f := range strings.Fields(line) {
			if st, ok := strings.CutPrefix(f, "State="); ok {
				n.State = strings.Split(st, "+")
				seen = true
			}
			if g, ok := strings.CutPrefix(f, "Gres="); ok {
				n.Gres = g
			}
		}
	}
	if !seen {
		return n, errors.New("scontrol show node: no State in its output")
	}
	if n.Comment == "(null)" {
		n.Comment = ""
	}
	return n, nil
}

// stripReasonStamp drops the " [user@time]" Slurm appends to a reason.
func stripReasonStamp(r string) string {
	if i := strings.LastIndex(r, " ["); i >= 0 && strings.HasSuffix(r, "]") && strings.Contains(r[i:], "@") {
		return r[:i]
	}
	return r
}
