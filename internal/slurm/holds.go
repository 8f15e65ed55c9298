package slurm

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"path/filepath"
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
	c, err := credentialOf(u)
	if err == nil && uid >= 0 && uint32(uid) != c.Uid {
		return nil, fmt.Errorf("account %s has uid %d, not the hold's %d", name, c.Uid, uid)
	}
	return c, err
}

// Owner is the credential of the account with uid (its primary group), to
// run a placeholder's commands as its owner.
func Owner(uid int) (*syscall.Credential, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, err
	}
	return credentialOf(u)
}

// credentialOf is the account's uid and primary group.
func credentialOf(u *user.User) (*syscall.Credential, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
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

// Cancel ends a placeholder job, as h.As: root cancels as the job's
// owner (see Owner), so that a job id that is not the placeholder's can
// only ever name another job of the same account, which Slurm refuses
// otherwise.
func (h *Holds) Cancel(ctx context.Context, job string) error {
	if !ValidJobID(job) {
		return fmt.Errorf("placeholder: job id %q is not one Slurm writes", job)
	}
	_, _, err := h.exec(ctx, "scancel "+job, h.Scancel, job)
	return err
}

// CancelAsOwner cancels a placeholder job as the account with uid, which
// Slurm lets cancel its own jobs only: whatever a listing or a stored
// hold named, root ends nothing of another account's.
func (h *Holds) CancelAsOwner(ctx context.Context, job string, uid int) error {
	owner, err := Owner(uid)
	if err != nil {
		return fmt.Errorf("placeholder job %s: its owner, uid %d: %w", job, uid, err)
	}
	owned := *h
	owned.As = owner
	return owned.Cancel(ctx, job)
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
	UID   int // its owner, as Slurm knows it
	State string
	// Starting: pending, or its Prolog has not finished, so the hold it
	// stands for may not name it in the store yet.
	Starting bool
}

// holdJobFormat is what squeue prints of each job: only fields Slurm
// makes itself (id, state, nodes, reason, uid). A job's name and comment
// are its user's text, which may hold a newline and then a line posing as
// another job's: a listing that printed them could be made to show a
// placeholder that is not there (its hold then released as lost) or one
// with another user's job id (that job then cancelled). The name is only
// matched, by squeue, against HoldJobName.
const holdJobFormat = "%A|%T|%N|%n|%r|%U"

// HoldJobs lists the placeholder jobs of this node that have not ended:
// running, or pending for it, in one squeue call (squeue beside scontrol:
// the same Slurm installation).
func (s *Scontrol) HoldJobs(ctx context.Context) ([]HoldJob, error) {
	args := []string{"--noheader", "--states=all", "--name=" + HoldJobName, "--format=" + holdJobFormat}
	out, _, err := command{path: s.squeue(), name: "squeue", args: args, env: s.Env, timeout: s.Timeout}.run(ctx)
	if err != nil {
		return nil, err
	}
	return parseHoldJobs(out, s.Node), nil
}

// squeue is the squeue of scontrol's installation.
func (s *Scontrol) squeue() string { return filepath.Join(filepath.Dir(s.Path), "squeue") }

// parseHoldJobs reads the placeholder jobs of node from squeue's lines in
// holdJobFormat.
func parseHoldJobs(out, node string) []HoldJob {
	var jobs []HoldJob
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) != 6 || !ValidJobID(f[0]) {
			continue
		}
		id, st, nodes, requested, reason := f[0], f[1], f[2], f[3], f[4]
		uid, err := strconv.ParseUint(f[5], 10, 32)
		if err != nil || (nodes != node && requested != node) || (endedStates[st] && st != "PENDING") {
			continue
		}
		jobs = append(jobs, HoldJob{ID: id, UID: int(uid), State: st,
			Starting: st == "PENDING" || st == "CONFIGURING" || reason == "Prolog"})
	}
	return jobs
}

// ValidJobID: id is a job id as Slurm writes one, in decimal without a
// leading zero or sign, and within Slurm's 32 bits. Slurm's commands read
// ids with strtol, so "01234" or 2^32+1234 would name job 1234: an id
// Slurm did not write is never passed to them.
func ValidJobID(id string) bool {
	n, err := strconv.ParseUint(id, 10, 32)
	return err == nil && n > 0 && strconv.FormatUint(n, 10) == id
}
