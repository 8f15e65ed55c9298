// Package procstop stops another user's process safely: the health check,
// as root, ends processes that use a GPU against the rules. A PID names a
// process only until it ends, so the process is pinned with a pidfd and
// its identity (owner, start time, executable) checked against what was
// seen before every signal: a new process that reuses the PID is never
// hit.
package procstop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"canhazgpu/allocator/procstat"
)

// Identity is what tells a process from a later one with the same PID.
type Identity struct {
	UID   int    // real uid
	Root  bool   // any of its uids is 0
	Start uint64 // start time, clock ticks since boot (/proc/<pid>/stat field 22)
	Exe   string // the executable, as /proc/<pid>/exe names it; "" if unreadable
	// ExeFile is the executable itself (its device and inode), which the
	// name cannot vouch for: a user can bind-mount their own program over
	// an exempt one's path in a mount namespace of their own, and the name
	// then reads as the exempt path. Zero when unreadable.
	ExeFile FileID
}

// FileID is a file's device and inode number.
type FileID struct{ Dev, Ino uint64 }

// IsFile reports whether the process runs the very file at path (as root
// sees it): the way to exempt a command by its executable.
func (id Identity) IsFile(path string) bool {
	var st unix.Stat_t
	if id.ExeFile == (FileID{}) || unix.Stat(path, &st) != nil {
		return false
	}
	return FileID{Dev: st.Dev, Ino: st.Ino} == id.ExeFile
}

// Procs reads processes under a proc file system.
type Procs struct {
	Root string // "" is /proc
}

func (p Procs) dir(pid int) string {
	root := p.Root
	if root == "" {
		root = "/proc"
	}
	return filepath.Join(root, strconv.Itoa(pid))
}

// Identify reads a running process's identity.
func (p Procs) Identify(pid int) (Identity, error) {
	dir := p.dir(pid)
	stat, err := procstat.Read(p.Root, pid)
	if err != nil {
		return Identity{}, err
	}
	if stat.Ended() {
		return Identity{}, fmt.Errorf("process %d: %w", pid, os.ErrProcessDone)
	}
	id := Identity{Start: stat.Start}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return Identity{}, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "Uid:")
		if !ok {
			continue
		}
		uids := strings.Fields(rest)
		if len(uids) == 0 {
			break
		}
		if id.UID, err = strconv.Atoi(uids[0]); err != nil {
			return Identity{}, fmt.Errorf("process %d: uid %q", pid, uids[0])
		}
		for _, u := range uids {
			id.Root = id.Root || u == "0"
		}
		id.Exe, _ = os.Readlink(dir + "/exe")
		var st unix.Stat_t
		if unix.Stat(dir+"/exe", &st) == nil { // the file the link stands for
			id.ExeFile = FileID{Dev: st.Dev, Ino: st.Ino}
		}
		return id, nil
	}
	return Identity{}, fmt.Errorf("process %d: no uid in status", pid)
}

// ErrChanged: the PID no longer names the process that was seen.
var ErrChanged = errors.New("the PID now names another process")

// ErrRoot: root's processes are never stopped.
var ErrRoot = errors.New("the process runs as root")

// Stop sends SIGTERM to the process pid if it is still want, waits up to
// wait for it to end, then sends SIGKILL and waits as long again. It
// returns "term" when SIGTERM ended it, "kill" when SIGKILL was needed
// (with an error if even that did not end it), and "" with an error
// (ErrChanged, ErrRoot, os.ErrProcessDone, ...) when nothing was sent.
func (p Procs) Stop(ctx context.Context, pid int, want Identity, wait time.Duration) (string, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return "", os.ErrProcessDone
	}
	if err != nil {
		return "", fmt.Errorf("process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	// The pidfd now pins one process: checked once, the identity holds
	// for every signal sent through it.
	got, err := p.Identify(pid)
	switch {
	case err != nil:
		return "", err
	case got.Root || want.Root:
		return "", ErrRoot
	case got.UID != want.UID || got.Start != want.Start || got.Exe != want.Exe:
		return "", ErrChanged
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err != nil {
		return "", fmt.Errorf("process %d: SIGTERM: %w", pid, err)
	}
	if ended(ctx, fd, wait) {
		return "term", nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return "term", fmt.Errorf("process %d: SIGKILL: %w", pid, err) // SIGTERM went out
	}
	if !ended(ctx, fd, wait) {
		return "kill", fmt.Errorf("process %d: still there %s after SIGKILL", pid, wait)
	}
	return "kill", nil
}

// ended waits up to wait, or until ctx ends, for the process to exit: a
// pidfd becomes readable when it does.
func ended(ctx context.Context, fd int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == nil && n > 0 {
			return true
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false
		}
	}
}
