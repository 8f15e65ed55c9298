package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// setting is one configuration key. Every source goes through it: the files
// hand it a decoded TOML value, the environment and the flags hand it text.
// One table of settings keeps the key names, their environment variables,
// their parsing and their checks from drifting apart.
type setting struct {
	name string // "gpu.memory_threshold_mb"
	// user: the key shapes only the caller's own request, so an ordinary
	// user may set it (user file, environment, flags). Every other key is
	// site policy and comes from root.
	user     bool
	fromTOML func(c *Config, v any) error
	fromText func(c *Config, s string) error
}

// section is the table a key lives in ("" for top-level keys such as node).
func (s setting) section() string {
	sec, _, found := strings.Cut(s.name, ".")
	if !found {
		return ""
	}
	return sec
}

// envVar is the variable that sets the key: CANHAZGPU_<SECTION>_<KEY>.
func (s setting) envVar() string {
	return "CANHAZGPU_" + strings.ToUpper(strings.ReplaceAll(s.name, ".", "_"))
}

// sections are the accepted tables, in the order of the example config.
// [output] has no keys yet; it is accepted so that user files may carry it.
var sections = []string{"redis", "gpu", "reserve", "run", "queue", "output", "admin", "history", "slurm", "pbs", "health", "idle", "violations"}

// userKey marks a setting an ordinary user may set: it shapes only the
// caller's own requests, never the store, other users or the scheduler.
func userKey(s setting) setting {
	s.user = true
	return s
}

// userKeys names the user keys, for messages.
func userKeys() []string {
	var names []string
	for _, s := range settings {
		if s.user {
			names = append(names, s.name)
		}
	}
	return names
}

var settings = []setting{
	str("node", func(c *Config) *string { return &c.Node }, checkNode),

	str("redis.url", func(c *Config) *string { return &c.Redis.URL }, checkRedisURL),
	str("redis.sentinel_master", func(c *Config) *string { return &c.Redis.SentinelMaster }, nil),
	list("redis.sentinel_addrs", func(c *Config) *[]string { return &c.Redis.SentinelAddrs }, checkHostPort),
	list("redis.cluster_addrs", func(c *Config) *[]string { return &c.Redis.ClusterAddrs }, checkHostPort),
	str("redis.username", func(c *Config) *string { return &c.Redis.Username }, checkACLUser),
	str("redis.password_file", func(c *Config) *string { return &c.Redis.PasswordFile }, checkAbsPathOrEmpty),
	str("redis.cli_username", func(c *Config) *string { return &c.Redis.CLIUsername }, checkACLUser),
	str("redis.cli_password_file", func(c *Config) *string { return &c.Redis.CLIPasswordFile }, checkAbsPathOrEmpty),
	str("redis.web_username", func(c *Config) *string { return &c.Redis.WebUsername }, checkACLUser),
	str("redis.web_password_file", func(c *Config) *string { return &c.Redis.WebPasswordFile }, checkAbsPathOrEmpty),
	str("redis.tls_ca_file", func(c *Config) *string { return &c.Redis.TLSCAFile }, nil),
	duration("redis.dial_timeout", func(c *Config) *time.Duration { return &c.Redis.DialTimeout }),
	duration("redis.op_timeout", func(c *Config) *time.Duration { return &c.Redis.OpTimeout }),
	replicas("redis.wait_replicas", func(c *Config) *int { return &c.Redis.WaitReplicas }),
	duration("redis.wait_timeout", func(c *Config) *time.Duration { return &c.Redis.WaitTimeout }),

	enum("gpu.provider", func(c *Config) *string { return &c.GPU.Provider }, "auto", "nvml", "amdsmi", "fake"),
	str("gpu.fake_file", func(c *Config) *string { return &c.GPU.FakeFile }, nil),
	str("gpu.amdsmi_path", func(c *Config) *string { return &c.GPU.AMDSMIPath }, checkAbsPath),
	count("gpu.memory_threshold_mb", func(c *Config) *int64 { return &c.GPU.MemoryThresholdMB }),

	userKey(duration("reserve.duration", func(c *Config) *time.Duration { return &c.Reserve.Duration })),
	duration("reserve.max_duration", func(c *Config) *time.Duration { return &c.Reserve.MaxDuration }),

	userKey(optionalDuration("run.timeout", func(c *Config) *time.Duration { return &c.Run.Timeout })),
	duration("run.heartbeat_interval", func(c *Config) *time.Duration { return &c.Run.HeartbeatInterval }),
	duration("run.heartbeat_timeout", func(c *Config) *time.Duration { return &c.Run.HeartbeatTimeout }),
	userKey(duration("run.kill_grace", func(c *Config) *time.Duration { return &c.Run.KillGrace })),

	duration("queue.poll_interval", func(c *Config) *time.Duration { return &c.Queue.PollInterval }),
	duration("queue.heartbeat_timeout", func(c *Config) *time.Duration { return &c.Queue.HeartbeatTimeout }),

	str("admin.group", func(c *Config) *string { return &c.Admin.Group }, nil),

	duration("history.max_age", func(c *Config) *time.Duration { return &c.History.MaxAge }),
	count("history.max_records", func(c *Config) *int { return &c.History.MaxRecords }),

	list("slurm.gres_devices", func(c *Config) *[]string { return &c.Slurm.GresDevices }, checkAbsPath),
	enum("slurm.placement", func(c *Config) *string { return &c.Slurm.Placement }, "slurm", "canhazgpu"),
	enum("slurm.on_conflict", func(c *Config) *string { return &c.Slurm.OnConflict }, "fail", "warn"),
	enum("slurm.on_store_error", func(c *Config) *string { return &c.Slurm.OnStoreError }, "allow", "fail"),
	enum("slurm.export", func(c *Config) *string { return &c.Slurm.Export }, "auto", "uuid", "index", "none"),
	str("slurm.state_dir", func(c *Config) *string { return &c.Slurm.StateDir }, checkAbsPath),
	duration("slurm.deadline", func(c *Config) *time.Duration { return &c.Slurm.Deadline }),
	enum("slurm.interactive_holds", func(c *Config) *string { return &c.Slurm.Holds.Mode }, "off", "placeholder"),
	str("slurm.salloc", func(c *Config) *string { return &c.Slurm.Holds.Salloc }, checkAbsPath),
	str("slurm.scancel", func(c *Config) *string { return &c.Slurm.Holds.Scancel }, checkAbsPath),
	str("slurm.slurm_conf", func(c *Config) *string { return &c.Slurm.Holds.SlurmConf }, checkAbsPathOrEmpty),
	enum("slurm.lost_placeholder", func(c *Config) *string { return &c.Slurm.Holds.Lost }, "release", "keep", "resubmit"),

	enum("pbs.on_conflict", func(c *Config) *string { return &c.PBS.OnConflict }, "fail", "warn"),
	enum("pbs.on_store_error", func(c *Config) *string { return &c.PBS.OnStoreError }, "allow", "fail"),
	str("pbs.state_dir", func(c *Config) *string { return &c.PBS.StateDir }, checkAbsPath),

	enum("health.action", func(c *Config) *string { return &c.Health.Action }, "none", "flag", "drain"),
	list("health.exempt_users", func(c *Config) *[]string { return &c.Health.ExemptUsers }, checkNotEmpty),
	str("health.scontrol", func(c *Config) *string { return &c.Health.Scontrol }, checkAbsPath),
	duration("health.scontrol_timeout", func(c *Config) *time.Duration { return &c.Health.ScontrolTimeout }),
	str("health.slurmd_spool_dir", func(c *Config) *string { return &c.Health.SlurmdSpoolDir }, checkAbsPathOrEmpty),
	str("health.prometheus_file", func(c *Config) *string { return &c.Health.PrometheusFile }, nil),
	duration("health.timeout", func(c *Config) *time.Duration { return &c.Health.Timeout }),

	percent("idle.utilization_below", func(c *Config) *int { return &c.Idle.UtilizationBelow }),
	duration("idle.manual_warn_after", func(c *Config) *time.Duration { return &c.Idle.ManualWarnAfter }),
	durationOrNever("idle.manual_release_after", func(c *Config) *time.Duration { return &c.Idle.ManualReleaseAfter }),
	duration("idle.run_warn_after", func(c *Config) *time.Duration { return &c.Idle.RunWarnAfter }),

	list("violations.actions", func(c *Config) *[]string { return &c.Violations.Actions }, checkViolationAction),
	graceTime("violations.notify_after", func(c *Config) *time.Duration { return &c.Violations.NotifyAfter }),
	graceTime("violations.exec_after", func(c *Config) *time.Duration { return &c.Violations.ExecAfter }),
	graceTime("violations.kill_after", func(c *Config) *time.Duration { return &c.Violations.KillAfter }),
	graceTime("violations.mark_after", func(c *Config) *time.Duration { return &c.Violations.MarkAfter }),
	duration("violations.renotify_every", func(c *Config) *time.Duration { return &c.Violations.RenotifyEvery }),
	duration("violations.kill_wait", func(c *Config) *time.Duration { return &c.Violations.KillWait }),
	count("violations.kills_per_hour", func(c *Config) *int { return &c.Violations.KillsPerHour }),
	list("violations.kill_exempt_users", func(c *Config) *[]string { return &c.Violations.KillExemptUsers }, checkNotEmpty),
	list("violations.kill_exempt_commands", func(c *Config) *[]string { return &c.Violations.KillExemptCommands }, checkAbsPath),
	str("violations.exec", func(c *Config) *string { return &c.Violations.Exec }, checkAbsPathOrEmpty),
	duration("violations.exec_timeout", func(c *Config) *time.Duration { return &c.Violations.ExecTimeout }),
	str("violations.utmp_file", func(c *Config) *string { return &c.Violations.UtmpFile }, checkAbsPath),
}

// lookupSetting finds a key by its dotted name.
func lookupSetting(name string) (setting, bool) {
	i := slices.IndexFunc(settings, func(s setting) bool { return s.name == name })
	if i < 0 {
		return setting{}, false
	}
	return settings[i], true
}

// define builds a setting from a parser per source and a check shared by all
// sources, so a value is judged the same way wherever it was written.
func define[T any](name string, field func(*Config) *T, fromTOML func(any) (T, error), fromText func(string) (T, error), check func(T) error) setting {
	set := func(c *Config, v T, err error) error {
		if err == nil && check != nil {
			err = check(v)
		}
		if err != nil {
			return err
		}
		*field(c) = v
		return nil
	}
	return setting{
		name: name,
		fromTOML: func(c *Config, raw any) error {
			v, err := fromTOML(raw)
			return set(c, v, err)
		},
		fromText: func(c *Config, s string) error {
			v, err := fromText(s)
			return set(c, v, err)
		},
	}
}

func str(name string, field func(*Config) *string, check func(string) error) setting {
	return define(name, field, tomlString, func(s string) (string, error) { return s, nil }, check)
}

func enum(name string, field func(*Config) *string, allowed ...string) setting {
	return str(name, field, func(s string) error {
		if !slices.Contains(allowed, s) {
			return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), s)
		}
		return nil
	})
}

// count is a whole number of at least 1 (a threshold or a limit: zero or
// less would disable the feature by accident).
func count[T int | int64](name string, field func(*Config) *T) setting {
	convert := func(n int64, shown string) (T, error) {
		// The round trip catches values an int cannot hold on 32-bit systems.
		if n < 1 || int64(T(n)) != n {
			return 0, fmt.Errorf("must be a positive integer, got %s", shown)
		}
		return T(n), nil
	}
	fromTOML := func(raw any) (T, error) {
		n, ok := raw.(int64)
		if !ok {
			return 0, fmt.Errorf("must be a positive integer, got %s", describe(raw))
		}
		return convert(n, describe(raw))
	}
	fromText := func(s string) (T, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("must be a positive integer, got %q", s)
		}
		return convert(n, s)
	}
	return define(name, field, fromTOML, fromText, nil)
}

// replicas is a number of Redis replicas: 0 (none) up to what one primary
// can have in practice.
func replicas(name string, field func(*Config) *int) setting {
	return wholeNumber(name, field, 0, 100, "must be a whole number of replicas from 0 to 100")
}

// wholeNumber is an integer from lo to hi; want says so in errors.
func wholeNumber(name string, field func(*Config) *int, lo, hi int64, want string) setting {
	check := func(n int64, shown string) (int, error) {
		if n < lo || n > hi {
			return 0, fmt.Errorf("%s, got %s", want, shown)
		}
		return int(n), nil
	}
	fromTOML := func(raw any) (int, error) {
		n, ok := raw.(int64)
		if !ok {
			return 0, fmt.Errorf("%s, got %s", want, describe(raw))
		}
		return check(n, describe(raw))
	}
	fromText := func(s string) (int, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s, got %q", want, s)
		}
		return check(n, s)
	}
	return define(name, field, fromTOML, fromText, nil)
}

func duration(name string, field func(*Config) *time.Duration) setting {
	fromTOML := func(raw any) (time.Duration, error) {
		s, ok := raw.(string)
		if !ok {
			return 0, fmt.Errorf("must be a duration string such as \"30m\", got %s", describe(raw))
		}
		return ParseDuration(s)
	}
	return define(name, field, fromTOML, ParseDuration, nil)
}

// durationOrNever is a duration where "0" means never (stored as 0): a
// limit a site may switch off, spelled so that it cannot be confused
// with an unset value.
func durationOrNever(name string, field func(*Config) *time.Duration) setting {
	parse := func(s string) (time.Duration, error) {
		if s == "0" {
			return 0, nil
		}
		d, err := ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%w; or \"0\" for never", err)
		}
		return d, nil
	}
	fromTOML := func(raw any) (time.Duration, error) {
		s, ok := raw.(string)
		if !ok {
			return 0, fmt.Errorf("must be a duration string such as \"2h\" or \"0\" for never, got %s", describe(raw))
		}
		return parse(s)
	}
	return define(name, field, fromTOML, parse, nil)
}

// percent is a whole percentage from 1 to 100 (0 would make every GPU
// busy and switch the feature off by accident).
func percent(name string, field func(*Config) *int) setting {
	return wholeNumber(name, field, 1, 100, "must be a whole percentage from 1 to 100")
}

// optionalDuration is a duration where "" means none (stored as 0).
func optionalDuration(name string, field func(*Config) *time.Duration) setting {
	parse := func(s string) (time.Duration, error) {
		if s == "" {
			return 0, nil
		}
		d, err := ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%w; or \"\" for none", err)
		}
		return d, nil
	}
	fromTOML := func(raw any) (time.Duration, error) {
		s, ok := raw.(string)
		if !ok {
			return 0, fmt.Errorf("must be a duration string such as \"30m\" or \"\", got %s", describe(raw))
		}
		return parse(s)
	}
	return define(name, field, fromTOML, parse, nil)
}

// list is an array of strings in TOML and comma-separated text elsewhere.
// An empty list is nil, so that "[]" and an unset key compare equal.
func list(name string, field func(*Config) *[]string, check func(string) error) setting {
	fromTOML := func(raw any) ([]string, error) {
		items, ok := raw.([]any)
		if !ok {
			return nil, fmt.Errorf("must be an array of strings, got %s", describe(raw))
		}
		var out []string
		for _, item := range items {
			s, ok := item.(string)
			if !ok {
				return nil, fmt.Errorf("must be an array of strings, got an element %s", describe(item))
			}
			out = append(out, s)
		}
		return out, nil
	}
	fromText := func(s string) ([]string, error) {
		var out []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		return out, nil
	}
	checkAll := func(items []string) error {
		for _, item := range items {
			if err := check(item); err != nil {
				return err
			}
		}
		return nil
	}
	return define(name, field, fromTOML, fromText, checkAll)
}

func tomlString(raw any) (string, error) {
	s, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("must be a string, got %s", describe(raw))
	}
	return s, nil
}

// describe shows a decoded TOML value in an error message.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case float64:
		return fmt.Sprintf("%v (a float)", v)
	case []any:
		return "an array"
	case []map[string]any:
		return "an array of tables"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprint(v)
	}
}

// checkNode keeps the node name usable inside the store's {node} hash tags
// and in one-line log and status output.
func checkNode(s string) error {
	if strings.ContainsAny(s, "{}") || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0 {
		return fmt.Errorf("must be a node name without spaces or braces, got %q", s)
	}
	return nil
}

func checkRedisURL(s string) error {
	const want = "must be a redis://host:port/db, rediss://host:port/db or unix:///path.sock URL"
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s, got %q", want, s)
	}
	// Redacted: a URL may carry a password, which must not reach logs.
	switch {
	case (u.Scheme == "redis" || u.Scheme == "rediss") && u.Host == "":
		return fmt.Errorf("%s, got %q (no host)", want, u.Redacted())
	case u.Scheme == "unix" && u.Path == "":
		return fmt.Errorf("%s, got %q (no socket path)", want, u.Redacted())
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		return fmt.Errorf("%s, got %q", want, u.Redacted())
	}
	return nil
}

func checkHostPort(s string) error {
	if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
		return fmt.Errorf("must be host:port, got %q", s)
	}
	return nil
}

// checkAbsPath: the scheduler programs run without PATH and from an unknown
// working directory, so their paths must be absolute.
func checkAbsPath(s string) error {
	if !filepath.IsAbs(s) {
		return fmt.Errorf("must be an absolute path, got %q", s)
	}
	return nil
}

// checkAbsPathOrEmpty: a file read by root programs from anywhere.
func checkAbsPathOrEmpty(s string) error {
	if s == "" {
		return nil
	}
	return checkAbsPath(s)
}

// checkACLUser keeps a Redis ACL user name to what ACL SETUSER accepts
// without quoting.
func checkACLUser(s string) error {
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return fmt.Errorf("must be a Redis ACL user name of printable ASCII without spaces, got %q", s)
	}
	return nil
}

func checkNotEmpty(s string) error {
	if s == "" {
		return errors.New("must not contain empty names")
	}
	return nil
}
