package keeper

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// proc is one process as /proc/PID/stat shows it.
type proc struct {
	pid, ppid int
	state     byte
	// start is the start time in clock ticks since boot: with pid, it
	// names one process for good, where a pid alone may be reused.
	start uint64
	// dying: it is exiting, or SIGKILL waits for it; it is gone in a
	// moment and needs no more signals.
	dying bool
}

// From the kernel: PF_EXITING in the flags of a task, and SIGKILL's bit
// in its pending signals.
const (
	pfExiting      = 0x4
	sigkillPending = 1 << (syscall.SIGKILL - 1)
)

// id names the process itself, whatever its parent or state becomes.
type id struct {
	pid   int
	start uint64
}

func (p proc) id() id { return id{p.pid, p.start} }

// gone reports a process that has ended (a zombie waits to be reaped).
func (p proc) gone() bool { return p.state == 'Z' || p.state == 'X' }

// readProc reads /proc/PID/stat.
func readProc(pid int) (proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, err
	}
	return parseStat(b)
}

// parseStat reads "pid (comm) state ppid ... starttime ...". comm is
// chosen by the process and may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func parseStat(b []byte) (proc, error) {
	open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return proc{}, fmt.Errorf("bad /proc stat %q", b)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return proc{}, fmt.Errorf("bad /proc stat %q: %w", b, err)
	}
	// Field N of proc(5) is f[N-3]: state 3, ppid 4, flags 9, starttime
	// 22, signal (the task's pending signals) 31.
	f := strings.Fields(string(b[closing+1:]))
	if len(f) < 29 || len(f[0]) != 1 {
		return proc{}, fmt.Errorf("bad /proc stat %q", b)
	}
	ppid, err1 := strconv.Atoi(f[1])
	flags, err2 := strconv.ParseUint(f[6], 10, 64)
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	pending, err4 := strconv.ParseUint(f[28], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return proc{}, fmt.Errorf("bad /proc stat %q: %w", b, err)
	}
	return proc{pid: pid, ppid: ppid, state: f[0][0], start: start,
		dying: flags&pfExiting != 0 || pending&sigkillPending != 0}, nil
}

// descendants lists the live processes below root, from one pass over
// /proc. A process that forks during the pass may be missed: callers
// look again until nothing is left.
func descendants(root int) ([]proc, error) {
	dir, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return nil, err
	}
	children := map[int][]proc{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue // not a process
		}
		p, err := readProc(pid)
		if err != nil || p.gone() {
			continue // ended meanwhile; a zombie has no children
		}
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []proc
	next := []int{root}
	for len(next) > 0 {
		pid := next[len(next)-1]
		next = next[:len(next)-1]
		for _, c := range children[pid] {
			out = append(out, c)
			next = append(next, c.pid)
		}
	}
	return out, nil
}

// signal sends sig to p, unless its pid now names another process. The
// handle FindProcess takes (a pidfd, where the kernel has them) pins the
// process; the start time read after taking it must still be p's.
func (p proc) signal(sig syscall.Signal) error {
	h, err := os.FindProcess(p.pid)
	if err != nil {
		return err
	}
	defer h.Release()
	now, err := readProc(p.pid)
	if err != nil || now.start != p.start {
		return os.ErrProcessDone
	}
	return h.Signal(sig)
}
