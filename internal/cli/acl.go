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
	"syscall"

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
// the admin and CLI roles, else <dir>/<role>.password in the default
// secrets directory dir.
func secretFile(cfg *config.Config, dir string, role store.Role) string {
	switch {
	case role == store.RoleAdmin && cfg.Redis.PasswordFile != "":
		return cfg.Redis.PasswordFile
	case role == store.RoleCLI && cfg.Redis.CLIPasswordFile != "":
		return cfg.Redis.CLIPasswordFile
	}
	return filepath.Join(dir, string(role)+".password")
}

// writeACL creates each role's password file when it is missing, with its
// owner and mode (the CLI's readable by the canhazgpu group only, the
// others by root only), and prints the Redis ACL file lines of the roles
// with the passwords as SHA-256 hashes. dir is the default secrets
// directory (SecretsDir), the only directory it may create.
func writeACL(w io.Writer, cfg *config.Config, dir string) error {
	grp, err := user.LookupGroup(cliGroup)
	if err != nil {
		return fmt.Errorf("canhazgpu admin --acl: the group %q, which alone may read the CLI's password, does not exist "+
			"(the package creates it: groupadd --system %s): %w", cliGroup, cliGroup, err)
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return fmt.Errorf("canhazgpu admin --acl: group %s: %w", cliGroup, err)
	}
	type secret struct {
		path      string
		group     int
		mode      fs.FileMode
		password  string // "" until made
		createDir bool
	}
	// First every check, so that a refusal changes nothing.
	var secrets []*secret
	for _, role := range store.Roles {
		sec := &secret{path: secretFile(cfg, dir, role), mode: 0o600}
		if role == store.RoleCLI {
			sec.group, sec.mode = gid, 0o640
		}
		sec.createDir, err = checkSecretsDir(filepath.Dir(sec.path), dir, gid, role == store.RoleCLI)
		if err == nil {
			sec.password, err = readSecret(sec.path)
		}
		if err != nil {
			return fmt.Errorf("canhazgpu admin --acl: %w", err)
		}
		secrets = append(secrets, sec)
	}
	var lines strings.Builder
	for i, role := range store.Roles {
		sec := secrets[i]
		if sec.createDir {
			if err := makeSecretsDir(sec.path, gid); err != nil {
				return fmt.Errorf("canhazgpu admin --acl: %w", err)
			}
		}
		password, err := ensureSecret(sec.path, sec.password, sec.group, sec.mode)
		if err != nil {
			return fmt.Errorf("canhazgpu admin --acl: %w", err)
		}
		rules, err := store.ACLRules(role)
		if err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(password))
		fmt.Fprintf(&lines, "user %s on resetpass #%s %s\n", aclUser(role), hex.EncodeToString(sum[:]), rules)
	}
	_, err = io.WriteString(w, lines.String())
	return err
}

// checkSecretsDir checks the directory of a password file; create says it
// is the missing default directory, which makeSecretsDir makes. Only the
// default directory is ever created. A directory that exists, or one a
// setting named, is the site's: it is checked, never changed, as a chown
// or chmod there could open or break what else the site keeps in it. It
// must be root's and writable by nobody else, or someone else could swap
// the file; the CLI's must also be searchable by the canhazgpu group, or
// the setgid CLI cannot reach its password.
func checkSecretsDir(path, defaultDir string, gid int, groupSearch bool) (create bool, err error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && path == defaultDir:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("the directory %s of a password file does not exist; create it owned by root, group %s, mode 0750", path, cliGroup)
	case err != nil:
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case !fi.IsDir():
		return false, fmt.Errorf("refusing %s for password files: it is not a directory", path)
	case !ok || st.Uid != 0:
		return false, fmt.Errorf("refusing the directory %s for password files: it is not owned by root", path)
	case perm&0o022 != 0:
		return false, fmt.Errorf("refusing the directory %s for password files: it is writable by group or others (mode %04o); want mode 0750", path, perm)
	case groupSearch && perm&0o001 == 0 && (perm&0o010 == 0 || int(st.Gid) != gid):
		return false, fmt.Errorf("refusing the directory %s for the CLI's password file: the group %s cannot search it (mode %04o, gid %d); want group %s, mode 0750",
			path, cliGroup, perm, st.Gid, cliGroup)
	}
	return false, nil
}

// makeSecretsDir creates the default secrets directory of the password
// file path, unless a role before made it: root's, group canhazgpu, 0750.
func makeSecretsDir(path string, gid int) error {
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); errors.Is(err, fs.ErrExist) {
		return nil
	} else if err != nil {
		return err
	}
	return errors.Join(os.Chown(dir, 0, gid), os.Chmod(dir, 0o750))
}

// readSecret is the password in an existing file, "" when there is none.
// A file without a password is refused: its hash would let anyone in with
// an empty one.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("refusing the password file %s: it holds no password; delete it to have one made, or write the password into it", path)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// ensureSecret returns password, first writing a new random one to path
// when it is "" (the file is missing). An existing file gets the owner
// group and mode it must have; a new one is written with them from the
// start, so it is never readable by anyone else, not even for a moment.
func ensureSecret(path, password string, group int, mode fs.FileMode) (string, error) {
	if password == "" {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		password = hex.EncodeToString(raw)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", err
		}
		_, werr := f.Write([]byte(password + "\n"))
		if err := errors.Join(werr, f.Close()); err != nil {
			return "", err
		}
	}
	if err := os.Chown(path, 0, group); err != nil {
		return "", err
	}
	if err := os.Chmod(path, mode); err != nil {
		return "", err
	}
	return password, nil
}
