package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// requireTerminalSafe fails when out holds anything a terminal would act
// on or hide: every character must be shown as itself, lines aside.
func requireTerminalSafe(t *testing.T, out string) {
	t.Helper()
	for _, r := range out {
		require.True(t, r == '\n' || unicode.IsGraphic(r), "%q reaches the terminal raw in %q", r, out)
	}
}

func TestWriteTableEscapesCellsBeforeMeasuring(t *testing.T) {
	var b strings.Builder
	require.NoError(t, writeTable(&b, []string{"USER", "NOTE"}, [][]string{
		{"\u202eeve", "\x1b[31mred"},
		{"bob", "plain"},
	}))
	require.Equal(t, "USER      NOTE\n"+
		"--------- -----------\n"+
		`\u202eeve \x1b[31mred`+"\n"+
		"bob       plain\n", b.String())
}

// Names, notes and messages that other users chose reach every table and
// line of the human output escaped, through the commands and a real store.
func TestOthersTextReachesTheTerminalEscaped(t *testing.T) {
	f := registered(t, idleGPUs(2))
	// A name the account database could hold: a right-to-left override and
	// a C1 CSI (ValidateUser refuses only C0 controls and commas).
	evil := Identity{Name: "\u202eeve\u009b2J-" + f.node, UID: 3005}
	shown := `\u202eeve\u009b2J-` + f.node
	r := f.run(evil, "reserve", "--gpu-ids", "0", "--duration", "1h", "--note", "ok \u202etxt.exe")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, f.store().SetFlags(context.Background(), []allocator.Flag{{Message: "used by \u202eeve\u2028\u009b1A"}}))

	outputs := map[string]result{}
	check := func(name string, r result, code int, want ...string) {
		t.Helper()
		require.Equal(t, code, r.code, "%s: %s", name, r.stderr)
		for _, w := range want {
			require.Contains(t, r.stdout+r.stderr, w, name)
		}
		outputs[name] = r
	}
	check("status", f.run(alice, "status"), 0, shown+" ", "note: ok \\u202etxt.exe", "node: used by \\u202eeve\\u2028\\u009b1A (found ")
	check("status --all-nodes", f.run(alice, "status", "--all-nodes"), 0, shown+" ")
	check("report", f.run(alice, "report", "--days", "1"), 0, "\n"+shown+" ")
	check("release of another's GPU", f.run(alice, "release", "--gpu-ids", "0"), 1,
		"Error: GPU 0 is reserved by "+shown+" (manual), not by alice")
	check("admin --release", f.run(root, "admin", "--release", "--gpu-ids", "0"), 0, "(held by "+shown+", manual).")
	check("release with nothing left", f.run(evil, "release"), 0, "No manual reservations of "+shown+" to release")
	for name, r := range outputs {
		requireTerminalSafe(t, r.stdout)
		requireTerminalSafe(t, r.stderr)
		require.NotContains(t, r.stdout+r.stderr, "\u202e", name)
	}

	var b strings.Builder
	snap := &allocator.Snapshot{Node: f.node, Now: time.Now(),
		Queue: []allocator.QueueEntry{{ID: "q", Kind: allocator.KindManual, User: evil.Name, Count: 1, EnqueuedAt: time.Now()}}}
	require.NoError(t, writeQueue(&b, snap))
	require.Contains(t, b.String(), "\n1        "+shown+" manual 1 GPU")
	requireTerminalSafe(t, b.String())
}

// JSON is read by programs, so it keeps text exact: encoding/json already
// writes control characters and U+2028/U+2029 as \u escapes (the latter
// break JavaScript parsers), and other characters, bidirectional controls
// included, as themselves; a program gets back what the user wrote.
func TestJSONKeepsOthersTextExact(t *testing.T) {
	f := registered(t, idleGPUs(1))
	note := "a\u2028b\u2029c \u202etxt.exe \u200b"
	r := f.run(alice, "reserve", "--note", note)
	require.Equal(t, 0, r.code, r.stderr)
	r = f.run(alice, "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"note": "a\u2028b\u2029c `+"\u202etxt.exe \u200b\"")
	var doc statusDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc))
	require.Equal(t, note, doc.GPUs[0].Reservation.Note)

	var b strings.Builder
	require.NoError(t, writeJSON(&b, map[string]string{"model": "\x1b]0;x\a\u009b"}))
	require.Equal(t, "{\n  \"model\": \"\\u001b]0;x\\u0007\u009b\"\n}\n", b.String())
}
