// Package gpu says what the GPUs of this machine are and which processes use
// them, from NVML on real nodes or from a JSON file on machines without GPUs.
package gpu

import (
	"context"
	"errors"
	"fmt"
)

// Process is one process using a GPU.
type Process struct {
	PID          int      `json:"pid"`
	Name         string   `json:"name"`             // /proc/<pid>/comm (or fake file)
	User         string   `json:"user"`             // account name; "uid:N" when the uid has no name; "" when unknown
	UID          int      `json:"-"`                // -1 when unknown
	UsedMemoryMB int64    `json:"used_memory_mb"`   // -1 when the driver does not say
	Cmdline      []string `json:"-"`                // argv from /proc/<pid>/cmdline (or fake file)
	JobID        string   `json:"job_id,omitempty"` // Slurm job from its Slurm cgroup, else from the slurmstepd that started it (never its environment); "" when none
}

// Device is one GPU as seen now.
type Device struct {
	Index         int    // NVML index (PCI bus order)
	UUID          string // the stable key: indices and minors differ between tools
	Name          string
	Minor         int // /dev/nvidia<minor>
	MemoryUsedMB  int64
	MemoryTotalMB int64
	Processes     []Process // sorted by PID; one PID appears once per device
}

// Provider reports the GPUs of this machine and their processes.
type Provider interface {
	// Devices returns the GPUs sorted by Index.
	Devices(ctx context.Context) ([]Device, error)
	Close() error
}

// Options choose and configure a Provider.
type Options struct {
	Provider string // "auto" (also ""), "nvml" or "fake"
	FakeFile string // provider "fake": path of the JSON file
	ProcRoot string // default "/proc"; tests point it at a fixture tree
}

const defaultProcRoot = "/proc"

// Open returns the provider the options name. "auto" means NVML and fails when
// NVML does not initialise: silently reporting no GPUs would let every GPU of
// a broken node look free.
func Open(opts Options) (Provider, error) {
	procRoot := opts.ProcRoot
	if procRoot == "" {
		procRoot = defaultProcRoot
	}
	switch opts.Provider {
	case "", "auto", "nvml":
		return openNVML(procRoot)
	case "fake":
		if opts.FakeFile == "" {
			return nil, errors.New(`gpu provider "fake" needs a fake file (gpu.fake_file)`)
		}
		return newFakeProvider(opts.FakeFile, procRoot), nil
	default:
		return nil, fmt.Errorf("unknown gpu provider %q (accepted: \"auto\", \"nvml\", \"fake\")", opts.Provider)
	}
}

// nvmlUnavailableHint ends every error that means "no usable NVML here".
const nvmlUnavailableHint = `use gpu provider "fake" on machines without NVIDIA GPUs`
