package cli

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/config"
)

// aclFixture is a place for admin --acl's files. The test needs root and
// the canhazgpu group, as admin --acl does.
func aclFixture(t *testing.T) (base string, gid int) {
	t.Helper()
	require.Equal(t, 0, os.Getuid(), "admin --acl sets owners: run the tests as root")
	grp, err := user.LookupGroup(cliGroup)
	require.NoError(t, err, "the group %s must exist (groupadd --system %s)", cliGroup, cliGroup)
	_, err = fmt.Sscan(grp.Gid, &gid)
	require.NoError(t, err)
	return t.TempDir(), gid
}

// ownerMode is "uid:gid mode" of path.
func ownerMode(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d %04o", st.Uid, st.Gid, fi.Mode().Perm())
}

func TestACLMakesTheDefaultDirectoryAndPasswords(t *testing.T) {
	base, gid := aclFixture(t)
	dir := filepath.Join(base, "secrets")
	var out bytes.Buffer
	require.NoError(t, writeACL(&out, &config.Config{}, dir))
	require.Equal(t, fmt.Sprintf("0:%d 0750", gid), ownerMode(t, dir))
	require.Equal(t, "0:0 0600", ownerMode(t, filepath.Join(dir, "admin.password")))
	require.Equal(t, fmt.Sprintf("0:%d 0640", gid), ownerMode(t, filepath.Join(dir, "cli.password")))
	require.Equal(t, "0:0 0600", ownerMode(t, filepath.Join(dir, "monitor.password")))
	require.Equal(t, 3, strings.Count(out.String(), "\n"), out.String())

	// Run again, the passwords are kept: the same lines.
	var again bytes.Buffer
	require.NoError(t, writeACL(&again, &config.Config{}, dir))
	require.Equal(t, out.String(), again.String())
}

// TestACLRefusesAPasswordFileWithoutAPassword: the hash of "" would let
// anyone log in as the role with an empty password.
func TestACLRefusesAPasswordFileWithoutAPassword(t *testing.T) {
	for _, content := range []string{"", " \n\t\n"} {
		base, gid := aclFixture(t)
		dir := filepath.Join(base, "secrets")
		require.NoError(t, os.Mkdir(dir, 0o750))
		require.NoError(t, os.Chown(dir, 0, gid))
		cli := filepath.Join(dir, "cli.password")
		require.NoError(t, os.WriteFile(cli, []byte(content), 0o640))
		var out bytes.Buffer
		err := writeACL(&out, &config.Config{}, dir)
		require.EqualError(t, err, "canhazgpu admin --acl: refusing the password file "+cli+
			": it holds no password; delete it to have one made, or write the password into it")
		require.Empty(t, out.String())
		_, err = os.Stat(filepath.Join(dir, "admin.password"))
		require.ErrorIs(t, err, fs.ErrNotExist, "a refusal makes no other password")
	}
}

// TestACLNeverChangesAnExistingDirectory: an existing or configured
// directory is checked, and a bad one refused with its mode untouched.
func TestACLNeverChangesAnExistingDirectory(t *testing.T) {
	base, gid := aclFixture(t)
	mkdir := func(name string, uid, gid int, mode fs.FileMode) string {
		p := filepath.Join(base, name)
		require.NoError(t, os.Mkdir(p, 0o700))
		require.NoError(t, os.Chown(p, uid, gid))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	cases := []struct {
		name string
		dir  string
		want string // "" for accepted
	}{
		{"others may search", mkdir("open", 0, 0, 0o711), ""},
		{"the group may search", mkdir("group", 0, gid, 0o710), ""},
		{"group-writable", mkdir("gw", 0, gid, 0o770), "it is writable by group or others (mode 0770); want mode 0750"},
		{"world-writable", mkdir("ww", 0, 0, 0o757), "it is writable by group or others (mode 0757); want mode 0750"},
		{"a user's", mkdir("users", 4242, gid, 0o750), "it is not owned by root"},
		{"not searchable by the group", mkdir("closed", 0, 0, 0o750), "the group canhazgpu cannot search it (mode 0750, gid 0)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ownerMode(t, c.dir)
			cfg := &config.Config{}
			cfg.Redis.CLIPasswordFile = filepath.Join(c.dir, "cli.password")
			var out bytes.Buffer
			err := writeACL(&out, cfg, filepath.Join(base, "secrets-"+filepath.Base(c.dir)))
			if c.want == "" {
				require.NoError(t, err)
				require.Equal(t, fmt.Sprintf("0:%d 0640", gid), ownerMode(t, cfg.Redis.CLIPasswordFile))
			} else {
				require.ErrorContains(t, err, "canhazgpu admin --acl: refusing the directory "+c.dir+" for")
				require.ErrorContains(t, err, c.want)
				require.NotContains(t, err.Error(), "\n")
				require.NoFileExists(t, cfg.Redis.CLIPasswordFile)
			}
			require.Equal(t, before, ownerMode(t, c.dir), "the directory is never changed")
		})
	}

	// A configured directory that does not exist is not made.
	cfg := &config.Config{}
	cfg.Redis.PasswordFile = filepath.Join(base, "missing", "admin.password")
	err := writeACL(&bytes.Buffer{}, cfg, filepath.Join(base, "secrets"))
	require.EqualError(t, err, "canhazgpu admin --acl: the directory "+filepath.Join(base, "missing")+
		" of a password file does not exist; create it owned by root, group canhazgpu, mode 0750")
	require.NoDirExists(t, filepath.Join(base, "missing"))
}
