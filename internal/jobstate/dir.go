package jobstate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Root programs write the state tree and the TaskProlog, running as the
// job's user, prints what it reads there into the job's environment. So
// nothing in it may come from anyone but root: every directory from / down
// to a state file must be owned by root and writable by root only (a
// directory above the state directory may also be sticky, like /tmp: then
// nobody can rename or remove the root-owned directory inside it), no
// symbolic link is ever followed inside, and a file that is not root's is
// never read. This is sshd's StrictModes, with root as the only owner.

// rootUID owns every directory and file of the state tree.
const rootUID = 0

// maxFileSize bounds a state file: the largest real one is a job file with
// a few dozen GPUs and conflicts, far below this.
const maxFileSize = 64 << 10

// UnsafeError says why a state directory or file cannot be trusted. Nothing
// was read from it or written into it.
type UnsafeError struct {
	Dir     string // the state directory; "" for a state file
	Path    string // the directory or file that is wrong
	Problem string // what is wrong with it and what is accepted: "is owned by uid 1001; want …"
}

func (e *UnsafeError) Error() string {
	switch {
	case e.Dir == "":
		return "state file " + e.Path + " " + e.Problem
	case e.Path == e.Dir || strings.HasPrefix(e.Path, e.Dir+"/"):
		return "state dir " + e.Path + " " + e.Problem
	default: // a directory above it
		return "state dir " + e.Dir + ": " + e.Path + " " + e.Problem
	}
}

// wantDir is the rule every directory of the tree is held to, for messages.
const wantDir = "want a directory owned by root and writable by root only (such as mode 0755)"

// stateDir is one checked, open directory of the state tree.
type stateDir struct {
	f    *os.File
	path string
}

func (d *stateDir) fd() int { return int(d.f.Fd()) }

func (d *stateDir) Close() error { return d.f.Close() }

// Prepare creates the state directory when it is missing and checks that
// only root can change it or any directory above it. Root programs call it
// before they change anything, so that an unsafe directory stops them
// with nothing done.
func Prepare(stateDir string) error {
	d, err := openDir(stateDir, "", true)
	if err != nil {
		return err
	}
	return d.Close()
}

// walk is one descent from / to a directory of the state tree.
type walk struct {
	dir    string // the state directory, for messages
	create bool
}

// openDir opens dir/sub (sub "" opens dir itself), checking every
// directory on the way from / and following no symbolic link. With create,
// missing directories are made, owned by root with mode 0755 whatever the
// umask (the TaskProlog reads as the job's user); without, a missing one is
// an error matching fs.ErrNotExist.
func openDir(dir, sub string, create bool) (*stateDir, error) {
	if !filepath.IsAbs(dir) {
		return nil, &UnsafeError{Dir: dir, Path: dir, Problem: "is not an absolute path; want one such as /run/canhazgpu"}
	}
	dir = filepath.Clean(dir)
	w := walk{dir: dir, create: create}
	var names []string
	if dir != "/" {
		names = strings.Split(dir[1:], "/")
	}
	// From here on the directories belong to the state tree, where even a
	// sticky one must not be writable by others.
	inside := len(names)
	if sub != "" {
		names = append(names, sub)
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	path := "/"
	if err := w.check(fd, path, inside == 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	for i, name := range names {
		next, err := w.openChild(fd, path, name, i == len(names)-1)
		unix.Close(fd)
		path = filepath.Join(path, name)
		if err != nil {
			return nil, err
		}
		fd = next
		if err := w.check(fd, path, i+1 >= inside); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if len(names) == 0 {
		// "/" itself: reopen it readable for listing.
		next, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		fd = next
	}
	return &stateDir{f: os.NewFile(uintptr(fd), path), path: path}, nil
}

// openChild opens name inside the directory parentFD (at parent) without
// following a symbolic link: as a path only on the way, readable at the
// end, where the directory is listed.
func (w walk) openChild(parentFD int, parent, name string, last bool) (int, error) {
	flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if last {
		flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	}
	path := filepath.Join(parent, name)
	fd, err := unix.Openat(parentFD, name, flags, 0)
	if errors.Is(err, unix.ENOENT) && w.create {
		if err := makeDir(parentFD, path, name); err != nil {
			return -1, err
		}
		fd, err = unix.Openat(parentFD, name, flags, 0)
	}
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		var st unix.Stat_t
		if err := unix.Fstatat(parentFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, &UnsafeError{Dir: w.dir, Path: path, Problem: "is a symbolic link, which is never followed; " + wantDir}
		}
		return -1, &UnsafeError{Dir: w.dir, Path: path, Problem: "is not a directory; " + wantDir}
	default:
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
}

// makeDir creates name (at path) inside parentFD, mode 0755 whatever the
// umask; a directory made meanwhile by a concurrent program is fine (its
// owner and mode are checked when it is opened).
func makeDir(parentFD int, path, name string) error {
	err := unix.Mkdirat(parentFD, name, 0o755)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	fd, err := unix.Openat(parentFD, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, 0o755); err != nil {
		return &fs.PathError{Op: "chmod", Path: path, Err: err}
	}
	return nil
}

// check holds the directory open as fd to the rules. inside: part of the
// state tree, where even a sticky directory must not be writable by others.
func (w walk) check(fd int, path string, inside bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	perm := st.Mode & 0o7777
	switch {
	case st.Uid != rootUID:
		return &UnsafeError{Dir: w.dir, Path: path, Problem: fmt.Sprintf("is owned by uid %d; %s", st.Uid, wantDir)}
	case perm&0o022 == 0:
		return nil
	case !inside && perm&unix.S_ISVTX != 0:
		return nil // like /tmp: nobody but root can rename or remove root's directory in it
	default:
		return &UnsafeError{Dir: w.dir, Path: path,
			Problem: fmt.Sprintf("has mode %04o, which lets group or others write in it; %s", perm, wantDir)}
	}
}

// openFile opens a state file for reading after checking that it is a
// regular file of root's that only root can write.
func (d *stateDir) openFile(name string) (*os.File, error) {
	path := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, &UnsafeError{Path: path, Problem: "is a symbolic link, which is never followed; " + wantFile}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := checkFile(path, &st); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// wantFile is the rule every state file is held to, for messages.
const wantFile = "want a regular file owned by root and writable by root only (such as mode 0644)"

// checkFile holds a state file to the rules.
func checkFile(path string, st *unix.Stat_t) error {
	problem := ""
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		problem = "is not a regular file; " + wantFile
	case st.Uid != rootUID:
		problem = fmt.Sprintf("is owned by uid %d; %s", st.Uid, wantFile)
	case st.Mode&0o022 != 0:
		problem = fmt.Sprintf("has mode %04o, which lets group or others write it; %s", st.Mode&0o7777, wantFile)
	case st.Size > maxFileSize:
		problem = fmt.Sprintf("has %d bytes; want at most %d", st.Size, maxFileSize)
	default:
		return nil
	}
	return &UnsafeError{Path: path, Problem: problem}
}

// readFile reads a checked state file.
func (d *stateDir) readFile(name string) ([]byte, error) {
	f, err := d.openFile(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if len(data) > maxFileSize {
		return nil, &UnsafeError{Path: f.Name(), Problem: fmt.Sprintf("has more than %d bytes; want at most %d", maxFileSize, maxFileSize)}
	}
	return data, nil
}

// list returns the names of the root-owned regular files in the directory,
// leaving out the temporary files of writers (every dot file). Other
// entries are ignored and reported in the error.
func (d *stateDir) list() ([]string, error) {
	// Readdirnames on a duplicate: it moves the shared offset, and the
	// directory stays usable for the *at calls.
	dup, err := unix.Openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(dup), d.path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.path, err)
	}
	var out []string
	var errs []error
	for _, name := range names {
		if isTemp(name) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // removed meanwhile
		}
		if err := checkFile(filepath.Join(d.path, name), &st); err != nil {
			errs = append(errs, fmt.Errorf("%w: ignored", err))
			continue
		}
		out = append(out, name)
	}
	return out, errors.Join(errs...)
}

// tempPrefix starts files being written; readers skip every dot file.
const tempPrefix = ".tmp-"

func isTemp(name string) bool { return strings.HasPrefix(name, ".") }

// writeAtomic writes name through a temporary file and a rename inside
// the directory, so a reader sees the old file or the new one, never a
// part. Both steps work on the directory itself: a symbolic link planted
// as name is replaced, never written through.
func (d *stateDir) writeAtomic(name string, data []byte) error {
	tmp, f, err := d.createTemp(name)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			_ = unix.Unlinkat(d.fd(), tmp, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil { // whatever the umask: the job's user reads it
		return fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := unix.Renameat(d.fd(), tmp, d.fd(), name); err != nil {
		return &fs.PathError{Op: "rename", Path: filepath.Join(d.path, name), Err: err}
	}
	done = true
	return nil
}

// createTemp creates a new temporary file for name, never opening one that
// exists.
func (d *stateDir) createTemp(name string) (string, *os.File, error) {
	var err error
	for range 10 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		tmp := tempPrefix + name + "-" + hex.EncodeToString(b[:])
		var fd int
		fd, err = unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err == nil {
			return tmp, os.NewFile(uintptr(fd), filepath.Join(d.path, tmp)), nil
		}
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	return "", nil, &fs.PathError{Op: "create", Path: filepath.Join(d.path, tempPrefix+name), Err: err}
}

// remove deletes name from the directory (a symbolic link itself, never
// what it points to); a missing file is no error.
func (d *stateDir) remove(name string) error {
	err := unix.Unlinkat(d.fd(), name, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}
