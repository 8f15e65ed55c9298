package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strconv"
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
	Environ []string // CANHAZGPU_* settings, and the environment of `run`'s command
	// Home is the calling account's home directory, for the user config
	// file (~/.config/canhazgpu/config.toml); "" for none.
	Home string
	User Identity
	// CLICredential is the store credential of the CLI role, for a caller
	// that is not root; nil for root, whose programs use redis.password_file.
	CLICredential *Credential
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
// For a caller that is not root it first reads the CLI role's store
// credential, which only the canhazgpu group can read (the installed
// binary is setgid canhazgpu), and then drops that group for good, before
// anything the caller controls is looked at: the environment, the flags,
// the user config file, the command `run` starts.
func OSEnv() (*Env, error) {
	uid := os.Getuid()
	var cred *Credential
	if uid != 0 {
		cred = readCLICredential()
	}
	if err := DropGroup(); err != nil {
		return nil, err
	}
	id, home, err := lookupIdentity(uid)
	if err != nil {
		return nil, err
	}
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ(), Home: home, User: id,
		CLICredential: cred}, nil
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
