// Package jobstate keeps the small files the scheduler programs leave on a
// node: one file per running batch job (written by the Prolog, read by the
// TaskProlog and the health check) and the pending markers written when the
// store could not be reached, which the Epilog and the health check settle
// later.
//
// Layout under the state directory ([slurm] state_dir, /run/canhazgpu by
// default), every file root-owned, mode 0644, replaced atomically:
//
//	<state_dir>/slurm/<job>              the job's GPUs (JobFile, JSON)
//	<state_dir>/pbs/<job>                the same for PBS jobs
//	<state_dir>/pending/<kind>-<job>-<op> a change the store has not seen (Marker, JSON)
//
// The directory lives on tmpfs on purpose: after a reboot no job runs, so
// no file should survive either.
package jobstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"canhazgpu/allocator"
)

// GPU is one GPU of a job as the job's tasks should see it.
type GPU struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"` // NVML index (PCI bus order)
	// SchedIndex is the scheduler's own index for this slot of the job
	// (Slurm: the position in gres.conf, as in SLURM_JOB_GPUS); -1 when
	// the scheduler names none (PBS).
	SchedIndex int `json:"sched_index"`
	// Moved: canhazgpu placed this slot on another GPU than the scheduler
	// chose (placement = "canhazgpu"), so the scheduler's own
	// CUDA_VISIBLE_DEVICES is wrong for the job.
	Moved bool `json:"moved,omitempty"`
}

// Conflict is a GPU the job runs on without holding it in the store
// (on_conflict = "warn"). The health check reports these.
type Conflict struct {
	GPU    string `json:"gpu"`    // UUID
	Reason string `json:"reason"` // for people: "reserved by alice (manual)", …
}

// JobFile is what the Prolog recorded for one job on this node.
type JobFile struct {
	Kind    allocator.Kind `json:"kind"`
	JobID   string         `json:"job_id"`
	User    string         `json:"user"`
	UID     int            `json:"uid"`
	Restart int            `json:"restart"`
	GPUs    []GPU          `json:"gpus"` // every GPU the job was given, in the scheduler's order
	// Conflicts are the GPUs among GPUs that the job runs on without
	// holding them (on_conflict = "warn"), or, with an empty GPU, why the
	// scheduler's GPUs could not be known at all.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Pending: the store was unreachable; a reserve marker stands in for
	// the reservation until it is settled.
	Pending bool `json:"pending,omitempty"`
	// BootID is the node's boot id when the Prolog ran ("" in files of
	// older releases). The health check restores a job's reservations
	// from its file after the store lost them, and never from a file of
	// an earlier boot: no job survives a reboot.
	BootID string    `json:"boot_id,omitempty"`
	At     time.Time `json:"at"`
}

// Op is what a pending marker asks the store to do.
type Op string

// The marker operations.
const (
	OpReserve Op = "reserve"
	OpRelease Op = "release"
)

// Marker is a store change a scheduler program could not make because the
// store was unreachable (on_store_error = "allow").
type Marker struct {
	Op      Op             `json:"op"`
	Kind    allocator.Kind `json:"kind"`
	JobID   string         `json:"job_id"`
	User    string         `json:"user"`
	UID     int            `json:"uid"`
	GPUs    []string       `json:"gpus"` // UUIDs
	Restart int            `json:"restart"`
	BootID  string         `json:"boot_id"`
	At      time.Time      `json:"at"`
}

// The subdirectory of the pending markers.
const pendingDir = "pending"

// DefaultBootIDPath names the current boot on Linux.
const DefaultBootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID reads the node's boot id; path "" reads DefaultBootIDPath.
// Batch reservations carry it, so one made before a reboot is known stale.
func BootID(path string) (string, error) {
	if path == "" {
		path = DefaultBootIDPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("boot id: %s is empty", path)
	}
	return id, nil
}

// CheckJobID accepts a scheduler job id as part of a file name: Slurm ids
// are numbers ("123", "123_4" in arrays), PBS ids "123.server[4]".
func CheckJobID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 200 ||
		strings.ContainsAny(id, "/\x00") || strings.IndexFunc(id, func(r rune) bool { return r <= ' ' }) >= 0 {
		return &allocator.InputError{Field: "job id", Value: id,
			Accepted: "a scheduler job id without '/', spaces or control characters"}
	}
	return nil
}

func checkKind(kind allocator.Kind) error {
	if !kind.Batch() {
		return &allocator.InputError{Field: "job kind", Value: string(kind), Accepted: "slurm or pbs"}
	}
	return nil
}

// JobPath is where the file of a job lives.
func JobPath(stateDir string, kind allocator.Kind, jobID string) string {
	return filepath.Join(stateDir, string(kind), jobID)
}

// WriteJob records a job's GPUs, replacing an older file of the same job
// (a requeued job gets a new one).
func WriteJob(stateDir string, kind allocator.Kind, jobID string, f JobFile) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := CheckJobID(jobID); err != nil {
		return err
	}
	f.Kind, f.JobID = kind, jobID
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("job file: %w", err)
	}
	return writeAtomic(filepath.Join(stateDir, string(kind)), jobID, append(data, '\n'))
}

// ReadJob reads a job's file; a missing file is an error matching
// fs.ErrNotExist.
func ReadJob(stateDir string, kind allocator.Kind, jobID string) (JobFile, error) {
	var f JobFile
	if err := checkKind(kind); err != nil {
		return f, err
	}
	if err := CheckJobID(jobID); err != nil {
		return f, err
	}
	path := JobPath(stateDir, kind, jobID)
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("job file: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("job file %s: %w", path, err)
	}
	return f, nil
}

// RemoveJob deletes a job's file; a missing file is no error.
func RemoveJob(stateDir string, kind allocator.Kind, jobID string) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := CheckJobID(jobID); err != nil {
		return err
	}
	return removeIfExists(JobPath(stateDir, kind, jobID))
}

// Jobs lists the job ids that have a file of this kind, for the health
// check's comparison with the jobs the scheduler runs.
func Jobs(stateDir string, kind allocator.Kind) ([]string, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(stateDir, string(kind)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("job files: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.Type().IsRegular() && !isTemp(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// markerName is the marker's file name: <kind>-<job>-<op>.
func markerName(kind allocator.Kind, jobID string, op Op) string {
	return string(kind) + "-" + jobID + "-" + string(op)
}

// MarkerPath is where a marker lives.
func MarkerPath(stateDir string, kind allocator.Kind, jobID string, op Op) string {
	return filepath.Join(stateDir, pendingDir, markerName(kind, jobID, op))
}

func (m Marker) check() error {
	if m.Op != OpReserve && m.Op != OpRelease {
		return &allocator.InputError{Field: "marker op", Value: string(m.Op), Accepted: "reserve or release"}
	}
	if err := checkKind(m.Kind); err != nil {
		return err
	}
	return CheckJobID(m.JobID)
}

// WriteMarker records a change for later. A release marker supersedes the
// job's reserve marker, which it removes: the job is over, so whatever the
// reserve stood for must not be applied any more.
func WriteMarker(stateDir string, m Marker) error {
	if err := m.check(); err != nil {
		return err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("pending marker: %w", err)
	}
	if err := writeAtomic(filepath.Join(stateDir, pendingDir), markerName(m.Kind, m.JobID, m.Op), append(data, '\n')); err != nil {
		return err
	}
	if m.Op == OpRelease {
		return removeIfExists(MarkerPath(stateDir, m.Kind, m.JobID, OpReserve))
	}
	return nil
}

// RemoveMarker deletes one marker; a missing one is no error.
func RemoveMarker(stateDir string, kind allocator.Kind, jobID string, op Op) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := CheckJobID(jobID); err != nil {
		return err
	}
	return removeIfExists(MarkerPath(stateDir, kind, jobID, op))
}

// Markers lists the pending markers, oldest first. A reserve marker whose
// job also has a release marker is left out (a crash between writing the
// release and removing the reserve can leave both). Unreadable files are
// reported in the error, after the good markers are returned.
func Markers(stateDir string) ([]Marker, error) {
	dir := filepath.Join(stateDir, pendingDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pending markers: %w", err)
	}
	var all []Marker
	var errs []error
	released := map[string]bool{}
	for _, e := range entries {
		if !e.Type().IsRegular() || isTemp(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("pending marker: %w", err))
			continue
		}
		var m Marker
		if err := json.Unmarshal(data, &m); err != nil {
			errs = append(errs, fmt.Errorf("pending marker %s: %w", path, err))
			continue
		}
		if err := m.check(); err != nil || e.Name() != markerName(m.Kind, m.JobID, m.Op) {
			errs = append(errs, fmt.Errorf("pending marker %s: does not match its contents (%s %s job %s)", path, m.Op, m.Kind, m.JobID))
			continue
		}
		if m.Op == OpRelease {
			released[string(m.Kind)+"\n"+m.JobID] = true
		}
		all = append(all, m)
	}
	out := all[:0]
	for _, m := range all {
		if m.Op == OpReserve && released[string(m.Kind)+"\n"+m.JobID] {
			continue
		}
		out = append(out, m)
	}
	sortMarkers(out)
	return out, errors.Join(errs...)
}

// sortMarkers orders by time, then by file name, so settling replays
// changes in the order they happened.
func sortMarkers(ms []Marker) {
	slices.SortFunc(ms, func(a, b Marker) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(markerName(a.Kind, a.JobID, a.Op), markerName(b.Kind, b.JobID, b.Op))
	})
}

// tempPrefix starts files being written; readers skip every dot file.
const tempPrefix = ".tmp-"

func isTemp(name string) bool { return strings.HasPrefix(name, ".") }

// writeAtomic writes dir/name through a temporary file and a rename, so a
// reader sees the old file or the new one, never a part. The directory is
// created world-readable: the TaskProlog reads as the job's user.
func writeAtomic(dir, name string, data []byte) error {
	if err := mkdirReadable(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+name+"-")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	done = true
	return nil
}

// mkdirReadable creates dir and its missing parents with mode 0755 whatever
// the umask (slurmd's may be strict).
func mkdirReadable(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirReadable(parent); err != nil {
			return err
		}
	}
	err := os.Mkdir(dir, 0o755)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil // made by a concurrent program of another job
	case err != nil:
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}
