package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/procstop"
	"canhazgpu/internal/termnotify"
	"canhazgpu/internal/termsafe"
)

// Processes identifies and stops the processes behind a violation
// (procstop.Procs on a real node).
type Processes interface {
	Identify(pid int) (procstop.Identity, error)
	Stop(ctx context.Context, pid int, want procstop.Identity, wait time.Duration) (string, error)
}

// violationGap: a violation not seen for this long is over; seen again, it
// is a new one, told and given its grace times afresh.
const violationGap = time.Hour

// maxExecOutput bounds what the exec command's output adds to the log.
const maxExecOutput = 2000

// sighting is one (kind, GPU, user) part of a violation, with what this
// run knows of its processes.
type sighting struct {
	v *Violation
	// user names the offender in the store's record ('|', which the
	// record's key uses, made '_'); account is the name as the scan gave
	// it, the account told on its terminals.
	user, account string
	procs         []Process
	ids           map[int]procstop.Identity // by PID, of the processes that may be killed
}

// violators records the violations in the store and takes the steps of
// [violations] actions now due: one store round trip when there are
// violations, none otherwise. mark applies [health] action to the
// violations old enough for it (mark_after) before any step runs: a
// kill waits up to kill_wait twice and an exec up to exec_timeout, and
// the node's flag or drain must not wait behind them, nor be cut off by
// the check's deadline after them.
func (c *check) violators(ctx context.Context, vs []Violation, mark func([]Violation) []Action) []Action {
	if len(vs) == 0 {
		return mark(vs)
	}
	cfg := c.cfg.Violations
	now := c.deps.Now()
	sights := c.sightings(vs)
	// A kill this run claims has its outcome written by this run, within
	// its time limit and then one store call (the write outlives the
	// deadline); past that, the run was stopped before it could.
	run := store.ViolationRun{Now: now, Gap: violationGap, Renotify: cfg.RenotifyEvery, KillsPerHour: cfg.KillsPerHour,
		KillPending: c.cfg.Health.Timeout + c.cfg.Redis.OpTimeout, MaxAge: c.cfg.History.MaxAge, MaxRecords: c.cfg.History.MaxRecords}
	for _, a := range cfg.Actions {
		run.Steps = append(run.Steps, store.ViolationStep{Action: a, After: cfg.After(a)})
	}
	for _, s := range sights {
		x := store.Sighting{Kind: string(s.v.Kind), GPU: s.v.UUID, Index: s.v.GPU, User: s.user, Model: s.v.Model}
		if r := s.v.Reservation; r != nil {
			x.Holder, x.JobID = r.User, r.JobID
		}
		for _, p := range s.procs {
			vp := allocator.ViolationProcess{PID: p.PID, Name: p.Name}
			if id, ok := s.ids[p.PID]; ok {
				vp.Start = id.Start
				x.Kill = append(x.Kill, vp)
			}
			x.Processes = append(x.Processes, vp)
		}
		run.Seen = append(run.Seen, x)
	}
	plans, err := c.deps.Store.RecordViolations(ctx, run)
	if errors.Is(err, allocator.ErrNotPermitted) {
		// Run by someone without root's credential: the check only reads.
		return append(mark(vs), Action{What: "skip", Message: "violations not recorded and no one told or stopped: this credential may not write them"})
	}
	if err != nil {
		// Nothing recorded, nothing claimed: no one is told or stopped,
		// and the node is marked as it was before there were steps.
		return append(mark(vs), Action{What: "error", Message: "violations not recorded: " + err.Error()})
	}
	due := map[*Violation]bool{}
	for i, p := range plans {
		if !p.Record.FirstSeen.Add(cfg.MarkAfter).After(now) {
			due[sights[i].v] = true
		}
	}
	var marked []Violation
	for i := range vs {
		if due[&vs[i]] {
			marked = append(marked, vs[i])
		}
	}
	out := mark(marked)
	var outcomes []store.KillOutcome
	for i, p := range plans {
		acts, kills := c.takeSteps(ctx, sights[i], p, now)
		out = append(out, acts...)
		outcomes = append(outcomes, kills...)
	}
	// Written even when the kills used up the run's time: one short write,
	// bounded by the store's own timeouts, without which the records would
	// say "unknown" of kills that were done.
	if err := c.deps.Store.RecordKillOutcomes(context.WithoutCancel(ctx), outcomes); err != nil {
		out = append(out, Action{What: "error", Message: "kill outcomes not recorded: " + err.Error()})
	}
	return out
}

// sightings splits the violations by offending user and identifies the
// processes that kill may stop: not root's, not of kill_exempt_users, not
// running kill_exempt_commands, and still the process the GPU scan saw.
func (c *check) sightings(vs []Violation) []sighting {
	cfg := c.cfg.Violations
	var out []sighting
	for i := range vs {
		v := &vs[i]
		if len(v.Processes) == 0 {
			out = append(out, sighting{v: v, ids: map[int]procstop.Identity{}})
			continue
		}
		byUser := map[string]int{}
		for _, p := range v.Processes {
			user := strings.ReplaceAll(p.User, "|", "_")
			n, ok := byUser[p.User]
			if !ok {
				n = len(out)
				byUser[p.User] = n
				out = append(out, sighting{v: v, user: user, account: p.User, ids: map[int]procstop.Identity{}})
			}
			out[n].procs = append(out[n].procs, p)
			// A process whose owner the scan could not tell (uid -1) is
			// never stopped: nothing ties the PID to an offender.
			if !cfg.Enabled(config.ViolationKill) || p.UID < 0 || slices.Contains(cfg.KillExemptUsers, p.User) {
				continue
			}
			id, err := c.processes().Identify(p.PID)
			if err != nil || id.Root || id.UID != p.UID || exemptCommand(cfg.KillExemptCommands, id) {
				continue
			}
			out[n].ids[p.PID] = id
		}
	}
	return out
}

// exemptCommand: the process runs one of the exempt commands: the very
// file at that path, not merely a file of that name (see
// procstop.Identity.ExeFile).
func exemptCommand(commands []string, id procstop.Identity) bool {
	return slices.ContainsFunc(commands, id.IsFile)
}

func (c *check) processes() Processes {
	if c.deps.Processes != nil {
		return c.deps.Processes
	}
	return procstop.Procs{}
}

func (c *check) notify(user, message string) (int, error) {
	if c.deps.Notify != nil {
		return c.deps.Notify(user, message)
	}
	return termnotify.Notifier{Utmp: c.cfg.Violations.UtmpFile}.Notify(user, message)
}

// takeSteps does what the store claimed for one sighting, and says how
// each kill (claimed at now) went.
func (c *check) takeSteps(ctx context.Context, s sighting, p store.ViolationPlan, now time.Time) ([]Action, []store.KillOutcome) {
	var out []Action
	var kills []store.KillOutcome
	for _, step := range p.Due {
		switch step {
		case config.ViolationNotify:
			out = append(out, c.notifyAll(s, p.Record)...)
		case config.ViolationExec:
			out = append(out, c.runExec(ctx, s, p.Record))
		}
	}
	for _, pid := range p.Kill {
		act, res := c.kill(ctx, s, pid)
		out = append(out, act)
		res.Record, res.Claimed = p.Record.ID, now
		kills = append(kills, res)
	}
	if len(p.Limited) > 0 {
		out = append(out, Action{What: "kill_limited", Message: fmt.Sprintf("not stopped: %s of %s on GPU %d: at most %d processes are killed per hour on this node",
			pidList(p.Limited), who(Process{User: s.user, UID: -1}), s.v.GPU, c.cfg.Violations.KillsPerHour)})
	}
	return out, kills
}

// notifyAll tells the offender and, when it is someone else, the holder
// of the reservation.
func (c *check) notifyAll(s sighting, rec allocator.ViolationRecord) []Action {
	var out []Action
	tell := func(user, msg string) {
		n, err := c.notify(user, msg)
		switch {
		case err != nil:
			out = append(out, Action{What: "error", Message: "notify " + user + ": " + err.Error()})
		default:
			out = append(out, Action{What: "notify", Message: fmt.Sprintf("told %s on %s: %s", user, plural(n, "terminal"), msg)})
		}
	}
	if s.account != "" && !strings.HasPrefix(s.account, "uid:") {
		tell(s.account, c.offenderMessage(s, rec))
	}
	if r := s.v.Reservation; s.v.Kind == ForeignUser && r != nil && r.User != s.account {
		tell(r.User, fmt.Sprintf("%s uses your GPU %d on %s (%s).", s.user, s.v.GPU, c.cfg.Node, procList(s.procs)))
	}
	return out
}

// offenderMessage says what is wrong, and when the processes will be
// stopped if kill is on.
func (c *check) offenderMessage(s sighting, rec allocator.ViolationRecord) string {
	var what string
	switch s.v.Kind {
	case ForeignUser:
		what = fmt.Sprintf("you use GPU %d on %s, reserved by %s (%s).", s.v.GPU, c.cfg.Node, owner(s.v.Reservation), procList(s.procs))
	case OutsideJob:
		what = fmt.Sprintf("your processes on GPU %d on %s run outside job %s, which holds it (%s).", s.v.GPU, c.cfg.Node, s.v.Reservation.JobID, procList(s.procs))
	default:
		what = fmt.Sprintf("you use GPU %d on %s without a reservation (%s). Reserve it with canhazgpu, or stop.", s.v.GPU, c.cfg.Node, procList(s.procs))
	}
	cfg := c.cfg.Violations
	if cfg.Enabled(config.ViolationKill) && len(s.ids) > 0 {
		at := rec.FirstSeen.Add(cfg.KillAfter)
		if at.After(c.deps.Now()) {
			what += " The processes will be stopped after " + at.UTC().Format("15:04 MST") + "."
		} else {
			what += " The processes are being stopped."
		}
	}
	return what
}

// kill stops one process the store claimed, if it is still the process
// identified this run, and says how it went for the record.
func (c *check) kill(ctx context.Context, s sighting, pid int) (Action, store.KillOutcome) {
	id, ok := s.ids[pid]
	res := store.KillOutcome{PID: pid, Start: id.Start}
	if !ok { // claimed only for identified processes: cannot happen
		res.Outcome, res.Error = allocator.KillFailed, "not identified"
		return Action{What: "error", Message: fmt.Sprintf("kill pid %d: not identified", pid)}, res
	}
	name := ""
	for _, p := range s.procs {
		if p.PID == pid {
			name = p.Name
		}
	}
	target := fmt.Sprintf("pid %d (%s) of %s on GPU %d", pid, name, s.user, s.v.GPU)
	// A stop waits up to kill_wait twice, within what is left of the
	// check's time: cut short by the deadline, SIGKILL would follow
	// SIGTERM at once. With under a second each it is not tried; nothing
	// was sent, so the next run may try again.
	wait := c.cfg.Violations.KillWait
	if end, ok := ctx.Deadline(); ok {
		if wait = min(wait, (time.Until(end)-time.Second)/2); wait < time.Second {
			res.Outcome, res.Error = allocator.KillFailed, "not tried: too little of the check's time left to wait for the process to end"
			return Action{What: "error", Message: "kill " + target + ": " + res.Error}, res
		}
	}
	how, err := c.processes().Stop(ctx, pid, id, wait)
	res.Sent = how != ""
	switch {
	case errors.Is(err, os.ErrProcessDone) || errors.Is(err, fs.ErrNotExist):
		res.Outcome = allocator.KillEnded
		return Action{What: "kill", Message: target + " had already ended"}, res
	case errors.Is(err, procstop.ErrChanged) || errors.Is(err, procstop.ErrRoot):
		res.Outcome = allocator.KillNotSame
		return Action{What: "error", Message: "kill " + target + ": " + err.Error()}, res
	case err != nil && how == "":
		res.Outcome, res.Error = allocator.KillFailed, err.Error()
		return Action{What: "error", Message: "kill " + target + ": " + err.Error()}, res
	case err != nil:
		sent := map[string]string{"term": "SIGTERM sent: ", "kill": "SIGKILL sent: "}[how]
		res.Outcome, res.Error = allocator.KillFailed, sent+err.Error()
		return Action{What: "error", Message: "kill " + target + ": " + sent + err.Error()}, res
	case how == "term":
		res.Outcome = allocator.KillTerm
		return Action{What: "kill", Message: "stopped " + target + " with SIGTERM"}, res
	default:
		res.Outcome = allocator.KillKill
		return Action{What: "kill", Message: fmt.Sprintf("killed %s with SIGKILL: SIGTERM did not end it within %s", target, config.Duration(wait))}, res
	}
}

// execEvent is what the exec command reads on stdin.
type execEvent struct {
	Message   string                    `json:"message"`
	Violation allocator.ViolationRecord `json:"violation"`
}

// runExec runs the site's command with the violation as JSON on stdin, as
// root with a fixed environment: it is root's program, handed facts that
// users chose (process names), which it must treat as data.
func (c *check) runExec(ctx context.Context, s sighting, rec allocator.ViolationRecord) Action {
	cfg := c.cfg.Violations
	in, err := json.Marshal(execEvent{Message: message(*s.v), Violation: rec})
	if err != nil {
		return Action{What: "error", Message: "exec: " + err.Error()}
	}
	check := ctx
	ctx, cancel := context.WithTimeout(ctx, cfg.ExecTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Exec)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(in)
	// Its own process group, killed whole at the timeout, and no wait for
	// a child left holding the output: no command of the site's outlives
	// or holds up the check.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var outBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	err = cmd.Run()
	switch {
	case check.Err() != nil:
		err = errors.New("stopped: the check's own time ran out ([health] timeout)")
	case ctx.Err() != nil:
		err = fmt.Errorf("no end within %s", config.Duration(cfg.ExecTimeout))
	}
	output := strings.Join(strings.Fields(outBuf.String()), " ")
	if len(output) > maxExecOutput {
		output = output[:maxExecOutput] + "…"
	}
	what, result := "exec", "ok"
	if err != nil {
		what, result = "error", err.Error()
	}
	msg := fmt.Sprintf("%s for %s on GPU %d: %s", cfg.Exec, s.v.Kind, s.v.GPU, result)
	if output != "" {
		msg += ": " + termsafe.Escape(output)
	}
	return Action{What: what, Message: msg}
}

// procList names processes for a message: "pid 12 python3, pid 13 …".
func procList(ps []Process) string {
	var parts []string
	for i, p := range ps {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("+%d more", len(ps)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("pid %d %s", p.PID, p.Name))
	}
	return strings.Join(parts, ", ")
}

func pidList(pids []int) string {
	var parts []string
	for _, p := range pids {
		parts = append(parts, fmt.Sprint(p))
	}
	return "pids " + strings.Join(parts, ", ")
}
