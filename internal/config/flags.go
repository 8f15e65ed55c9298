package config

import "github.com/spf13/pflag"

// globalFlags are the config keys every command accepts as a flag. The
// back-quoted word names the value in --help (pflag.UnquoteUsage).
var globalFlags = []struct{ flag, key, usage string }{
	{"redis-url", "redis.url", "Redis store `URL`: redis://host:port/db, rediss://… (TLS) or unix:///path.sock"},
	{"node", "node", "this node's `name` in the store (default: short hostname)"},
	{"memory-threshold", "gpu.memory_threshold_mb", "GPU memory used, in `MB`, from which a GPU counts as in use"},
	{"gpu-provider", "gpu.provider", "GPU information `source`: auto (NVML), nvml, amdsmi or fake"},
	{"fake-file", "gpu.fake_file", "JSON `file` describing fake GPUs, for --gpu-provider=fake (format: /usr/share/doc/canhazgpu/fake-gpus.md)"},
}

// flagFor returns the flag that sets key, or "".
func flagFor(key string) string {
	for _, g := range globalFlags {
		if g.key == key {
			return g.flag
		}
	}
	return ""
}

// Flags holds the global flags registered by AddFlags.
type Flags struct {
	fs     *pflag.FlagSet
	config *string
	values map[string]*string // key -> flag value
}

// AddFlags registers --config and the global setting flags on fs. All are
// plain strings: Load parses them like the environment and the files, so one
// value is judged the same way from every source, and an error names the flag.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{
		fs:     fs,
		config: fs.String("config", "", "config `file` (root only; default $CANHAZGPU_CONFIG, else "+SystemFile+")"),
		values: make(map[string]*string, len(globalFlags)),
	}
	for _, g := range globalFlags {
		f.values[g.key] = fs.String(g.flag, "", g.usage)
	}
	return f
}

// Overrides returns key -> value text for the setting flags that were given
// (call after fs.Parse); it is Options.Overrides.
func (f *Flags) Overrides() map[string]string {
	m := make(map[string]string)
	for _, g := range globalFlags {
		if f.fs.Changed(g.flag) {
			m[g.key] = *f.values[g.key]
		}
	}
	return m
}

// ConfigFile returns the --config value ("" when not given); it is
// Options.ConfigFile.
func (f *Flags) ConfigFile() string { return *f.config }
