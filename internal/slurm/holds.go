package slurm

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"canhazgpu/internal/config"
)

// Interactive holds Slurm can see ([slurm] interactive_holds =
// "placeholder"): each interactive hold is also a Slurm job, pinned to the
// held GPUs, so that Slurm places batch jobs around it. The CLI writes the
// hold to the store first, then submits the placeholder (its Prolog finds
// the hold there), then records the placeholder's job id in the hold.

// HoldJobName is the name of every placeholder job, as squeue shows it.
const HoldJobName = "canhazgpu-hold"

// holdCommentPrefix starts a placeholder's --comment, which reaches the
// Prolog as SLURM_JOB_COMMENT; the hold's fencing token follows. Any
// user can give any job this comment: the Prolog believes it only when the
// store shows the job's GPUs held by the job's user under that token.
const holdCommentPrefix = "canhazgpu-hold:"

// HoldComment is the --comment of the placeholder of the hold granted
// under token.
func HoldComment(token int64) string { return holdCommentPrefix + strconv.FormatInt(token, 10) }

// ParseHoldComment reads the token from a placeholder's comment; ok is
// false for any other comment.
func ParseHoldComment(comment string) (token int64, ok bool) {
	digits, found := strings.CutPrefix(comment, holdCommentPrefix)
	if !found || digits == "" || len(digits) > 18 || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	t, err := strconv.ParseInt(digits, 10, 64)
	return t, err == nil && t > 0
}

// newHoldPrefix starts the comment of a placeholder that asks for a new
// hold on the GPUs Slurm chooses (a node without a GRES type per GPU); the
// hold's minutes follow. Its Prolog makes the hold: the user's manual
// reservation of exactly the GPUs Slurm gave the job, naming the job.
const newHoldPrefix = holdCommentPrefix + "new:"

// NewHoldComment is the --comment of a placeholder asking for a hold of
// the given length on the GPUs Slurm chooses.
func NewHoldComment(limit time.Duration) string {
	return newHoldPrefix + strconv.Itoa(minutes(limit))
}

// ParseNewHoldComment reads the hold's length from such a comment.
func ParseNewHoldComment(comment string) (time.Duration, bool) {
	digits, found := strings.CutPrefix(comment, newHoldPrefix)
	if !found || digits == "" || len(digits) > 7 || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	m, err := strconv.Atoi(digits)
	return time.Duration(m) * time.Minute, err == nil && m > 0
}

func minutes(d time.Duration) int { return int((d + time.Minute - 1) / time.Minute) }

// HoldDevType is the GRES type of Slurm's GPU index i on a node set up for
// pinned placeholders: gres.conf's i-th line is
// `Name=gpu Type=dev<i> File=…` (docs/slurm.md).
func HoldDevType(i int) string { return "dev" + strconv.Itoa(i) }

// Holds runs the Slurm commands of placeholders for the CLI: salloc and
// scancel by the absolute paths of root's config, with an environment of
// its own (no PATH, SLURM_* or SALLOC_* of the caller's), arguments built
// from validated values only.
type Holds struct {
	Salloc, Scancel string
	Scontrol        Scontrol
	// Env is every command's whole environment: SLURM_CONF when the
	// config names one.
	Env []string
	// As, when set, runs the commands as that account (root acting for
	// another user); nil: as this process.
	As *syscall.Credential
}

// NewHolds reads the commands and the node from the config; the commands
// get an environment of the config's alone.
func NewHolds(cfg *config.Config) *Holds {
	env := CommandEnv(cfg, nil)
	return &Holds{Salloc: cfg.Slurm.Holds.Salloc, Scancel: cfg.Slurm.Holds.Scancel, Env: env,
		Scontrol: Scontrol{Path: cfg.Health.Scontrol, Node: cfg.Node, Timeout: cfg.Health.ScontrolTimeout, Env: env}}
}

// Account is the credential that runs the commands as the account name
// (root acting for its owner, so that squeue and accounting show the
// owner): its uid and primary group. uid >= 0 must be the account's uid,
// as a hold recorded it: an account renumbered since gets nothing.
func Account(name string, uid int) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	if uid >= 0 && uint64(uid) != id {
		return nil, fmt.Errorf("account %s has uid %d, not the hold's %d", name, id, uid)
	}
	return &syscall.Credential{Uid: uint32(id), Gid: uint32(gid)}, nil
}

// PinnedTypes reports whether the node offers one GRES type per GPU
// (gpu:dev0:1,gpu:dev1:1,…), so a placeholder can name its GPUs; false:
// Slurm chooses them.
func (h *Holds) PinnedTypes(ctx context.Context) (bool, error) {
	n, err := h.Scontrol.Show(ctx)
	if err != nil {
		return false, err
	}
	return pinnedTypes(n.Gres), nil
}

// pinnedTypes: every gpu entry of a node's Gres= is gpu:dev<i>:1.
func pinnedTypes(gres string) bool {
	seen := false
	for entry := range strings.SplitSeq(gres, ",") {
		entry, _, _ = strings.Cut(entry, "(") // "(S:0)": the sockets
		parts := strings.Split(entry, ":")
		if parts[0] != "gpu" {
			continue
		}
		if len(parts) != 3 || parts[2] != "1" {
			return false
		}
		i, err := strconv.Atoi(strings.TrimPrefix(parts[1], "dev"))
		if err != nil || HoldDevType(i) != parts[1] {
			return false
		}
		seen = true
	}
	return seen
}

// Placeholder is one hold's Slurm job as submitted.
type Placeholder struct {
	// Token is the hold's fencing token, carried in the comment; 0: the
	// hold is yet to be made, by the Prolog, on Count GPUs Slurm chooses.
	Token int64
	// Indices are Slurm's indices of the held GPUs (pinned types).
	Indices []int
	Count   int
	Limit   time.Duration // the job's time limit, rounded up to minutes
}

var granted = regexp.MustCompile(`Granted job allocation ([0-9]+)`)

// Submit asks Slurm for the placeholder at once (salloc --immediate
// --no-shell) and returns its job id. On 22.05 salloc returns after the
// Prolog, so the store must know the hold before.
func (h *Holds) Submit(ctx context.Context, node string, p Placeholder) (string, error) {
	if !nodeName.MatchString(node) {
		return "", fmt.Errorf("placeholder: node name %q is no Slurm node name", node)
	}
	if p.Token < 0 || p.Limit <= 0 || (p.Token == 0) != (p.Indices == nil) || (p.Indices == nil && p.Count <= 0) {
		return "", errors.New("placeholder: a token with GPUs, or a count without, and a time limit")
	}
	gres, comment := "gpu:"+strconv.Itoa(p.Count), NewHoldComment(p.Limit)
	if p.Indices != nil {
		comment = HoldComment(p.Token)
		parts := make([]string, len(p.Indices))
		for i, k := range p.Indices {
			parts[i] = "gpu:" + HoldDevType(k) + ":1"
		}
		gres = strings.Join(parts, ",")
	}
	// salloc reports on stderr, the grant included.
	_, out, err := h.exec(ctx, "salloc", h.Salloc, "--no-shell", "--immediate", "--nodes=1", "--ntasks=1",
		"--nodelist="+node, "--job-name="+HoldJobName, "--comment="+comment,
		"--time="+strconv.Itoa(minutes(p.Limit)), "--gres="+gres)
	if m := granted.FindStringSubmatch(out); m != nil {
		return m[1], nil
	}
	if err == nil {
		err = errors.New("salloc: no job id in its output")
	}
	return "", err
}

// Cancel ends a placeholder job.
func (h *Holds) Cancel(ctx context.Context, job string) error {
	if _, err := strconv.ParseUint(job, 10, 64); err != nil {
		return fmt.Errorf("placeholder: job id %q is not a number", job)
	}
	_, _, err := h.exec(ctx, "scancel "+job, h.Scancel, job)
	return err
}

// nodeName is what may follow --nodelist=: one plain node name.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// exec runs one command with the fixed environment as h.As, bounded by
// the scontrol timeout plus the time salloc waits for the Prolog.
func (h *Holds) exec(ctx context.Context, name, path string, args ...string) (stdout, stderr string, err error) {
	return command{path: path, name: name, args: args, env: h.Env, timeout: h.Scontrol.Timeout + 30*time.Second, as: h.As}.run(ctx)
}

// HoldJob is a placeholder job of this node as Slurm lists it.
type HoldJob struct {
	ID    string
	Token int64 // from its comment; 0 when the comment names no hold
	State string
	// Starting: pending, or its Prolog has not finished, so the hold it
	// stands for may not be in the store yet.
	Starting bool
}

// HoldJobs lists the placeholder jobs of this node that have not ended:
// running, or pending for it. It reads every job (`scontrol --oneliner
// show job`) once. A job's name and comment are its user's text and may
// hold spaces and "Key=value" words: only the JobId the line starts with
// is ever acted on, and a user who dresses a job up as a placeholder can
// only get that job cancelled.
func (s *Scontrol) HoldJobs(ctx context.Context) ([]HoldJob, error) {
	out, err := s.run(ctx, "--oneliner", "show", "job")
	if err != nil {
		if strings.Contains(err.Error(), "No jobs in the system") {
			return nil, nil
		}
		return nil, err
	}
	return parseHoldJobs(out, s.Node), nil
}

// parseHoldJobs reads the placeholder jobs of node from `scontrol
// --oneliner show job`. A job's name or comment may hold a newline, and so
// a line of the user's making that starts "JobId=" with another job's id:
// an id that starts more than one line is doubtful and left out, since
// the real job's own line names it too.
func parseHoldJobs(out, node string) []HoldJob {
	starts := map[string]int{}
	for line := range strings.SplitSeq(out, "\n") {
		if id, ok := strings.CutPrefix(line, "JobId="); ok {
			id, _, _ = strings.Cut(id, " ")
			starts[id]++
		}
	}
	var jobs []HoldJob
	for line := range strings.SplitSeq(out, "\n") {
		f := firstFields(line)
		id, ok := strings.CutPrefix(line, "JobId=")
		if !ok || f["JobName"] != HoldJobName {
			continue
		}
		id, _, _ = strings.Cut(id, " ")
		if _, err := strconv.ParseUint(id, 10, 64); err != nil || starts[id] != 1 {
			continue
		}
		if f["NodeList"] != node && f["ReqNodeList"] != node {
			continue
		}
		st := f["JobState"]
		if endedStates[st] && st != "PENDING" {
			continue
		}
		token, _ := ParseHoldComment(f["Comment"])
		jobs = append(jobs, HoldJob{ID: id, Token: token, State: st,
			Starting: st == "PENDING" || st == "CONFIGURING" || f["Reason"] == "Prolog"})
	}
	return jobs
}

// firstFields reads the first value of each Key= word of a one-line
// scontrol record.
func firstFields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		k, v, ok := strings.Cut(w, "=")
		if _, seen := m[k]; ok && !seen {
			m[k] = v
		}
	}
	return m
}
