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

// readCLICredential reads the system config alone (nothing the caller can
// name or set) and the CLI role's password file it names.
func readCLICredential() *Credential {
	cfg, err := config.Load(config.Options{})
	if err != nil {
		return &Credential{Err: err}
	}
	c := &Credential{Username: cfg.Redis.CLIUsername}
	if cfg.Redis.CLIPasswordFile == "" {
		return c
	}
	b, err := os.ReadFile(cfg.Redis.CLIPasswordFile)
	if err != nil {
		c.Err = fmt.Errorf("read the store credential of the CLI (redis.cli_password_file): %w; "+
			"canhazgpu must be installed setgid to the group that may read it (docs/security.md)", err)
		return c
	}
	c.Password = strings.TrimRight(string(b), "\r\n")
	return c
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
