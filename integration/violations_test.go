package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/accounttest"
	"canhazgpu/internal/procstop"
	"canhazgpu/internal/termnotify/utmptest"
	"canhazgpu/internal/testreq"
)

// backdateViolations moves the first sighting of every open violation
// record of node back by d, as if the check had first seen them d ago.
func backdateViolations(t *testing.T, node string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	key := "chg:{" + node + "}:viol"
	all, err := rdb.HGetAll(ctx, key).Result()
	require.NoError(t, err)
	require.NotEmpty(t, all)
	for id, raw := range all {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(raw), &rec))
		rec["f"] = rec["f"].(float64) - float64(d.Milliseconds())
		data, err := json.Marshal(rec)
		require.NoError(t, err)
		require.NoError(t, rdb.HSet(ctx, key, id, data).Err())
	}
}

// TestViolatorNotifiedThenKilled: a throwaway user's real process holds a
// fake GPU without a reservation. canhazgpu-healthcheck tells the user on
// their terminal (a pseudo-terminal login session), then, once the grace
// time is over, stops the process; `canhazgpu violations --json` shows the
// record with the kill. A kill-exempt user's process beside it is told
// but never touched.
func TestViolatorNotifiedThenKilled(t *testing.T) {
	testreq.Need(t, testreq.Python3)
	accounttest.Ensure(t, "chgviol")
	accounttest.Ensure(t, "chgexempt")
	h := newHost(t)
	offender, exempt := accounttest.StartWaiting(t, "chgviol", false), accounttest.StartWaiting(t, "chgexempt", false)
	gpus := fmt.Sprintf(`{"gpus": [{"index": 0, "processes": [{"pid": %d, "used_memory_mb": 4096}]},
		{"index": 1, "processes": [{"pid": %d, "used_memory_mb": 4096}]}]}`, offender, exempt)
	fake := filepath.Join(h.dir, "gpus.json")
	require.NoError(t, os.WriteFile(fake, []byte(gpus), 0o644))
	utmp := filepath.Join(h.dir, "utmp")
	cfg, err := os.ReadFile(h.cfg)
	require.NoError(t, err)
	cfg = append(cfg, fmt.Sprintf("[violations]\nactions = [\"notify\", \"kill\"]\nkill_after = \"10m\"\nkill_wait = \"5s\"\n"+
		"kill_exempt_users = [\"chgexempt\"]\nutmp_file = %q\n", utmp)...)
	require.NoError(t, os.WriteFile(h.cfg, cfg, 0o644))
	session := utmptest.Login(t, utmp, "chgviol", accounttest.UID(t, "chgviol"), 0o620)
	exemptSession := utmptest.Login(t, utmp, "chgexempt", accounttest.UID(t, "chgexempt"), 0o620)
	env := []string{"CANHAZGPU_CONFIG=" + h.cfg}

	r := runProgram(t, "canhazgpu-healthcheck", env)
	require.Equal(t, 1, r.rc, r.stderr)
	require.Contains(t, r.stdout, "notify: told chgviol on 1 terminal")
	got := session.Sent(t)
	require.Contains(t, got, "canhazgpu: you use GPU 0 on "+h.node+" without a reservation (pid "+strconv.Itoa(offender)+" python3)")
	require.Contains(t, got, "The processes will be stopped after")
	require.Contains(t, exemptSession.Sent(t), "you use GPU 1")

	// Within the grace time: nothing new.
	r = runProgram(t, "canhazgpu-healthcheck", env)
	require.Equal(t, 1, r.rc, r.stderr)
	require.NotContains(t, r.stdout, "notify:")
	require.NotContains(t, r.stdout, "kill:")

	// The violation was first seen 11 minutes ago: past kill_after.
	backdateViolations(t, h.node, 11*time.Minute)
	r = runProgram(t, "canhazgpu-healthcheck", env)
	require.Equal(t, 1, r.rc, r.stderr)
	require.Contains(t, r.stdout, fmt.Sprintf("kill: stopped pid %d (python3) of chgviol on GPU 0 with SIGTERM", offender))
	_, err = procstop.Procs{}.Identify(offender)
	require.Error(t, err, "the offender's process ended")
	_, err = procstop.Procs{}.Identify(exempt)
	require.NoError(t, err, "the exempt user's process runs on")
	require.Empty(t, session.Sent(t), "not told again within renotify_every")

	r = runProgram(t, "canhazgpu", env, "violations", "--json")
	require.Equal(t, 0, r.rc, r.stderr)
	var doc struct {
		Violations []allocator.ViolationRecord `json:"violations"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), r.stdout)
	require.Len(t, doc.Violations, 2)
	byUser := map[string]allocator.ViolationRecord{}
	for _, v := range doc.Violations {
		byUser[v.User] = v
	}
	v := byUser["chgviol"]
	require.Equal(t, "unreserved", v.Kind)
	require.Equal(t, []int{offender}, v.Killed())
	var outcomes []string
	for _, a := range v.Actions {
		if a.What == "kill" {
			outcomes = append(outcomes, a.Outcome)
		}
	}
	require.Equal(t, []string{allocator.KillTerm}, outcomes, "the record says how the kill went")
	require.Equal(t, offender, v.Processes[0].PID)
	require.Equal(t, "python3", v.Processes[0].Name)
	require.Empty(t, byUser["chgexempt"].Killed())
}
