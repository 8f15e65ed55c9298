package slurm

import (
	"bytes"
	"io"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/internal/jobstate"
)

// The [slurm] export modes that differ from exporting UUIDs.
const (
	exportAuto  = "auto"
	exportIndex = "index"
	exportNone  = "none"
)

// TaskProlog prints the "export" lines that give the task its GPUs. It runs
// as the job's user before every task, with no timeout: it reads only the
// job file the Prolog wrote (no store, no NVML), and prints nothing at all
// when anything is missing, so Slurm's own CUDA_VISIBLE_DEVICES stays.
// slurmstepd parses its stdout and stderr, so it never writes to stderr.
//
// slurmstepd applies whatever it prints to the task's environment, so it
// prints only the variables canhazgpu owns, each with a value of the form
// canhazgpu writes (checked once more just before printing), and nothing
// at all when any value is not.
func (h *Hook) TaskProlog(out io.Writer) {
	exports := h.taskExports()
	if len(exports) == 0 {
		return
	}
	var b bytes.Buffer
	for _, e := range exports {
		if !e.valid() {
			return
		}
		b.WriteString("export " + e.name + "=" + e.value + "\n")
	}
	_, _ = out.Write(b.Bytes()) // one write: a task never sees half of it
}

// export is one variable the TaskProlog sets.
type export struct{ name, value string }

// The variables the TaskProlog may set, with the form of their values.
const (
	envVisibleDevices = "CUDA_VISIBLE_DEVICES" // GPU ids or NVML indices, comma-separated
	envDeviceOrder    = "CUDA_DEVICE_ORDER"    // PCI_BUS_ID, so that CUDA numbers GPUs as NVML does
	pciBusOrder       = "PCI_BUS_ID"
)

func (e export) valid() bool {
	switch e.name {
	case envVisibleDevices:
		if e.value == "" {
			return false
		}
		for _, item := range strings.Split(e.value, ",") {
			if jobstate.CheckUUID(item) != nil && !isIndex(item) {
				return false
			}
		}
		return true
	case envDeviceOrder:
		return e.value == pciBusOrder
	default:
		return false
	}
}

// isIndex accepts a GPU index as strconv.Itoa writes it.
func isIndex(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && strconv.Itoa(n) == s
}

// taskExports decides the variables to export.
func (h *Hook) taskExports() []export {
	mode := h.Config.Slurm.Export
	jobID := h.Env["SLURM_JOB_ID"]
	if mode == exportNone || jobstate.CheckJobID(jobID) != nil {
		return nil
	}
	indices, ok, err := stepGPUs(h.Env)
	if !ok || err != nil {
		return nil // a step without GPUs, or a list we do not understand
	}
	f, err := jobstate.ReadJob(h.Config.Slurm.StateDir, allocator.KindSlurm, jobID)
	if err != nil {
		return nil // missing, or not root's, or not what the Prolog writes
	}
	var gpus []jobstate.GPU
	moved := false
	for _, i := range indices {
		for _, g := range f.GPUs {
			if g.SchedIndex == i {
				gpus = append(gpus, g)
				moved = moved || g.Moved
				break
			}
		}
	}
	if len(gpus) == 0 {
		return nil
	}
	switch mode {
	case exportIndex:
		idx := make([]string, len(gpus))
		for i, g := range gpus {
			idx[i] = strconv.Itoa(g.Index)
		}
		// NVML numbers GPUs in PCI bus order; CUDA does so only when told.
		return []export{{envVisibleDevices, strings.Join(idx, ",")}, {envDeviceOrder, pciBusOrder}}
	case exportAuto:
		// Slurm's own value already names these GPUs, in whatever numbering
		// the node uses (ConstrainDevices renumbers from 0): keep it.
		if !moved && h.Env["CUDA_VISIBLE_DEVICES"] != "" {
			return nil
		}
	}
	uuids := make([]string, len(gpus))
	for i, g := range gpus {
		uuids[i] = g.UUID
	}
	return []export{{envVisibleDevices, strings.Join(uuids, ",")}}
}
