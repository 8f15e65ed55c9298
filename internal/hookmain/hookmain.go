// Package hookmain is the command line the scheduler hook programs share.
// Slurm runs them without arguments; the PBS hook and the Torque scripts
// pass --pbs and its flags; people and the man page generator ask for
// --help or --version. Anything else is refused, since a stray argument
// means the program was wired up wrongly.
package hookmain

import (
	"context"
	"fmt"
	"io"
	"os"

	"canhazgpu/internal/version"
)

// Program is one hook program.
type Program struct {
	Name  string // e.g. canhazgpu-prolog
	Role  string // what Slurm runs it as, for the refusal message
	Usage string // the --help text
	Slurm func(ctx context.Context, environ []string, stdout io.Writer) int
	PBS   func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// Run dispatches args and returns the exit status.
func (p Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) > 0 && args[0] == "--pbs":
		return p.PBS(ctx, args[1:], stdout, stderr)
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
	return p.Slurm(ctx, os.Environ(), stdout)
}
