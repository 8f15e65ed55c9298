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
