package cli

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
)

// SecretsDir holds the store credentials of the three roles, one password
// file each (docs/security.md).
const SecretsDir = "/etc/canhazgpu/secrets"

// cliGroup alone may read the CLI role's password; the installed
// canhazgpu is setgid to it.
const cliGroup = "canhazgpu"

// aclUser is the Redis ACL user of a role.
func aclUser(role store.Role) string { return "canhazgpu-" + string(role) }

// secretFile is where a role's password is kept: the configured file for
// the admin and CLI roles, else SecretsDir/<role>.password.
func secretFile(cfg *config.Config, role store.Role) string {
	switch {
	case role == store.RoleAdmin && cfg.Redis.PasswordFile != "":
		return cfg.Redis.PasswordFile
	case role == store.RoleCLI && cfg.Redis.CLIPasswordFile != "":
		return cfg.Redis.CLIPasswordFile
	}
	return filepath.Join(SecretsDir, string(role)+".password")
}

// writeACL creates each role's password file when it is missing, with its
// owner and mode (the CLI's readable by the canhazgpu group only, the
// others by root only), and prints the Redis ACL file lines of the roles
// with the passwords as SHA-256 hashes.
func writeACL(w io.Writer, cfg *config.Config) error {
	grp, err := user.LookupGroup(cliGroup)
	if err != nil {
		return fmt.Errorf("canhazgpu admin --acl: the group %q, which alone may read the CLI's password, does not exist "+
			"(the package creates it: groupadd --system %s): %w", cliGroup, cliGroup, err)
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return fmt.Errorf("canhazgpu admin --acl: group %s: %w", cliGroup, err)
	}
	// The CLI's password's directory must be searchable by the group.
	cliDir := filepath.Dir(secretFile(cfg, store.RoleCLI))
	if err := os.MkdirAll(cliDir, 0o750); err != nil {
		return fmt.Errorf("canhazgpu admin --acl: %w", err)
	}
	if err := errors.Join(os.Chown(cliDir, 0, gid), os.Chmod(cliDir, 0o750)); err != nil {
		return fmt.Errorf("canhazgpu admin --acl: %w", err)
	}
	for _, role := range store.Roles {
		owner, mode := 0, fs.FileMode(0o600)
		if role == store.RoleCLI {
			owner, mode = gid, 0o640
		}
		path := secretFile(cfg, role)
		password, err := ensureSecret(path, owner, mode)
		if err != nil {
			return fmt.Errorf("canhazgpu admin --acl: %w", err)
		}
		rules, err := store.ACLRules(role)
		if err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(password))
		if _, err := fmt.Fprintf(w, "user %s on resetpass #%s %s\n", aclUser(role), hex.EncodeToString(sum[:]), rules); err != nil {
			return err
		}
	}
	return nil
}

// ensureSecret returns the password in path, first writing a new random
// one when the file is missing. An existing file gets the owner group and
// mode it must have; a new one is written with them from the start, so it
// is never readable by anyone else, not even for a moment.
func ensureSecret(path string, group int, mode fs.FileMode) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		b = []byte(hex.EncodeToString(raw))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", err
		}
		_, werr := f.Write(append(b, '\n'))
		if err := errors.Join(werr, f.Close()); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	if err := os.Chown(path, 0, group); err != nil {
		return "", err
	}
	if err := os.Chmod(path, mode); err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
