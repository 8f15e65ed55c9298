//go:build linux && cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Functions an older driver may not export. Calling a missing one makes the
// dynamic linker end the process, which recover cannot catch, so each is
// looked up once at Init.
const (
	symMemoryInfoV2 = "nvmlDeviceGetMemoryInfo_v2" // R510+
	symMigMode      = "nvmlDeviceGetMigMode"       // R450+
)

// go-nvml calls the newest of these the driver has, so any one will do.
var symMPSProcesses = []string{
	"nvmlDeviceGetMPSComputeRunningProcesses_v3",
	"nvmlDeviceGetMPSComputeRunningProcesses_v2",
	"nvmlDeviceGetMPSComputeRunningProcesses",
}

const (
	// memoryNotAvailable is NVML_VALUE_NOT_AVAILABLE in an unsigned long long.
	memoryNotAvailable = math.MaxUint64
	// defaultPIDMax is PID_MAX_LIMIT on 64-bit kernels, the largest pid_max
	// can be, for when pid_max cannot be read.
	defaultPIDMax = 4194304
)

type nvmlProvider struct {
	lib      nvml.Interface
	procRoot string
	pidMax   uint32

	hasMemoryV2 bool
	hasMIG      bool
	hasMPS      bool

	// mu keeps Close from shutting NVML down under a running scan; after
	// Shutdown the library is unloaded and any call would crash.
	mu     sync.Mutex
	closed bool
}

var _ Provider = (*nvmlProvider)(nil)

func openNVML(procRoot string) (Provider, error) {
	p, err := newNVMLProvider(nvml.New(), procRoot)
	if err != nil {
		// Not p itself: a nil *nvmlProvider in a Provider is no nil
		// Provider, and closing it would crash.
		return nil, err
	}
	return p, nil
}

// newNVMLProvider initialises lib; Close shuts it down again.
func newNVMLProvider(lib nvml.Interface, procRoot string) (*nvmlProvider, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		// No other call is allowed now: without the library loaded, the
		// first one ends the process.
		return nil, fmt.Errorf("NVML unavailable: %w; %s", ret, nvmlUnavailableHint)
	}
	ext := lib.Extensions()
	has := func(names ...string) bool {
		return slices.ContainsFunc(names, func(n string) bool { return ext.LookupSymbol(n) == nil })
	}
	return &nvmlProvider{
		lib:         lib,
		procRoot:    procRoot,
		pidMax:      readPIDMax(procRoot),
		hasMemoryV2: has(symMemoryInfoV2),
		hasMIG:      has(symMigMode),
		hasMPS:      has(symMPSProcesses...),
	}, nil
}

func readPIDMax(procRoot string) uint32 {
	b, err := os.ReadFile(filepath.Join(procRoot, "sys", "kernel", "pid_max"))
	if err != nil {
		return defaultPIDMax
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil || n == 0 {
		return defaultPIDMax
	}
	return uint32(n)
}

func (p *nvmlProvider) Devices(ctx context.Context, extras ...Extra) ([]Device, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("nvml provider is closed")
	}
	count, ret := p.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("get gpu count: %w", ret)
	}
	devs := make([]Device, 0, max(count, 0))
	for i := range count {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := p.device(i, wants(extras, ReadUtilization))
		if err != nil {
			return nil, fmt.Errorf("gpu %d: %w", i, err)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

func (p *nvmlProvider) device(index int, utilization bool) (Device, error) {
	h, ret := p.lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("get handle: %w", ret)
	}
	d := Device{Index: index}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		return d, fmt.Errorf("get uuid: %w", ret)
	}
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		return d, fmt.Errorf("get name: %w", ret)
	}
	if d.Minor, ret = h.GetMinorNumber(); ret != nvml.SUCCESS {
		return d, fmt.Errorf("get minor number: %w", ret)
	}
	used, total, err := p.memory(h)
	if err != nil {
		return d, err
	}
	d.MemoryUsedMB, d.MemoryTotalMB = bytesToMB(used), bytesToMB(total)
	if d.Processes, d.MIG, err = p.processes(h, total); err != nil {
		return d, err
	}
	if !utilization {
		return d, nil
	}
	d.Utilization = deviceUtilization(h)
	if len(d.Processes) > 0 {
		processUtilization(h, d.Processes)
	}
	return d, nil
}

// deviceUtilization is the share of the last sample period (about a
// second) in which a kernel ran. A GPU that cannot say (MIG mode, vGPU, a
// driver busy resetting it, or any other refusal) is unknown, never idle:
// the figure serves status and the idle clock only, so it must never fail
// a scan that a Prolog or a grant depends on.
func deviceUtilization(h nvml.Device) Utilization {
	u, ret := h.GetUtilizationRates()
	if ret != nvml.SUCCESS {
		return Utilization{}
	}
	return Percent(int(u.Gpu))
}

// processUtilization fills each process's share of the GPU from the
// driver's newest sample of it. The driver keeps a short buffer of
// samples and has none for a process that has not run a kernel lately
// (NOT_FOUND) or on MIG (NOT_SUPPORTED). Per-process figures are for
// people only (idleness is judged on the GPU's own figure), so any answer
// but SUCCESS leaves them unknown rather than failing the scan.
func processUtilization(h nvml.Device, procs []Process) {
	samples, ret := h.GetProcessUtilization(0)
	if ret != nvml.SUCCESS {
		return
	}
	newest := map[uint32]nvml.ProcessUtilizationSample{}
	for _, s := range samples {
		if prev, ok := newest[s.Pid]; !ok || s.TimeStamp > prev.TimeStamp {
			newest[s.Pid] = s
		}
	}
	for i := range procs {
		if s, ok := newest[uint32(procs[i].PID)]; ok && s.SmUtil <= 100 {
			procs[i].Utilization = Percent(int(s.SmUtil))
		}
	}
}

func bytesToMB(b uint64) int64 { return int64(b / (1 << 20)) }

// memory prefers the v2 call because its "used" leaves out the memory the
// driver reserves for itself, which would make an idle GPU look in use.
func (p *nvmlProvider) memory(h nvml.Device) (used, total uint64, err error) {
	if p.hasMemoryV2 {
		m, ret := h.GetMemoryInfo_v2()
		switch ret {
		case nvml.SUCCESS:
			return m.Used, m.Total, nil
		case nvml.ERROR_NOT_SUPPORTED:
			// Some virtualised GPUs export the symbol but answer only v1.
		default:
			return 0, 0, fmt.Errorf("get memory info v2: %w", ret)
		}
	}
	m, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return 0, 0, fmt.Errorf("get memory info: %w", ret)
	}
	return m.Used, m.Total, nil
}

// processes merges every list NVML keeps, from the GPU and from each of its
// MIG devices: one process can be in several (nvidia-smi's C+G, M+C). It
// also describes the MIG devices, with the processes on each.
func (p *nvmlProvider) processes(h nvml.Device, totalBytes uint64) ([]Process, []MIGDevice, error) {
	memMB := make(map[uint32]int64) // -1: the driver does not say
	if err := p.collect(h, totalBytes, memMB); err != nil {
		return nil, nil, err
	}
	var migs []MIGDevice
	if p.hasMIG {
		handles, err := migDevices(h)
		if err != nil {
			return nil, nil, err
		}
		for _, m := range handles {
			own := make(map[uint32]int64)
			if err := p.collect(m.handle, totalBytes, own); err != nil {
				return nil, nil, fmt.Errorf("mig device %d: %w", m.slot, err)
			}
			for pid, mb := range own {
				if prev, ok := memMB[pid]; !ok || mb > prev {
					memMB[pid] = mb
				}
			}
			migs = append(migs, describeMIG(m, own))
		}
	}

	var procs []Process
	for _, pid := range slices.Sorted(maps.Keys(memMB)) {
		// On error proc still holds the pid with an unknown owner: a process
		// that exited since NVML listed it may still hold the memory.
		proc, _ := LookupProcess(p.procRoot, int(pid))
		proc.UsedMemoryMB = memMB[pid]
		procs = append(procs, proc)
	}
	return procs, migs, nil
}

// describeMIG is what status shows of a MIG device. Its UUID and memory
// are for people only, so a driver that refuses them leaves them empty
// rather than failing the scan.
func describeMIG(m migDevice, pids map[uint32]int64) MIGDevice {
	d := MIGDevice{Slot: m.slot, MemoryUsedMB: -1, MemoryTotalMB: -1}
	if uuid, ret := m.handle.GetUUID(); ret == nvml.SUCCESS {
		d.UUID = uuid
	}
	if mem, ret := m.handle.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryUsedMB, d.MemoryTotalMB = bytesToMB(mem.Used), bytesToMB(mem.Total)
	}
	for _, pid := range slices.Sorted(maps.Keys(pids)) {
		d.PIDs = append(d.PIDs, int(pid))
	}
	return d
}

type processList struct {
	kind string
	get  func() ([]nvml.ProcessInfo, nvml.Return)
}

func (p *nvmlProvider) collect(h nvml.Device, totalBytes uint64, memMB map[uint32]int64) error {
	lists := []processList{
		{"compute", h.GetComputeRunningProcesses},
		{"graphics", h.GetGraphicsRunningProcesses},
	}
	if p.hasMPS {
		lists = append(lists, processList{"mps", h.GetMPSComputeRunningProcesses})
	}
	for _, l := range lists {
		infos, ret := l.get()
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_NO_PERMISSION:
			// A MIG parent without privileges, vGPU, or a GPU without
			// MPS: there is no such list, which is not a failure.
			continue
		default:
			return fmt.Errorf("get %s processes: %w", l.kind, ret)
		}
		for _, info := range infos {
			if !p.plausible(info, totalBytes) {
				continue
			}
			mb := int64(-1)
			if info.UsedGpuMemory != memoryNotAvailable {
				mb = bytesToMB(info.UsedGpuMemory)
			}
			if prev, ok := memMB[info.Pid]; !ok || mb > prev {
				memMB[info.Pid] = mb
			}
		}
	}
	return nil
}

// plausible rejects the garbage of drivers 535.43 to 535.86, whose process
// struct grew without a version bump so that pids and sizes come back
// shifted. A pid is always below pid_max.
func (p *nvmlProvider) plausible(info nvml.ProcessInfo, totalBytes uint64) bool {
	if info.Pid == 0 || info.Pid >= p.pidMax {
		return false
	}
	return info.UsedGpuMemory == memoryNotAvailable || info.UsedGpuMemory <= totalBytes
}

type migDevice struct {
	slot   int
	handle nvml.Device
}

// migDevices returns the MIG devices of a GPU in MIG mode. Their processes
// belong to the parent GPU, which is what gets reserved, and the parent's own
// lists may be refused without privileges.
func migDevices(h nvml.Device) ([]migDevice, error) {
	mode, _, ret := h.GetMigMode()
	switch {
	case ret == nvml.ERROR_NOT_SUPPORTED:
		return nil, nil
	case ret != nvml.SUCCESS:
		return nil, fmt.Errorf("get mig mode: %w", ret)
	case mode != nvml.DEVICE_MIG_ENABLE:
		return nil, nil
	}
	n, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("get max mig device count: %w", ret)
	}
	var migs []migDevice
	for j := range n {
		m, ret := h.GetMigDeviceHandleByIndex(j)
		switch ret {
		case nvml.SUCCESS:
			migs = append(migs, migDevice{slot: j, handle: m})
		case nvml.ERROR_NOT_FOUND, nvml.ERROR_INVALID_ARGUMENT:
			// An empty slot: MIG devices need not be numbered densely.
		default:
			return nil, fmt.Errorf("get mig device %d: %w", j, ret)
		}
	}
	return migs, nil
}

func (p *nvmlProvider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if ret := p.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %w", ret)
	}
	return nil
}
