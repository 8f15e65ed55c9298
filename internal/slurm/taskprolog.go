package slurm

import (
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"

	"canhazgpu/allocator"
	"canhazgpu/allocator/gpu"
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
	vendor := gpu.VendorOf(h.Config.GPU.Provider)
	exports := h.taskExports(vendor)
	if len(exports) == 0 {
		return
	}
	var b bytes.Buffer
	for _, e := range exports {
		if !e.valid(vendor) {
			return
		}
		b.WriteString("export " + e.name + "=" + e.value + "\n")
	}
	_, _ = out.Write(b.Bytes()) // one write: a task never sees half of it
}

// export is one variable the TaskProlog sets.
type export struct{ name, value string }

// The TaskProlog sets only the vendor's variables (gpu.Vendor): each a
// comma-separated list of GPU ids or indices, but for CUDA_DEVICE_ORDER,
// which must say PCI_BUS_ID (so that CUDA numbers GPUs as NVML does).
const (
	envDeviceOrder = "CUDA_DEVICE_ORDER"
	pciBusOrder    = "PCI_BUS_ID"
)

func (e export) valid(v gpu.Vendor) bool {
	switch {
	case !slices.Contains(v.Variables(), e.name):
		return false
	case e.name == envDeviceOrder:
		return e.value == pciBusOrder
	case e.value == "":
		return false
	}
	for _, item := range strings.Split(e.value, ",") {
		if jobstate.CheckUUID(item) != nil && !isIndex(item) {
			return false
		}
	}
	return true
}

// isIndex accepts a GPU index as strconv.Itoa writes it.
func isIndex(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && strconv.Itoa(n) == s
}

// taskExports decides the variables to export.
func (h *Hook) taskExports(vendor gpu.Vendor) []export {
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
	form := gpu.ByUUID
	switch mode {
	case exportIndex:
		form = gpu.ByIndex
	case exportAuto:
		// Slurm's own value already names these GPUs, in whatever numbering
		// the node uses (ConstrainDevices renumbers from 0): keep it.
		if !moved && h.Env[vendor.Variables()[0]] != "" {
			return nil
		}
	}
	ids := make([]gpu.ID, len(gpus))
	for i, g := range gpus {
		ids[i] = gpu.ID{UUID: g.UUID, Index: g.Index}
	}
	var out []export
	for _, e := range vendor.Exports(ids, form) {
		out = append(out, export{e.Name, e.Value})
	}
	return out
}
