// Package hookmain is the command line the scheduler hook programs share.
// The scheduler whose Flag is "" (Slurm) runs them without arguments;
// every other one passes its flag (--pbs) and that scheduler's flags;
// people and the man page generator ask for --help or --version. Anything
// else is refused, since a stray argument means the program was wired up
// wrongly.
package hookmain

import (
	"context"
	"fmt"
	"io"

	"canhazgpu/internal/batch"
	"canhazgpu/internal/version"
)

// Program is one hook program.
type Program struct {
	Name  string // e.g. canhazgpu-prolog
	Role  string // what the scheduler without a flag runs it as, for the refusal message
	Usage string // the --help text
	// Schedulers are the adapters it serves (internal/schedulers.All).
	Schedulers []batch.Scheduler
	// Mode is what the program does under one scheduler, such as
	// batch.Scheduler.Prolog.
	Mode func(s batch.Scheduler, ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Run dispatches args and returns the exit status.
func (p Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	for _, s := range p.Schedulers {
		if f := s.Flag(); f != "" && len(args) > 0 && args[0] == f {
			return p.Mode(s, ctx, args[1:], stdout, stderr)
		}
	}
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help"):
		fmt.Fprint(stdout, p.Usage)
		return 0
	case len(args) == 1 && args[0] == "--version":
		fmt.Fprintln(stdout, p.Name+" "+version.String())
		return 0
	case len(args) > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q: as %s it takes none\n", p.Name, args[0], p.Role)
		return 2
	}
	for _, s := range p.Schedulers {
		if s.Flag() == "" {
			return p.Mode(s, ctx, nil, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "%s: no scheduler runs it without arguments\n", p.Name)
	return 2
}
