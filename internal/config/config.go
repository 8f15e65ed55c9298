// Package config loads canhazgpu's settings. Highest first: command-line
// flags, CANHAZGPU_<SECTION>_<KEY> environment variables, the config file
// ($CANHAZGPU_CONFIG or /etc/canhazgpu/config.toml, plus the user-facing
// keys of ~/.config/canhazgpu/config.toml), built-in defaults.
//
// Site policy belongs to root: for a caller that may not override it (an
// ordinary user), every key other than the few that shape only the caller's
// own request comes from the root-owned system file and nothing else.
//
// Every key, its default and its meaning are in example.toml, which is
// installed as /etc/canhazgpu/config.toml and tested to load as the defaults.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ExampleTOML is the fully commented config file with every key at its
// default. Packaging installs it as /etc/canhazgpu/config.toml.
//
//go:embed example.toml
var ExampleTOML string

// SystemFile is the system config file read when neither --config nor
// CANHAZGPU_CONFIG names one (and the only one an ordinary user's programs
// read). Unlike a named file, it may be missing. It is a variable so that a
// build for tests can compile in another path
// (-ldflags "-X canhazgpu/internal/config.SystemFile=..."): the path is
// chosen when the program is built, never by whoever runs it.
var SystemFile = "/etc/canhazgpu/config.toml"

// Config holds every setting. Durations are positive unless said otherwise.
type Config struct {
	Node    string // this node's name in the store; default: short hostname
	Redis   RedisConfig
	GPU     GPUConfig
	Reserve ReserveConfig
	Run     RunConfig
	Queue   QueueConfig
	Admin   AdminConfig
	History HistoryConfig
	Slurm   SlurmConfig
	PBS     PBSConfig
	Health  HealthConfig
	Idle    IdleConfig
	// Violations drives what the health check does to the people behind a
	// violation (violations.go).
	Violations ViolationsConfig
	File       string // the system file that was read ("" if none)
}

// RedisConfig is how to reach the store. SentinelMaster with SentinelAddrs
// selects Redis Sentinel, ClusterAddrs Redis Cluster, otherwise URL is used.
type RedisConfig struct {
	URL            string // redis://, rediss:// or unix:///path.sock
	SentinelMaster string
	SentinelAddrs  []string // host:port
	ClusterAddrs   []string // host:port
	Username       string   // ACL user of root's programs; "" for Redis's default user
	PasswordFile   string   // read at start, so the password is never in argv or env
	// The CLI role: what ordinary users' canhazgpu uses. Its password file
	// is readable by the canhazgpu group only; the installed CLI is setgid
	// to that group, reads it first and drops the group at once.
	CLIUsername     string
	CLIPasswordFile string
	// The dashboard's credential (canhazgpu web, the read-only "monitor"
	// role): when set, the dashboard uses it whoever runs it, and no
	// other credential.
	WebUsername     string
	WebPasswordFile string
	// Password is a password already read (the CLI role's, read before
	// privileges were dropped). Never a setting: no source can set it.
	Password    string
	TLSCAFile   string
	DialTimeout time.Duration
	OpTimeout   time.Duration
	// WaitReplicas: a change is acknowledged only once this many replicas
	// confirm it (Redis WAIT, for at most WaitTimeout); 0: on the
	// primary's reply. Site policy: a user turning it off would expose
	// every other user to double grants after a failover.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// GPUConfig chooses where GPU and process information comes from.
type GPUConfig struct {
	Provider          string // auto, nvml, amdsmi or fake
	FakeFile          string // the fake provider's JSON file
	AMDSMIPath        string // the amd-smi program the amdsmi provider runs (as root, for root programs)
	MemoryThresholdMB int64  // a GPU with at least this much memory used is in use
}

// ReserveConfig holds defaults and bounds of `canhazgpu reserve`.
type ReserveConfig struct {
	Duration    time.Duration
	MaxDuration time.Duration // the longest any manual reservation may last
}

// RunConfig holds defaults of `canhazgpu run`.
type RunConfig struct {
	Timeout           time.Duration // 0: none
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration // an older heartbeat frees the reservation
	KillGrace         time.Duration // between TERM and KILL
}

// QueueConfig holds the --wait queue's timings.
type QueueConfig struct {
	PollInterval     time.Duration
	HeartbeatTimeout time.Duration // an older queue entry is dropped
}

// AdminConfig says who may act for other users besides root.
type AdminConfig struct {
	Group string // unix group; "" for root only
}

// HistoryConfig bounds the usage history.
type HistoryConfig struct {
	MaxAge     time.Duration
	MaxRecords int
}

// SlurmConfig drives the Slurm Prolog, TaskProlog and Epilog (scheduler.md).
type SlurmConfig struct {
	GresDevices  []string // gres.conf's device files in order; nil: /dev/nvidia0.. one per GPU
	Placement    string   // slurm or canhazgpu
	OnConflict   string   // fail or warn
	OnStoreError string   // allow or fail
	Export       string   // auto, uuid, index or none
	StateDir     string
	Deadline     time.Duration
	Holds        SlurmHolds
}

// SlurmHolds makes interactive holds visible to Slurm: one placeholder
// job per hold (docs/slurm.md, "Interactive holds Slurm can see").
type SlurmHolds struct {
	Mode      string // interactive_holds: off or placeholder
	Salloc    string // absolute: the CLI runs it with no PATH of the caller's
	Scancel   string
	SlurmConf string // SLURM_CONF for those commands; "": Slurm's default
	// Lost: what the health check does with a hold whose placeholder job
	// ended before it (scancel by hand, a node reboot): release, keep or
	// resubmit.
	Lost string
}

// PBSConfig drives the PBS and Torque hooks.
type PBSConfig struct {
	OnConflict   string // fail or warn
	OnStoreError string // allow or fail
	StateDir     string
}

// HealthConfig drives canhazgpu-healthcheck.
type HealthConfig struct {
	Action          string   // none, flag or drain
	ExemptUsers     []string // users whose GPU use is never a violation
	Scontrol        string
	ScontrolTimeout time.Duration
	SlurmdSpoolDir  string // "": Slurm's SlurmdSpoolDir
	PrometheusFile  string // "" for no textfile output
	Timeout         time.Duration
}

// IdleConfig is when the health check warns the owner of an idle
// interactive reservation and when it gives the GPUs back (docs/healthcheck.md).
// Batch reservations are the scheduler's and never judged idle.
type IdleConfig struct {
	UtilizationBelow   int           // a GPU under this many percent, and with no process over the memory threshold, is idle
	ManualWarnAfter    time.Duration // manual reservations: warn the owner after this long idle
	ManualReleaseAfter time.Duration // manual reservations: release after this long idle; 0: never
	RunWarnAfter       time.Duration // run leases: warn the owner (never released for idleness)
}

// defaults returns the built-in settings; Node is filled from the hostname
// after all sources are applied.
func defaults() Config {
	return Config{
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
			HeartbeatTimeout:  60 * time.Second,
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
		Violations: violationsDefaults(),
	}
}

// Options says where Load looks. The zero value reads only SystemFile and
// the hostname: no environment, no user file, no flags.
type Options struct {
	Env        []string          // os.Environ() form; nil: no environment
	Home       string            // for the user file; "" = no user file
	System     bool              // scheduler programs: no user file
	Overrides  map[string]string // from flags: key ("redis.url") -> value text; see Flags
	ConfigFile string            // from --config; wins over CANHAZGPU_CONFIG
	// MayOverride: the caller may name another system file and set any key
	// from the environment and flags (root, the scheduler programs). When
	// false, only the user keys may come from there, and naming a file or
	// setting another key is an error.
	MayOverride bool
	// FileOwner is the uid that must own the system file and the
	// directories above it: 0 (root) except in tests run by a developer.
	FileOwner   int
	DefaultFile string // "": SystemFile
	// SystemConfig is the system file already read (ReadSystemConfig),
	// used instead of reading it again when it is the file Load would read.
	SystemConfig *SystemConfig
	Hostname     func() (string, error) // nil: os.Hostname
}

// Load reads the settings from all sources. The first bad value stops it with
// an error naming where it was written: file and line, variable or flag.
func Load(opts Options) (*Config, error) {
	l := loader{cfg: defaults(), origin: map[string]string{}}
	env := envMap(opts.Env)
	if err := checkOverrides(opts, env); err != nil {
		return nil, err
	}

	path, named := systemFile(opts, env)
	sys := opts.SystemConfig
	if sys == nil || sys.path != path {
		var err error
		if sys, err = readSystemConfig(path, named, opts.FileOwner); err != nil {
			return nil, err
		}
	}
	if err := l.applySystem(sys); err != nil {
		return nil, err
	}
	if opts.Home != "" && !opts.System {
		user := filepath.Join(opts.Home, ".config", "canhazgpu", "config.toml")
		if err := l.applyUserFile(user, path); err != nil {
			return nil, err
		}
	}
	for _, s := range settings {
		if v, ok := env[s.envVar()]; ok {
			if err := l.record(s.name, s.envVar(), s.fromText(&l.cfg, v)); err != nil {
				return nil, err
			}
		}
	}
	if err := l.applyOverrides(opts.Overrides); err != nil {
		return nil, err
	}
	if err := l.checkCombinations(); err != nil {
		return nil, err
	}
	if err := l.checkViolations(); err != nil {
		return nil, err
	}
	if l.cfg.Node == "" {
		node, err := shortHostname(opts.Hostname)
		if err != nil {
			return nil, err
		}
		l.cfg.Node = node
	}
	return &l.cfg, nil
}

// systemFile picks the system config file: --config, then CANHAZGPU_CONFIG,
// then the default. named says which of the first two chose it ("" for the
// default), because only a file someone named must exist.
func systemFile(opts Options, env map[string]string) (path, named string) {
	switch {
	case opts.ConfigFile != "":
		return opts.ConfigFile, "--config"
	case env["CANHAZGPU_CONFIG"] != "":
		return env["CANHAZGPU_CONFIG"], "CANHAZGPU_CONFIG"
	case opts.DefaultFile != "":
		return opts.DefaultFile, ""
	default:
		return SystemFile, ""
	}
}

// loader applies the sources in turn and remembers where each key was last
// set, so that a check across keys can still point at the culprit.
type loader struct {
	cfg    Config
	origin map[string]string // key -> "file:line", variable or flag
}

// record notes where key was set, or, when setting it failed, returns the
// error naming that place.
func (l *loader) record(key, where string, err error) error {
	if err != nil {
		return fmt.Errorf("config: %s: %s: %w", where, key, err)
	}
	l.origin[key] = where
	return nil
}

// applySystem applies the entries of the system file.
func (l *loader) applySystem(sys *SystemConfig) error {
	if !sys.found {
		return nil
	}
	l.cfg.File = sys.path
	return l.applyEntries(sys.path, sys.entries, "")
}

// applyUserFile reads the user's config file, which may be missing.
// systemPath is the file that store and scheduler keys belong in.
func (l *loader) applyUserFile(path, systemPath string) error {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("config: %w", err)
	}
	entries, err := readEntries(path, string(data))
	if err != nil {
		return err
	}
	return l.applyEntries(path, entries, systemPath)
}

// applyEntries applies the entries of the config file path. systemPath is
// set for the user file: it is the file that store and scheduler keys
// belong in.
func (l *loader) applyEntries(path string, entries []entry, systemPath string) error {
	for _, e := range entries {
		where := path
		if e.line > 0 {
			where = fmt.Sprintf("%s:%d", path, e.line)
		}
		s, known := lookupSetting(e.key)
		switch {
		case !known && slices.Contains(sections, e.key):
			// A section header with nothing in it sets nothing.
			if _, table := e.value.(map[string]any); !table {
				return fmt.Errorf("config: %s: %s: must be a table ([%s]), got %s", where, e.key, e.key, describe(e.value))
			}
		case !known:
			return fmt.Errorf("config: %s: %s: unknown key%s", where, e.key, knownKeysHint(e.key))
		case systemPath != "" && !s.user:
			return fmt.Errorf("config: %s: %s: only allowed in the system file %s; the user file may set only %s",
				where, e.key, systemPath, strings.Join(userKeys(), ", "))
		default:
			if err := l.record(s.name, where, s.fromTOML(&l.cfg, e.value)); err != nil {
				return err
			}
		}
	}
	return nil
}

// knownKeysHint lists the keys of the section an unknown key is in, to turn
// a typo into a quick fix.
func knownKeysHint(key string) string {
	section, _, _ := strings.Cut(key, ".")
	var names []string
	for _, s := range settings {
		if s.section() == section {
			names = append(names, s.name)
		}
	}
	switch {
	case len(names) > 0:
		return fmt.Sprintf(" (known in [%s]: %s)", section, strings.Join(names, ", "))
	case slices.Contains(sections, section):
		return fmt.Sprintf(" ([%s] has no keys yet)", section)
	default:
		return fmt.Sprintf(" (top-level keys: node; sections: %s)", strings.Join(sections, ", "))
	}
}

func (l *loader) applyOverrides(overrides map[string]string) error {
	for _, key := range slices.Sorted(maps.Keys(overrides)) {
		if _, known := lookupSetting(key); !known {
			return fmt.Errorf("config: override of unknown key %q", key)
		}
	}
	for _, s := range settings {
		v, ok := overrides[s.name]
		if !ok {
			continue
		}
		where := "override " + s.name
		if flag := flagFor(s.name); flag != "" {
			where = "--" + flag
		}
		if err := l.record(s.name, where, s.fromText(&l.cfg, v)); err != nil {
			return err
		}
	}
	return nil
}

// checkCombinations rejects settings that are each valid but impossible
// together. The error points at where the offending key was set.
func (l *loader) checkCombinations() error {
	c := &l.cfg
	switch {
	case c.GPU.Provider == "fake" && c.GPU.FakeFile == "":
		return l.errorAt("gpu.provider", `"fake" needs gpu.fake_file, the JSON file describing the fake GPUs`)
	case c.Redis.SentinelMaster != "" && len(c.Redis.SentinelAddrs) == 0:
		return l.errorAt("redis.sentinel_master", "needs redis.sentinel_addrs")
	case c.Redis.SentinelMaster == "" && len(c.Redis.SentinelAddrs) > 0:
		return l.errorAt("redis.sentinel_addrs", "needs redis.sentinel_master")
	case c.Redis.SentinelMaster != "" && len(c.Redis.ClusterAddrs) > 0:
		return l.errorAt("redis.cluster_addrs", "cannot be used together with redis.sentinel_master")
	case c.Redis.WaitReplicas > 0 && c.Redis.WaitTimeout >= c.Redis.OpTimeout:
		// The wait's reply comes on the same socket, whose reads end at
		// op_timeout: a longer wait would fail every change.
		key := "redis.wait_timeout"
		if _, set := l.origin[key]; !set {
			key = "redis.op_timeout"
		}
		return l.errorAt(key, fmt.Sprintf("redis.wait_timeout (%s) must be shorter than redis.op_timeout (%s)",
			Duration(c.Redis.WaitTimeout), Duration(c.Redis.OpTimeout)))
	case c.Reserve.Duration > c.Reserve.MaxDuration:
		key := "reserve.duration"
		if _, set := l.origin[key]; !set {
			key = "reserve.max_duration"
		}
		return l.errorAt(key, fmt.Sprintf("reserve.duration (%s) must not exceed reserve.max_duration (%s)",
			Duration(c.Reserve.Duration), Duration(c.Reserve.MaxDuration)))
	case c.Idle.ManualReleaseAfter > 0 && c.Idle.ManualWarnAfter >= c.Idle.ManualReleaseAfter:
		// The owner is told before the GPUs go, with the time left.
		key := "idle.manual_warn_after"
		if _, set := l.origin[key]; !set {
			key = "idle.manual_release_after"
		}
		return l.errorAt(key, fmt.Sprintf("idle.manual_warn_after (%s) must be shorter than idle.manual_release_after (%s; \"0\" for never)",
			Duration(c.Idle.ManualWarnAfter), Duration(c.Idle.ManualReleaseAfter)))
	case c.Run.HeartbeatInterval >= c.Run.HeartbeatTimeout:
		// Every run reservation would look stale between two heartbeats.
		// Blame the one of the pair that was set; the defaults fit.
		key := "run.heartbeat_interval"
		if _, set := l.origin[key]; !set {
			key = "run.heartbeat_timeout"
		}
		return l.errorAt(key, fmt.Sprintf("run.heartbeat_interval (%s) must be shorter than run.heartbeat_timeout (%s)",
			Duration(c.Run.HeartbeatInterval), Duration(c.Run.HeartbeatTimeout)))
	}
	return nil
}

// errorAt reports a bad combination at the place key was set; every caller
// blames a key that differs from its default, so that place is known.
func (l *loader) errorAt(key, msg string) error {
	return fmt.Errorf("config: %s: %s: %s", l.origin[key], key, msg)
}

// envMap indexes an os.Environ-style list; a later entry wins, as in exec.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// shortHostname is the default node name: the hostname up to the first dot,
// which is how Slurm names nodes too.
func shortHostname(hostname func() (string, error)) (string, error) {
	if hostname == nil {
		hostname = os.Hostname
	}
	h, err := hostname()
	if err != nil {
		return "", fmt.Errorf("config: node is not set and the hostname is unknown: %w", err)
	}
	short, _, _ := strings.Cut(h, ".")
	if short == "" {
		return "", fmt.Errorf("config: node is not set and the hostname %q has no name part; set node", h)
	}
	return short, nil
}
