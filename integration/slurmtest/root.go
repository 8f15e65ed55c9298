package slurmtest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// A Slurm root (Options.Root) is a Debian root file system with another
// Slurm release in it, e.g. Debian 13's Slurm 24.11 on this Debian 12
// machine. The cluster runs that root's munged, slurmctld, slurmd and
// commands through wrappers in <cluster dir>/bin: each enters a private
// mount namespace, binds this machine's /tmp, /proc, /sys, /dev,
// /etc/passwd and /etc/group into the root, and chroots there, keeping its
// working directory. So every path under /tmp (the cluster's directory, the
// programs under test, their config and state) is the same inside and
// out, jobs run as this machine's users, and the network is this
// machine's (Redis on loopback). A working directory outside those paths
// becomes the root's /. Each wrapper execs the next step, so a
// daemon keeps the wrapper's pid.

// CacheDir keeps Slurm roots between runs on one machine.
const CacheDir = "/var/cache/canhazgpu-test"

// rootPackages are what debootstrap adds to the minimal base.
var rootPackages = []string{"munge", "slurmctld", "slurmd", "slurm-client"}

// bound are the paths a wrapper binds into the root. /etc/hosts: the root
// has none (debootstrap writes none), and without it Slurm cannot resolve
// this machine's name, which 24.11's slurmctld looks up to answer a job's
// srun, retrying for ten seconds each time while the job's completion waits.
var bound = []string{"/tmp", "/proc", "/sys", "/dev", "/etc/passwd", "/etc/group", "/etc/hosts"}

// boundFiles are the bound paths that are files, not directories.
var boundFiles = []string{"/etc/passwd", "/etc/group", "/etc/hosts"}

// DebianRoot returns a Debian root file system of release (e.g. "trixie")
// with Slurm's packages, for Options.Root. The first call on a machine
// builds it with debootstrap from CANHAZGPU_TEST_DEBIAN_MIRROR (default
// http://deb.debian.org/debian), a few minutes and about 300 MB; later
// calls reuse it from CacheDir. Another test binary building the same
// root meanwhile is waited for.
func DebianRoot(release string) (string, error) {
	if err := RootAvailable(); err != nil {
		return "", err
	}
	if !validRelease(release) {
		return "", fmt.Errorf("slurmtest: Debian release %q: want a code name such as trixie", release)
	}
	sum := sha256.Sum256([]byte(release + " " + strings.Join(rootPackages, ",")))
	name := "debian-" + release + "-slurm-" + hex.EncodeToString(sum[:4])
	dir := filepath.Join(CacheDir, name)
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err == nil {
		return filepath.Join(dir, "root"), nil
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("slurmtest: %w", err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("slurmtest: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("slurmtest: lock %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(done); err == nil {
		return filepath.Join(dir, "root"), nil // built while we waited
	}
	// Build beside the cache entry and rename it in, so a killed build
	// leaves no half root behind that looks complete.
	_ = os.RemoveAll(dir + ".new")
	if err := os.MkdirAll(dir+".new", 0o755); err != nil {
		return "", fmt.Errorf("slurmtest: %w", err)
	}
	mirror := os.Getenv("CANHAZGPU_TEST_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	start := time.Now()
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(rootPackages, ","),
		release, filepath.Join(dir+".new", "root"), mirror).CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(dir + ".new")
		return "", fmt.Errorf("slurmtest: debootstrap %s from %s: %w: %s", release, mirror, err, lastLines(string(out), 5))
	}
	stamp := fmt.Sprintf("debootstrap %s from %s in %s\n", release, mirror, time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(dir+".new", "complete"), []byte(stamp), 0o644); err != nil {
		return "", fmt.Errorf("slurmtest: %w", err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(dir+".new", dir); err != nil {
		return "", fmt.Errorf("slurmtest: %w", err)
	}
	return filepath.Join(dir, "root"), nil
}

// RootAvailable says why a Slurm root cannot be built or run here, or
// nil. Building one also needs a Debian mirror (DebianRoot says so when it
// cannot reach it).
func RootAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("slurmtest: a Slurm root needs root (debootstrap, chroot)")
	}
	for _, c := range []string{"debootstrap", "unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("slurmtest: %s not found: install the Debian packages debootstrap util-linux coreutils (scripts/install-deps.sh)", c)
		}
	}
	return nil
}

func validRelease(r string) bool {
	if r == "" || len(r) > 20 {
		return false
	}
	for _, c := range r {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rootBins writes a wrapper per command into <dir>/bin and returns their
// paths, and the commands' own paths inside the root (for RunAs, whose
// runuser already runs there).
func rootBins(root, dir string) (wrappers, inside map[string]string, err error) {
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("slurmtest: %w", err)
	}
	wrappers, inside = map[string]string{}, map[string]string{}
	var binds []string
	for _, b := range bound {
		flag := "--rbind"
		if slices.Contains(boundFiles, b) {
			flag = "--bind"
			// A file is bound onto a file: make one where the root lacks it.
			target := filepath.Join(root, b)
			if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
				if err := os.WriteFile(target, nil, 0o644); err != nil {
					return nil, nil, fmt.Errorf("slurmtest: %w", err)
				}
			}
		}
		binds = append(binds, fmt.Sprintf(`mount %s %s "$r%s"`, flag, b, b))
	}
	for _, c := range commands {
		var path string
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if _, err := resolveIn(root, filepath.Join(d, c)); err == nil {
				path = filepath.Join(d, c)
				break
			}
		}
		if path == "" {
			return nil, nil, fmt.Errorf("slurmtest: Slurm root %s has no %s", root, c)
		}
		inside[c] = path
		if c == "slurmstepd" {
			// Not run by the harness: what /proc/<pid>/exe names.
			real, err := resolveIn(root, path)
			if err != nil {
				return nil, nil, err
			}
			wrappers[c] = real
			continue
		}
		script := fmt.Sprintf("#!/bin/sh\n# %s of the Slurm root %s (see slurmtest/root.go).\n"+
			"exec unshare --mount --propagation private -- /bin/sh -c '\nr=$0\n%s &&\nexec chroot \"$r\" /bin/sh -c '\\''cd \"$0\" 2>/dev/null || cd /; exec \"$@\"'\\'' \"$PWD\" \"$@\"' %s %s \"$@\"\n",
			c, root, strings.Join(binds, " &&\n"), root, path)
		w := filepath.Join(binDir, c)
		if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
			return nil, nil, fmt.Errorf("slurmtest: %w", err)
		}
		wrappers[c] = w
	}
	return wrappers, inside, nil
}

// resolveIn follows the symbolic links of path (absolute, inside root) as
// a process chrooted to root would (Debian's alternatives links are
// absolute), and returns the file's path from here.
func resolveIn(root, path string) (string, error) {
	for range 16 {
		fi, err := os.Lstat(filepath.Join(root, path))
		if err != nil {
			return "", fmt.Errorf("slurmtest: Slurm root %s: %w", root, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			if fi.IsDir() {
				return "", fmt.Errorf("slurmtest: Slurm root %s: %s is a directory", root, path)
			}
			return filepath.Join(root, path), nil
		}
		target, err := os.Readlink(filepath.Join(root, path))
		if err != nil {
			return "", fmt.Errorf("slurmtest: %w", err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = filepath.Clean(target)
	}
	return "", fmt.Errorf("slurmtest: Slurm root %s: too many links at %s", root, path)
}

// Version is the Slurm release the cluster runs, as `scontrol --version`
// prints it (e.g. "slurm-wlm 24.11.5").
func (c *Cluster) Version() (string, error) {
	out, err := c.Run("scontrol", "--version")
	return strings.TrimSpace(out), err
}

// Bin is the path to run a Slurm command of this cluster by, e.g. for a
// program under test that runs scontrol: the command itself, or its
// wrapper for a Slurm root.
func (c *Cluster) Bin(name string) string { return c.bins[name] }
