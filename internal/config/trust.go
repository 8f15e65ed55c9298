package config

import (
	"errors"
	"fmt"
	"io"
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

// SystemConfig is a system config file read and checked once: the CLI
// reads it before it gives up its group, for the CLI role's credential,
// and Load applies the same entries afterwards (Options.System) rather
// than reading the file again.
type SystemConfig struct {
	path    string
	found   bool    // false: the default file is missing, all defaults
	entries []entry // parsed, in file order
}

// ReadSystemConfig reads the system config file path, which may be
// missing, after the checks of checkedOpen; owner is as Options.FileOwner.
func ReadSystemConfig(path string, owner int) (*SystemConfig, error) {
	return readSystemConfig(path, "", owner)
}

// Redis is the store settings the file gives, over the defaults: all the
// CLI needs to read its credential.
func (s *SystemConfig) Redis() (RedisConfig, error) {
	l := loader{cfg: defaults(), origin: map[string]string{}}
	if err := l.applySystem(s); err != nil {
		return RedisConfig{}, err
	}
	return l.cfg.Redis, nil
}

// readSystemConfig reads and parses the system file. named is what named
// it ("--config", "CANHAZGPU_CONFIG"; "" for the default, which may be
// missing).
func readSystemConfig(path, named string, owner int) (*SystemConfig, error) {
	f, err := checkedOpen(path, owner)
	switch {
	case errors.Is(err, fs.ErrNotExist) && named == "":
		return &SystemConfig{path: path}, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("config: file named by %s: %w", named, err)
	case err != nil:
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	entries, err := readEntries(path, string(data))
	if err != nil {
		return nil, err
	}
	return &SystemConfig{path: path, found: true, entries: entries}, nil
}

// checkedOpen opens the system config file, refusing it when someone
// other than root could have written it, as sshd's StrictModes does: the
// file and every directory above it, both on the path as given and on the
// path its symbolic links lead to, must be owned by root (or by owner, for
// a developer's tests) and not writable by group or others; a directory
// writable by all is accepted only with the sticky bit (/tmp), where
// nobody can replace another's entry. A missing file is fs.ErrNotExist.
//
// The file is opened once, following links, and its owner and mode are
// those of the open descriptor (fstat), so what is read is what was
// checked: replacing the file after the check changes nothing. O_NOFOLLOW
// is not used, as a site may link its config from elsewhere; the links are
// safe because the directories that hold them, and those of the target,
// are checked to be writable by root alone, so no one else could have
// made or changed them.
func checkedOpen(path string, owner int) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkOwnerMode(fi, path, "the system config file "+path, owner)
	}
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("config: refusing the system config file %s: it is not a regular file", path)
	}
	if err == nil {
		err = checkDirs(path, owner)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkDirs checks every directory above path and above the path its
// links lead to.
func checkDirs(path string, owner int) error {
	given, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	real, err := filepath.EvalSymlinks(given)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for _, start := range []string{given, real} {
		for p := filepath.Dir(start); ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("config: %w", err)
			}
			if err := checkOwnerMode(fi, p, "the directory "+p+" of the system config file "+path, owner); err != nil {
				return err
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	return nil
}

// checkOwnerMode refuses what is not owned by root (or owner) or is
// writable by group or others, unless it is a sticky directory.
func checkOwnerMode(fi fs.FileInfo, p, what string, owner int) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("config: %s: cannot read its owner", p)
	}
	if st.Uid != 0 && int(st.Uid) != owner {
		return fmt.Errorf("config: refusing %s: it is owned by uid %d, not by root", what, st.Uid)
	}
	sticky := fi.IsDir() && fi.Mode()&fs.ModeSticky != 0
	if fi.Mode().Perm()&0o022 != 0 && !sticky {
		return fmt.Errorf("config: refusing %s: it is writable by group or others (mode %04o); chmod go-w", what, fi.Mode().Perm())
	}
	return nil
}
