// Command canhazgpu reserves GPUs of this node for interactive work and
// shows who uses them. The commands live in internal/cli.
package main

import (
	"context"
	"fmt"
	"os"

	"canhazgpu/internal/callerenv"
	"canhazgpu/internal/cli"
	"canhazgpu/internal/keeper"
)

func main() {
	if keeper.Invoked(os.Args) {
		// run re-executes this program as the keeper, and the setgid bit
		// applies again: the keeper never needs the group, and the command
		// it starts must not inherit it. Whether it runs in secure mode
		// can only be told before the drop.
		secure := callerenv.Secure()
		if err := cli.DropGroup(); err != nil {
			fmt.Fprintln(os.Stderr, cli.ErrorLine(err))
			os.Exit(1)
		}
		os.Exit(keeper.Main(os.Args, secure))
	}
	env, err := cli.OSEnv()
	if err == nil {
		err = cli.Run(context.Background(), os.Args[1:], env)
	}
	if line := cli.ErrorLine(err); line != "" {
		fmt.Fprintln(os.Stderr, line)
	}
	os.Exit(cli.ExitCode(err))
}
