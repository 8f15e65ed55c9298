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
func (h *Hook) TaskProlog(out io.Writer) {
	lines := h.taskExports()
	if len(lines) == 0 {
		return
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("export " + l + "\n")
	}
	_, _ = out.Write(b.Bytes()) // one write: a task never sees half of it
}

// taskExports decides the NAME=value pairs to export.
func (h *Hook) taskExports() []string {
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
		return nil
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
		return []string{"CUDA_VISIBLE_DEVICES=" + strings.Join(idx, ","), "CUDA_DEVICE_ORDER=PCI_BUS_ID"}
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
	return []string{"CUDA_VISIBLE_DEVICES=" + strings.Join(uuids, ",")}
}
