package gpu

import (
	"strconv"
	"strings"
)

// Vendor is what differs between GPU makers outside the provider: the
// variables that hand a program its GPUs and the device files a scheduler
// confines a job to. Root programs that do not scan (the Slurm TaskProlog,
// the PBS env file) know it from the configured provider alone.
type Vendor struct {
	Name string // "NVIDIA", "AMD"
	// deviceFile is the prefix of a GPU's device file; the number after
	// it is the Device's Minor.
	deviceFile string
	// firstMinor is the Minor of the first GPU on a typical node, for a
	// gres.conf that lists the device files in order.
	firstMinor int
	exports    func(ids []ID, form Form) []Env
	// variables are every name exports may set, first the one a
	// scheduler sets too.
	variables []string
}

// Form says how exports name GPUs where a runtime accepts either.
type Form int

const (
	// ByIndex names GPUs by their index, for a program that sees every
	// GPU of the node.
	ByIndex Form = iota
	// ByUUID names GPUs by UUID where the runtime takes them, which holds
	// however a scheduler renumbers the GPUs a job may open.
	ByUUID
)

// Env is one environment variable.
type Env struct{ Name, Value string }

// VendorOf is the vendor of a provider name (gpu.provider): AMD for
// "amdsmi", NVIDIA for the others (the fake provider stands in for NVML).
func VendorOf(provider string) Vendor {
	if provider == ProviderAMDSMI {
		return amd
	}
	return nvidia
}

// Exports are the variables that give a program the GPUs ids, in the
// order given, which becomes the program's device 0, 1, …: a Set's IDs
// (index order), or a scheduler's slots. nil for no GPUs.
func (v Vendor) Exports(ids []ID, form Form) []Env {
	if len(ids) == 0 {
		return nil
	}
	return v.exports(ids, form)
}

func joinUUIDs(ids []ID) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.UUID
	}
	return strings.Join(out, ",")
}

func joinIndices(ids []ID) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.Itoa(id.Index)
	}
	return strings.Join(out, ",")
}

// Variables names every variable Exports may set; the first is the one a
// scheduler sets itself (Slurm's CUDA_VISIBLE_DEVICES for NVIDIA).
func (v Vendor) Variables() []string { return append([]string(nil), v.variables...) }

// DeviceFile is the device file of the GPU with the given Minor.
func (v Vendor) DeviceFile(minor int) string { return v.deviceFile + strconv.Itoa(minor) }

// NthDeviceFile is the device file of the n-th GPU (from 0) on a node
// whose device files are numbered in order from the first.
func (v Vendor) NthDeviceFile(n int) string { return v.DeviceFile(v.firstMinor + n) }

// NVIDIA: CUDA numbers GPUs in PCI bus order, as NVML does, only when
// CUDA_DEVICE_ORDER says so; CUDA_VISIBLE_DEVICES takes indices or UUIDs.
// Device files are /dev/nvidia<minor>.
var nvidia = Vendor{
	Name:       "NVIDIA",
	deviceFile: "/dev/nvidia",
	firstMinor: 0,
	variables:  []string{"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"},
	exports: func(ids []ID, form Form) []Env {
		if form == ByUUID {
			return []Env{{"CUDA_VISIBLE_DEVICES", joinUUIDs(ids)}}
		}
		return []Env{{"CUDA_VISIBLE_DEVICES", joinIndices(ids)}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}}
	},
}

// AMD: ROCR_VISIBLE_DEVICES (the ROCm runtime, under HIP, OpenCL and the
// rest) takes the runtime's device indices, or UUIDs of the form rocminfo
// prints, which amd-smi does not report; so always indices, which the
// amdsmi provider numbers in the runtime's order. HIP_VISIBLE_DEVICES
// takes indices only, counted among the devices ROCR_VISIBLE_DEVICES
// leaves: 0..n-1 keeps them all, and overrides a value (or a
// CUDA_VISIBLE_DEVICES, which HIP also reads) inherited from elsewhere.
// Device files are the render nodes /dev/dri/renderD<minor>, from 128.
var amd = Vendor{
	Name:       "AMD",
	deviceFile: "/dev/dri/renderD",
	firstMinor: 128,
	variables:  []string{"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"},
	exports: func(ids []ID, _ Form) []Env {
		hip := make([]string, len(ids))
		for i := range hip {
			hip[i] = strconv.Itoa(i)
		}
		return []Env{{"ROCR_VISIBLE_DEVICES", joinIndices(ids)}, {"HIP_VISIBLE_DEVICES", strings.Join(hip, ",")}}
	},
}
