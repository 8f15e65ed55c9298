package pbs

import (
	"context"
	"fmt"
	"io"
	"testing"
)

// BenchmarkPrologEpilog measures one job's begin and end on a node: the
// PBS prolog (config, fake GPU scan, one grant, job and env files) and the
// epilog (one release), in process, against the test redis-server.
//
//	go test -run '^$' -bench PrologEpilog ./internal/pbs
func BenchmarkPrologEpilog(b *testing.B) {
	n := newTestNode(b, nodeOpts{gpus: 8})
	envFile := n.dir + "/bench.env"
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		job := fmt.Sprintf("%d.bench", i)
		if code := RunProlog(ctx, []string{"--config", n.config, "--job", job, "--user", "alice", "--uid", "1000",
			"--ngpus", "2", "--env-file", envFile}, io.Discard, io.Discard); code != ExitOK {
			b.Fatalf("prolog exit %d", code)
		}
		if code := RunEpilog(ctx, []string{"--config", n.config, "--job", job, "--env-file", envFile}, io.Discard, io.Discard); code != ExitOK {
			b.Fatalf("epilog exit %d", code)
		}
	}
}

// BenchmarkAvailable measures canhazgpu-prolog --pbs --available, which
// the hook runs after every begin and end and in every periodic event:
// config, fake GPU scan, one snapshot of the node, in process.
//
//	go test -run '^$' -bench Available ./internal/pbs
func BenchmarkAvailable(b *testing.B) {
	n := newTestNode(b, nodeOpts{gpus: 8})
	ctx := context.Background()
	args := []string{"--config", n.config, "--available"}
	if code := RunProlog(ctx, args, io.Discard, io.Discard); code != ExitOK { // registers the node
		b.Fatalf("exit %d", code)
	}
	b.ResetTimer()
	for range b.N {
		if code := RunProlog(ctx, args, io.Discard, io.Discard); code != ExitOK {
			b.Fatalf("exit %d", code)
		}
	}
}
