package pbs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
)

// Scheduler is the PBS adapter (OpenPBS, PBS Pro, Torque) as the programs
// list it: the hook and the Torque wrappers run the programs with --pbs,
// and the health check asks qstat whether a job still runs.
type Scheduler struct {
	// Qstat is qstat's absolute path; "": the first of QstatPaths that
	// exists. The health check runs as root with whatever PATH it got,
	// so PATH is not searched.
	Qstat string
}

var (
	_ batch.Scheduler = Scheduler{}
	_ batch.Liveness  = Scheduler{}
)

// QstatPaths are where PBS and Torque packages install qstat.
var QstatPaths = []string{"/opt/pbs/bin/qstat", "/usr/bin/qstat", "/usr/local/bin/qstat", "/opt/torque/bin/qstat"}

// qstatTimeout bounds one qstat call: a server that does not answer must
// not hold up the health check.
const qstatTimeout = 5 * time.Second

// Kind is "pbs".
func (Scheduler) Kind() allocator.Kind { return allocator.KindPBS }

// Policy is the [pbs] section.
func (Scheduler) Policy(cfg *config.Config) batch.Policy { return Policy(cfg) }

// Flag is "--pbs".
func (Scheduler) Flag() string { return "--pbs" }

// Prolog is RunProlog.
func (Scheduler) Prolog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return RunProlog(ctx, args, stdout, stderr)
}

// Epilog is RunEpilog.
func (Scheduler) Epilog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return RunEpilog(ctx, args, stdout, stderr)
}

// Ended asks qstat about a job: PBS has forgotten it, or reports it
// finished (F, shown with history) or completed (Torque's C). Any other
// state counts as running, so a doubtful answer never releases its GPUs.
// Without qstat on this host it says "" and no error: the boot id alone
// then finds the job's reservation stale, as PBS offers nothing else to
// ask.
func (s Scheduler) Ended(ctx context.Context, job string) (string, error) {
	if err := jobstate.CheckJobID(job); err != nil || strings.HasPrefix(job, "-") {
		return "", fmt.Errorf("pbs job id %q: not one the prolog records", job)
	}
	path := s.Qstat
	if path == "" {
		for _, p := range QstatPaths {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				path = p
				break
			}
		}
		if path == "" {
			return "", nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, qstatTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "-f", job)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.String() + " " + stdout.String())
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("qstat: no answer within %s", qstatTimeout)
	case errors.As(err, &exit) && strings.Contains(msg, "Unknown Job Id"):
		return "PBS no longer knows the job", nil
	case errors.As(err, &exit) && strings.Contains(msg, "Job has finished"):
		return "the job has finished in PBS", nil
	case err != nil:
		if line, _, _ := strings.Cut(msg, "\n"); line != "" {
			return "", fmt.Errorf("qstat: %w: %s", err, line)
		}
		return "", fmt.Errorf("qstat: %w", err)
	}
	for line := range strings.SplitSeq(stdout.String(), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != "job_state" {
			continue
		}
		switch st := strings.TrimSpace(v); st {
		case "F", "C":
			return "the job is " + st + " (finished) in PBS", nil
		default:
			return "", nil
		}
	}
	return "", errors.New("qstat -f: no job_state in its output")
}
