package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"canhazgpu/internal/config"
)

// Credential is the CLI role's store credential. Err is kept rather than
// returned, so that commands which never reach the store (help, version)
// still work, and those which do report it.
type Credential struct {
	Username string
	Password string
	Err      error
}

// readCLICredential reads the system config file and the CLI role's
// password file it names, and nothing else: no path, variable or file the
// caller can name or set. It runs while the process still holds the
// group that may read the password; the system file it returns (nil when
// it could not be read) is what the caller's settings are later layered
// on, so that file is read only once.
func readCLICredential(path string) (*config.SystemConfig, *Credential) {
	sys, err := config.ReadSystemConfig(path, 0)
	if err != nil {
		return nil, &Credential{Err: err}
	}
	redis, err := sys.Redis()
	if err != nil {
		return sys, &Credential{Err: err}
	}
	c := &Credential{Username: redis.CLIUsername}
	if redis.CLIPasswordFile == "" {
		return sys, c
	}
	b, err := os.ReadFile(redis.CLIPasswordFile)
	if err != nil {
		c.Err = fmt.Errorf("read the store credential of the CLI (redis.cli_password_file): %w; "+
			"canhazgpu must be installed setgid to the group that may read it (docs/security.md)", err)
		return sys, c
	}
	c.Password = strings.TrimRight(string(b), "\r\n")
	return sys, c
}

// DropGroup gives up the effective group the binary was installed setgid
// to, real, effective and saved alike, so that nothing later (and no
// command `run` starts) can read the credential again. Changing the
// effective group also leaves the process non-dumpable, so the caller
// cannot read the password from its memory either.
func DropGroup() error {
	gid := os.Getgid()
	if os.Getegid() == gid {
		return nil
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("drop the group canhazgpu runs with: %w", err)
	}
	if os.Getegid() != gid {
		return errors.New("drop the group canhazgpu runs with: the effective group is unchanged")
	}
	return nil
}

// useCLICredential points a non-root caller's settings at the CLI role.
// With no CLI role configured, the caller connects as root's programs do,
// with whatever of that credential its own rights can read.
func useCLICredential(cfg *config.Config, cred *Credential) error {
	if cred == nil {
		return nil
	}
	if cred.Err != nil {
		return cred.Err
	}
	if cfg.Redis.CLIUsername == "" && cfg.Redis.CLIPasswordFile == "" {
		return nil
	}
	cfg.Redis.Username, cfg.Redis.PasswordFile, cfg.Redis.Password = cred.Username, "", cred.Password
	return nil
}
