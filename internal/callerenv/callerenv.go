// Package callerenv recovers the environment a set-group-ID program was
// started with, for the command `canhazgpu run` starts.
//
// The kernel starts a set-group-ID program in secure-execution mode, and
// glibc's dynamic loader then removes LD_LIBRARY_PATH, LD_PRELOAD, TMPDIR,
// GCONV_PATH and the like from the process's environment, so that they
// cannot change what the privileged program does. The user's command,
// started after the group is given up, must get them back: a CUDA program
// without its LD_LIBRARY_PATH does not find its libraries.
//
// The loader only takes the variables out of the list of pointers it hands
// the program; the strings execve copied stay where they were, in the range
// the kernel reports as env_start..env_end (proc(5)), which is what
// /proc/self/environ shows. That file cannot be opened here, though: a
// process in secure-execution mode is not dumpable, so its /proc files
// belong to root. The process reads the range from its own memory instead,
// with process_vm_readv, which only needs what reading its own memory
// needs: to be the same process. Nothing changes the dumpable flag.
package callerenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Secure reports whether the process runs in secure-execution mode
// because an exec changed its effective user or group. Call it before the
// program gives up the group it was installed set-group-ID to: the drop
// makes the ids equal again.
//
// The kernel's own answer, AT_SECURE in the auxiliary vector, is not
// reliable here: Go finds the vector after the environment, which the
// loader has just shortened in this mode, and its fallback,
// /proc/self/auxv, is unreadable to a non-dumpable process. Changed ids
// are the rule by which the kernel sets AT_SECURE for set-ID programs, the
// only kind canhazgpu installs; for a process not in secure mode, Environ
// returns the same list either way.
func Secure() bool {
	return os.Geteuid() != os.Getuid() || os.Getegid() != os.Getgid()
}

// Environ is the environment the process was started with: os.Environ
// when it runs normally, what execve gave it when secure is true.
//
// Only the command `run` starts may get it, and only after the program has
// given up its group: the privileged program itself must keep obeying the
// environment the loader left it.
func Environ(secure bool) ([]string, error) {
	if !secure {
		return os.Environ(), nil
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil, fmt.Errorf("read the environment canhazgpu was started with: %w", err)
	}
	start, end, err := envRange(string(stat))
	if err != nil {
		return nil, fmt.Errorf("read the environment canhazgpu was started with: /proc/self/stat: %w", err)
	}
	if end == start {
		return []string{}, nil // started with an empty environment
	}
	buf := make([]byte, end-start)
	n, err := unix.ProcessVMReadv(os.Getpid(), []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}},
		[]unix.RemoteIovec{{Base: uintptr(start), Len: len(buf)}}, 0)
	if err != nil {
		return nil, fmt.Errorf("read the environment canhazgpu was started with: %w", err)
	}
	return parse(buf[:n]), nil
}

// envRange finds env_start and env_end, fields 50 and 51 of a
// /proc/PID/stat line (proc(5)). The second field, the command name in
// parentheses, may itself hold spaces and parentheses, so counting starts
// after its last ')'.
func envRange(stat string) (start, end uint64, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name in parentheses")
	}
	// Fields after the name start at field 3.
	fields := strings.Fields(stat[i+1:])
	const envStart, envEnd = 50 - 3, 51 - 3
	if len(fields) <= envEnd {
		return 0, 0, fmt.Errorf("%d fields, want at least 51 (Linux 3.5 or later)", len(fields)+2)
	}
	if start, err = strconv.ParseUint(fields[envStart], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("env_start: %w", err)
	}
	if end, err = strconv.ParseUint(fields[envEnd], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("env_end: %w", err)
	}
	if start == 0 || end < start {
		return 0, 0, fmt.Errorf("env_start %d and env_end %d are not a range", start, end)
	}
	return start, end, nil
}

// parse splits the NUL-terminated strings of an environment block into
// os.Environ's form, keeping every non-empty string as os.Environ does,
// so that the command gets exactly what canhazgpu got.
func parse(block []byte) []string {
	env := []string{}
	for _, kv := range bytes.Split(block, []byte{0}) {
		if len(kv) > 0 {
			env = append(env, string(kv))
		}
	}
	return env
}
