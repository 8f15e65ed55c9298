package gpu

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"canhazgpu/allocator/procstat"
)

// LookupProcess reads what /proc knows about pid: Name, UID, User, Cmdline and
// JobID. UsedMemoryMB is left at -1 for the caller to fill. A pid that does not
// exist gives an error matching fs.ErrNotExist.
//
// procRoot is the host's /proc ("" means "/proc"): NVML reports PIDs of the
// host namespace, so an agent in a container must read a host /proc mount.
func LookupProcess(procRoot string, pid int) (Process, error) {
	p := Process{PID: pid, UID: -1, UsedMemoryMB: -1}
	if pid <= 0 {
		return p, fmt.Errorf("lookup process: invalid pid %d", pid)
	}
	if procRoot == "" {
		procRoot = defaultProcRoot
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid))

	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return p, fmt.Errorf("process %d: %w", pid, err)
	}
	uid, err := parseStatusUID(status)
	if err != nil {
		return p, fmt.Errorf("process %d: %w", pid, err)
	}
	p.UID = uid
	p.User = users.name(uid)

	// The rest is best effort: the process may exit between two reads.
	if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		p.Name = strings.TrimSuffix(string(comm), "\n")
	}
	if cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = splitNUL(cmdline)
	}
	p.JobID = slurmJob(procRoot, pid)
	return p, nil
}

// slurmJob says which Slurm job a process belongs to, from what only root
// can arrange: the job cgroup slurmstepd put it in or, on nodes where
// Slurm uses no cgroups (proctrack/pgid or linuxproc), the slurmstepd that
// started it. Never from the process's environment: its owner writes that,
// and SLURM_JOB_ID=<any job> would claim another user's job for it.
func slurmJob(procRoot string, pid int) string {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if cgroup, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		if job, inSlurm := jobFromCgroup(cgroup); inSlurm {
			return job // "" for a Slurm cgroup outside any job (slurmstepd's own)
		}
	}
	return jobFromStepdAncestor(procRoot, pid)
}

// parseStatusUID returns the real uid, the first of the four on the Uid: line;
// the real uid is who started the process, even if it later changed its
// effective uid.
func parseStatusUID(status []byte) (int, error) {
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, fmt.Errorf("status: empty Uid line")
		}
		uid, err := strconv.ParseUint(fields[0], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("status: bad Uid line %q: %w", line, err)
		}
		return int(uid), nil
	}
	return 0, errors.New("status: no Uid line")
}

// splitNUL splits /proc/<pid>/cmdline, which ends with a NUL.
func splitNUL(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// jobFromCgroup finds the job in Slurm's own cgroup layouts, anchored at
// the hierarchy's root so that a directory named job_<id> that a user made
// in a cgroup tree delegated to them (systemd's user@.service) counts for
// nothing:
//
//	cgroup v2: 0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0
//	           (<node>_slurmstepd.scope with several slurmd on one host)
//	cgroup v1: 4:memory:/slurm/uid_1000/job_42/step_batch/task_0
//	           (/slurm_<node>/… with several slurmd on one host)
//
// inSlurm: the process is in a Slurm cgroup at all, with or without a job.
func jobFromCgroup(cgroup []byte) (job string, inSlurm bool) {
	for line := range strings.SplitSeq(string(cgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		segs := strings.Split(strings.TrimPrefix(parts[2], "/"), "/")
		var jobSeg string
		switch {
		case parts[0] == "0" && parts[1] == "" && len(segs) >= 2 && segs[0] == "system.slice" &&
			(segs[1] == "slurmstepd.scope" || strings.HasSuffix(segs[1], "_slurmstepd.scope")):
			inSlurm = true
			if len(segs) >= 3 {
				jobSeg = segs[2]
			}
		case segs[0] == "slurm" || strings.HasPrefix(segs[0], "slurm_"):
			inSlurm = true
			if len(segs) >= 3 {
				if uid, ok := strings.CutPrefix(segs[1], "uid_"); ok && isDigits(uid) {
					jobSeg = segs[2]
				}
			}
		}
		if id, ok := strings.CutPrefix(jobSeg, "job_"); ok && isDigits(id) {
			return id, true
		}
	}
	return "", inSlurm
}

// maxAncestors bounds the walk up the process tree; job processes sit a
// few levels below their slurmstepd.
const maxAncestors = 64

// jobFromStepdAncestor finds the job of the nearest slurmstepd above pid:
// a process of root's named slurmstepd whose title is
// "slurmstepd: [<job>.<step>]" (slurmstepd sets it; no user can start a
// root process or change one's title). A parent younger than its child is
// not its parent: the parent exited and its pid was reused.
func jobFromStepdAncestor(procRoot string, pid int) string {
	child, err := procstat.Read(procRoot, pid)
	for range maxAncestors {
		if err != nil || child.PPID <= 1 {
			return ""
		}
		parent, perr := procstat.Read(procRoot, child.PPID)
		if perr != nil || parent.Start > child.Start {
			return ""
		}
		if job := stepdJob(procRoot, child.PPID); job != "" {
			return job
		}
		child = parent
	}
	return ""
}

// stepdJob returns the job a slurmstepd serves, or "" when pid is no
// slurmstepd of root's.
func stepdJob(procRoot string, pid int) string {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(dir, "comm"))
	if err != nil || strings.TrimSuffix(string(comm), "\n") != "slurmstepd" {
		return ""
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return ""
	}
	if uid, err := parseStatusUID(status); err != nil || uid != 0 {
		return ""
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return ""
	}
	args := splitNUL(cmdline)
	if len(args) == 0 {
		return ""
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(args[0]), "slurmstepd: [")
	if !ok {
		return ""
	}
	jobStep, _, ok := strings.Cut(rest, "]")
	if !ok {
		return ""
	}
	job, step, ok := strings.Cut(jobStep, ".")
	if !ok || step == "" || !isDigits(job) {
		return ""
	}
	return job
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// users caches account names because NSS lookups (LDAP, SSSD) can take
// seconds and every scan asks again for the same few uids.
var users = &userCache{lookup: user.LookupId}

type userCache struct {
	lookup func(uid string) (*user.User, error)

	mu    sync.Mutex
	names map[int]string
}

// name returns the account name of uid, or "uid:N" when it has none. Only a
// definite "no such user" is cached: a failing directory service must not pin
// "uid:N" for the life of the process.
func (c *userCache) name(uid int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.names[uid]; ok {
		return n
	}
	fallback := fmt.Sprintf("uid:%d", uid)
	u, err := c.lookup(strconv.Itoa(uid))
	var unknown user.UnknownUserIdError
	switch {
	case err == nil && u.Username != "":
		c.remember(uid, u.Username)
		return u.Username
	case err == nil, errors.As(err, &unknown):
		c.remember(uid, fallback)
	}
	return fallback
}

func (c *userCache) remember(uid int, name string) {
	if c.names == nil {
		c.names = make(map[int]string)
	}
	c.names[uid] = name
}
