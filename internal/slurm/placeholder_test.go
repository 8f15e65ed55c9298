package slurm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	_, ok = ParseHoldComment(NewHoldComment(time.Hour))
	require.False(t, ok, "a new hold's comment names no token")
	limit, ok := ParseNewHoldComment(NewHoldComment(61 * time.Second))
	require.True(t, ok)
	require.Equal(t, 2*time.Minute, limit, "whole minutes, rounded up")
	for _, bad := range []string{"canhazgpu-hold:new:", "canhazgpu-hold:new:0", "canhazgpu-hold:new:1x", "canhazgpu-hold:new:99999999"} {
		_, ok := ParseNewHoldComment(bad)
		require.False(t, ok, bad)
	}
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

// TestPrologMakesTheHoldSlurmChose: on a node without a GRES type per GPU
// the placeholder asks for a new hold; its Prolog holds exactly the GPUs
// Slurm gave it, for its user, naming the job, and reserves nothing for
// the job itself. GPUs held by someone else make it an ordinary job.
func TestPrologMakesTheHoldSlurmChose(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `interactive_holds = "placeholder"`)
	f.register()
	comment := "SLURM_JOB_COMMENT=" + NewHoldComment(90*time.Minute)

	line, err := f.hook(jobEnv("41", "0,1", comment)...).Prolog(ctx)
	require.NoError(t, err)
	require.Contains(t, line, "job 41: placeholder: held GPU 2 ("+slurmUUID(0)+"), GPU 3 ("+slurmUUID(1)+") for bob")
	requireNoJobFile(t, f, "41")
	res := f.reservations()
	require.Len(t, res, 2)
	for _, k := range []int{0, 1} {
		r := res[slurmUUID(k)]
		require.Equal(t, allocator.KindManual, r.Kind)
		require.Equal(t, "bob", r.User)
		require.Equal(t, 1001, r.UID)
		require.Equal(t, "41", r.JobID, "the hold names its placeholder")
		require.Equal(t, res[slurmUUID(0)].Token, r.Token, "one hold")
	}
	again, err := f.hook(jobEnv("41", "0,1", comment)...).Prolog(ctx)
	require.NoError(t, err, "a retried Prolog is answered from the hold")
	require.Equal(t, line, again)

	_, err = f.hook(jobEnv("42", "1,2", comment)...).Prolog(ctx)
	require.ErrorContains(t, err, "reserved by bob (manual", "Slurm's GPU 1 is held: an ordinary job, refused")
	require.Len(t, f.reservations(), 2)
}

// standInSqueue writes an squeue (beside a scontrol path for the config)
// that answers --jobs=ID with states[ID], or as for a job Slurm forgot,
// and records the ids it was asked about.
func standInSqueue(t *testing.T, states map[string]string) (scontrol string, asked func() string) {
	t.Helper()
	dir := t.TempDir()
	record := filepath.Join(dir, "asked")
	script := "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --jobs=*) id=${a#--jobs=}; echo \"$id\" >> " + record + ";;\nesac; done\ncase \"$id\" in\n"
	for id, st := range states {
		script += id + ") echo \"$id|" + st + "\"; exit 0 ;;\n"
	}
	script += "esac\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "squeue"), []byte(script), 0o755))
	return filepath.Join(dir, "scontrol"), func() string {
		data, _ := os.ReadFile(record)
		return string(data)
	}
}

// TestPrologVacatesAHoldWhosePlaceholderEnded: Slurm gives a job a GPU
// whose hold's placeholder job no longer runs (its owner cancelled it):
// the Prolog releases that hold and reserves the GPU for the job instead
// of meeting on_conflict (with "fail", a drained node over one user's
// scancel). A hold whose placeholder still runs, and any hold with
// lost_placeholder = "keep", meet on_conflict as before.
func TestPrologVacatesAHoldWhosePlaceholderEnded(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, lost, state string
		vacated           bool
	}{
		{"cancelled placeholder", "release", "CANCELLED", true},
		{"forgotten placeholder", "resubmit", "", true},
		{"running placeholder", "release", "RUNNING", false},
		{"keep", "keep", "CANCELLED", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, `interactive_holds = "placeholder"`, fmt.Sprintf("lost_placeholder = %q", c.lost))
			token := holdOf(t, f, 1)
			require.NoError(t, f.st.SetHoldJob(ctx, "bob", token, []string{slurmUUID(1)}, "77"))
			states := map[string]string{}
			if c.state != "" {
				states["77"] = c.state
			}
			scontrol, asked := standInSqueue(t, states)
			f.cfg.Health.Scontrol = scontrol

			line, err := f.hook(jobEnv("80", "1", "SLURM_JOB_USER=alice", "SLURM_JOB_UID=1002")...).Prolog(ctx)
			if !c.vacated {
				require.ErrorContains(t, err, "on_conflict=fail")
				require.Equal(t, allocator.KindManual, f.reservations()[slurmUUID(1)].Kind)
				if c.lost == "keep" {
					require.Empty(t, asked(), "with keep Slurm is not asked")
				}
				return
			}
			require.NoError(t, err)
			state := c.state
			if state == "" {
				state = "unknown to Slurm"
			}
			require.Contains(t, line, "; released bob's manual hold of "+slurmUUID(1)+": its placeholder job 77 no longer runs ("+state+")")
			require.Equal(t, "77\n", asked())
			r := f.reservations()[slurmUUID(1)]
			require.Equal(t, allocator.KindSlurm, r.Kind)
			require.Equal(t, "80", r.JobID)
		})
	}
}
