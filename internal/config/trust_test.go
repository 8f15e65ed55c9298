package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/testreq"
)

// userOptions are the options of an ordinary user's command: no override
// of site policy.
func userOptions(t *testing.T) Options {
	opts := testOptions(t)
	opts.MayOverride = false
	return opts
}

func TestUserMaySetOnlyUserKeys(t *testing.T) {
	refused := []struct {
		name    string
		env     []string
		flags   map[string]string
		file    string
		wantErr string
	}{
		{name: "admin group from the environment", env: []string{"CANHAZGPU_ADMIN_GROUP=users"},
			wantErr: "config: CANHAZGPU_ADMIN_GROUP: only root may set admin.group; site settings come from " + SystemFile},
		{name: "queue timeout from the environment", env: []string{"CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT=1000d"},
			wantErr: "config: CANHAZGPU_QUEUE_HEARTBEAT_TIMEOUT: only root may set queue.heartbeat_timeout; site settings come from " + SystemFile},
		{name: "history cap from the environment", env: []string{"CANHAZGPU_HISTORY_MAX_RECORDS=1"},
			wantErr: "config: CANHAZGPU_HISTORY_MAX_RECORDS: only root may set history.max_records; site settings come from " + SystemFile},
		{name: "another config file by variable", env: []string{"CANHAZGPU_CONFIG=/tmp/mine.toml"},
			wantErr: "config: CANHAZGPU_CONFIG: only root may set another config file; site settings come from " + SystemFile},
		{name: "another config file by flag", file: "/tmp/mine.toml",
			wantErr: "config: --config: only root may set another config file; site settings come from " + SystemFile},
		{name: "memory threshold by flag", flags: map[string]string{"gpu.memory_threshold_mb": "999999"},
			wantErr: "config: --memory-threshold: only root may set gpu.memory_threshold_mb; site settings come from " + SystemFile},
		{name: "fake GPUs by flag", flags: map[string]string{"gpu.fake_file": "/tmp/mine.json"},
			wantErr: "config: --fake-file: only root may set gpu.fake_file; site settings come from " + SystemFile},
		{name: "amd-smi program from the environment", env: []string{"CANHAZGPU_GPU_AMDSMI_PATH=/tmp/mine"},
			wantErr: "config: CANHAZGPU_GPU_AMDSMI_PATH: only root may set gpu.amdsmi_path; site settings come from " + SystemFile},
		{name: "durability off from the environment", env: []string{"CANHAZGPU_REDIS_WAIT_REPLICAS=0"},
			wantErr: "config: CANHAZGPU_REDIS_WAIT_REPLICAS: only root may set redis.wait_replicas; site settings come from " + SystemFile},
		{name: "node by flag", flags: map[string]string{"node": "other"},
			wantErr: "config: --node: only root may set node; site settings come from " + SystemFile},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			opts := userOptions(t)
			opts.Env, opts.Overrides, opts.ConfigFile = tt.env, tt.flags, tt.file
			_, err := Load(opts)
			require.EqualError(t, err, tt.wantErr)
		})
	}
	t.Run("user keys are theirs", func(t *testing.T) {
		opts := userOptions(t)
		opts.Env = []string{"CANHAZGPU_RESERVE_DURATION=2h", "CANHAZGPU_RUN_TIMEOUT=1h", "CANHAZGPU_RUN_KILL_GRACE=5s"}
		cfg, err := Load(opts)
		require.NoError(t, err)
		require.Equal(t, 2*time.Hour, cfg.Reserve.Duration)
		require.Equal(t, time.Hour, cfg.Run.Timeout)
		require.Equal(t, 5*time.Second, cfg.Run.KillGrace)
	})
	t.Run("but not beyond the site's maximum", func(t *testing.T) {
		opts := userOptions(t)
		writeFile(t, opts.DefaultFile, "[reserve]\nmax_duration = \"1d\"\n")
		opts.Env = []string{"CANHAZGPU_RESERVE_DURATION=2d"}
		_, err := Load(opts)
		require.EqualError(t, err, "config: CANHAZGPU_RESERVE_DURATION: reserve.duration: reserve.duration (2d) must not exceed reserve.max_duration (1d)")
	})
	t.Run("root may override", func(t *testing.T) {
		opts := testOptions(t)
		opts.Env = []string{"CANHAZGPU_ADMIN_GROUP=wheel", "CANHAZGPU_REDIS_WAIT_REPLICAS=1", "CANHAZGPU_REDIS_WAIT_TIMEOUT=500ms"}
		cfg, err := Load(opts)
		require.NoError(t, err)
		require.Equal(t, "wheel", cfg.Admin.Group)
		require.Equal(t, 1, cfg.Redis.WaitReplicas)
		require.Equal(t, 500*time.Millisecond, cfg.Redis.WaitTimeout)
	})
}

func TestSystemFileMustBeRootsAlone(t *testing.T) {
	t.Run("writable by others", func(t *testing.T) {
		opts := userOptions(t)
		path := writeFile(t, opts.DefaultFile, "node = \"n1\"\n")
		require.NoError(t, os.Chmod(path, 0o666))
		_, err := Load(opts)
		require.EqualError(t, err, "config: refusing the system config file "+path+": it is writable by group or others (mode 0666); chmod go-w")
	})
	t.Run("in a directory writable by group", func(t *testing.T) {
		opts := userOptions(t)
		path := writeFile(t, opts.DefaultFile, "node = \"n1\"\n")
		dir := filepath.Dir(path)
		require.NoError(t, os.Chmod(dir, 0o775))
		_, err := Load(opts)
		require.EqualError(t, err, "config: refusing the directory "+dir+" of the system config file "+path+": it is writable by group or others (mode 0775); chmod go-w")
	})
	t.Run("through a link to a file of another owner", func(t *testing.T) {
		testreq.Need(t, testreq.Root) // to give the file another owner
		opts := userOptions(t)
		target := writeFile(t, filepath.Join(filepath.Dir(opts.DefaultFile), "theirs.toml"), "node = \"n1\"\n")
		require.NoError(t, os.Chown(target, 65534, 65534))
		require.NoError(t, os.Symlink(target, opts.DefaultFile))
		_, err := Load(opts)
		require.EqualError(t, err, "config: refusing the system config file "+opts.DefaultFile+": it is owned by uid 65534, not by root")
	})
	t.Run("through a link into a directory others may write", func(t *testing.T) {
		opts := userOptions(t)
		theirs := filepath.Join(t.TempDir(), "theirs")
		target := writeFile(t, filepath.Join(theirs, "config.toml"), "node = \"n1\"\n")
		require.NoError(t, os.Chmod(theirs, 0o777))
		require.NoError(t, os.MkdirAll(filepath.Dir(opts.DefaultFile), 0o755))
		require.NoError(t, os.Symlink(target, opts.DefaultFile))
		_, err := Load(opts)
		require.EqualError(t, err, "config: refusing the directory "+theirs+" of the system config file "+opts.DefaultFile+
			": it is writable by group or others (mode 0777); chmod go-w")
	})
	t.Run("a link that others could replace", func(t *testing.T) {
		opts := userOptions(t)
		target := writeFile(t, filepath.Join(t.TempDir(), "safe", "config.toml"), "node = \"n1\"\n")
		links := filepath.Dir(opts.DefaultFile)
		require.NoError(t, os.MkdirAll(links, 0o755))
		require.NoError(t, os.Symlink(target, opts.DefaultFile))
		require.NoError(t, os.Chmod(links, 0o777))
		_, err := Load(opts)
		require.EqualError(t, err, "config: refusing the directory "+links+" of the system config file "+opts.DefaultFile+
			": it is writable by group or others (mode 0777); chmod go-w")
	})
	t.Run("a sticky world-writable directory above is fine", func(t *testing.T) {
		opts := userOptions(t)
		sticky := filepath.Join(t.TempDir(), "tmp")
		require.NoError(t, os.Mkdir(sticky, 0o755))
		require.NoError(t, os.Chmod(sticky, 0o777|os.ModeSticky))
		opts.DefaultFile = writeFile(t, filepath.Join(sticky, "etc", "config.toml"), "node = \"n1\"\n")
		require.NoError(t, os.Chmod(filepath.Dir(opts.DefaultFile), 0o755))
		cfg, err := Load(opts)
		require.NoError(t, err)
		require.Equal(t, "n1", cfg.Node)
	})
}

// TestTheSystemFileIsReadOnce: what the CLI read before it gave up its
// group is what Load applies. The file is not opened again: neither new
// contents nor a mode that would now be refused make a difference. (A file
// replaced between the check and the read is the same case one step
// earlier: checkedOpen checks the descriptor it then reads.)
func TestTheSystemFileIsReadOnce(t *testing.T) {
	opts := userOptions(t)
	path := writeFile(t, opts.DefaultFile, "node = \"n1\"\n[redis]\ncli_username = \"cli\"\n")
	sys, err := ReadSystemConfig(path, opts.FileOwner)
	require.NoError(t, err)
	redis, err := sys.Redis()
	require.NoError(t, err)
	require.Equal(t, "cli", redis.CLIUsername)

	writeFile(t, path, "node = \"n2\"\n")
	require.NoError(t, os.Chmod(path, 0o666))
	opts.SystemConfig = sys
	opts.Env = []string{"CANHAZGPU_RUN_TIMEOUT=1h"}
	cfg, err := Load(opts)
	require.NoError(t, err)
	require.Equal(t, "n1", cfg.Node)
	require.Equal(t, "cli", cfg.Redis.CLIUsername)
	require.Equal(t, path, cfg.File)
	require.Equal(t, time.Hour, cfg.Run.Timeout, "the caller's own keys are layered on top")

	// Without it, Load reads the file, and refuses it now.
	opts.SystemConfig = nil
	_, err = Load(opts)
	require.ErrorContains(t, err, "it is writable by group or others (mode 0666)")
}

func TestAMissingSystemFileIsTheDefaults(t *testing.T) {
	opts := userOptions(t)
	sys, err := ReadSystemConfig(opts.DefaultFile, opts.FileOwner)
	require.NoError(t, err)
	redis, err := sys.Redis()
	require.NoError(t, err)
	require.Equal(t, defaults().Redis, redis)
}
