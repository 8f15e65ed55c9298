package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"

	"canhazgpu/internal/callerenv"
	"canhazgpu/internal/config"
)

// Identity is the account canhazgpu acts as: the uid of the process, never
// $USER, which anyone can set.
type Identity struct {
	Name   string
	UID    int
	Groups []string // names of the account's groups, for the admin group
}

// Root reports whether the account is the superuser.
func (id Identity) Root() bool { return id.UID == 0 }

// Env is everything a command touches outside its arguments. Commands get
// it explicitly, so tests run them in parallel with their own writers.
type Env struct {
	// Stdin is handed to the command of `run`; when it is a terminal, the
	// command also gets the terminal's foreground. nil: /dev/null.
	Stdin   *os.File
	Stdout  io.Writer
	Stderr  io.Writer
	Environ []string // CANHAZGPU_* settings, PATH: the environment canhazgpu itself obeys
	// CommandEnviron is what `run`'s command starts from, before
	// canhazgpu adds CUDA_VISIBLE_DEVICES and its like: the environment
	// the caller started canhazgpu with, including what secure-execution
	// mode took from Environ (LD_LIBRARY_PATH, TMPDIR, ...). nil: Environ.
	CommandEnviron []string
	// Home is the calling account's home directory, for the user config
	// file (~/.config/canhazgpu/config.toml); "" for none.
	Home string
	User Identity
	// CLICredential is the store credential of the CLI role, for a caller
	// that is not root; nil for root, whose programs use redis.password_file.
	CLICredential *Credential
	// SystemConfig is the system config file as read with the credential,
	// so that it is not read again; nil: read it when needed.
	SystemConfig *config.SystemConfig
	// SystemFile replaces config.SystemFile for in-process tests, which
	// also accept it owned by the account running them. OSEnv never sets
	// it: a user cannot choose the system file.
	SystemFile string
	// waitTimer starts the timer of `--wait`; nil: time.After. In-package
	// tests fire their own instead of waiting.
	waitTimer timerFunc
}

// OSEnv describes this process: its standard files and environment, and
// the account of its real uid with that account's home directory.
//
// For a caller that is not root it first reads the system config and the
// CLI role's store credential, which only the canhazgpu group can read
// (the installed binary is setgid canhazgpu), and then drops that group
// for good. Nothing before the drop looks at anything the caller
// controls: not the environment, the flags (Run parses them later), the
// user config file or the account database. Only after it does the
// program recover the caller's whole environment for the command `run`
// starts (callerenv).
func OSEnv() (*Env, error) {
	secure := callerenv.Secure()
	uid := os.Getuid()
	var sys *config.SystemConfig
	var cred *Credential
	if uid != 0 {
		sys, cred = readCLICredential(config.SystemFile)
	}
	if err := DropGroup(); err != nil {
		return nil, err
	}
	// The group is gone: from here on, the caller's input.
	command, err := callerenv.Environ(secure)
	if err != nil {
		return nil, err
	}
	id, home, err := lookupIdentity(uid)
	if err != nil {
		return nil, err
	}
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ(), CommandEnviron: command,
		Home: home, User: id, CLICredential: cred, SystemConfig: sys}, nil
}

// commandEnviron is the environment `run`'s command starts from.
func (e *Env) commandEnviron() []string {
	if e.CommandEnviron != nil {
		return e.CommandEnviron
	}
	return e.Environ
}

// lookupIdentity resolves a uid through the system's user database (NSS,
// so LDAP accounts work). A uid without an entry, as in some containers,
// is named "uid:N" like the GPU providers name process owners.
func lookupIdentity(uid int) (Identity, string, error) {
	id := Identity{Name: "uid:" + strconv.Itoa(uid), UID: uid}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		var unknown user.UnknownUserIdError
		if errors.As(err, &unknown) {
			return id, "", nil
		}
		return id, "", fmt.Errorf("look up the account of uid %d: %w", uid, err)
	}
	id.Name = u.Username
	gids, err := u.GroupIds()
	if err != nil {
		return id, u.HomeDir, fmt.Errorf("look up the groups of %s: %w", u.Username, err)
	}
	for _, gid := range gids {
		if g, err := user.LookupGroupId(gid); err == nil {
			id.Groups = append(id.Groups, g.Name)
		}
	}
	return id, u.HomeDir, nil
}

// uidOf finds the uid of an account named with --user; -1 when this
// machine does not know it (reservations keep the uid for information only).
func uidOf(name string) int {
	if u, err := user.Lookup(name); err == nil {
		if n, err := strconv.Atoi(u.Uid); err == nil {
			return n
		}
	}
	return -1
}

// inGroup reports whether the account belongs to group.
func (id Identity) inGroup(group string) bool {
	return group != "" && slices.Contains(id.Groups, group)
}
