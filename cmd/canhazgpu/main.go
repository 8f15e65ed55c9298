// Command canhazgpu reserves GPUs of this node for interactive work and
// shows who uses them. The commands live in internal/cli.
package main

import (
	"context"
	"fmt"
	"os"

	"canhazgpu/internal/cli"
)

func main() {
	env, err := cli.OSEnv()
	if err == nil {
		err = cli.Run(context.Background(), os.Args[1:], env)
	}
	if line := cli.ErrorLine(err); line != "" {
		fmt.Fprintln(os.Stderr, line)
	}
	os.Exit(cli.ExitCode(err))
}
