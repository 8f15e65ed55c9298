// Package keeper starts the command of `canhazgpu run` under a keeper: the
// same program re-executed as a small process that is the command's
// parent and the subreaper of everything the command starts. The keeper
// reports the command's stops and end to run, and ends every process
// left below it, daemons that called setsid included: after the command
// ends, when run asks (TERM, then KILL after a grace period), and at once
// when run itself dies, even by SIGKILL, which it learns from the end of
// a pipe only run holds. So no process run started outlives both, and the
// GPUs run releases carry no workload.
//
// The keeper sits in its own process group, so that a signal to run's
// group (kill %1 in a shell) does not reach it, and it survives the
// signals meant for run or the command.
package keeper

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Name is the keeper's argv[0], by which the program knows it is the
// keeper; ps shows it.
const Name = "canhazgpu-keeper"

// Invoked reports whether args (os.Args) start the keeper: main then
// returns Main(args) as the exit status, before anything else.
func Invoked(args []string) bool { return len(args) > 0 && args[0] == Name }

// The keeper's pipes, as numbered in the keeper.
const (
	controlFD = 3 // run -> keeper: "finish"; its end means run is gone
	reportFD  = 4 // keeper -> run: one line per event
)

// The lines of both pipes: a verb and an argument.
const (
	verbPid    = "pid"    // the command started with this pid
	verbFail   = "fail"   // errno and message: the command could not start
	verbStop   = "stop"   // wait status: the command stopped
	verbExit   = "exit"   // wait status: the command ended
	verbLeft   = "left"   // count: processes left running are being stopped
	verbSpared = "spared" // pid: a process below runs as another account
	verbBlind  = "blind"  // error: /proc unreadable, only the group was killed
	verbFinish = "finish" // run -> keeper: stop what is left, then exit
)

// Options say what to run.
type Options struct {
	Path    string // the program, found already
	Argv    []string
	Environ []string
	Stdin   *os.File
	Stdout  *os.File
	Stderr  *os.File
	// Foreground gives the command the terminal on Stdin.
	Foreground bool
	// Grace is the time between TERM and KILL for processes the command
	// leaves running.
	Grace time.Duration
	// Warn says what the keeper does beyond the command's own end; it is
	// called from another goroutine.
	Warn func(string)
}

// Tree is the started command and its keeper.
type Tree struct {
	// Pid is the command's pid, also its process group.
	Pid int
	// Events carries each stop of the command, then its end.
	Events  <-chan syscall.WaitStatus
	keeper  *os.Process
	control *os.File
	done    chan struct{} // closed when the keeper's reports end
	lost    error         // set before done closes
}

// Start starts the keeper and, through it, the command. A command that
// cannot be started is an *os.PathError as os.StartProcess gives it.
func Start(o Options) (*Tree, error) {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	mode := "bg"
	if o.Foreground {
		mode = "fg"
	}
	args := append([]string{Name, o.Grace.String(), mode, o.Path}, o.Argv...)
	// /proc/self/exe is this program even when an upgrade replaced its
	// file meanwhile.
	p, err := os.StartProcess("/proc/self/exe", args, &os.ProcAttr{Env: o.Environ,
		Files: []*os.File{o.Stdin, o.Stdout, o.Stderr, ctlR, repW}, Sys: &syscall.SysProcAttr{Setpgid: true}})
	ctlR.Close()
	repW.Close() // from now on the keeper holds the only write end
	if err != nil {
		ctlW.Close()
		repR.Close()
		return nil, fmt.Errorf("start the keeper of the command: %w", err)
	}
	r := bufio.NewReader(repR)
	verb, arg, err := readLine(r)
	if verb != verbPid {
		ctlW.Close()
		repR.Close()
		_, _ = p.Wait()
		return nil, startFailure(o.Path, verb, arg, err)
	}
	pid, err := strconv.Atoi(arg)
	if err != nil {
		ctlW.Close() // the keeper ends what it started
		repR.Close()
		_, _ = p.Wait()
		return nil, fmt.Errorf("keeper: bad pid %q", arg)
	}
	events := make(chan syscall.WaitStatus, 4)
	t := &Tree{Pid: pid, Events: events, keeper: p, control: ctlW, done: make(chan struct{})}
	go t.follow(r, repR, events, o.Warn)
	return t, nil
}

// startFailure turns the keeper's first line, when it is not a pid, into
// the error os.StartProcess would have returned.
func startFailure(path, verb, arg string, readErr error) error {
	if verb != verbFail {
		if readErr == nil {
			readErr = fmt.Errorf("unexpected %q", verb+" "+arg)
		}
		return fmt.Errorf("keeper ended before starting the command: %w", readErr)
	}
	num, msg, _ := strings.Cut(arg, " ")
	if n, err := strconv.Atoi(num); err == nil && n > 0 {
		return &os.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(n)}
	}
	return errors.New(msg)
}

func readLine(r *bufio.Reader) (verb, arg string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	verb, arg, _ = strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	return verb, arg, nil
}

// follow turns the keeper's reports into events and warnings until the
// keeper ends. A keeper that ends before the command did (someone killed
// it) leaves the command's process group killed, as the command's own
// death signal did to its first process.
func (t *Tree) follow(r *bufio.Reader, f io.Closer, events chan<- syscall.WaitStatus, warn func(string)) {
	defer close(t.done)
	defer f.Close()
	ended := false
	for {
		verb, arg, err := readLine(r)
		if err != nil {
			break
		}
		switch verb {
		case verbStop, verbExit:
			ws, err := strconv.ParseUint(arg, 10, 32)
			if err != nil {
				continue
			}
			events <- syscall.WaitStatus(ws)
			ended = ended || verb == verbExit
		case verbLeft:
			warn("stopping the processes the command left running")
		case verbSpared:
			if pid, err := strconv.Atoi(arg); err == nil {
				warn(fmt.Sprintf("warning: process %d, started by the command, now runs as another account and could not be stopped", pid))
			}
		case verbBlind:
			warn("warning: /proc cannot be read, so only the command's process group was stopped; processes that left it may still run")
		}
	}
	if !ended {
		_ = syscall.Kill(-t.Pid, syscall.SIGKILL)
		t.lost = errors.New("the keeper of the command's processes ended before the command: the command's process group was killed, and processes that left it may still run")
		events <- syscall.WaitStatus(syscall.SIGKILL)
	}
}

// Finish asks the keeper to stop what the command left running and waits
// until the keeper, and with it every process below it, is gone. Call it
// once the command's end came on Events. The error says the keeper was
// lost before the command ended.
func (t *Tree) Finish() error {
	_, _ = io.WriteString(t.control, verbFinish+"\n")
	<-t.done
	t.control.Close()
	_, _ = t.keeper.Wait()
	return t.lost
}
