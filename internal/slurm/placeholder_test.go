package slurm

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// holdOf gives bob (uid 1001, the job user of jobEnv) a manual hold of
// Slurm's GPUs and returns its token.
func holdOf(t *testing.T, f *fixture, slurm ...int) int64 {
	t.Helper()
	f.register()
	var uuids []string
	for _, k := range slurm {
		uuids = append(uuids, slurmUUID(k))
	}
	g, err := f.st.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
		Kind: allocator.KindManual, User: "bob", UID: 1001, GPUs: uuids, Lease: time.Hour})
	require.NoError(t, err)
	return g.Token
}

func TestPrologAcceptsThePlaceholderOfAHold(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `interactive_holds = "placeholder"`)
	token := holdOf(t, f, 1)

	line, err := f.hook(jobEnv("21", "1", "SLURM_JOB_COMMENT="+HoldComment(token))...).Prolog(ctx)
	require.NoError(t, err)
	require.Equal(t, "job 21: placeholder of the interactive hold of bob on GPU 3 ("+slurmUUID(1)+"): nothing reserved", line)
	requireNoJobFile(t, f, "21")
	res := f.reservations()
	require.Len(t, res, 1, "nothing reserved for the job")
	require.Equal(t, allocator.KindManual, res[slurmUUID(1)].Kind)
}

// TestPrologDoesNotTrustTheComment: anyone can set a job's comment. A job
// whose GPUs the store does not show held by its user under the named
// token is an ordinary batch job, which here meets a held GPU and fails.
func TestPrologDoesNotTrustTheComment(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `interactive_holds = "placeholder"`)
	token := holdOf(t, f, 1)
	cases := []struct {
		name string
		env  []string
	}{
		{"another token", jobEnv("31", "1", "SLURM_JOB_COMMENT="+HoldComment(token+1))},
		{"another user", jobEnv("32", "1", "SLURM_JOB_COMMENT="+HoldComment(token), "SLURM_JOB_UID=1002", "SLURM_JOB_USER=alice")},
		{"a GPU the hold lacks", jobEnv("33", "1,2", "SLURM_JOB_COMMENT="+HoldComment(token))},
		{"a garbled comment", jobEnv("34", "1", "SLURM_JOB_COMMENT="+HoldComment(token)+"x")},
		{"no uid", jobEnv("35", "1", "SLURM_JOB_COMMENT="+HoldComment(token), "SLURM_JOB_UID=")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.hook(c.env...).Prolog(ctx)
			require.ErrorContains(t, err, "reserved by bob (manual")
			require.ErrorContains(t, err, "on_conflict=fail")
		})
	}
	require.Len(t, f.reservations(), 1, "nothing reserved")

	// With interactive_holds off the node has no placeholders.
	f.configure()
	_, err := f.hook(jobEnv("36", "1", "SLURM_JOB_COMMENT="+HoldComment(token))...).Prolog(ctx)
	require.ErrorContains(t, err, "on_conflict=fail")
}

func TestHoldComment(t *testing.T) {
	tok, ok := ParseHoldComment(HoldComment(42))
	require.True(t, ok)
	require.Equal(t, int64(42), tok)
	for _, bad := range []string{"", "canhazgpu-hold:", "canhazgpu-hold:0", "canhazgpu-hold:-1", "canhazgpu-hold:1 2",
		"xcanhazgpu-hold:1", "canhazgpu-hold:99999999999999999999"} {
		_, ok := ParseHoldComment(bad)
		require.False(t, ok, bad)
	}
}

func TestPinnedTypes(t *testing.T) {
	for gres, want := range map[string]bool{
		"gpu:dev0:1,gpu:dev1:1,gpu:dev2:1":  true,
		"gpu:dev0:1(S:0),gpu:dev1:1(S:0-1)": true,
		"gpu:dev0:1,gpu:dev1:1,mps:100":     true,
		"gpu:4":                             false,
		"gpu:a100:4":                        false,
		"gpu:dev0:2":                        false,
		"gpu:dev01:1":                       false,
		"(null)":                            false,
		"":                                  false,
		"gpu:dev0:1,gpu:a100:1":             false,
	} {
		require.Equal(t, want, pinnedTypes(gres), gres)
	}
}
