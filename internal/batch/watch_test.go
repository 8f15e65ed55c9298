package batch

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
	"canhazgpu/internal/config"
	"canhazgpu/internal/jobstate"
)

// plain is an adapter without Liveness or Watcher.
type plain struct{}

func (plain) Kind() allocator.Kind                                       { return "lsf" }
func (plain) Policy(*config.Config) Policy                               { return Policy{Kind: "lsf"} }
func (plain) Flag() string                                               { return "--lsf" }
func (plain) Prolog(context.Context, []string, io.Writer, io.Writer) int { return 0 }
func (plain) Epilog(context.Context, []string, io.Writer, io.Writer) int { return 0 }

// asking answers Ended from its map; a job missing from it cannot be
// asked.
type asking struct {
	plain
	ended map[string]string
}

func (a asking) Ended(_ context.Context, job string) (string, error) {
	why, ok := a.ended[job]
	if !ok {
		return "", errors.New("no answer")
	}
	return why, nil
}

func TestWatchWithoutLivenessTrustsTheBootIDAlone(t *testing.T) {
	var blind []string
	w := Watch(plain{}, NodeView{BootID: "boot-now", Blind: func(s string) { blind = append(blind, s) }})
	judge, err := w.Judge(context.Background())
	require.NoError(t, err)
	require.Empty(t, judge("7"), "nothing to ask: the job keeps its GPUs")
	require.True(t, w.Holds(context.Background(), "7", jobstate.JobFile{BootID: "boot-now"}))
	require.False(t, w.Holds(context.Background(), "7", jobstate.JobFile{BootID: "boot-then"}))
	require.False(t, w.Holds(context.Background(), "7", jobstate.JobFile{}), "a file without a boot id is not trusted")
	require.True(t, w.InJob(gpu.Process{JobID: "8"}, "7"), "no process is attributed to such a job")
	require.Empty(t, blind)
}

func TestWatchAsksLiveness(t *testing.T) {
	var blind []string
	s := asking{ended: map[string]string{"1": "", "2": "the job is done"}}
	w := Watch(s, NodeView{BootID: "boot-now", Blind: func(s string) { blind = append(blind, s) }})
	judge, err := w.Judge(context.Background())
	require.NoError(t, err)
	require.Empty(t, judge("1"))
	require.Equal(t, "the job is done", judge("2"))
	require.Empty(t, judge("3"), "no answer: the job keeps its GPUs")
	require.Equal(t, []string{"cannot learn the state of lsf job 3 (no answer): it keeps its GPUs"}, blind)

	now := jobstate.JobFile{BootID: "boot-now"}
	require.True(t, w.Holds(context.Background(), "1", now))
	require.False(t, w.Holds(context.Background(), "2", now))
	require.True(t, w.Holds(context.Background(), "3", now), "no answer: the file of this boot counts")
	require.Len(t, blind, 2)
	require.False(t, w.Holds(context.Background(), "1", jobstate.JobFile{BootID: "boot-then"}))
}
