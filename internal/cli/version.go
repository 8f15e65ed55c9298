package cli

import (
	"context"
	"fmt"

	"canhazgpu/internal/version"
)

func versionCommand() *command {
	fs := newFlagSet("version")
	return &command{
		name:     "version",
		usage:    "canhazgpu version",
		short:    "Print the version, commit and build date",
		examples: []string{"canhazgpu version"},
		flags:    fs,
		run: func(_ context.Context, inv *invocation, args []string) error {
			if err := noArgs("version", args); err != nil {
				return err
			}
			_, err := fmt.Fprintf(inv.env.Stdout, "canhazgpu %s\n", version.String())
			return err
		},
	}
}
