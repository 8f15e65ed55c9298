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

	// The rest is best effort: the process may exit between two reads, and
	// environ is readable only by the process owner and root.
	if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		p.Name = strings.TrimSuffix(string(comm), "\n")
	}
	if cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = splitNUL(cmdline)
	}
	if cgroup, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.JobID = jobIDFromCgroup(cgroup)
	}
	if p.JobID == "" {
		// Only a hint: a process started outside a job can inherit the
		// variable, while the cgroup is set by slurmstepd itself.
		if environ, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			p.JobID = jobIDFromEnviron(environ)
		}
	}
	return p, nil
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

// splitNUL splits /proc/<pid>/cmdline or environ, which end with a NUL.
func splitNUL(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// jobIDFromCgroup finds the job_<id> directory slurmstepd puts each step in,
// both under cgroup v1 ("4:memory:/slurm/uid_1000/job_42/step_0") and v2
// ("0::/system.slice/slurmstepd.scope/job_42/step_0").
func jobIDFromCgroup(cgroup []byte) string {
	for line := range strings.SplitSeq(string(cgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for seg := range strings.SplitSeq(parts[2], "/") {
			if id, ok := strings.CutPrefix(seg, "job_"); ok && isDigits(id) {
				return id
			}
		}
	}
	return ""
}

func jobIDFromEnviron(environ []byte) string {
	for _, kv := range splitNUL(environ) {
		if id, ok := strings.CutPrefix(kv, "SLURM_JOB_ID="); ok && isDigits(id) {
			return id
		}
	}
	return ""
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
