// Package procstat reads /proc/<pid>/stat, the one place that says when a
// process started (which tells it from a later process with the same
// PID), whose parent it is, and whether it has ended but not been reaped.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stat is what the callers need of /proc/<pid>/stat.
type Stat struct {
	State byte   // field 3: R, S, D, Z (ended, not reaped), X (dead), …
	PPID  int    // field 4
	Start uint64 // field 22: start time, clock ticks since boot
}

// Ended: the process has exited and only waits to be reaped.
func (s Stat) Ended() bool { return s.State == 'Z' || s.State == 'X' }

// Read reads the stat file of pid under procRoot ("" is /proc). The
// file's own errors (fs.ErrNotExist for a process that is gone) come back
// as they are.
func Read(procRoot string, pid int) (Stat, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	st, err := Parse(b)
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return st, nil
}

// Parse reads the content of a stat file. The command name, in
// parentheses, is the process's to choose and may hold spaces and
// parentheses: the fields are counted after its last ')'.
func Parse(b []byte) (Stat, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("stat %q: no command name in parentheses", short(s))
	}
	f := strings.Fields(s[i+1:]) // state(3) ppid(4) … starttime(22)
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("stat %q: want the state and at least 19 fields after the command name", short(s))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("stat: parent pid %q: want a number", f[1])
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("stat: start time %q: want a number of clock ticks", f[19])
	}
	return Stat{State: f[0][0], PPID: ppid, Start: start}, nil
}

// short cuts a bad file for an error message.
func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
