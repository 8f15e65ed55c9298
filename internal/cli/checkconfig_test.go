package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/slurm"
)

func TestAdminCheckConfigReportsWhatTheHooksWouldRefuse(t *testing.T) {
	f := newFixture(t, idleGPUs(1))

	r := f.run(root, "admin", "--check-config")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "config OK: "+f.cfgFile+" loads as the scheduler programs and the health check read it (node "+f.node+").\n", r.stdout)
	// Anyone may check: it only reads the file.
	r = f.run(alice, "admin", "--check-config", f.cfgFile)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "config OK: "+f.cfgFile)

	// The typo of the issue: the message is the Prolog's, file and line.
	typo := filepath.Join(filepath.Dir(f.cfgFile), "typo.toml")
	require.NoError(t, os.WriteFile(typo, []byte("[slurm]\non_conflict = \"fail\"\non_store_eror = \"fail\"\n"), 0o644))
	r = f.run(root, "admin", "--check-config", typo)
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	_, hookErr := slurm.LoadConfig([]string{"CANHAZGPU_CONFIG=" + typo})
	require.Error(t, hookErr)
	require.Contains(t, hookErr.Error(), typo+":3: slurm.on_store_eror: unknown key (known in [slurm]: ")
	require.Equal(t, "Error: "+hookErr.Error()+"\n", r.stderr)

	// The shell's CANHAZGPU_* variables are not the scheduler's: a bad one
	// here says nothing about the file.
	f.environ = append(f.environ, "CANHAZGPU_SLURM_ON_CONFLICT=maybe")
	r = f.run(root, "admin", "--check-config")
	require.Equal(t, 0, r.code, r.stderr)

	// A file others could have written is refused, as the hooks refuse it.
	require.NoError(t, os.Chmod(typo, 0o666))
	r = f.run(root, "admin", "--check-config", typo)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: config: refusing the system config file "+typo+": it is writable by group or others (mode 0666); chmod go-w\n", r.stderr)

	missing := filepath.Join(filepath.Dir(f.cfgFile), "missing.toml")
	r = f.run(root, "admin", "--check-config", missing)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, missing)
}

func TestAdminCheckConfigGoesAlone(t *testing.T) {
	f := newFixture(t, idleGPUs(1))
	r := f.run(root, "admin", "--check-config", "--register")
	require.Equal(t, 2, r.code)
	require.Equal(t, "Error: --check-config goes alone: want canhazgpu admin --check-config [FILE]\n", r.stderr)
	r = f.run(root, "admin", "--check-config", "a.toml", "b.toml")
	require.Equal(t, 2, r.code)
	require.Equal(t, "Error: unexpected argument \"b.toml\": canhazgpu admin --check-config takes at most one FILE\n", r.stderr)
	r = f.run(root, "admin", "--register", "extra")
	require.Equal(t, 2, r.code, "other admin actions still take no arguments")
}
