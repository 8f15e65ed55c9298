package keeper

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"canhazgpu/internal/callerenv"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// Main is the keeper process. args are what Start passes: the program
// name, the grace between TERM and KILL, "fg" or "bg", the command's path
// and its argv. secure says the keeper started in secure-execution mode
// (callerenv.Secure, asked before it gave up its group): the command then
// gets the environment Start was given back from memory, with what the
// loader removed. It returns the exit status.
func Main(args []string, secure bool) int {
	// The command's Pdeathsig fires when the thread that started it ends:
	// this one, which stays locked until the keeper exits.
	runtime.LockOSThread()
	k := &keeper{report: os.NewFile(reportFD, "report"), self: os.Getpid(), secure: secure}
	if err := k.run(args, os.NewFile(controlFD, "control")); err != nil {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = 0
		}
		k.send(verbFail, fmt.Sprintf("%d %s", errno, err))
		return 1
	}
	return 0
}

type keeper struct {
	report *os.File
	self   int
	secure bool
	cmd    int // the command's pid, 0 until started
	chld   chan os.Signal
}

func (k *keeper) send(verb, arg string) {
	// A write after run ended fails with EPIPE: nobody is left to tell.
	_, _ = fmt.Fprintf(k.report, "%s %s\n", verb, arg)
}

func (k *keeper) run(args []string, control *os.File) error {
	if len(args) < 5 {
		return fmt.Errorf("want GRACE fg|bg PATH ARGV..., got %q", args[1:])
	}
	grace, err := time.ParseDuration(args[1])
	if err != nil || grace < 0 {
		return fmt.Errorf("bad grace %q", args[1])
	}
	if args[2] != "fg" && args[2] != "bg" {
		return fmt.Errorf("bad terminal mode %q: want fg or bg", args[2])
	}
	// Neither pipe may reach the command: its copies would keep run
	// looking alive to us, and us to run.
	syscall.CloseOnExec(controlFD)
	syscall.CloseOnExec(reportFD)
	// Orphans below us (a daemon that double-forked, a child whose parent
	// ended) become our children instead of init's, so we see and end
	// every process the command started.
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return fmt.Errorf("become the subreaper of the command: %w", e)
	}
	// Signals meant for run or for the command must not end the keeper,
	// which would leave the tree unwatched. Caught, not ignored: caught
	// signals return to their defaults in the command when it execs.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	k.chld = make(chan os.Signal, 1)
	signal.Notify(k.chld, syscall.SIGCHLD)

	environ, err := callerenv.Environ(k.secure)
	if err != nil {
		return err
	}
	p, err := os.StartProcess(args[3], args[4:], &os.ProcAttr{Env: environ, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Foreground: args[2] == "fg", Ctty: 0}})
	if err != nil {
		return err
	}
	k.cmd = p.Pid
	_ = p.Release() // reaped by wait4 below, with every orphan handed to us
	k.send(verbPid, fmt.Sprint(k.cmd))

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(control)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-k.chld:
			k.reap()
		case l, ok := <-lines:
			switch {
			case !ok:
				// run is gone, killed or crashed: nobody holds the GPUs
				// for these processes any more.
				k.stop(nil, 0)
				return nil
			case l == verbFinish:
				k.stop(lines, grace)
				return nil
			}
		}
	}
}

// reap collects every ended child, reporting the command's stops and end.
func (k *keeper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|syscall.WUNTRACED, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if pid != k.cmd {
			continue // an orphan handed to us
		}
		verb := verbExit
		if ws.Stopped() {
			verb = verbStop
		}
		k.send(verb, fmt.Sprint(uint32(ws)))
	}
}

// stop ends every process below the keeper and returns when none is
// left: TERM, then KILL for those still there after grace. With lines
// nil (run is gone), or once lines closes, KILL at once.
func (k *keeper) stop(lines <-chan string, grace time.Duration) {
	sig := syscall.SIGTERM
	if lines == nil {
		sig = syscall.SIGKILL
	}
	deadline := time.Now().Add(grace)
	sent := map[id]syscall.Signal{}
	spared := map[id]bool{}
	told := false
	wait := 10 * time.Millisecond
	for {
		k.reap()
		procs, err := descendants(k.self)
		if err != nil {
			// Blind: the command's process group is all we can name.
			k.send(verbBlind, err.Error())
			_ = syscall.Kill(-k.cmd, syscall.SIGKILL)
			return
		}
		left, running := 0, 0
		for _, p := range procs {
			if spared[p.id()] {
				continue
			}
			left++
			if p.dying || sent[p.id()] == sig {
				continue // one TERM each; KILL again until gone
			}
			if err := p.signal(sig); errors.Is(err, syscall.EPERM) {
				// A set-user-ID program now runs as someone else.
				spared[p.id()] = true
				left--
				k.send(verbSpared, fmt.Sprint(p.pid))
				continue
			}
			running++
			if sig == syscall.SIGTERM {
				sent[p.id()] = sig
			}
		}
		if left == 0 {
			return
		}
		// Processes already dying (killed with the command's group) were
		// not left running; only the others are worth a word.
		if !told && running > 0 {
			k.send(verbLeft, fmt.Sprint(running))
			told = true
		}
		until := wait
		if sig == syscall.SIGTERM {
			until = min(wait, max(time.Until(deadline), 0))
		}
		select {
		case <-k.chld:
		case <-time.After(until):
			// Processes stuck in the kernel take their time: look less
			// often the longer it lasts.
			wait = min(2*wait, time.Second)
		case _, ok := <-lines:
			if !ok {
				sig, lines = syscall.SIGKILL, nil
			}
		}
		if sig == syscall.SIGTERM && !time.Now().Before(deadline) {
			sig = syscall.SIGKILL
		}
	}
}
