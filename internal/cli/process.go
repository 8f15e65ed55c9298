package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"canhazgpu/internal/keeper"
)

// The command of `run` is started like a shell starts a job: in its own
// process group, given the terminal's foreground when canhazgpu has it,
// so that Ctrl-C, Ctrl-Z and full-screen programs behave as without
// canhazgpu, and so that one signal reaches the command's whole group.

// lookPath finds the program like a shell does: a name with a slash as
// is, otherwise along PATH (relative PATH entries are skipped, as
// os/exec does, so a program in the current directory never shadows
// one in PATH). The exit status is a shell's: 127 not found, 126 found
// but not executable.
func lookPath(name string, environ []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, executable(name)
	}
	path, ok := getenv(environ, "PATH")
	if !ok {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		err := executable(p)
		if err == nil {
			return p, nil
		}
		var es *exitStatus
		if errors.As(err, &es) && es.code == 126 && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", &exitStatus{code: 127, msg: fmt.Sprintf("%s: command not found", name)}
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return &exitStatus{code: 127, msg: fmt.Sprintf("%s: no such file or directory", p)}
	case fi.IsDir():
		return &exitStatus{code: 126, msg: fmt.Sprintf("%s: is a directory", p)}
	case syscall.Access(p, 1) != nil: // X_OK
		return &exitStatus{code: 126, msg: fmt.Sprintf("%s: permission denied", p)}
	}
	return nil
}

// startError gives a failed exec the status a shell would: 127 when the
// program or its interpreter is missing, 126 when it cannot be executed.
func startError(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return &exitStatus{code: 127, msg: fmt.Sprintf("%s: %v", name, err)}
	}
	return &exitStatus{code: 126, msg: fmt.Sprintf("%s: cannot execute: %v", name, err)}
}

func getenv(environ []string, key string) (string, bool) {
	for i := len(environ) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(environ[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// withEnv replaces (or adds) variables in an environment.
func withEnv(environ []string, set map[string]string) []string {
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, replaced := set[k]; !replaced {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		out = append(out, k+"="+set[k])
	}
	return out
}

// tcgetpgrp is the foreground process group of the terminal fd; it fails
// when fd is not this process's controlling terminal.
func tcgetpgrp(fd int) (int, error) {
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return 0, e
	}
	return int(pgrp), nil
}

func tcsetpgrp(fd, pgrp int) error {
	p := int32(pgrp)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p))); e != 0 {
		return e
	}
	return nil
}

// takeTerminal makes our process group the terminal's foreground again.
// We are in the background then, and the terminal would stop us with
// SIGTTOU unless it is ignored.
func takeTerminal(fd int) {
	signal.Ignore(syscall.SIGTTOU)
	_ = tcsetpgrp(fd, syscall.Getpgrp())
	signal.Reset(syscall.SIGTTOU)
}

// job is the started command.
type job struct {
	tree    *keeper.Tree              // the command's pid (and process group), its events
	tty     int                       // terminal handed to it, -1 when none
	closeIO func(limit time.Duration) // waits for output copied through pipes
}

// startJob starts the command in its own process group, under a keeper
// that owns every process the command starts. When the terminal on stdin
// has canhazgpu in its foreground, the command gets the foreground
// instead.
func startJob(path string, argv, environ []string, stdin *os.File, stdout, stderr io.Writer, grace time.Duration, warn func(string)) (*job, error) {
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	if stdin == nil {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		opened = append(opened, f)
		stdin = f
	}
	var copies sync.WaitGroup
	var files []*os.File
	for _, w := range []io.Writer{stdout, stderr} {
		if f, ok := w.(*os.File); ok {
			files = append(files, f)
			continue
		}
		// Not a file (tests): copy from a pipe.
		r, wr, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, err
		}
		opened = append(opened, wr)
		files = append(files, wr)
		copies.Add(1)
		go func() {
			defer copies.Done()
			_, _ = io.Copy(w, r)
			r.Close()
		}()
	}
	j := &job{tty: -1}
	if pg, err := tcgetpgrp(int(stdin.Fd())); err == nil && pg == syscall.Getpgrp() {
		j.tty = int(stdin.Fd())
	}
	tree, err := keeper.Start(keeper.Options{Path: path, Argv: argv, Environ: environ, Stdin: stdin, Stdout: files[0], Stderr: files[1],
		Foreground: j.tty >= 0, Grace: grace, Warn: warn})
	closeAll() // the keeper has its copies now
	j.closeIO = func(limit time.Duration) {
		done := make(chan struct{})
		go func() { copies.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(limit):
			// A process that runs as another account (set-user-ID) was
			// spared and still holds the output open; do not wait for it.
		}
	}
	if err != nil {
		j.closeIO(time.Second)
		return nil, err
	}
	j.tree = tree
	return j, nil
}

// signal sends sig to the command's whole process group.
func (j *job) signal(sig syscall.Signal) {
	_ = syscall.Kill(-j.tree.Pid, sig)
}

// suspend follows the command into the background when it was stopped
// (Ctrl-Z): the terminal goes back to canhazgpu's group, canhazgpu stops
// itself so the shell sees the job stopped, and when the shell resumes it
// in the foreground the command gets the terminal and continues.
func (j *job) suspend() {
	if j.tty < 0 {
		return // no terminal: whoever stopped the command continues it
	}
	takeTerminal(j.tty)
	// A signal to oneself takes effect asynchronously: wait for the
	// SIGCONT of the shell's fg or bg rather than trust that the stop has
	// already happened when kill returns.
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	_ = syscall.Kill(syscall.Getpid(), syscall.SIGSTOP)
	<-cont
	signal.Stop(cont)
	if pg, err := tcgetpgrp(j.tty); err == nil && pg == syscall.Getpgrp() {
		_ = tcsetpgrp(j.tty, j.tree.Pid)
	}
	j.signal(syscall.SIGCONT)
}

// finish takes the terminal back and has the keeper stop every process
// the command left running, its own process group or not (TERM, then KILL
// after the grace given to startJob): nothing may keep using the GPUs
// once they are released. It returns when they are all gone.
func (j *job) finish(grace time.Duration) error {
	if j.tty >= 0 {
		takeTerminal(j.tty)
	}
	err := j.tree.Finish()
	j.closeIO(grace)
	return err
}

// exitCode is a shell's $? for a finished process.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// lockedWriter serialises writes from the lease renewal and the main loop.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
