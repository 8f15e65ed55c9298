package config

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestFlags(t *testing.T) {
	tests := []struct {
		name          string
		args          []string
		wantOverrides map[string]string
		wantConfig    string
	}{
		{name: "none", wantOverrides: map[string]string{}},
		{
			name: "all",
			args: []string{
				"--config=/etc/other.toml", "--redis-url", "unix:///run/redis.sock", "--node=n7",
				"--memory-threshold=512", "--gpu-provider=fake", "--fake-file", "/tmp/gpus.json",
			},
			wantOverrides: map[string]string{
				"redis.url":               "unix:///run/redis.sock",
				"node":                    "n7",
				"gpu.memory_threshold_mb": "512",
				"gpu.provider":            "fake",
				"gpu.fake_file":           "/tmp/gpus.json",
			},
			wantConfig: "/etc/other.toml",
		},
		{
			// An empty value given on purpose still overrides: --node= asks
			// for the hostname default even when the file names a node.
			name:          "explicitly empty",
			args:          []string{"--node="},
			wantOverrides: map[string]string{"node": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("canhazgpu", pflag.ContinueOnError)
			f := AddFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			require.Equal(t, tt.wantOverrides, f.Overrides())
			require.Equal(t, tt.wantConfig, f.ConfigFile())
		})
	}
}

// TestFlagsIntoLoad runs the path a command takes: parse, then Load with the
// flags' overrides and config file.
func TestFlagsIntoLoad(t *testing.T) {
	opts := testOptions(t)
	other := writeFile(t, opts.DefaultFile+".other", "node = \"from-file\"\n[gpu]\nmemory_threshold_mb = 2048\n")
	opts.Env = []string{"CANHAZGPU_CONFIG=/nonexistent.toml", "CANHAZGPU_GPU_MEMORY_THRESHOLD_MB=4096"}

	fs := pflag.NewFlagSet("canhazgpu", pflag.ContinueOnError)
	f := AddFlags(fs)
	require.NoError(t, fs.Parse([]string{"--config", other, "--memory-threshold", "100"}))
	opts.Overrides, opts.ConfigFile = f.Overrides(), f.ConfigFile()

	cfg, err := Load(opts)
	require.NoError(t, err)
	require.Equal(t, other, cfg.File)
	require.Equal(t, "from-file", cfg.Node)
	require.Equal(t, int64(100), cfg.GPU.MemoryThresholdMB)
}

func TestFlagHelp(t *testing.T) {
	fs := pflag.NewFlagSet("canhazgpu", pflag.ContinueOnError)
	AddFlags(fs)
	usage := fs.FlagUsages()
	for _, want := range []string{"--config file", "--redis-url URL", "--node name", "--memory-threshold MB", "--gpu-provider source", "--fake-file file"} {
		require.Contains(t, usage, want)
	}
}
