package pbs

import (
	"context"
	"fmt"
	"io"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/usage"
	"canhazgpu/internal/batch"
	"canhazgpu/internal/config"
	"canhazgpu/internal/localnode"
)

// availableDeadline bounds canhazgpu-prolog --pbs --available. The hook
// runs it after the prolog in the same execjob_begin, and both together
// must stay inside PBS's hook alarm (30 s by default).
const availableDeadline = 5 * time.Second

// Usable counts the GPUs of a node that PBS may count in the vnode's
// resources_available.ngpus: those the scan sees that are free, or held by
// a PBS job. PBS places a job where resources_available.ngpus, less what it
// assigned to running jobs, covers the request, so the GPUs of PBS jobs
// belong in the count (PBS subtracts them itself) and nothing else does:
// GPUs held by interactive users or another scheduler, GPUs in use without
// a reservation, and GPUs the scan lost. With that count the scheduler
// never places a job on GPUs canhazgpu cannot give it.
func Usable(gpus []usage.GPU) int {
	n := 0
	for _, g := range gpus {
		switch {
		case !g.Seen:
		case g.State == usage.Available:
			n++
		case g.Reservation != nil && g.Reservation.Kind == allocator.KindPBS:
			n++
		}
	}
	return n
}

// printAvailable is canhazgpu-prolog --pbs --available: one scan and one
// store round trip, the count on stdout. The hook sets the vnode's
// resources_available.ngpus to it; on any failure it leaves the vnode as
// it is, so the exit status follows the prolog's (2: store unreachable).
func printAvailable(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, availableDeadline)
	defer cancel()
	fail := func(err error) int {
		logf(stderr, "error: cannot count the GPUs PBS may use on this host: %v", err)
		if batch.Unreachable(err) {
			return ExitStoreDown
		}
		return ExitError
	}
	node, err := localnode.Open(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer node.Close()
	_, gpus, err := node.Classify(ctx)
	if err != nil {
		return fail(err)
	}
	if _, err := fmt.Fprintln(stdout, Usable(gpus)); err != nil {
		return fail(err)
	}
	return ExitOK
}
