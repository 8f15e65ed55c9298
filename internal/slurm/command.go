package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"canhazgpu/internal/config"
	"canhazgpu/internal/termsafe"
)

// command is how every Slurm command here (scontrol, squeue, salloc, scancel)
// runs: by an absolute path from root's config, with a whole environment
// of its own, in its own process group that is killed with everything it
// started when the timeout passes (scontrol hangs while the controller
// does not answer, and Slurm kills a health check after 60 s), and with a
// one-line error that quotes Slurm.
type command struct {
	path string
	// name is how errors name the call: "scontrol show", "salloc".
	name    string
	args    []string
	env     []string
	timeout time.Duration
	// as, when set, runs the command as that account; nil: as this
	// process.
	as *syscall.Credential
}

// run returns what the command printed on stdout and on stderr (salloc
// reports its grant there). The error is one line: the command's name,
// how it failed and the last line Slurm printed, its control characters
// escaped (a job's name or comment is its user's text).
func (c command) run(ctx context.Context) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, c.args...)
	cmd.Env = c.env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.as}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild holding the pipes must not keep Wait from returning.
	cmd.WaitDelay = time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	stdout, stderr = out.String(), errOut.String()
	switch {
	case ctx.Err() != nil:
		return stdout, stderr, fmt.Errorf("%s: %w within %s", c.name, ErrNoAnswer, c.timeout)
	case err != nil:
		said := lastLine(stderr)
		if said == "" {
			said = lastLine(stdout)
		}
		if said != "" {
			return stdout, stderr, fmt.Errorf("%s: %w: %s", c.name, err, termsafe.Escape(said))
		}
		return stdout, stderr, fmt.Errorf("%s: %w", c.name, err)
	}
	return stdout, stderr, nil
}

// lastLine is the last line with text: Slurm's commands print progress
// first ("salloc: Pending job allocation 12") and the reason last.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// CommandEnv is the whole environment of the Slurm commands run for root's
// config: base (the caller's; nil: PATH=/usr/bin:/bin) with slurm_conf,
// when the config names one, as SLURM_CONF in place of any base has.
func CommandEnv(cfg *config.Config, base []string) []string {
	if base == nil {
		base = []string{"PATH=/usr/bin:/bin"}
	}
	conf := cfg.Slurm.Holds.SlurmConf
	if conf == "" {
		return base
	}
	env := make([]string, 0, len(base)+1)
	for _, kv := range base {
		if !strings.HasPrefix(kv, "SLURM_CONF=") {
			env = append(env, kv)
		}
	}
	return append(env, "SLURM_CONF="+conf)
}

// OwnerEnv is the environment of a command run as a placeholder's owner
// (root acting for them), who may read it in /proc: PATH, and the
// SLURM_CONF a caller was given (slurmd's, in a configless cluster; ""
// for none), unless the config names one. Nothing else of root's.
func OwnerEnv(cfg *config.Config, slurmConf string) []string {
	base := []string{"PATH=/usr/bin:/bin"}
	if slurmConf != "" {
		base = append(base, "SLURM_CONF="+slurmConf)
	}
	return CommandEnv(cfg, base)
}

// ErrNoAnswer: a Slurm command did not end within its timeout; what it
// asked may have been done.
var ErrNoAnswer = errors.New("no answer")
