package gpu

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

const (
	fakeDefaultName          = "Fake GPU"
	fakeDefaultMemoryTotalMB = 81920
)

// fakeProvider reads the fake GPU file (docs/fake-gpus.md) at every call, so that
// a test can change GPU usage while the system runs.
type fakeProvider struct {
	path     string
	procRoot string
}

var _ Provider = (*fakeProvider)(nil)

func newFakeProvider(path, procRoot string) *fakeProvider {
	return &fakeProvider{path: path, procRoot: procRoot}
}

// The pointers tell "absent" from a zero value, since absent means "default"
// or "read /proc".
type fakeFile struct {
	GPUs *[]fakeGPU `json:"gpus"`
}

type fakeGPU struct {
	Index         *int          `json:"index"`
	UUID          string        `json:"uuid"`
	Name          string        `json:"name"`
	Minor         *int          `json:"minor"`
	MemoryUsedMB  *int64        `json:"memory_used_mb"`
	MemoryTotalMB *int64        `json:"memory_total_mb"`
	Utilization   *int          `json:"utilization"`
	Processes     []fakeProcess `json:"processes"`
	MIG           []fakeMIG     `json:"mig"`
}

type fakeMIG struct {
	Slot          int    `json:"slot"`
	UUID          string `json:"uuid"`
	MemoryUsedMB  *int64 `json:"memory_used_mb"`
	MemoryTotalMB *int64 `json:"memory_total_mb"`
	PIDs          []int  `json:"pids"`
}

type fakeProcess struct {
	PID          int      `json:"pid"`
	Name         *string  `json:"name"`
	User         *string  `json:"user"`
	UID          *int     `json:"uid"`
	UsedMemoryMB *int64   `json:"used_memory_mb"`
	Cmdline      []string `json:"cmdline"`
	JobID        *string  `json:"job_id"`
}

// Devices reports utilisation only when asked, as NVML does, so that a
// caller that shows it but forgot to ask shows it unknown here too.
func (f *fakeProvider) Devices(ctx context.Context, extras ...Extra) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("fake gpu file: %w", err)
	}
	file, err := decodeFakeFile(data)
	if err != nil {
		return nil, fmt.Errorf("fake gpu file %s: %w", f.path, err)
	}
	devs, err := f.devices(file, wants(extras, ReadUtilization))
	if err != nil {
		return nil, fmt.Errorf("fake gpu file %s: %w", f.path, err)
	}
	return devs, nil
}

func (f *fakeProvider) Close() error { return nil }

func decodeFakeFile(data []byte) (fakeFile, error) {
	var file fakeFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return file, describeJSONError(data, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return file, fmt.Errorf("line %d: data after the JSON object", lineOf(data, dec.InputOffset()))
	}
	// An empty object is more likely a mistake than a node without GPUs.
	if file.GPUs == nil {
		return file, errors.New(`missing "gpus" list`)
	}
	return file, nil
}

// describeJSONError adds the line number that encoding/json leaves out, so a
// person editing the file can find the mistake.
func describeJSONError(data []byte, err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("line %d: %w", lineOf(data, syntax.Offset), err)
	case errors.As(err, &typ):
		return fmt.Errorf("line %d: %w", lineOf(data, typ.Offset), err)
	case errors.Is(err, io.EOF):
		return errors.New("empty file")
	}
	return err
}

func lineOf(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}

func (f *fakeProvider) devices(file fakeFile, utilization bool) ([]Device, error) {
	devs := make([]Device, 0, len(*file.GPUs))
	seenIndex := make(map[int]bool)
	seenUUID := make(map[string]int)
	for n, g := range *file.GPUs {
		d, err := f.device(g, utilization)
		if err != nil {
			return nil, fmt.Errorf("gpus[%d]: %w", n, err)
		}
		if seenIndex[d.Index] {
			return nil, fmt.Errorf("gpus[%d]: duplicate index %d", n, d.Index)
		}
		seenIndex[d.Index] = true
		if prev, ok := seenUUID[d.UUID]; ok {
			return nil, fmt.Errorf("gpus[%d]: duplicate uuid %q (also gpu %d)", n, d.UUID, prev)
		}
		seenUUID[d.UUID] = d.Index
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b Device) int { return cmp.Compare(a.Index, b.Index) })
	return devs, nil
}

func (f *fakeProvider) device(g fakeGPU, utilization bool) (Device, error) {
	if g.Index == nil {
		return Device{}, errors.New(`missing "index"`)
	}
	d := Device{
		Index:         *g.Index,
		UUID:          g.UUID,
		Name:          g.Name,
		Minor:         *g.Index,
		MemoryTotalMB: fakeDefaultMemoryTotalMB,
	}
	if d.Index < 0 {
		return d, fmt.Errorf("negative index %d", d.Index)
	}
	if d.UUID == "" {
		d.UUID = fakeUUID(d.Index)
	}
	if d.Name == "" {
		d.Name = fakeDefaultName
	}
	if g.Minor != nil {
		if *g.Minor < 0 {
			return d, fmt.Errorf("gpu %d: negative minor %d", d.Index, *g.Minor)
		}
		d.Minor = *g.Minor
	}
	if g.MemoryTotalMB != nil {
		if *g.MemoryTotalMB < 0 {
			return d, fmt.Errorf("gpu %d: negative memory_total_mb %d", d.Index, *g.MemoryTotalMB)
		}
		d.MemoryTotalMB = *g.MemoryTotalMB
	}
	if g.Utilization != nil {
		// Absent stays unknown, as on a GPU whose driver does not say.
		if *g.Utilization < 0 || *g.Utilization > 100 {
			return d, fmt.Errorf("gpu %d: utilization %d: want a percentage from 0 to 100", d.Index, *g.Utilization)
		}
		if utilization {
			d.Utilization = Percent(*g.Utilization)
		}
	}

	seenPID := make(map[int]bool)
	var sum int64
	for _, fp := range g.Processes {
		p, err := f.process(fp)
		if err != nil {
			return d, fmt.Errorf("gpu %d: %w", d.Index, err)
		}
		if seenPID[p.PID] {
			return d, fmt.Errorf("gpu %d: duplicate pid %d", d.Index, p.PID)
		}
		seenPID[p.PID] = true
		if p.UsedMemoryMB > 0 {
			sum += p.UsedMemoryMB
		}
		d.Processes = append(d.Processes, p)
	}
	slices.SortFunc(d.Processes, func(a, b Process) int { return cmp.Compare(a.PID, b.PID) })

	for _, fm := range g.MIG {
		m, err := fakeMIGDevice(fm, seenPID)
		if err != nil {
			return d, fmt.Errorf("gpu %d: mig slot %d: %w", d.Index, fm.Slot, err)
		}
		d.MIG = append(d.MIG, m)
	}

	d.MemoryUsedMB = sum
	if g.MemoryUsedMB != nil {
		if *g.MemoryUsedMB < 0 {
			return d, fmt.Errorf("gpu %d: negative memory_used_mb %d", d.Index, *g.MemoryUsedMB)
		}
		d.MemoryUsedMB = *g.MemoryUsedMB
	}
	return d, nil
}

// fakeMIGDevice checks one MIG device: its processes must be the parent
// GPU's, as NVML lists a MIG device's processes under the parent too.
func fakeMIGDevice(fm fakeMIG, parentPIDs map[int]bool) (MIGDevice, error) {
	m := MIGDevice{Slot: fm.Slot, UUID: fm.UUID, MemoryUsedMB: -1, MemoryTotalMB: -1}
	if fm.Slot < 0 {
		return m, errors.New("negative slot")
	}
	if fm.MemoryTotalMB != nil && fm.MemoryUsedMB != nil {
		if *fm.MemoryTotalMB < 0 || *fm.MemoryUsedMB < 0 {
			return m, errors.New("negative memory")
		}
		m.MemoryUsedMB, m.MemoryTotalMB = *fm.MemoryUsedMB, *fm.MemoryTotalMB
	}
	for _, pid := range fm.PIDs {
		if !parentPIDs[pid] {
			return m, fmt.Errorf("pid %d is not among the GPU's processes", pid)
		}
	}
	m.PIDs = slices.Sorted(slices.Values(fm.PIDs))
	return m, nil
}

// fakeUUID is stable across runs so that reservations keyed by UUID survive a
// restart, and its zero-padded index makes it recognisable in output.
func fakeUUID(index int) string {
	return fmt.Sprintf("GPU-fa4e0000-0000-4000-8000-%012d", index)
}

// process fills what the file leaves out from /proc like NVML would, so a test
// can point at a real process; what the file says wins, so a test can also
// describe users that do not exist on this machine.
func (f *fakeProvider) process(fp fakeProcess) (Process, error) {
	if fp.PID <= 0 {
		return Process{}, fmt.Errorf("bad pid %d", fp.PID)
	}
	p := Process{PID: fp.PID, UID: -1, UsedMemoryMB: -1}
	if fp.UsedMemoryMB != nil {
		if *fp.UsedMemoryMB < 0 {
			return p, fmt.Errorf("pid %d: negative used_memory_mb %d", fp.PID, *fp.UsedMemoryMB)
		}
		p.UsedMemoryMB = *fp.UsedMemoryMB
	}
	if fp.UID != nil && *fp.UID < 0 {
		return p, fmt.Errorf("pid %d: negative uid %d", fp.PID, *fp.UID)
	}

	if fp.Name == nil || fp.User == nil || fp.Cmdline == nil || fp.JobID == nil {
		// A pid that does not exist here simply keeps empty fields.
		if proc, err := LookupProcess(f.procRoot, fp.PID); err == nil {
			p.Name, p.Cmdline, p.JobID = proc.Name, proc.Cmdline, proc.JobID
			p.User, p.UID = proc.User, proc.UID
		}
	}
	if fp.Name != nil {
		p.Name = *fp.Name
	}
	if fp.User != nil {
		// The /proc uid belongs to another account than the one the file names.
		p.User, p.UID = *fp.User, -1
	}
	if fp.UID != nil {
		p.UID = *fp.UID
		if fp.User == nil {
			p.User = users.name(p.UID)
		}
	}
	if fp.Cmdline != nil {
		p.Cmdline = fp.Cmdline
	}
	if fp.JobID != nil {
		p.JobID = *fp.JobID
	}
	return p, nil
}
