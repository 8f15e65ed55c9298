// Command canhazgpu-healthcheck checks this node's GPUs against the
// reservations: Slurm's HealthCheckProgram, an NHC check, or a cron or
// systemd timer job. The work is done in internal/health.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"canhazgpu/internal/health"
)

func main() {
	// A stop request cancels the run, which kills any scontrol it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := health.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
