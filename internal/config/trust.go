package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// checkOverrides refuses, for a caller that may not override site policy,
// every source but the system file for every key but the user keys. It is
// an error rather than silence so that a user learns at once why a setting
// they made has no effect.
func checkOverrides(opts Options, env map[string]string) error {
	if opts.MayOverride {
		return nil
	}
	rootOnly := func(where, what string) error {
		return fmt.Errorf("config: %s: only root may set %s; site settings come from %s", where, what, SystemFile)
	}
	if opts.ConfigFile != "" {
		return rootOnly("--config", "another config file")
	}
	if env["CANHAZGPU_CONFIG"] != "" {
		return rootOnly("CANHAZGPU_CONFIG", "another config file")
	}
	for _, s := range settings {
		if _, set := env[s.envVar()]; set && !s.user {
			return rootOnly(s.envVar(), s.name)
		}
	}
	for _, key := range sortedKeys(opts.Overrides) {
		s, known := lookupSetting(key)
		if known && !s.user {
			where := "override " + key
			if flag := flagFor(key); flag != "" {
				where = "--" + flag
			}
			return rootOnly(where, key)
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkSystemFile refuses a system config that someone other than root
// could have written, as sshd's StrictModes does: the file (after symbolic
// links) and every directory above it must be owned by root (or by owner,
// for a developer's tests) and not writable by group or others; a
// directory writable by all is accepted only with the sticky bit (/tmp),
// where nobody can replace another's entry. A missing file is not an error
// here: the caller decides whether it may be missing.
func checkSystemFile(path string, owner int) error {
	real, err := filepath.EvalSymlinks(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for p := real; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("config: %s: cannot read its owner", p)
		}
		what := "the system config file " + path
		if p != real {
			what = "the directory " + p + " of the system config file " + path
		}
		if st.Uid != 0 && int(st.Uid) != owner {
			return fmt.Errorf("config: refusing %s: it is owned by uid %d, not by root", what, st.Uid)
		}
		sticky := fi.IsDir() && fi.Mode()&fs.ModeSticky != 0
		if fi.Mode().Perm()&0o022 != 0 && !sticky {
			return fmt.Errorf("config: refusing %s: it is writable by group or others (mode %04o); chmod go-w", what, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
