package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/config"
)

// TestTheCredentialComesFromTheSystemFileAlone: readCLICredential runs
// while the process holds the group; nothing the caller sets reaches it,
// and the file it read is the one the caller's settings are layered on.
func TestTheCredentialComesFromTheSystemFileAlone(t *testing.T) {
	require.Equal(t, 0, os.Getuid(), "the system file must be root's: run the tests as root")
	dir := t.TempDir()
	password := filepath.Join(dir, "cli.password")
	require.NoError(t, os.WriteFile(password, []byte("s3cret\n"), 0o640))
	decoy := filepath.Join(dir, "decoy.password")
	require.NoError(t, os.WriteFile(decoy, []byte("decoy\n"), 0o644))
	system := filepath.Join(dir, "config.toml")
	require.NoError(t, os.WriteFile(system, []byte("node = \"n1\"\n[redis]\ncli_username = \"canhazgpu-cli\"\ncli_password_file = \""+password+"\"\n"), 0o644))
	mine := filepath.Join(dir, "mine.toml")
	require.NoError(t, os.WriteFile(mine, []byte("[redis]\ncli_password_file = \""+decoy+"\"\n"), 0o644))
	t.Setenv("CANHAZGPU_CONFIG", mine)
	t.Setenv("CANHAZGPU_REDIS_CLI_PASSWORD_FILE", decoy)
	t.Setenv("CANHAZGPU_REDIS_CLI_USERNAME", "someone")

	sys, cred := readCLICredential(system)
	require.NoError(t, cred.Err)
	require.Equal(t, Credential{Username: "canhazgpu-cli", Password: "s3cret"}, *cred)

	cfg, err := config.Load(config.Options{SystemConfig: sys, DefaultFile: system, Env: []string{"CANHAZGPU_RUN_TIMEOUT=1h"}})
	require.NoError(t, err)
	require.Equal(t, "n1", cfg.Node)
	require.Equal(t, password, cfg.Redis.CLIPasswordFile)
}
