package cli

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

// TestViolationsCommand lists what the health check recorded: this
// node's by default, filtered by user and window, as a table and as JSON.
func TestViolationsCommand(t *testing.T) {
	f := registered(t, idleGPUs(2))
	snap, err := f.store().Snapshot(context.Background())
	require.NoError(t, err)
	now := time.Now()
	run := store.ViolationRun{Now: now.Add(-2 * time.Hour), Gap: time.Hour, Renotify: time.Hour, KillsPerHour: 5,
		MaxAge: 24 * time.Hour, MaxRecords: 100, Steps: []store.ViolationStep{{Action: "notify"}, {Action: "kill"}},
		Seen: []store.Sighting{
			{Kind: "unreserved", GPU: snap.GPUs[0].UUID, Index: 0, User: "bob",
				Processes: []allocator.ViolationProcess{{PID: 4242, Name: "python3\x1b[2J", Start: 7}},
				Kill:      []allocator.ViolationProcess{{PID: 4242, Name: "python3", Start: 7}}},
			{Kind: "foreign_user", GPU: snap.GPUs[1].UUID, Index: 1, User: "carol", Holder: "alice",
				Processes: []allocator.ViolationProcess{{PID: 77, Name: "train"}}},
		}}
	plans, err := f.store().RecordViolations(context.Background(), run)
	require.NoError(t, err)
	require.NoError(t, f.store().RecordKillOutcomes(context.Background(), []store.KillOutcome{{Record: plans[0].Record.ID,
		PID: 4242, Start: 7, Claimed: run.Now, Outcome: allocator.KillTerm, Sent: true}}))

	r := f.run(alice, "violations")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "NODE")
	require.Contains(t, r.stdout, `4242 python3\x1b[2J`, "process names are escaped")
	require.Contains(t, r.stdout, "notify kill(4242 sigterm)")
	require.Contains(t, r.stdout, "carol")

	r = f.run(alice, "violations", "--user", "bob", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var doc struct {
		Version    int                         `json:"version"`
		Violations []allocator.ViolationRecord `json:"violations"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	require.Len(t, doc.Violations, 1)
	v := doc.Violations[0]
	require.Equal(t, "bob", v.User)
	require.Equal(t, f.node, v.Node)
	require.Equal(t, []int{4242}, v.Killed())

	r = f.run(alice, "violations", "--user", "nobody-here")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "No violations in this window.\n", r.stdout)

	r = f.run(alice, "violations", "--days", "0")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `"0"`)
	r = f.run(alice, "violations", "--user", "")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `--user "": want an account name`)
}
