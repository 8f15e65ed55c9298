package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestViolationsSettings(t *testing.T) {
	opts := testOptions(t)
	writeFile(t, opts.DefaultFile, `[violations]
actions = ["notify", "kill"]
notify_after = "0"
kill_after = "15m"
kill_exempt_commands = ["/usr/bin/nvidia-smi"]
`)
	cfg, err := Load(opts)
	require.NoError(t, err)
	v := cfg.Violations
	require.Equal(t, []string{"notify", "kill"}, v.Actions)
	require.True(t, v.Enabled(ViolationKill))
	require.False(t, v.Enabled(ViolationExec))
	require.Equal(t, time.Duration(0), v.After(ViolationNotify))
	require.Equal(t, 15*time.Minute, v.After(ViolationKill))
}

// TestViolationsBadSettings: each mistake is one error naming the key and
// the value, and what is accepted.
func TestViolationsBadSettings(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{`actions = ["notify", "shout"]`, `violations.actions: must list actions out of notify, exec, kill, got "shout"`},
		{`actions = ["notify", "notify"]`, `violations.actions: lists "notify" twice`},
		{"actions = [\"notify\", \"kill\"]\nnotify_after = \"1h\"",
			`violations.notify_after: violations.kill_after (10m) must not be shorter than violations.notify_after (1h)`},
		{`actions = ["exec"]`, `violations.actions: "exec" needs violations.exec`},
		{`exec = "mail.sh"`, `violations.exec: must be an absolute path, got "mail.sh"`},
		{`kill_exempt_commands = ["nvidia-smi"]`, `must be an absolute path, got "nvidia-smi"`},
		{`kill_after = "-1m"`, `invalid duration "-1m"`},
		{`kills_per_hour = 0`, `violations.kills_per_hour: must be a positive integer, got 0`},
	} {
		opts := testOptions(t)
		writeFile(t, opts.DefaultFile, "[violations]\n"+tc.file+"\n")
		_, err := Load(opts)
		require.ErrorContains(t, err, tc.want, tc.file)
	}
}
