// Package packaging holds the tests of the .deb and .rpm: TestMain builds
// both with package.sh; the tests read their contents, run lintian, and
// install the .deb on this machine (as root), run the installed programs
// against a private Redis, and remove and purge it again. TestAdminFirstDay
// (firstday_test.go) follows docs/install.md on a real slurmd.
package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/testreq"
)

// What TestMain stamps into the build, and the package version package.sh
// must derive from it.
const (
	testVersion    = "v9.8.7-3-gabc1234"
	testCommit     = "abc1234"
	testDate       = "2025-01-02T03:04:05Z"
	testPkgVersion = "9.8.7+3.gabc1234"
)

// The packages TestMain built.
var debFile, rpmFile string

// Debian packages the tests use beyond dpkg. As root, TestMain installs
// them when missing; toolErr keeps why that failed.
var (
	tools   = []string{"rpm", "lintian"}
	toolErr error
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	installTools()
	dist, err := os.MkdirTemp("", "canhazgpu-dist-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dist)
	cmd := exec.Command("./package.sh")
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION="+testVersion, "COMMIT="+testCommit, "DATE="+testDate)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "package.sh: %v\n%s", err, out)
		return 1
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dist, "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		fmt.Fprintf(os.Stderr, "package.sh made %q and %q: want one .deb and one .rpm\n", debs, rpms)
		return 1
	}
	debFile, rpmFile = debs[0], rpms[0]
	if _, err := exec.LookPath("dpkg-deb"); err == nil {
		if err := readDeb(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// needDeb skips where the .deb could not be read.
func needDeb(t *testing.T) {
	t.Helper()
	testreq.Need(t, testreq.DpkgDeb)
	require.NotNil(t, debEntries, "TestMain read the .deb")
}

func installTools() {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 || os.Geteuid() != 0 {
		return
	}
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(missing, " "), err, out)
		}
		return nil
	}
	if install() == nil {
		return
	}
	// Stale or missing package lists: refresh them once.
	if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
		toolErr = fmt.Errorf("apt-get update: %w: %s", err, out)
		return
	}
	toolErr = install()
}

// needTool stops the test when tool is missing: as root TestMain tried to
// install it, so that is a failure; otherwise testreq says what to install.
func needTool(t *testing.T, tool testreq.Dep) {
	t.Helper()
	if os.Geteuid() != 0 {
		testreq.Need(t, tool)
		return
	}
	if _, err := exec.LookPath(tool.Name); err != nil {
		t.Fatalf("%s is not installed: %v", tool.Name, toolErr)
	}
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	require.NoError(t, err, "%s %s", name, strings.Join(args, " "))
	return string(out)
}

// entry is one path of a package: "dir", "file" or "link", and its mode.
type entry struct {
	kind string
	mode fs.FileMode
}

// debEntries and debFiles hold the .deb's data archive, read once by TestMain.
var (
	debEntries map[string]entry
	debFiles   map[string][]byte
)

func readDeb() error {
	tarball, err := exec.Command("dpkg-deb", "--fsys-tarfile", debFile).Output()
	if err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile: %w", err)
	}
	debEntries, debFiles = map[string]entry{}, map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("the .deb's data: %w", err)
		}
		p := "/" + strings.Trim(strings.TrimPrefix(h.Name, "./"), "/")
		if p == "/" {
			continue
		}
		kind := map[byte]string{tar.TypeDir: "dir", tar.TypeReg: "file", tar.TypeSymlink: "link"}[h.Typeflag]
		if kind == "" {
			return fmt.Errorf("the .deb's %s: unexpected tar entry type %q", p, h.Typeflag)
		}
		debEntries[p] = entry{kind, fs.FileMode(h.Mode) & fs.ModePerm}
		if kind == "file" {
			if debFiles[p], err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("the .deb's %s: %w", p, err)
			}
		}
	}
}

func rpmEntries(t *testing.T) map[string]entry {
	t.Helper()
	needTool(t, testreq.RPM)
	entries := map[string]entry{}
	for line := range strings.Lines(output(t, "rpm", "-qp", "--qf", "[%{FILEMODES:octal} %{FILENAMES}\n]", rpmFile)) {
		mode, path, ok := strings.Cut(strings.TrimSpace(line), " ")
		require.True(t, ok, "rpm listing line %q", line)
		m, err := strconv.ParseUint(mode, 8, 32)
		require.NoError(t, err, "rpm listing line %q", line)
		kind := map[uint64]string{0o040000: "dir", 0o100000: "file", 0o120000: "link"}[m&0o170000]
		require.NotEmpty(t, kind, "%s: unexpected rpm file mode %o", path, m)
		entries[path] = entry{kind, fs.FileMode(m) & fs.ModePerm}
	}
	return entries
}

// content is a file of the .deb.
func content(t *testing.T, path string) []byte {
	t.Helper()
	b, ok := debFiles[path]
	require.True(t, ok, "%s is not a file of the .deb", path)
	return b
}

func nonDirs(entries map[string]entry) map[string]entry {
	out := map[string]entry{}
	for p, e := range entries {
		if e.kind != "dir" {
			out[p] = e
		}
	}
	return out
}

func readRepo(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	require.NoError(t, err)
	return b
}

func TestMetadata(t *testing.T) {
	needDeb(t)
	fields := output(t, "dpkg-deb", "-f", debFile, "Package", "Version", "Depends", "Recommends", "Suggests")
	require.Equal(t, "Package: canhazgpu\nVersion: "+testPkgVersion+"\nDepends: libc6, passwd\nRecommends: redis-server, bash-completion\nSuggests: python3\n", fields)

	needTool(t, testreq.RPM)
	require.Equal(t, "canhazgpu "+testPkgVersion+"\n", output(t, "rpm", "-qp", "--qf", "%{NAME} %{VERSION}\n", rpmFile))
	var requires []string
	for line := range strings.Lines(output(t, "rpm", "-qpR", rpmFile)) {
		if !strings.HasPrefix(line, "rpmlib(") { // rpm's own format features
			requires = append(requires, strings.TrimSpace(line))
		}
	}
	require.Equal(t, []string{"glibc", "shadow-utils"}, requires, "no dependency on a GPU driver; groupadd for the canhazgpu group")
	require.Equal(t, "redis\nbash-completion\n", output(t, "rpm", "-qp", "--recommends", rpmFile))
	require.Equal(t, "python3\n", output(t, "rpm", "-qp", "--suggests", rpmFile))
}

// TestFiles checks where everything lands in the .deb, and that the .rpm
// has the same files with the same modes.
func TestFiles(t *testing.T) {
	needDeb(t)
	deb := debEntries
	for _, want := range []struct {
		path string
		mode fs.FileMode
	}{
		{"/usr/bin/canhazgpu", 0o755},
		{"/usr/bin/canhazgpu-healthcheck", 0o755},
		{"/usr/libexec/canhazgpu/canhazgpu-prolog", 0o755},
		{"/usr/libexec/canhazgpu/canhazgpu-epilog", 0o755},
		{"/etc/canhazgpu/config.toml", 0o644},
		{"/usr/lib/tmpfiles.d/canhazgpu.conf", 0o644},
		{"/usr/share/man/man1/canhazgpu.1.gz", 0o644},
		{"/usr/share/man/man8/canhazgpu-healthcheck.8.gz", 0o644},
		{"/usr/share/man/man8/canhazgpu-prolog.8.gz", 0o644},
		{"/usr/share/man/man8/canhazgpu-epilog.8.gz", 0o644},
		{"/usr/share/doc/canhazgpu/copyright", 0o644},
		{"/usr/share/doc/canhazgpu/changelog.gz", 0o644},
		{"/usr/share/doc/canhazgpu/install.md", 0o644},
		{"/usr/share/bash-completion/completions/canhazgpu", 0o644},
		{"/usr/share/zsh/vendor-completions/_canhazgpu", 0o644},
	} {
		require.Equal(t, entry{"file", want.mode}, deb[want.path], want.path)
	}
	require.Equal(t, readRepo(t, "internal/config/example.toml"), content(t, "/etc/canhazgpu/config.toml"))
	require.Equal(t, readRepo(t, "contrib/completion/canhazgpu.bash"), content(t, "/usr/share/bash-completion/completions/canhazgpu"))
	require.Equal(t, readRepo(t, "contrib/completion/_canhazgpu"), content(t, "/usr/share/zsh/vendor-completions/_canhazgpu"))
	require.Equal(t, "/etc/canhazgpu/config.toml\n", output(t, "dpkg-deb", "-I", debFile, "conffiles"))

	// The pages come from the programs' --help: the CLI's lists every
	// command's help, the health check's its flags.
	for page, wants := range map[string][]string{
		"/usr/share/man/man1/canhazgpu.1.gz":             {`"canhazgpu ` + strings.ReplaceAll(testVersion, "-", `\-`) + `"`, `.SS "canhazgpu status"`, `.SS "canhazgpu reserve"`},
		"/usr/share/man/man8/canhazgpu-healthcheck.8.gz": {`\-\-nhc`},
	} {
		zr, err := gzip.NewReader(bytes.NewReader(content(t, page)))
		require.NoError(t, err, page)
		text, err := io.ReadAll(zr)
		require.NoError(t, err, page)
		for _, w := range wants {
			require.Contains(t, string(text), w, page)
		}
	}

	units, err := filepath.Glob("../contrib/systemd/*")
	require.NoError(t, err)
	require.NotEmpty(t, units)
	for _, u := range units {
		require.Equal(t, readRepo(t, "contrib/systemd/"+filepath.Base(u)), content(t, "/usr/lib/systemd/system/"+filepath.Base(u)))
	}

	// contrib/ (but its tests, the completion and the units) is shipped
	// as it is under /usr/share/canhazgpu.
	var want, got []string
	require.NoError(t, filepath.WalkDir("../contrib", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel("../contrib", p)
		switch {
		case err != nil:
			return err
		case rel == "completion" || rel == "systemd" || d.IsDir() && isTestPath(rel):
			return filepath.SkipDir
		case !d.IsDir() && !isTestPath(rel):
			want = append(want, rel)
		}
		return nil
	}))
	for p, e := range deb {
		if rel, ok := strings.CutPrefix(p, "/usr/share/canhazgpu/"); ok && e.kind == "file" {
			got = append(got, rel)
			require.Equal(t, readRepo(t, "contrib/"+rel), content(t, p), p)
		}
	}
	require.ElementsMatch(t, want, got)

	rpm := rpmEntries(t)
	// The same files, but for the zsh completion's directory.
	const debZsh, rpmZsh = "/usr/share/zsh/vendor-completions/_canhazgpu", "/usr/share/zsh/site-functions/_canhazgpu"
	rpmFiles := nonDirs(rpm)
	require.Contains(t, rpmFiles, rpmZsh)
	rpmFiles[debZsh] = rpmFiles[rpmZsh]
	delete(rpmFiles, rpmZsh)
	require.Equal(t, nonDirs(deb), rpmFiles)
	for p, e := range rpm {
		if e.kind != "dir" {
			continue
		}
		// The rpm owns its own directories only, never the system's.
		require.Equal(t, deb[p], e, p)
		require.True(t, slices.Contains([]string{"/etc/canhazgpu", "/usr/libexec/canhazgpu", "/usr/share/canhazgpu", "/usr/share/doc/canhazgpu"}, p) ||
			strings.HasPrefix(p, "/usr/share/canhazgpu/"), "rpm owns %s", p)
	}
	require.Equal(t, "/etc/canhazgpu/config.toml\n", output(t, "rpm", "-qpc", rpmFile))
}

func isTestPath(rel string) bool {
	for _, part := range strings.Split(rel, "/") {
		if part == "tests" || part == "testdata" || part == "__pycache__" ||
			strings.HasPrefix(part, "test_") || strings.Contains(part, "_test.") || strings.HasSuffix(part, ".pyc") {
			return true
		}
	}
	return false
}

// TestReferencedPaths: every program path that a shipped file names (unit
// files, scheduler scripts, docs, the config) is in the package.
func TestReferencedPaths(t *testing.T) {
	needDeb(t)
	progPath := regexp.MustCompile(`/usr/(?:s?bin|libexec)/canhazgpu[A-Za-z0-9_/-]*`)
	var missing []string
	for p, b := range debFiles {
		if strings.HasSuffix(p, ".gz") || strings.HasPrefix(p, "/usr/bin/") || strings.HasPrefix(p, "/usr/libexec/") {
			continue
		}
		for _, ref := range progPath.FindAllString(string(b), -1) {
			ref = strings.TrimRight(ref, "/-")
			if _, ok := debEntries[ref]; !ok {
				missing = append(missing, p+" names "+ref)
			}
		}
	}
	slices.Sort(missing)
	missing = slices.Compact(missing)
	require.Empty(t, missing, "shipped files name programs the package does not have:\n%s", strings.Join(missing, "\n"))
}

func TestLintian(t *testing.T) {
	needDeb(t)
	needTool(t, testreq.Lintian)
	// No tag is overridden: the package has none to justify.
	out, err := exec.Command("lintian", "--fail-on", "error,warning", debFile).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for line := range strings.Lines(string(out)) {
		require.False(t, strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: "), "lintian: %s", line)
	}
}

// TestInstall installs the .deb into this system, runs the installed
// programs with the installed config file, then removes and purges it.
func TestInstall(t *testing.T) {
	testreq.Need(t, testreq.Root, testreq.Dpkg)
	needDeb(t)
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "canhazgpu").Output(); err == nil && !strings.HasSuffix(string(out), " not-installed") {
		t.Fatalf("canhazgpu is already on this machine (%s): this test installs and purges it, so remove it first with dpkg --purge canhazgpu", out)
	}
	deb := debEntries
	existed := map[string]bool{} // shared directories such as /usr/bin
	for p := range deb {
		if _, err := os.Lstat(p); err == nil {
			existed[p] = true
		}
	}
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "canhazgpu").Run() })

	dpkg := func(args ...string) {
		t.Helper()
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		require.NoError(t, err, "dpkg %s: %s", strings.Join(args, " "), out)
	}
	status := func() string {
		out, _ := exec.Command("dpkg-query", "-W", "-f", "${Status}", "canhazgpu").Output()
		return string(out)
	}
	// left lists the package's paths still present, but for those that
	// existed before it was installed.
	left := func() []string {
		var paths []string
		for p := range deb {
			if _, err := os.Lstat(p); err == nil && !existed[p] {
				paths = append(paths, p)
			}
		}
		slices.Sort(paths)
		return paths
	}

	dpkg("-i", debFile)
	require.Equal(t, "install ok installed", status())
	for p, e := range deb {
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		if !existed[p] {
			require.Equal(t, e.mode, fi.Mode().Perm(), p)
		}
	}

	t.Run("setgid CLI and secrets directory", func(t *testing.T) {
		// The group alone may read the CLI's store credential; the CLI is
		// setgid to it; the secrets directory is root's, searchable by it.
		require.Equal(t, "root canhazgpu 2755\n", output(t, "stat", "-c", "%U %G %a", "/usr/bin/canhazgpu"))
		require.Equal(t, "root canhazgpu 750\n", output(t, "stat", "-c", "%U %G %a", "/etc/canhazgpu/secrets"))
		require.Equal(t, "root canhazgpu 2755 /usr/bin/canhazgpu\n", output(t, "dpkg-statoverride", "--list", "/usr/bin/canhazgpu"))
		// Other programs are not setgid.
		require.Equal(t, "root root 755\n", output(t, "stat", "-c", "%U %G %a", "/usr/bin/canhazgpu-healthcheck"))
	})

	t.Run("version", func(t *testing.T) {
		out := output(t, "/usr/bin/canhazgpu", "version")
		for _, s := range []string{testVersion, testCommit, testDate} {
			require.Contains(t, out, s)
		}
	})

	t.Run("check-config reads the installed config as the hooks do", func(t *testing.T) {
		out := output(t, "/usr/bin/canhazgpu", "admin", "--check-config")
		require.True(t, strings.HasPrefix(out, "config OK: /etc/canhazgpu/config.toml loads as the scheduler programs"), out)
		bad := filepath.Join(t.TempDir(), "bad.toml")
		require.NoError(t, os.WriteFile(bad, []byte("[slurm]\non_store_eror = \"fail\"\n"), 0o644))
		cmd := exec.Command("/usr/bin/canhazgpu", "admin", "--check-config", bad)
		b, err := cmd.CombinedOutput()
		require.Error(t, err)
		require.Equal(t, 1, cmd.ProcessState.ExitCode(), "%s", b)
		require.Contains(t, string(b), "Error: config: "+bad+":2: slurm.on_store_eror: unknown key (known in [slurm]: ")
	})

	// Installing or upgrading over a config the programs cannot read warns
	// with the hooks' own message, and still installs (docs/install.md).
	// The bad file is in place only for the reinstall.
	t.Run("install checks the config", func(t *testing.T) {
		const etc = "/etc/canhazgpu/config.toml"
		installed, err := os.ReadFile(etc)
		require.NoError(t, err)
		section := strings.Index(string(installed), "\n[redis]\n")
		require.Positive(t, section)
		bad := strings.Replace(string(installed), "\n[redis]\n", "\n[redis]\nop_timeot = \"2s\"\n", 1)
		require.NoError(t, os.WriteFile(etc, []byte(bad), 0o644))
		out, err := exec.Command("dpkg", "-i", debFile).CombinedOutput()
		require.NoError(t, os.WriteFile(etc, installed, 0o644))
		require.NoError(t, err, "a bad config does not fail the install: %s", out)
		require.Equal(t, "install ok installed", status())
		line := strings.Count(string(installed[:section]), "\n") + 3 // after the newline, [redis]
		require.Contains(t, string(out), "canhazgpu: WARNING: "+etc+" does not load: the Prolog, Epilog and health check refuse it, "+
			"so every job on this node fails until it is fixed:\n"+
			"Error: config: "+etc+":"+strconv.Itoa(line)+": redis.op_timeot: unknown key (known in [redis]: ")
		require.Contains(t, string(out), "canhazgpu: fix it, then check it with: canhazgpu admin --check-config\n")

		out, err = exec.Command("dpkg", "-i", debFile).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.NotContains(t, string(out), "canhazgpu: WARNING", "a good config passes quietly")
	})

	t.Run("programs read the installed config", func(t *testing.T) {
		srv, err := redistest.Start(redistest.Options{})
		require.NoError(t, err)
		t.Cleanup(srv.Stop)
		dir := t.TempDir()
		fake := filepath.Join(dir, "gpus.json")
		require.NoError(t, os.WriteFile(fake, []byte(`{"gpus": [
			{"index": 0, "memory_total_mb": 81559, "memory_used_mb": 45},
			{"index": 1, "memory_total_mb": 81559, "processes": [
				{"pid": 4242, "name": "python3", "user": "bob", "used_memory_mb": 2048, "cmdline": ["python3", "train.py"]}]}]}`), 0o644))

		// Go test runs other packages' tests meanwhile; programs of theirs
		// that read the default config file must not notice this one. So
		// the installed file gets one edit, which matters only with the
		// fake provider (whose users must name their own file), and the
		// rest comes from CANHAZGPU_* variables.
		const etc = "/etc/canhazgpu/config.toml"
		installed, err := os.ReadFile(etc)
		require.NoError(t, err)
		require.Equal(t, 1, strings.Count(string(installed), "\nfake_file = \"\"\n"))
		conf := strings.Replace(string(installed), "\nfake_file = \"\"\n", "\nfake_file = \""+fake+"\"\n", 1)
		require.NoError(t, os.WriteFile(etc, []byte(conf), 0o644))

		// A login shell's variables, but no CANHAZGPU_* of whoever runs the test.
		env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "LC_ALL=C.UTF-8",
			"CANHAZGPU_REDIS_URL=" + srv.URL(), "CANHAZGPU_GPU_PROVIDER=fake"}
		run := func(extraEnv []string, name string, args ...string) (string, int) {
			cmd := exec.Command(name, args...)
			cmd.Env = append(slices.Clone(env), extraEnv...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				require.NoError(t, err)
			}
			return string(out), cmd.ProcessState.ExitCode()
		}
		node := []string{"CANHAZGPU_NODE=pkgtest"}

		// The GPUs come from the fake file that only /etc/canhazgpu/config.toml names.
		out, code := run(node, "/usr/bin/canhazgpu", "status")
		require.Equal(t, 0, code, out)
		require.Contains(t, out, "WITHOUT RESERVATION")
		require.Contains(t, out, "bob")

		var doc struct {
			Node string `json:"node"`
			GPUs []struct {
				Index  int    `json:"index"`
				Status string `json:"status"`
			} `json:"gpus"`
		}
		out, code = run(node, "/usr/bin/canhazgpu", "status", "--json")
		require.Equal(t, 0, code, out)
		require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
		require.Equal(t, "pkgtest", doc.Node)
		require.Len(t, doc.GPUs, 2)
		require.Equal(t, "available", doc.GPUs[0].Status)
		require.Equal(t, "unreserved", doc.GPUs[1].Status)

		// CANHAZGPU_CONFIG names another file: an edited copy of the installed one.
		other := filepath.Join(dir, "other.toml")
		require.Equal(t, 1, strings.Count(conf, "\nnode = \"\"\n"))
		require.NoError(t, os.WriteFile(other, []byte(strings.Replace(conf, "\nnode = \"\"\n", "\nnode = \"other\"\n", 1)), 0o644))
		out, code = run([]string{"CANHAZGPU_CONFIG=" + other}, "/usr/bin/canhazgpu", "status", "--json")
		require.Equal(t, 0, code, out)
		require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
		require.Equal(t, "other", doc.Node)

		// The health check finds bob's unreserved use: exit status 1.
		out, code = run(node, "/usr/bin/canhazgpu-healthcheck")
		require.Equal(t, 1, code, out)
		require.Contains(t, out, "bob")

		// As Slurm runs them: no arguments, no PATH, no job here.
		for _, hook := range []struct{ path, context string }{
			{"/usr/libexec/canhazgpu/canhazgpu-prolog", "prolog_slurmd"},
			{"/usr/libexec/canhazgpu/canhazgpu-epilog", "epilog_slurmd"},
		} {
			cmd := exec.Command(hook.path)
			cmd.Env = []string{"SLURM_SCRIPT_CONTEXT=" + hook.context}
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s: %s", hook.path, out)
		}
	})

	t.Run("trust boundary", testTrustBoundary)

	t.Run("tmpfiles.d creates the state directory", func(t *testing.T) {
		root := t.TempDir()
		snippet, err := os.ReadFile("/usr/lib/tmpfiles.d/canhazgpu.conf")
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(root, "usr/lib/tmpfiles.d"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "usr/lib/tmpfiles.d/canhazgpu.conf"), snippet, 0o644))
		out, err := exec.Command("systemd-tmpfiles", "--create", "--root="+root, "canhazgpu.conf").CombinedOutput()
		require.NoError(t, err, "%s", out)
		fi, err := os.Stat(filepath.Join(root, "run/canhazgpu"))
		require.NoError(t, err)
		require.Equal(t, fs.ModeDir|0o755, fi.Mode())
	})

	t.Run("systemd units are valid", func(t *testing.T) {
		testreq.Need(t, testreq.SystemdAnalyze)
		for p := range deb {
			if strings.HasPrefix(p, "/usr/lib/systemd/system/") {
				out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
				require.NoError(t, err, "%s", out)
				require.Empty(t, bytes.TrimSpace(out), p)
			}
		}
	})

	// A job whose Epilog never ran leaves its file: remove keeps it (the
	// package may come back and release the job), purge removes it.
	require.NoError(t, jobstate.WriteJob("/run/canhazgpu", allocator.KindSlurm, "41", jobstate.JobFile{User: "alice"}))

	// dpkg -r keeps the edited config file (policy: conffiles stay until
	// purge) and nothing else.
	dpkg("-r", "canhazgpu")
	_, err := jobstate.ReadJob("/run/canhazgpu", allocator.KindSlurm, "41")
	require.NoError(t, err, "remove keeps the job files")
	require.Equal(t, "deinstall ok config-files", status())
	require.Equal(t, []string{"/etc/canhazgpu", "/etc/canhazgpu/config.toml"}, left())
	edited, err := os.ReadFile("/etc/canhazgpu/config.toml")
	require.NoError(t, err)
	require.Contains(t, string(edited), "\nfake_file = \"/", "the edited config file")

	dpkg("--purge", "canhazgpu")
	require.Empty(t, left())
	_, err = os.Stat("/etc/canhazgpu")
	require.ErrorIs(t, err, fs.ErrNotExist, "purge removes the secrets directory too")
	_, err = os.Stat("/run/canhazgpu")
	require.ErrorIs(t, err, fs.ErrNotExist, "purge removes the job files")
	out, err := exec.Command("dpkg-statoverride", "--list", "/usr/bin/canhazgpu").CombinedOutput()
	require.Error(t, err, "no mode override is left: %s", out)
	// dpkg forgets the package, or remembers it as not installed.
	require.True(t, status() == "" || strings.HasSuffix(status(), " not-installed"), status())
}
