// Package gpu says what the GPUs of this machine are and which processes use
// them, from NVML or amd-smi on real nodes or from a JSON file on machines
// without GPUs, and how a program is handed a set of them (Set, Vendor).
package gpu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// Utilization is the process's share of the GPU's compute in the
	// driver's latest sample, where the driver samples processes.
	Utilization Utilization `json:"-"`
}

// Utilization is how busy a GPU (or one process on it) was over the
// driver's last sample period, in percent. The zero value is unknown: a
// driver that does not say (MIG, vGPU, AMD, a fake file without the field)
// must never make a GPU look idle, so unknown is never read as 0.
type Utilization struct {
	Percent int  // 0 to 100; meaningful only when Known
	Known   bool // false: the driver does not say
}

// Percent is a known utilisation of p percent, clamped to 0..100.
func Percent(p int) Utilization { return Utilization{Percent: min(max(p, 0), 100), Known: true} }

// String is the percentage ("37%"), or "-" when unknown.
func (u Utilization) String() string {
	if !u.Known {
		return "-"
	}
	return strconv.Itoa(u.Percent) + "%"
}

// Below: the utilisation is known and under pct percent.
func (u Utilization) Below(pct int) bool { return u.Known && u.Percent < pct }

// MarshalJSON writes the percentage as a number, or null when unknown.
func (u Utilization) MarshalJSON() ([]byte, error) {
	if !u.Known {
		return []byte("null"), nil
	}
	return []byte(strconv.Itoa(u.Percent)), nil
}

// Device is one GPU as seen now.
type Device struct {
	Index         int    // the runtime's index: NVML's (PCI bus order), ROCm's (KFD node order)
	UUID          string // the stable key: indices and minors differ between tools
	Name          string
	Minor         int // the number of its device file (Vendor.DeviceFile); 0 for an AMD GPU without a known render node
	MemoryUsedMB  int64
	MemoryTotalMB int64
	// Utilization is the GPU's compute utilisation over the driver's
	// last sample period (NVML: about the last second).
	Utilization Utilization
	Processes   []Process // sorted by PID; one PID appears once per device
	// MIG are the MIG devices of an NVIDIA GPU in MIG mode, by slot. Their
	// processes are also in Processes: the whole GPU is what is reserved.
	MIG []MIGDevice
}

// MIGDevice is one MIG device (a GPU instance slice) of a GPU.
type MIGDevice struct {
	Slot          int // its place among the parent's MIG devices
	UUID          string
	MemoryUsedMB  int64
	MemoryTotalMB int64
	PIDs          []int // the processes on this slice, sorted
}

// Provider reports the GPUs of this machine and their processes.
type Provider interface {
	// Devices returns the GPUs sorted by Index, with what extras ask
	// for besides their identity, memory and processes.
	Devices(ctx context.Context, extras ...Extra) ([]Device, error)
	Close() error
}

// Extra is something a scan reads only when its caller asks. The Prolog,
// the PBS hook, reserve and run need only memory and processes, and every
// driver call more on their path delays each job's start.
type Extra int

const (
	// ReadUtilization fills Device.Utilization and Process.Utilization
	// (NVML: one call per GPU, one more per GPU with processes); unasked,
	// both stay unknown. What shows or judges utilisation asks for it:
	// status, the dashboard and the health check.
	ReadUtilization Extra = iota + 1
)

func wants(extras []Extra, e Extra) bool { return slices.Contains(extras, e) }

// Options choose and configure a Provider.
type Options struct {
	Provider   string // "auto" (also ""), "nvml", "amdsmi" or "fake"
	FakeFile   string // provider "fake": path of the JSON file
	AMDSMIPath string // provider "amdsmi": the amd-smi program; default DefaultAMDSMIPath
	ProcRoot   string // default "/proc"; tests point it at a fixture tree
	SysRoot    string // default "/sys"; tests point it at a fixture tree
}

// The provider names (gpu.provider) besides "auto".
const (
	ProviderNVML   = "nvml"
	ProviderAMDSMI = "amdsmi"
	ProviderFake   = "fake"
)

const (
	defaultProcRoot = "/proc"
	defaultSysRoot  = "/sys"
)

// Open returns the provider the options name. "auto" means NVML and fails when
// NVML does not initialise: silently reporting no GPUs would let every GPU of
// a broken node look free.
func Open(opts Options) (Provider, error) {
	procRoot := opts.ProcRoot
	if procRoot == "" {
		procRoot = defaultProcRoot
	}
	switch opts.Provider {
	case "", "auto", ProviderNVML:
		return openNVML(procRoot)
	case ProviderAMDSMI:
		sysRoot := opts.SysRoot
		if sysRoot == "" {
			sysRoot = defaultSysRoot
		}
		path := opts.AMDSMIPath
		if path == "" {
			path = DefaultAMDSMIPath
		}
		return newAMDSMIProvider(path, procRoot, sysRoot), nil
	case ProviderFake:
		if opts.FakeFile == "" {
			return nil, errors.New(`gpu provider "fake" needs a fake file (gpu.fake_file)`)
		}
		return newFakeProvider(opts.FakeFile, procRoot), nil
	default:
		return nil, fmt.Errorf("unknown gpu provider %q (accepted: \"auto\", \"nvml\", \"amdsmi\", \"fake\")", opts.Provider)
	}
}

// nvmlUnavailableHint ends every error that means "no usable NVML here".
const nvmlUnavailableHint = `use gpu provider "fake" on machines without NVIDIA GPUs`
