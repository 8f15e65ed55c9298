package jobstate

import (
	"fmt"
	"strconv"
	"strings"

	"canhazgpu/allocator"
)

// What the state files may hold: exactly what the scheduler programs
// write. The TaskProlog prints GPU ids into the job's environment and the
// health check prints reasons on terminals, so ids have a fixed form and
// text has no control characters.

// maxUUIDLen bounds a GPU id: NVML's are 40 bytes, MIG ids up to about 60.
const maxUUIDLen = 96

// CheckUUID accepts a GPU id as NVML writes it: "GPU-" or "MIG-" and then
// letters, digits, '-' and (old MIG ids) '/'.
func CheckUUID(id string) error {
	rest, ok := strings.CutPrefix(id, "GPU-")
	if !ok {
		rest, ok = strings.CutPrefix(id, "MIG-")
	}
	if !ok || rest == "" || len(id) > maxUUIDLen || strings.IndexFunc(rest, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '/')
	}) >= 0 {
		return &allocator.InputError{Field: "gpu id", Value: id,
			Accepted: "GPU- or MIG- followed by letters, digits, '-' and '/'"}
	}
	return nil
}

// checkText accepts free text of at most max bytes without control
// characters.
func checkText(field, s string, max int) error {
	if len(s) > max || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
		v := s
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return &allocator.InputError{Field: field, Value: v,
			Accepted: fmt.Sprintf("at most %d bytes without control characters", max)}
	}
	return nil
}

// checkOwner accepts the job owner and attempt a file records: an account
// name or none, a uid or -1 when unknown, a restart count.
func checkOwner(user string, uid, restart int) error {
	if user != "" {
		if err := allocator.ValidateUser(user); err != nil {
			return err
		}
		if err := checkText("user", user, 256); err != nil {
			return err
		}
	}
	if uid < -1 {
		return &allocator.InputError{Field: "uid", Value: strconv.Itoa(uid), Accepted: "a uid, or -1 when unknown"}
	}
	if restart < 0 {
		return &allocator.InputError{Field: "restart count", Value: strconv.Itoa(restart), Accepted: "zero or more"}
	}
	return nil
}

// check accepts what the Prolog writes.
func (f *JobFile) check() error {
	if err := checkKind(f.Kind); err != nil {
		return err
	}
	if err := CheckJobID(f.JobID); err != nil {
		return err
	}
	if err := checkOwner(f.User, f.UID, f.Restart); err != nil {
		return err
	}
	for _, g := range f.GPUs {
		if err := CheckUUID(g.UUID); err != nil {
			return err
		}
		if g.Index < -1 || g.SchedIndex < -1 {
			return &allocator.InputError{Field: "gpu index", Value: fmt.Sprintf("%d (scheduler %d)", g.Index, g.SchedIndex),
				Accepted: "an index, or -1 when unknown"}
		}
	}
	for _, c := range f.Conflicts {
		if c.GPU != "" {
			if err := CheckUUID(c.GPU); err != nil {
				return err
			}
		}
		if err := checkText("conflict reason", c.Reason, 1000); err != nil {
			return err
		}
	}
	return nil
}
