package slurm

import (
	"strconv"
	"strings"

	"canhazgpu/allocator"
)

// The values of SLURM_SCRIPT_CONTEXT that select what a program does.
const (
	ContextProlog     = "prolog_slurmd"
	ContextTaskProlog = "prolog_task"
	ContextEpilog     = "epilog_slurmd"
)

// Env is the environment a program got, by name.
type Env map[string]string

// ParseEnv indexes an os.Environ-style list; a later entry wins, as in exec.
func ParseEnv(environ []string) Env {
	env := make(Env, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// Job is what Slurm says about the job in the Prolog and Epilog.
type Job struct {
	ID      string // SLURM_JOB_ID
	User    string // SLURM_JOB_USER; "uid:N" when Slurm gave none
	UID     int    // SLURM_JOB_UID; -1 when absent
	Restart int    // SLURM_JOB_RESTART_COUNT: grows with every requeue
	// GPUs are Slurm's indices of the job's GPUs on this node (positions in
	// gres.conf), from SLURM_JOB_GPUS; nil when the job has none here.
	GPUs []int
}

// JobFromEnv reads the job from a Prolog or Epilog environment. A missing
// SLURM_JOB_ID gives Job{} and no error: there is nothing to act on. A bad
// SLURM_JOB_GPUS is an *allocator.InputError naming it, returned with the
// rest of the job filled in.
func JobFromEnv(env Env) (Job, error) {
	id := env["SLURM_JOB_ID"]
	if id == "" {
		return Job{}, nil
	}
	j := Job{ID: id, User: env["SLURM_JOB_USER"], UID: -1}
	if n, err := strconv.Atoi(env["SLURM_JOB_UID"]); err == nil && n >= 0 {
		j.UID = n
	}
	if j.User == "" || allocator.ValidateUser(j.User) != nil {
		j.User = "uid:" + strconv.Itoa(j.UID)
	}
	if n, err := strconv.Atoi(env["SLURM_JOB_RESTART_COUNT"]); err == nil && n >= 0 {
		j.Restart = n
	}
	gpus, err := ParseGPUList("SLURM_JOB_GPUS", env["SLURM_JOB_GPUS"])
	j.GPUs = gpus
	return j, err
}

// ParseGPUList parses Slurm's GPU index list ("0,1,3") strictly: comma-
// separated non-negative integers, each once, no ranges. Slurm writes
// exactly this form; anything else means the environment is not what the
// programs were written for, and guessing could reserve the wrong GPUs.
// An empty value is an empty list.
func ParseGPUList(name, value string) ([]int, error) {
	if value == "" {
		return nil, nil
	}
	bad := func() error {
		return &allocator.InputError{Field: name, Value: value,
			Accepted: "comma-separated GPU indices such as 0,1,3"}
	}
	parts := strings.Split(value, ",")
	out := make([]int, 0, len(parts))
	seen := make(map[int]bool, len(parts))
	for _, p := range parts {
		if p == "" || len(p) > 6 || strings.TrimLeft(p, "0123456789") != "" {
			return nil, bad()
		}
		n, err := strconv.Atoi(p)
		if err != nil || seen[n] {
			return nil, bad()
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, nil
}

// stepGPUs are the Slurm indices of the GPUs of the step a TaskProlog runs
// for: SLURM_STEP_GPUS in srun steps, SLURM_JOB_GPUS in the batch and
// interactive steps. ok is false when neither is set: the step has no GPUs.
func stepGPUs(env Env) (indices []int, ok bool, err error) {
	for _, name := range []string{"SLURM_STEP_GPUS", "SLURM_JOB_GPUS"} {
		if v, set := env[name]; set && v != "" {
			indices, err = ParseGPUList(name, v)
			return indices, err == nil, err
		}
	}
	return nil, false, nil
}
