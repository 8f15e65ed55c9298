// Package pbs is the PBS side of canhazgpu-prolog and canhazgpu-epilog: the
// modes that the OpenPBS / PBS Pro hook (contrib/pbs/canhazgpu_hook.py) and
// the Torque prologue and epilogue wrappers (contrib/torque) run with --pbs.
//
//	canhazgpu-prolog --pbs --job ID --user NAME --ngpus N [--uid N] [--run-count N] [--env-file PATH]
//	canhazgpu-prolog --pbs --job ID --user NAME --torque-resources LIST [--env-file PATH]
//	canhazgpu-prolog --pbs --available
//	canhazgpu-epilog --pbs --job ID [--env-file PATH]
//
// PBS only counts ngpus; it never says which GPUs a job gets. So the prolog
// lets canhazgpu choose: it reserves N free GPUs of this node for the job
// (owner kind pbs) in one atomic store call. A retried prolog of the same
// job keeps the GPUs it already holds. The epilog releases every
// reservation of the job on this node, whatever the prolog did.
//
// --available reserves nothing: it prints how many of this node's GPUs
// PBS may count in the vnode's resources_available.ngpus (see Usable).
// The hook keeps that attribute equal to it, so that PBS's scheduler does
// not place a job on GPUs an interactive user holds, only to have the job
// rejected and placed again at once.
//
// On success the prolog prints the job's environment on stdout, one
// NAME=VALUE per line, and writes the same lines to --env-file when given:
//
//	CUDA_VISIBLE_DEVICES=GPU-6f2b…,GPU-81c4…
//	CUDA_DEVICE_ORDER=PCI_BUS_ID
//	CANHAZGPU_GPU_INDICES=0,2
//
// CUDA_VISIBLE_DEVICES lists UUIDs because they are the same for every tool;
// CANHAZGPU_GPU_INDICES gives the NVML indices, in the same order, for
// people and for nvidia-smi -i. The job gets GPUs even when it cannot hold
// all of them: under on_conflict = "warn" it holds the free ones and runs
// on taken ones too (recorded as conflicts in the job file); with the store
// unreachable and on_store_error = "allow" it runs on GPUs chosen from the
// scan, idle ones first, and a pending marker asks the health check to
// reserve them later. Nothing is printed, and no env file is left, when the
// job has no GPUs on this host. One summary line goes to stderr.
//
// Exit status, for both programs (the hook and the wrappers act on it):
//
//	0  accept: reserved, released, or nothing to do
//	1  error: bad arguments or settings, or an unexpected failure
//	2  the store could not be reached and on_store_error = "fail"
//	3  prolog only: not enough free GPUs here and on_conflict = "fail"
//
// The hook rejects execjob_begin on every non-zero status of the prolog
// (e.reject(…), which PBS answers with a requeue); the Torque prologue
// exits 2 (requeue), never 1 (which would abort the job).
package pbs

import (
	"fmt"
	"io"
	"strings"
	"time"

	"canhazgpu/internal/config"
	"canhazgpu/internal/syslogline"
)

// Exit statuses of the PBS modes.
const (
	ExitOK        = 0
	ExitError     = 1
	ExitStoreDown = 2
	ExitShortage  = 3
)

// deadline bounds one prolog or epilog run, store retries included. It is
// well inside PBS's default hook alarm (30 s) and the hook's own timeout
// for the program (20 s), so the program's own message is what gets logged.
const deadline = 10 * time.Second

// loadConfig reads the system settings as every scheduler program does:
// flags, then CANHAZGPU_* variables, then the system file. The scheduler
// starts these programs as root with its own environment, not a user's.
func loadConfig(cf *config.Flags, env []string) (*config.Config, error) {
	return config.Load(config.Options{System: true, Env: env,
		ConfigFile: cf.ConfigFile(), Overrides: cf.Overrides(), MayOverride: true})
}

// Modes runs the PBS modes; the zero Modes is what the programs run.
type Modes struct {
	// SyslogPath is the syslog socket every log line also goes to; "":
	// the system's (/dev/log), skipped where there is none.
	SyslogPath string
}

// logged runs one mode and sends the lines it logged to syslog as well:
// the PBS hook and the Torque wrappers keep them only in the MoM's log or
// the job's error file. They go at warning when the mode failed or the
// line warns, at info otherwise.
func (m Modes) logged(program string, stderr io.Writer, run func(stderr io.Writer) int) int {
	c := &lineCopy{w: stderr}
	code := run(c)
	if len(c.lines) == 0 {
		return code
	}
	sys := syslogline.Open(m.SyslogPath, program)
	defer sys.Close()
	for _, line := range c.lines {
		line = strings.TrimPrefix(strings.TrimPrefix(line, program+": "), "canhazgpu: ")
		if code != ExitOK || strings.HasPrefix(line, "warning: ") || strings.HasPrefix(line, "error: ") {
			sys.Warning(line)
		} else {
			sys.Info(line)
		}
	}
	return code
}

// lineCopy passes writes through and keeps their lines.
type lineCopy struct {
	w     io.Writer
	lines []string
}

func (c *lineCopy) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			c.lines = append(c.lines, line)
		}
	}
	return c.w.Write(p)
}

// logf writes one line to the program's log stream (the hook logs it, the
// Torque wrappers leave it in the job's error file).
func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "canhazgpu: "+format+"\n", args...)
}
