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
//
// Only root may write anything there (dir.go): the directory and every one
// above it must be root's and writable by root only, no symbolic link is
// followed inside, files that are not root's are ignored and reported, and
// a file whose content is not what the programs write is rejected
// (check.go). The state directory is created when missing.
package jobstate

import (
	"bytes"
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

// checkKind accepts a batch scheduler's kind. Its name becomes a directory
// name beside the markers', so it is parsed, not merely tested for being
// batch.
func checkKind(kind allocator.Kind) error {
	if k, err := allocator.ParseKind(string(kind)); err != nil || !k.Batch() || k == pendingDir {
		return &allocator.InputError{Field: "job kind", Value: string(kind), Accepted: "a batch scheduler's kind such as slurm or pbs"}
	}
	return nil
}

// JobPath is where the file of a job lives.
func JobPath(stateDir string, kind allocator.Kind, jobID string) string {
	return filepath.Join(stateDir, string(kind), jobID)
}

// WriteJob records a job's GPUs, replacing an older file of the same job
// (a requeued job gets a new one). It creates the directories it needs.
func WriteJob(stateDir string, kind allocator.Kind, jobID string, f JobFile) error {
	if err := checkKind(kind); err != nil {
		return err
	}
	if err := CheckJobID(jobID); err != nil {
		return err
	}
	f.Kind, f.JobID = kind, jobID
	if err := f.check(); err != nil {
		return err
	}
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("job file: %w", err)
	}
	d, err := openDir(stateDir, string(kind), true)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.writeAtomic(jobID, append(data, '\n'))
}

// ReadJob reads a job's file; a missing file is an error matching
// fs.ErrNotExist. A file that is not root's, or whose content is not what
// the Prolog writes, is an error and nothing of it is returned.
func ReadJob(stateDir string, kind allocator.Kind, jobID string) (JobFile, error) {
	if err := checkKind(kind); err != nil {
		return JobFile{}, err
	}
	if err := CheckJobID(jobID); err != nil {
		return JobFile{}, err
	}
	d, err := openDir(stateDir, string(kind), false)
	if err != nil {
		return JobFile{}, err
	}
	defer d.Close()
	data, err := d.readFile(jobID)
	if err != nil {
		return JobFile{}, err
	}
	var f JobFile
	if err := decodeStrict(data, &f); err != nil {
		return JobFile{}, fmt.Errorf("job file %s: %w", JobPath(stateDir, kind, jobID), err)
	}
	if f.Kind != kind || f.JobID != jobID {
		return JobFile{}, fmt.Errorf("job file %s: holds %s job %q; rejected", JobPath(stateDir, kind, jobID), f.Kind, f.JobID)
	}
	if err := f.check(); err != nil {
		return JobFile{}, fmt.Errorf("job file %s: %w; rejected", JobPath(stateDir, kind, jobID), err)
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
	return removeIn(stateDir, string(kind), jobID)
}

// removeIn deletes stateDir/sub/name; a missing file or directory is no
// error.
func removeIn(stateDir, sub, name string) error {
	d, err := openDir(stateDir, sub, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.remove(name)
}

// Jobs lists the job ids that have a file of this kind, for the health
// check's comparison with the jobs the scheduler runs. Files that are not
// root's are left out and reported in the error, after the good ids are
// returned.
func Jobs(stateDir string, kind allocator.Kind) ([]string, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	d, err := openDir(stateDir, string(kind), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.list()
}

// markerName is the marker's file name: <kind>-<job>-<op>.
func markerName(kind allocator.Kind, jobID string, op Op) string {
	return string(kind) + "-" + jobID + "-" + string(op)
}

// MarkerPath is where a marker lives.
func MarkerPath(stateDir string, kind allocator.Kind, jobID string, op Op) string {
	return filepath.Join(stateDir, pendingDir, markerName(kind, jobID, op))
}

// check accepts what the scheduler programs write: settling a marker acts
// on the store as root, so nothing else may pass.
func (m Marker) check() error {
	if m.Op != OpReserve && m.Op != OpRelease {
		return &allocator.InputError{Field: "marker op", Value: string(m.Op), Accepted: "reserve or release"}
	}
	if err := checkKind(m.Kind); err != nil {
		return err
	}
	if err := CheckJobID(m.JobID); err != nil {
		return err
	}
	if err := checkOwner(m.User, m.UID, m.Restart); err != nil {
		return err
	}
	for _, g := range m.GPUs {
		if err := CheckUUID(g); err != nil {
			return err
		}
	}
	return checkText("boot id", m.BootID, 100)
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
	d, err := openDir(stateDir, pendingDir, true)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.writeAtomic(markerName(m.Kind, m.JobID, m.Op), append(data, '\n')); err != nil {
		return err
	}
	if m.Op == OpRelease {
		return d.remove(markerName(m.Kind, m.JobID, OpReserve))
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
	return removeIn(stateDir, pendingDir, markerName(kind, jobID, op))
}

// Markers lists the pending markers, oldest first. A reserve marker whose
// job also has a release marker is left out (a crash between writing the
// release and removing the reserve can leave both). Files that are not
// root's or do not hold a marker the programs write are left out and
// reported in the error, after the good markers are returned.
func Markers(stateDir string) ([]Marker, error) {
	d, err := openDir(stateDir, pendingDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, listErr := d.list()
	errs := []error{listErr}
	var all []Marker
	released := map[string]bool{}
	for _, name := range names {
		m, err := readMarker(d, name)
		if err != nil {
			errs = append(errs, err)
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

// readMarker reads one marker file and accepts it only when it holds what
// its name says and nothing the programs would not write.
func readMarker(d *stateDir, name string) (Marker, error) {
	path := filepath.Join(d.path, name)
	data, err := d.readFile(name)
	if err != nil {
		return Marker{}, fmt.Errorf("pending marker: %w", err)
	}
	var m Marker
	if err := decodeStrict(data, &m); err != nil {
		return Marker{}, fmt.Errorf("pending marker %s: %w; ignored", path, err)
	}
	if err := m.check(); err != nil {
		return Marker{}, fmt.Errorf("pending marker %s: %w; ignored", path, err)
	}
	if name != markerName(m.Kind, m.JobID, m.Op) {
		return Marker{}, fmt.Errorf("pending marker %s: does not match its contents (%s %s job %s); ignored", path, m.Op, m.Kind, m.JobID)
	}
	return m, nil
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

// decodeStrict decodes one JSON object with no field the type lacks.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}
