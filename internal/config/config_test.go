package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

func hostname(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

// testOptions reads no real file: the default system file is a path in a
// fresh temporary directory, which the test may create.
func testOptions(t *testing.T) Options {
	return Options{
		DefaultFile: filepath.Join(t.TempDir(), "etc", "config.toml"),
		Hostname:    hostname("gpu01.cluster.example"),
		MayOverride: true,
		FileOwner:   os.Getuid(),
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load(testOptions(t))
	require.NoError(t, err)
	require.Equal(t, &Config{
		Node: "gpu01",
		Redis: RedisConfig{
			URL:         "redis://127.0.0.1:6379/0",
			DialTimeout: time.Second,
			OpTimeout:   2 * time.Second,
			WaitTimeout: time.Second,
		},
		GPU:     GPUConfig{Provider: "auto", AMDSMIPath: "/opt/rocm/bin/amd-smi", MemoryThresholdMB: 1024},
		Reserve: ReserveConfig{Duration: 30 * time.Minute, MaxDuration: 7 * 24 * time.Hour},
		Run: RunConfig{
			HeartbeatInterval: 10 * time.Second,
			HeartbeatTimeout:  time.Minute,
			KillGrace:         10 * time.Second,
		},
		Queue:   QueueConfig{PollInterval: time.Second, HeartbeatTimeout: 30 * time.Second},
		History: HistoryConfig{MaxAge: 90 * 24 * time.Hour, MaxRecords: 100000},
		Slurm: SlurmConfig{
			Placement:    "slurm",
			OnConflict:   "fail",
			OnStoreError: "allow",
			Export:       "auto",
			StateDir:     "/run/canhazgpu",
			Deadline:     5 * time.Second,
			Holds:        SlurmHolds{Mode: "off", Salloc: "/usr/bin/salloc", Scancel: "/usr/bin/scancel", Lost: "release"},
		},
		PBS: PBSConfig{OnConflict: "fail", OnStoreError: "allow", StateDir: "/run/canhazgpu"},
		Health: HealthConfig{
			Action:          "none",
			ExemptUsers:     []string{"root", "nvidia-mps"},
			Scontrol:        "/usr/bin/scontrol",
			ScontrolTimeout: 5 * time.Second,
			SlurmdSpoolDir:  "",
			Timeout:         30 * time.Second,
		},
		Idle: IdleConfig{
			UtilizationBelow:   5,
			ManualWarnAfter:    30 * time.Minute,
			ManualReleaseAfter: 2 * time.Hour,
			RunWarnAfter:       30 * time.Minute,
		},
		Violations: ViolationsConfig{KillAfter: 10 * time.Minute, RenotifyEvery: time.Hour, KillWait: 10 * time.Second,
			KillsPerHour: 10, ExecTimeout: 10 * time.Second, UtmpFile: "/run/utmp"},
	}, cfg)
}

// TestPrecedence sets each key at every level in turn: default, then the
// file, then the environment, then a flag; the highest level set must win.
func TestPrecedence(t *testing.T) {
	tests := []struct {
		key              string
		file, env, flag  string // TOML value; environment and flag text
		get              func(*Config) any
		def, f, e, flagV any
	}{
		{
			key: "redis.url", file: `"redis://file:6379/1"`, env: "rediss://env:6380/2", flag: "unix:///run/redis.sock",
			get: func(c *Config) any { return c.Redis.URL },
			def: "redis://127.0.0.1:6379/0", f: "redis://file:6379/1", e: "rediss://env:6380/2", flagV: "unix:///run/redis.sock",
		},
		{
			key: "node", file: `"file-node"`, env: "env-node", flag: "flag-node",
			get: func(c *Config) any { return c.Node },
			def: "gpu01", f: "file-node", e: "env-node", flagV: "flag-node",
		},
		{
			key: "gpu.memory_threshold_mb", file: `2048`, env: "4096", flag: "8192",
			get: func(c *Config) any { return c.GPU.MemoryThresholdMB },
			def: int64(1024), f: int64(2048), e: int64(4096), flagV: int64(8192),
		},
		{
			key: "gpu.fake_file", file: `"/file.json"`, env: "/env.json", flag: "/flag.json",
			get: func(c *Config) any { return c.GPU.FakeFile },
			def: "", f: "/file.json", e: "/env.json", flagV: "/flag.json",
		},
		{
			key: "slurm.placement", file: `"canhazgpu"`, env: "slurm", flag: "canhazgpu",
			get: func(c *Config) any { return c.Slurm.Placement },
			def: "slurm", f: "canhazgpu", e: "slurm", flagV: "canhazgpu",
		},
		{
			key: "health.exempt_users", file: `["a", "b"]`, env: "c, d", flag: "e",
			get: func(c *Config) any { return c.Health.ExemptUsers },
			def: []string{"root", "nvidia-mps"}, f: []string{"a", "b"}, e: []string{"c", "d"}, flagV: []string{"e"},
		},
		{
			key: "run.timeout", file: `"8h"`, env: "", flag: "1.5h",
			get: func(c *Config) any { return c.Run.Timeout },
			def: time.Duration(0), f: 8 * time.Hour, e: time.Duration(0), flagV: 90 * time.Minute,
		},
		{
			key: "history.max_age", file: `"30d"`, env: "1d", flag: "12h",
			get: func(c *Config) any { return c.History.MaxAge },
			def: 90 * 24 * time.Hour, f: 30 * 24 * time.Hour, e: 24 * time.Hour, flagV: 12 * time.Hour,
		},
	}
	for _, tt := range tests {
		s, ok := lookupSetting(tt.key)
		require.True(t, ok, tt.key)
		fileText := tt.key + " = " + tt.file + "\n"
		if section, key, dotted := strings.Cut(tt.key, "."); dotted {
			fileText = "[" + section + "]\n" + key + " = " + tt.file + "\n"
		}
		levels := []struct {
			name            string
			file, env, flag bool
			want            any
		}{
			{"default", false, false, false, tt.def},
			{"file", true, false, false, tt.f},
			{"env over file", true, true, false, tt.e},
			{"flag over env", true, true, true, tt.flagV},
			{"flag over file", true, false, true, tt.flagV},
		}
		for _, lv := range levels {
			t.Run(tt.key+"/"+lv.name, func(t *testing.T) {
				opts := testOptions(t)
				if lv.file {
					writeFile(t, opts.DefaultFile, fileText)
				}
				if lv.env {
					opts.Env = []string{"PATH=/bin", s.envVar() + "=" + tt.env}
				}
				if lv.flag {
					opts.Overrides = map[string]string{tt.key: tt.flag}
				}
				cfg, err := Load(opts)
				require.NoError(t, err)
				require.Equal(t, lv.want, tt.get(cfg))
			})
		}
	}
}

func TestSystemFileChoice(t *testing.T) {
	dir := t.TempDir()
	def := writeFile(t, filepath.Join(dir, "default.toml"), `node = "from-default"`)
	env := writeFile(t, filepath.Join(dir, "env.toml"), `node = "from-env"`)
	flag := writeFile(t, filepath.Join(dir, "flag.toml"), `node = "from-flag"`)
	missing := filepath.Join(dir, "missing.toml")

	tests := []struct {
		name        string
		defaultFile string
		env         string // CANHAZGPU_CONFIG
		configFlag  string
		wantNode    string
		wantFile    string
		wantErr     string
	}{
		{name: "default file", defaultFile: def, wantNode: "from-default", wantFile: def},
		{name: "missing default file is fine", defaultFile: missing, wantNode: "gpu01"},
		{name: "CANHAZGPU_CONFIG replaces the default", defaultFile: def, env: env, wantNode: "from-env", wantFile: env},
		{name: "--config wins over CANHAZGPU_CONFIG", defaultFile: def, env: env, configFlag: flag, wantNode: "from-flag", wantFile: flag},
		{
			name: "missing CANHAZGPU_CONFIG file", defaultFile: def, env: missing,
			wantErr: "config: file named by CANHAZGPU_CONFIG: open " + missing + ": no such file or directory",
		},
		{
			name: "missing --config file", defaultFile: def, env: env, configFlag: missing,
			wantErr: "config: file named by --config: open " + missing + ": no such file or directory",
		},
	}
	t.Run("unreadable default file", func(t *testing.T) {
		_, err := Load(Options{DefaultFile: dir, Hostname: hostname("gpu01"), FileOwner: os.Getuid()})
		require.EqualError(t, err, "config: refusing the system config file "+dir+": it is not a regular file")
	})
	t.Run("default path", func(t *testing.T) {
		path, named := systemFile(Options{}, nil)
		require.Equal(t, "/etc/canhazgpu/config.toml", path)
		require.Empty(t, named, "the default file may be missing")
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{DefaultFile: tt.defaultFile, ConfigFile: tt.configFlag, Hostname: hostname("gpu01"), MayOverride: true, FileOwner: os.Getuid()}
			if tt.env != "" {
				opts.Env = []string{"CANHAZGPU_CONFIG=" + tt.env}
			}
			cfg, err := Load(opts)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.ErrorIs(t, err, os.ErrNotExist)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantNode, cfg.Node)
			require.Equal(t, tt.wantFile, cfg.File)
		})
	}
}

func TestUserFile(t *testing.T) {
	tests := []struct {
		name     string
		user     string
		system   bool
		env      []string
		wantErr  string // %s: the user file, %[2]s: the system file
		wantDur  time.Duration
		wantGace time.Duration
	}{
		{
			name:    "overrides the system file",
			user:    "[reserve]\nduration = \"2h\"\n[run]\nkill_grace = \"3s\"\n[output]\n",
			wantDur: 2 * time.Hour, wantGace: 3 * time.Second,
		},
		{
			name:    "loses to the environment",
			user:    "[reserve]\nduration = \"2h\"\n",
			env:     []string{"CANHAZGPU_RESERVE_DURATION=3h"},
			wantDur: 3 * time.Hour, wantGace: 10 * time.Second,
		},
		{
			name:    "ignored by scheduler programs",
			user:    "[reserve]\nduration = \"2h\"\n[redis]\nurl = \"redis://elsewhere:6379/0\"\n",
			system:  true,
			wantDur: time.Hour, wantGace: 10 * time.Second,
		},
		{
			name:    "may not set the store",
			user:    "# mine\n[reserve]\nduration = \"2h\"\n\n[redis]\nurl = \"redis://elsewhere:6379/0\"\n",
			wantErr: "config: %s:6: redis.url: only allowed in the system file %s; the user file may set only reserve.duration, run.timeout, run.kill_grace",
		},
		{
			name:    "may not set the node",
			user:    "node = \"other\"\n",
			wantErr: "config: %s:1: node: only allowed in the system file %s; the user file may set only reserve.duration, run.timeout, run.kill_grace",
		},
		{
			name:    "checks values",
			user:    "[reserve]\nduration = \"8d\"\n",
			wantErr: "config: %[1]s:2: reserve.duration: reserve.duration (8d) must not exceed reserve.max_duration (7d)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			writeFile(t, opts.DefaultFile, "[reserve]\nduration = \"1h\"\n")
			opts.Home = t.TempDir()
			opts.System = tt.system
			opts.Env = tt.env
			userFile := writeFile(t, filepath.Join(opts.Home, ".config", "canhazgpu", "config.toml"), tt.user)
			cfg, err := Load(opts)
			if tt.wantErr != "" {
				require.EqualError(t, err, fmt.Sprintf(tt.wantErr, userFile, opts.DefaultFile))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantDur, cfg.Reserve.Duration)
			require.Equal(t, tt.wantGace, cfg.Run.KillGrace)
			require.Equal(t, "redis://127.0.0.1:6379/0", cfg.Redis.URL)
			require.Equal(t, opts.DefaultFile, cfg.File, "File is the system file")
		})
	}

	t.Run("missing user file is fine", func(t *testing.T) {
		opts := testOptions(t)
		opts.Home = t.TempDir()
		_, err := Load(opts)
		require.NoError(t, err)
	})
}

// TestFileErrors: every bad file gives one error naming the file, the line,
// the key and the bad value.
func TestFileErrors(t *testing.T) {
	const header = "# site config\n\n"
	tests := []struct {
		name    string
		text    string // after header, so line 3 is the first line
		wantErr string // after "config: FILE:"
	}{
		{"negative number", "[gpu]\nmemory_threshold_mb = -5\n",
			"4: gpu.memory_threshold_mb: must be a positive integer, got -5"},
		{"zero count", "[history]\nmax_records = 0\n",
			"4: history.max_records: must be a positive integer, got 0"},
		{"string for a number", "[gpu]\nmemory_threshold_mb = \"lots\"\n",
			`4: gpu.memory_threshold_mb: must be a positive integer, got "lots"`},
		{"float for a number", "[gpu]\nmemory_threshold_mb = 1024.5\n",
			"4: gpu.memory_threshold_mb: must be a positive integer, got 1024.5 (a float)"},
		{"number for a string", "node = 5\n",
			"3: node: must be a string, got 5"},
		{"bad enum", "[slurm]\nplacement = \"random\"\n",
			`4: slurm.placement: must be one of slurm, canhazgpu, got "random"`},
		{"bad duration", "[reserve]\nduration = \"5x\"\n",
			`4: reserve.duration: invalid duration "5x": ` + durationForms},
		{"negative duration", "[redis]\nop_timeout = \"-2s\"\n",
			`4: redis.op_timeout: invalid duration "-2s": ` + durationForms},
		{"number for a duration", "[reserve]\nduration = 30\n",
			`4: reserve.duration: must be a duration string such as "30m", got 30`},
		{"number for an optional duration", "[run]\ntimeout = 5\n",
			`4: run.timeout: must be a duration string such as "30m" or "", got 5`},
		{"array for a string", "node = [\"a\"]\n",
			"3: node: must be a string, got an array"},
		{"boolean for a string", "node = true\n",
			"3: node: must be a string, got true"},
		{"array of tables for a section", "[[redis]]\nurl = \"redis://x:1/0\"\n",
			"3: redis: must be a table ([redis]), got an array of tables"},
		{"zero run timeout", "[run]\ntimeout = \"0\"\n",
			`4: run.timeout: invalid duration "0": ` + durationForms + `; or "" for none`},
		{"string for a list", "[health]\nexempt_users = \"root\"\n",
			`4: health.exempt_users: must be an array of strings, got "root"`},
		{"number in a list", "[health]\nexempt_users = [\"root\", 0]\n",
			"4: health.exempt_users: must be an array of strings, got an element 0"},
		{"empty name in a list", "[health]\nexempt_users = [\"\"]\n",
			"4: health.exempt_users: must not contain empty names"},
		{"unknown key", "[gpu]\nprovider = \"auto\"\nprovder = \"fake\"\n",
			"5: gpu.provder: unknown key (known in [gpu]: gpu.provider, gpu.fake_file, gpu.amdsmi_path, gpu.memory_threshold_mb)"},
		{"unknown top-level key", "nodes = \"a\"\n",
			"3: nodes: unknown key (top-level keys: node; sections: " + strings.Join(sections, ", ") + ")"},
		{"unknown section", "[gpus]\n\nprovider = \"fake\"\n",
			"5: gpus.provider: unknown key (top-level keys: node; sections: " + strings.Join(sections, ", ") + ")"},
		{"key in the empty section", "[output]\ncolor = true\n",
			"4: output.color: unknown key ([output] has no keys yet)"},
		{"quoted dotted key is one key", "\"redis.url\" = \"redis://x:1/0\"\n",
			`3: "redis.url": unknown key (top-level keys: node; sections: ` + strings.Join(sections, ", ") + ")"},
		{"empty unknown section", "[gpus]\n",
			"3: gpus: unknown key (top-level keys: node; sections: " + strings.Join(sections, ", ") + ")"},
		{"section as a value", "redis = \"redis://x\"\n",
			`3: redis: must be a table ([redis]), got "redis://x"`},
		{"table for a value", "[gpu]\nprovider = { name = \"fake\" }\n",
			"4: gpu.provider: must be a string, got a table"},
		{"dotted key", "gpu.memory_threshold_mb = -5\n",
			"3: gpu.memory_threshold_mb: must be a positive integer, got -5"},
		{"inline table", "gpu = { provider = \"cuda\" }\n",
			`3: gpu.provider: must be one of auto, nvml, amdsmi, fake, got "cuda"`},
		{"first error by line", "[slurm]\nexport = \"all\"\n\n[gpu]\nmemory_threshold_mb = 0\n",
			`4: slurm.export: must be one of auto, uuid, index, none, got "all"`},
		{"bad redis scheme", "[redis]\nurl = \"http://localhost:6379\"\n",
			`4: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got "http://localhost:6379"`},
		{"redis password redacted", "[redis]\nurl = \"redis://:secret@\"\n",
			`4: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got "redis://:xxxxx@" (no host)`},
		{"unix socket without path", "[redis]\nurl = \"unix://\"\n",
			`4: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got "unix:" (no socket path)`},
		{"address without port", "[redis]\ncluster_addrs = [\"a:7000\", \"b\"]\n",
			`4: redis.cluster_addrs: must be host:port, got "b"`},
		{"relative path", "[slurm]\nstate_dir = \"run/canhazgpu\"\n",
			`4: slurm.state_dir: must be an absolute path, got "run/canhazgpu"`},
		{"node with a brace", "node = \"a{b}\"\n",
			`3: node: must be a node name without spaces or braces, got "a{b}"`},
		{"fake provider without file", "[gpu]\nprovider = \"fake\"\n",
			`4: gpu.provider: "fake" needs gpu.fake_file, the JSON file describing the fake GPUs`},
		{"sentinel without addresses", "[redis]\nsentinel_master = \"mymaster\"\n",
			"4: redis.sentinel_master: needs redis.sentinel_addrs"},
		{"sentinel addresses without master", "[redis]\nsentinel_addrs = [\"s1:26379\"]\n",
			"4: redis.sentinel_addrs: needs redis.sentinel_master"},
		{"sentinel and cluster", "[redis]\nsentinel_master = \"m\"\nsentinel_addrs = [\"s1:26379\"]\ncluster_addrs = [\"c1:7000\"]\n",
			"6: redis.cluster_addrs: cannot be used together with redis.sentinel_master"},
		{"negative replicas", "[redis]\nwait_replicas = -1\n",
			"4: redis.wait_replicas: must be a whole number of replicas from 0 to 100, got -1"},
		{"string for replicas", "[redis]\nwait_replicas = \"one\"\n",
			`4: redis.wait_replicas: must be a whole number of replicas from 0 to 100, got "one"`},
		{"wait as long as an operation", "[redis]\nwait_replicas = 1\nwait_timeout = \"2s\"\n",
			"5: redis.wait_timeout: redis.wait_timeout (2s) must be shorter than redis.op_timeout (2s)"},
		{"heartbeat interval too long", "[run]\nheartbeat_interval = \"2m\"\n",
			"4: run.heartbeat_interval: run.heartbeat_interval (2m) must be shorter than run.heartbeat_timeout (1m)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			writeFile(t, opts.DefaultFile, header+tt.text)
			_, err := Load(opts)
			require.EqualError(t, err, "config: "+opts.DefaultFile+":"+tt.wantErr)
		})
	}
}

func TestFileSyntaxError(t *testing.T) {
	opts := testOptions(t)
	writeFile(t, opts.DefaultFile, "node = \"a\"\n[gpu]\nprovider = fake\n")
	_, err := Load(opts)
	require.EqualError(t, err, "config: "+opts.DefaultFile+":3: expected value but found \"fake\" instead")
}

func TestEnv(t *testing.T) {
	opts := testOptions(t)
	opts.Env = []string{
		"HOME=/home/alice",
		"CANHAZGPU_NODE=envnode",
		"CANHAZGPU_REDIS_CLUSTER_ADDRS= c1:7000 ,c2:7000,,",
		"CANHAZGPU_RUN_TIMEOUT=",
		"CANHAZGPU_SLURM_GRES_DEVICES=",
		"CANHAZGPU_GPU_PROVIDER=fake",
		"CANHAZGPU_GPU_FAKE_FILE=/tmp/gpus.json",
		"CANHAZGPU_SLURM_PLACEMENT=slurm",
		"CANHAZGPU_SLURM_PLACEMENT=canhazgpu", // the later one wins, as in exec
		"CANHAZGPU_UNRELATED=1",               // other programs' variables are not ours to judge
	}
	cfg, err := Load(opts)
	require.NoError(t, err)
	require.Equal(t, "envnode", cfg.Node)
	require.Equal(t, []string{"c1:7000", "c2:7000"}, cfg.Redis.ClusterAddrs)
	require.Zero(t, cfg.Run.Timeout)
	require.Nil(t, cfg.Slurm.GresDevices)
	require.Equal(t, "fake", cfg.GPU.Provider)
	require.Equal(t, "/tmp/gpus.json", cfg.GPU.FakeFile)
	require.Equal(t, "canhazgpu", cfg.Slurm.Placement)
}

func TestEnvErrors(t *testing.T) {
	tests := []struct {
		env     string
		wantErr string
	}{
		{"CANHAZGPU_GPU_MEMORY_THRESHOLD_MB=abc",
			`config: CANHAZGPU_GPU_MEMORY_THRESHOLD_MB: gpu.memory_threshold_mb: must be a positive integer, got "abc"`},
		{"CANHAZGPU_GPU_MEMORY_THRESHOLD_MB=-5",
			`config: CANHAZGPU_GPU_MEMORY_THRESHOLD_MB: gpu.memory_threshold_mb: must be a positive integer, got -5`},
		{"CANHAZGPU_SLURM_PLACEMENT=anywhere",
			`config: CANHAZGPU_SLURM_PLACEMENT: slurm.placement: must be one of slurm, canhazgpu, got "anywhere"`},
		{"CANHAZGPU_RESERVE_DURATION=1e400h",
			`config: CANHAZGPU_RESERVE_DURATION: reserve.duration: invalid duration "1e400h": ` + durationForms},
		{"CANHAZGPU_REDIS_URL=",
			`config: CANHAZGPU_REDIS_URL: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got ""`},
		{"CANHAZGPU_REDIS_URL=redis://[::1",
			`config: CANHAZGPU_REDIS_URL: redis.url: must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL, got "redis://[::1"`},
		{"CANHAZGPU_REDIS_SENTINEL_ADDRS=s1",
			`config: CANHAZGPU_REDIS_SENTINEL_ADDRS: redis.sentinel_addrs: must be host:port, got "s1"`},
		{"CANHAZGPU_GPU_PROVIDER=fake",
			`config: CANHAZGPU_GPU_PROVIDER: gpu.provider: "fake" needs gpu.fake_file, the JSON file describing the fake GPUs`},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			opts := testOptions(t)
			opts.Env = []string{tt.env}
			_, err := Load(opts)
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

func TestDurationErrorsWrap(t *testing.T) {
	opts := testOptions(t)
	opts.Env = []string{"CANHAZGPU_RUN_TIMEOUT=soon"}
	_, err := Load(opts)
	require.Error(t, err)
	_, parseErr := ParseDuration("soon")
	require.Equal(t, parseErr.Error(), errors.Unwrap(errors.Unwrap(err)).Error(),
		"the ParseDuration error is kept, not retyped")
}

func TestOverrideErrors(t *testing.T) {
	tests := []struct {
		name      string
		overrides map[string]string
		wantErr   string
	}{
		{"flag is named", map[string]string{"gpu.memory_threshold_mb": "-5"},
			"config: --memory-threshold: gpu.memory_threshold_mb: must be a positive integer, got -5"},
		{"key without flag", map[string]string{"slurm.export": "all"},
			`config: override slurm.export: slurm.export: must be one of auto, uuid, index, none, got "all"`},
		{"unknown key", map[string]string{"gpu.speed": "fast"},
			`config: override of unknown key "gpu.speed"`},
		{"combination blames the flag", map[string]string{"gpu.provider": "fake"},
			`config: --gpu-provider: gpu.provider: "fake" needs gpu.fake_file, the JSON file describing the fake GPUs`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			opts.Overrides = tt.overrides
			_, err := Load(opts)
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

// TestCombinationBlame: a pair of valid values that cannot work together is
// reported where the user wrote one of them, not at a default.
func TestCombinationBlame(t *testing.T) {
	opts := testOptions(t)
	writeFile(t, opts.DefaultFile, "[run]\nheartbeat_interval = \"30s\"\n")
	opts.Env = []string{"CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=20s"}
	_, err := Load(opts)
	require.EqualError(t, err, "config: "+opts.DefaultFile+":2: run.heartbeat_interval: "+
		"run.heartbeat_interval (30s) must be shorter than run.heartbeat_timeout (20s)")

	opts.Env = []string{"CANHAZGPU_RUN_HEARTBEAT_TIMEOUT=1m"}
	_, err = Load(opts)
	require.NoError(t, err, "a later source can mend the pair")
}

func TestHostname(t *testing.T) {
	tests := []struct {
		name     string
		hostname func() (string, error)
		node     string
		want     string
		wantErr  string
	}{
		{name: "short name", hostname: hostname("gpu01.cluster.example.org"), want: "gpu01"},
		{name: "already short", hostname: hostname("gpu02"), want: "gpu02"},
		{
			name:     "hostname fails",
			hostname: func() (string, error) { return "", errors.New("uname failed") },
			wantErr:  "config: node is not set and the hostname is unknown: uname failed",
		},
		{
			name:     "node set: hostname unused",
			hostname: func() (string, error) { return "", errors.New("must not be called") },
			node:     "n1", want: "n1",
		},
		{name: "empty hostname", hostname: hostname(".example"), wantErr: `config: node is not set and the hostname ".example" has no name part; set node`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(t)
			opts.Hostname = tt.hostname
			if tt.node != "" {
				opts.Env = []string{"CANHAZGPU_NODE=" + tt.node}
			}
			cfg, err := Load(opts)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, cfg.Node)
		})
	}

	t.Run("os.Hostname by default", func(t *testing.T) {
		h, err := os.Hostname()
		require.NoError(t, err)
		opts := testOptions(t)
		opts.Hostname = nil
		cfg, err := Load(opts)
		require.NoError(t, err)
		require.Equal(t, strings.Split(h, ".")[0], cfg.Node)
	})
}

// TestKeyNames pins the names that tests, site configs and wrappers rely on.
func TestKeyNames(t *testing.T) {
	envs := map[string]string{}
	for _, s := range settings {
		require.NotContains(t, envs, s.envVar(), "two keys share a variable")
		envs[s.envVar()] = s.name
		if sec := s.section(); sec != "" {
			require.Contains(t, sections, sec, s.name)
		}
	}
	require.NotContains(t, envs, "CANHAZGPU_CONFIG")
	for env, key := range map[string]string{
		"CANHAZGPU_NODE":                    "node",
		"CANHAZGPU_REDIS_URL":               "redis.url",
		"CANHAZGPU_GPU_PROVIDER":            "gpu.provider",
		"CANHAZGPU_GPU_FAKE_FILE":           "gpu.fake_file",
		"CANHAZGPU_GPU_MEMORY_THRESHOLD_MB": "gpu.memory_threshold_mb",
		"CANHAZGPU_RESERVE_DURATION":        "reserve.duration",
		"CANHAZGPU_SLURM_GRES_DEVICES":      "slurm.gres_devices",
		"CANHAZGPU_SLURM_PLACEMENT":         "slurm.placement",
		"CANHAZGPU_SLURM_ON_CONFLICT":       "slurm.on_conflict",
		"CANHAZGPU_SLURM_ON_STORE_ERROR":    "slurm.on_store_error",
		"CANHAZGPU_SLURM_EXPORT":            "slurm.export",
		"CANHAZGPU_SLURM_STATE_DIR":         "slurm.state_dir",
		"CANHAZGPU_SLURM_DEADLINE":          "slurm.deadline",
	} {
		require.Equal(t, key, envs[env], env)
	}
}
