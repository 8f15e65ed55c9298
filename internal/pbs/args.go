package pbs

import (
	"errors"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"canhazgpu/allocator"
	"canhazgpu/internal/config"
)

// prologArgs are the prolog's flags, checked.
type prologArgs struct {
	job      string
	user     string
	uid      int    // -1 until looked up
	ngpus    int    // -1 when torqueRes says it
	torque   string // --torque-resources: Torque's resource list ($5)
	runCount int    // -1 when unknown (Torque)
	envFile  string
	// available: print how many GPUs PBS may count here, reserve nothing.
	available bool
	cf        *config.Flags
	fs        *pflag.FlagSet
}

// epilogArgs are the epilog's flags, checked.
type epilogArgs struct {
	job     string
	envFile string
	cf      *config.Flags
	fs      *pflag.FlagSet
}

// parseProlog reads the prolog's flags (those after --pbs). Every problem
// is an *allocator.InputError or a pflag error naming the flag.
func parseProlog(args []string) (*prologArgs, error) {
	fs := newFlagSet("canhazgpu-prolog --pbs")
	a := &prologArgs{cf: config.AddFlags(fs), fs: fs}
	job := fs.String("job", "", "the PBS job `id` (e.job.id; Torque: $1)")
	usr := fs.String("user", "", "the job's execution `user` (e.job.euser; Torque: $2)")
	uid := fs.String("uid", "", "the user's numeric `uid` (default: looked up from --user)")
	ngpus := fs.String("ngpus", "", "`N` GPUs of the job on this host (its share of ngpus)")
	torque := fs.String("torque-resources", "", "Torque's resource `list` ($5); this host's gpus= share is taken from it")
	run := fs.String("run-count", "", "the job's run count `N` (e.job.run_count), recorded with the reservation")
	fs.StringVar(&a.envFile, "env-file", "", "also write the job's environment to this `file` (atomically, mode 0644)")
	fs.BoolVar(&a.available, "available", false, "reserve nothing: print how many of this host's GPUs PBS may count in resources_available.ngpus (no job flags)")
	if err := parse(fs, args); err != nil {
		return a, err // a carries the flag set for --help
	}
	if a.available {
		for _, name := range []string{"job", "user", "uid", "ngpus", "torque-resources", "run-count", "env-file"} {
			if fs.Changed(name) {
				return nil, &allocator.InputError{Field: "--available", Value: "with --" + name,
					Accepted: "--available alone, or with --config and the setting flags: it counts the host's GPUs, not a job's"}
			}
		}
		return a, nil
	}
	var err error
	if a.job, err = checkJob(*job); err != nil {
		return nil, err
	}
	if err := allocator.ValidateUser(*usr); err != nil {
		return nil, err
	}
	a.user = *usr
	if a.uid, err = number("--uid", *uid, -1, "a numeric uid, 0 or more"); err != nil {
		return nil, err
	}
	switch {
	case fs.Changed("ngpus") == fs.Changed("torque-resources"):
		given := "neither"
		if fs.Changed("ngpus") {
			given = "both"
		}
		return nil, &allocator.InputError{Field: "gpu count flags", Value: given,
			Accepted: "exactly one of --ngpus N and --torque-resources LIST"}
	case fs.Changed("ngpus"):
		if a.ngpus, err = number("--ngpus", *ngpus, 0, "a whole number of GPUs, 0 or more"); err != nil {
			return nil, err
		}
	default:
		a.ngpus, a.torque = -1, *torque
	}
	if a.runCount, err = number("--run-count", *run, -1, "the job's run count, 0 or more"); err != nil {
		return nil, err
	}
	if a.envFile, err = checkEnvFile(a.envFile); err != nil {
		return nil, err
	}
	return a, nil
}

// parseEpilog reads the epilog's flags (those after --pbs).
func parseEpilog(args []string) (*epilogArgs, error) {
	fs := newFlagSet("canhazgpu-epilog --pbs")
	a := &epilogArgs{cf: config.AddFlags(fs), fs: fs}
	job := fs.String("job", "", "the PBS job `id` (e.job.id; Torque: $1)")
	fs.StringVar(&a.envFile, "env-file", "", "remove the job's environment `file` written by the prolog")
	if err := parse(fs, args); err != nil {
		return a, err // a carries the flag set for --help
	}
	var err error
	if a.job, err = checkJob(*job); err != nil {
		return nil, err
	}
	if a.envFile, err = checkEnvFile(a.envFile); err != nil {
		return nil, err
	}
	return a, nil
}

func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	// Errors are reported by the caller in one line; usage only on --help.
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	return fs
}

func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &allocator.InputError{Field: "argument", Value: fs.Arg(0), Accepted: "flags only (see --help)"}
	}
	return nil
}

// printUsage writes the --help text.
func printUsage(fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s", fs.Name(), fs.FlagUsages())
}

// checkJob accepts a PBS or Torque job id. It names a file under the state
// directory, so it must be one path element.
func checkJob(job string) (string, error) {
	bad := job == "" || len(job) > 200 || job[0] == '.' || strings.ContainsAny(job, "/,")
	for _, c := range job {
		if c <= ' ' || c == 0x7f {
			bad = true
		}
	}
	if bad {
		return "", &allocator.InputError{Field: "--job", Value: job,
			Accepted: "a PBS job id such as 1234.server or 12[3].server (no '/', ',' or spaces)"}
	}
	return job, nil
}

// checkEnvFile accepts "" or an absolute path: the hook and the wrappers
// run with a working directory nobody chose.
func checkEnvFile(p string) (string, error) {
	if p != "" && !strings.HasPrefix(p, "/") {
		return "", &allocator.InputError{Field: "--env-file", Value: p, Accepted: "an absolute path"}
	}
	return p, nil
}

// number parses a flag holding a whole number >= 0; "" gives unset.
func number(flag, s string, unset int, accepted string) (int, error) {
	if s == "" {
		return unset, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, &allocator.InputError{Field: flag, Value: s, Accepted: accepted}
	}
	return n, nil
}

// lookupUID finds the uid of the job's user. PBS runs jobs only for users
// that exist on the execution host, so an unknown name is an error.
func lookupUID(name string) (int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return 0, &allocator.InputError{Field: "--user", Value: name, Accepted: "a user of this host, or pass --uid"}
		}
		return 0, fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return 0, fmt.Errorf("user %s has a non-numeric uid %q", name, u.Uid)
	}
	return uid, nil
}

// torqueShare finds this host's GPU count in Torque's resource list, e.g.
// "neednodes=2:ppn=4:gpus=2,nodes=2:ppn=4:gpus=2,walltime=01:00:00".
// nodes= is per host: "N:gpus=G" gives every host G; a list of named hosts
// ("n1:gpus=1+n2:gpus=2") gives the one named like this host. Without
// nodes=, a top-level gpus= or ngpus= is the job's (single-host) count.
func torqueShare(list string, hosts []string) (int, error) {
	fields := map[string]string{}
	for _, kv := range strings.Split(list, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	nodes, ok := fields["nodes"]
	if !ok {
		nodes, ok = fields["neednodes"]
	}
	if !ok {
		for _, k := range []string{"ngpus", "gpus"} {
			if v, ok := fields[k]; ok {
				return number("--torque-resources "+k, v, 0, "a whole number of GPUs")
			}
		}
		return 0, nil
	}
	var shares []int
	for _, part := range strings.Split(nodes, "+") {
		props := strings.Split(part, ":")
		gpus := 0
		for _, p := range props[1:] {
			if v, ok := strings.CutPrefix(p, "gpus="); ok {
				n, err := number("--torque-resources gpus", v, 0, "a whole number of GPUs")
				if err != nil {
					return 0, err
				}
				gpus = n
			}
		}
		for _, h := range hosts {
			if h != "" && shortName(props[0]) == shortName(h) {
				return gpus, nil
			}
		}
		shares = append(shares, gpus)
	}
	for _, s := range shares[1:] {
		if s != shares[0] {
			return 0, &allocator.InputError{Field: "--torque-resources", Value: list,
				Accepted: "nodes= naming this host (" + strings.Join(hosts, " or ") + "), or the same gpus= on every host; else pass --ngpus"}
		}
	}
	return shares[0], nil
}

func shortName(h string) string {
	s, _, _ := strings.Cut(h, ".")
	return s
}
