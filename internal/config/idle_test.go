package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIdleConfig(t *testing.T) {
	t.Run("from the system file", func(t *testing.T) {
		opts := testOptions(t)
		writeFile(t, opts.DefaultFile, "[idle]\nutilization_below = 10\nmanual_warn_after = \"1h\"\n"+
			"manual_release_after = \"0\"\nrun_warn_after = \"4h\"\n")
		cfg, err := Load(opts)
		require.NoError(t, err)
		require.Equal(t, IdleConfig{UtilizationBelow: 10, ManualWarnAfter: time.Hour, ManualReleaseAfter: 0,
			RunWarnAfter: 4 * time.Hour}, cfg.Idle, `"0": never released`)
	})
	bad := []struct {
		name, text, wantErr string
	}{
		{"percent above 100", "[idle]\nutilization_below = 101\n",
			"2: idle.utilization_below: must be a whole percentage from 1 to 100, got 101"},
		{"percent zero", "[idle]\nutilization_below = 0\n",
			"2: idle.utilization_below: must be a whole percentage from 1 to 100, got 0"},
		{"percent as text", "[idle]\nutilization_below = \"5%\"\n",
			`2: idle.utilization_below: must be a whole percentage from 1 to 100, got "5%"`},
		{"release not a duration", "[idle]\nmanual_release_after = \"never\"\n",
			`2: idle.manual_release_after: invalid duration "never": ` + durationForms + `; or "0" for never`},
		{"warn of no time", "[idle]\nmanual_warn_after = \"0\"\n",
			`2: idle.manual_warn_after: invalid duration "0": ` + durationForms},
		{"warn after the release", "[idle]\nmanual_warn_after = \"3h\"\n",
			`2: idle.manual_warn_after: idle.manual_warn_after (3h) must be shorter than idle.manual_release_after (2h; "0" for never)`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			writeFile(t, opts.DefaultFile, tt.text)
			_, err := Load(opts)
			require.EqualError(t, err, "config: "+opts.DefaultFile+":"+tt.wantErr)
		})
	}
	t.Run("policy: an ordinary user may not set it", func(t *testing.T) {
		opts := userOptions(t)
		opts.Env = []string{"CANHAZGPU_IDLE_MANUAL_RELEASE_AFTER=0"}
		_, err := Load(opts)
		require.EqualError(t, err, "config: CANHAZGPU_IDLE_MANUAL_RELEASE_AFTER: only root may set idle.manual_release_after; site settings come from "+SystemFile)
	})
}
