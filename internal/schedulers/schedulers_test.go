package schedulers

import (
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/config"
)

// The list is the one place schedulers are named: each adapter's kind is
// a batch kind the store and the state directory accept, kinds and flags
// are distinct, and exactly one runs without a flag.
func TestAdapters(t *testing.T) {
	cfg, err := config.Load(config.Options{})
	require.NoError(t, err)
	kinds, flags := map[allocator.Kind]bool{}, map[string]bool{}
	bare := 0
	for _, s := range All {
		k, err := allocator.ParseKind(string(s.Kind()))
		require.NoError(t, err)
		require.True(t, k.Batch(), k)
		require.False(t, kinds[k], "kind %s twice", k)
		kinds[k] = true
		require.Equal(t, k, s.Policy(cfg).Kind, "the policy names its own kind")
		require.NotEmpty(t, s.Policy(cfg).StateDir)
		require.Positive(t, s.Policy(cfg).Deadline)
		f := s.Flag()
		require.False(t, flags[f], "flag %q twice", f)
		flags[f] = true
		if f == "" {
			bare++
		} else {
			require.Regexp(t, `^--[a-z][a-z0-9]*$`, f)
			require.NotContains(t, []string{"--help", "--version"}, f)
		}
	}
	require.Equal(t, 1, bare, "exactly one scheduler runs the programs without arguments")
	require.Equal(t, map[allocator.Kind]bool{allocator.KindSlurm: true, allocator.KindPBS: true}, kinds)
}
