//go:build linux && cgo

package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/stretchr/testify/require"
)

const (
	mib = 1 << 20
	gib = 1 << 30

	totalBytes = 80 * gib
	// reservedBytes is what memory info v1 counts as used on an idle GPU.
	reservedBytes = 512 * mib
	notAvailable  = ^uint64(0)
	fixturePIDMax = 32768
)

type listFunc = func() ([]nvml.ProcessInfo, nvml.Return)

func procs(infos ...nvml.ProcessInfo) listFunc {
	return func() ([]nvml.ProcessInfo, nvml.Return) { return infos, nvml.SUCCESS }
}

func fails(ret nvml.Return) listFunc {
	return func() ([]nvml.ProcessInfo, nvml.Return) { return nil, ret }
}

func pi(pid uint32, usedBytes uint64) nvml.ProcessInfo {
	return nvml.ProcessInfo{Pid: pid, UsedGpuMemory: usedBytes, GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF}
}

// newMockDevice returns a GPU without processes and without MIG support.
func newMockDevice(uuid string, minor int, usedBytes uint64) *mock.Device {
	return &mock.Device{
		GetUUIDFunc:        func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetNameFunc:        func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMinorNumberFunc: func() (int, nvml.Return) { return minor, nvml.SUCCESS },
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: totalBytes, Reserved: reservedBytes, Used: usedBytes, Free: totalBytes - usedBytes - reservedBytes}, nvml.SUCCESS
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: totalBytes, Used: usedBytes + reservedBytes, Free: totalBytes - usedBytes - reservedBytes}, nvml.SUCCESS
		},
		GetMigModeFunc: func() (int, int, nvml.Return) {
			return 0, 0, nvml.ERROR_NOT_SUPPORTED
		},
		GetComputeRunningProcessesFunc:    procs(),
		GetGraphicsRunningProcessesFunc:   procs(),
		GetMPSComputeRunningProcessesFunc: procs(),
		// Like a GPU in MIG mode or under vGPU: no utilisation figures.
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
		},
		GetProcessUtilizationFunc: func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			return nil, nvml.ERROR_NOT_SUPPORTED
		},
	}
}

// newMockLib returns a library holding devs whose driver lacks the symbols
// named in missing.
func newMockLib(missing []string, devs ...nvml.Device) (*mock.Interface, *mock.ExtendedInterface) {
	ext := &mock.ExtendedInterface{LookupSymbolFunc: func(name string) error {
		if slices.Contains(missing, name) {
			return errors.New("undefined symbol: " + name)
		}
		return nil
	}}
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc:     func() nvml.ExtendedInterface { return ext },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
	return lib, ext
}

// newFixtureProcRoot holds pid 100 (root, Slurm job 42), pid 101 (an
// unnamed uid) and a pid_max of 32768.
func newFixtureProcRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFixtureProc(t, root, 100, fixtureProc{
		comm:    "python3",
		uid:     0,
		cmdline: []string{"python3", "train.py"},
		cgroup:  "0::/system.slice/slurmstepd.scope/job_42/step_0\n",
	})
	writeFixtureProc(t, root, 101, fixtureProc{comm: "vllm", uid: unnamedUID, cmdline: []string{"vllm", "serve"}})
	dir := filepath.Join(root, "sys", "kernel")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pid_max"), []byte("32768\n"), 0o644))
	return root
}

func newTestProvider(t testing.TB, lib nvml.Interface, procRoot string) *nvmlProvider {
	t.Helper()
	p, err := newNVMLProvider(lib, procRoot)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// Processes as the fixture /proc describes them, with memory from the driver.
func proc100(memMB int64) Process {
	return Process{PID: 100, Name: "python3", User: "root", UID: 0, UsedMemoryMB: memMB,
		Cmdline: []string{"python3", "train.py"}, JobID: "42"}
}

func proc101(memMB int64) Process {
	return Process{PID: 101, Name: "vllm", User: "uid:3999999999", UID: unnamedUID, UsedMemoryMB: memMB,
		Cmdline: []string{"vllm", "serve"}}
}

func vanished(pid int, memMB int64) Process {
	return Process{PID: pid, UID: -1, UsedMemoryMB: memMB}
}

func init() {
	contractProviders = append(contractProviders, contractProvider{"nvml mock", func(t *testing.T, procRoot string) Provider {
		dev0 := newMockDevice("GPU-c0000000-0000-4000-8000-000000000000", 0, 3*mib)
		dev1 := newMockDevice("GPU-c0000000-0000-4000-8000-000000000001", 1, contractMemMB*mib)
		dev1.GetComputeRunningProcessesFunc = procs(pi(100, contractMemMB*mib))
		lib, _ := newMockLib(nil, dev0, dev1)
		p, err := newNVMLProvider(lib, procRoot)
		require.NoError(t, err)
		return p
	}})
}

func TestNVMLDevices(t *testing.T) {
	dev0 := newMockDevice("GPU-00000000-0000-0000-0000-000000000000", 1, 10*gib+mib-1)
	dev0.GetComputeRunningProcessesFunc = procs(pi(100, 10*gib))
	dev1 := newMockDevice("GPU-11111111-1111-1111-1111-111111111111", 0, 0)
	lib, _ := newMockLib(nil, dev0, dev1)
	p := newTestProvider(t, lib, newFixtureProcRoot(t))

	got, err := p.Devices(context.Background())
	require.NoError(t, err)
	require.Equal(t, []Device{
		{
			Index: 0, UUID: "GPU-00000000-0000-0000-0000-000000000000", Name: "NVIDIA H100 80GB HBM3", Minor: 1,
			MemoryUsedMB: 10240, MemoryTotalMB: 81920, Processes: []Process{proc100(10240)},
		},
		{
			Index: 1, UUID: "GPU-11111111-1111-1111-1111-111111111111", Name: "NVIDIA H100 80GB HBM3", Minor: 0,
			MemoryUsedMB: 0, MemoryTotalMB: 81920,
		},
	}, got)
}

func TestNVMLProcesses(t *testing.T) {
	mpsSymbols := []string{
		"nvmlDeviceGetMPSComputeRunningProcesses_v3",
		"nvmlDeviceGetMPSComputeRunningProcesses_v2",
		"nvmlDeviceGetMPSComputeRunningProcesses",
	}
	tests := []struct {
		name     string
		compute  listFunc
		graphics listFunc
		mps      listFunc // nil: must not be called
		missing  []string
		want     []Process
		wantErr  error
		wantMsg  string
	}{
		{
			name:     "merged by pid with the largest memory",
			compute:  procs(pi(100, 1*gib), pi(300, notAvailable)),
			graphics: procs(pi(100, 2*gib)),
			mps:      procs(pi(300, 512*mib), pi(101, 3*mib)),
			want:     []Process{proc100(2048), proc101(3), vanished(300, 512)},
		},
		{
			name:     "memory the driver does not report is unknown",
			compute:  procs(pi(100, notAvailable)),
			graphics: procs(),
			mps:      procs(pi(101, notAvailable)),
			want:     []Process{proc100(-1), proc101(-1)},
		},
		{
			name:     "lists the driver refuses are empty",
			compute:  fails(nvml.ERROR_NOT_SUPPORTED),
			graphics: fails(nvml.ERROR_NO_PERMISSION),
			mps:      procs(pi(100, mib)),
			want:     []Process{proc100(1)},
		},
		{
			name: "garbage from the R535 ABI break is dropped",
			compute: procs(
				pi(0, mib),                 // no such pid
				pi(fixturePIDMax, mib),     // pids stay below pid_max
				pi(4294967295, mib),        // a memory size read as a pid
				pi(100, totalBytes+1),      // more than the GPU has
				pi(fixturePIDMax-1, 2*mib), // largest possible pid
				pi(101, totalBytes),
			),
			graphics: procs(),
			mps:      procs(),
			want:     []Process{proc101(81920), vanished(fixturePIDMax-1, 2)},
		},
		{
			name:     "no MPS call on drivers without it",
			compute:  procs(pi(100, mib)),
			graphics: procs(),
			missing:  mpsSymbols,
			want:     []Process{proc100(1)},
		},
		{
			name:     "MPS through the oldest symbol",
			compute:  procs(),
			graphics: procs(),
			mps:      procs(pi(101, mib)),
			missing:  mpsSymbols[:2],
			want:     []Process{proc101(1)},
		},
		{
			name:     "a failing list fails the scan",
			compute:  procs(pi(100, mib)),
			graphics: fails(nvml.ERROR_UNKNOWN),
			mps:      procs(),
			wantErr:  nvml.ERROR_UNKNOWN,
			wantMsg:  "gpu 0: get graphics processes: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newMockDevice("GPU-0", 0, 0)
			dev.GetComputeRunningProcessesFunc = tt.compute
			dev.GetGraphicsRunningProcessesFunc = tt.graphics
			dev.GetMPSComputeRunningProcessesFunc = tt.mps
			lib, _ := newMockLib(tt.missing, dev)
			p := newTestProvider(t, lib, newFixtureProcRoot(t))

			got, err := p.Devices(context.Background())
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorContains(t, err, tt.wantMsg)
				return
			}
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Equal(t, tt.want, got[0].Processes)
		})
	}
}

func TestNVMLDefaultPIDMax(t *testing.T) {
	dev := newMockDevice("GPU-0", 0, 0)
	dev.GetComputeRunningProcessesFunc = procs(pi(4194303, mib), pi(4194304, mib))
	lib, _ := newMockLib(nil, dev)
	p := newTestProvider(t, lib, t.TempDir()) // no sys/kernel/pid_max

	got, err := p.Devices(context.Background())
	require.NoError(t, err)
	require.Equal(t, []Process{vanished(4194303, 1)}, got[0].Processes)
}

func TestNVMLMemory(t *testing.T) {
	tests := []struct {
		name    string
		missing []string
		v2Ret   nvml.Return
		v1Ret   nvml.Return
		wantMB  int64
		wantV2  int // calls
		wantV1  int
		wantErr error
		wantMsg string
	}{
		{name: "v2 leaves the reserved memory out", wantMB: 1024, wantV2: 1},
		{name: "v1 when the driver lacks v2", missing: []string{"nvmlDeviceGetMemoryInfo_v2"}, wantMB: 1536, wantV1: 1},
		{name: "v1 when v2 is not supported", v2Ret: nvml.ERROR_NOT_SUPPORTED, wantMB: 1536, wantV2: 1, wantV1: 1},
		{name: "v2 failing", v2Ret: nvml.ERROR_GPU_IS_LOST, wantErr: nvml.ERROR_GPU_IS_LOST, wantMsg: "gpu 0: get memory info v2: "},
		{
			name: "v1 failing", missing: []string{"nvmlDeviceGetMemoryInfo_v2"}, v1Ret: nvml.ERROR_GPU_IS_LOST,
			wantErr: nvml.ERROR_GPU_IS_LOST, wantMsg: "gpu 0: get memory info: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newMockDevice("GPU-0", 0, gib)
			v2, v1 := dev.GetMemoryInfo_v2Func, dev.GetMemoryInfoFunc
			dev.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
				m, _ := v2()
				return m, tt.v2Ret
			}
			dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
				m, _ := v1()
				return m, tt.v1Ret
			}
			lib, _ := newMockLib(tt.missing, dev)
			p := newTestProvider(t, lib, t.TempDir())

			got, err := p.Devices(context.Background())
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.ErrorContains(t, err, tt.wantMsg)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantMB, got[0].MemoryUsedMB)
			require.Equal(t, int64(81920), got[0].MemoryTotalMB)
			require.Len(t, dev.GetMemoryInfo_v2Calls(), tt.wantV2)
			require.Len(t, dev.GetMemoryInfoCalls(), tt.wantV1)
		})
	}
}

func TestNVMLMIG(t *testing.T) {
	migDevice := func(compute, graphics listFunc) *mock.Device {
		return &mock.Device{
			GetComputeRunningProcessesFunc:    compute,
			GetGraphicsRunningProcessesFunc:   graphics,
			GetMPSComputeRunningProcessesFunc: fails(nvml.ERROR_NOT_SUPPORTED),
			GetUUIDFunc:                       func() (string, nvml.Return) { return "MIG-0d2f5a7c-1e3b-5d4f-9a8c-6b7e0f1d2c3a", nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: 20 * gib, Used: 3 * gib}, nvml.SUCCESS
			},
		}
	}
	// Slots 1 and 2 are empty; the parent refuses its own lists.
	migGPU := func(slot3 *mock.Device) *mock.Device {
		dev := newMockDevice("GPU-0", 0, 5*gib)
		dev.GetComputeRunningProcessesFunc = fails(nvml.ERROR_NO_PERMISSION)
		dev.GetGraphicsRunningProcessesFunc = fails(nvml.ERROR_NO_PERMISSION)
		dev.GetMPSComputeRunningProcessesFunc = fails(nvml.ERROR_NOT_SUPPORTED)
		dev.GetMigModeFunc = func() (int, int, nvml.Return) {
			return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS
		}
		dev.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 4, nvml.SUCCESS }
		slots := []*mock.Device{migDevice(procs(pi(100, gib)), procs()), nil, nil, slot3}
		dev.GetMigDeviceHandleByIndexFunc = func(j int) (nvml.Device, nvml.Return) {
			switch j {
			case 1:
				return nil, nvml.ERROR_NOT_FOUND
			case 2:
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return slots[j], nvml.SUCCESS
		}
		return dev
	}

	t.Run("processes of MIG devices belong to the parent", func(t *testing.T) {
		dev := migGPU(migDevice(procs(pi(101, 2*gib)), procs(pi(100, 3*gib))))
		lib, _ := newMockLib(nil, dev)
		got, err := newTestProvider(t, lib, newFixtureProcRoot(t)).Devices(context.Background())
		require.NoError(t, err)
		require.Equal(t, []Process{proc100(3072), proc101(2048)}, got[0].Processes)
		require.Len(t, dev.GetMigDeviceHandleByIndexCalls(), 4)
	})

	t.Run("MIG devices are described with their processes", func(t *testing.T) {
		slot3 := migDevice(procs(pi(101, 2*gib)), procs())
		slot3.GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
		slot3.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_NO_PERMISSION }
		lib, _ := newMockLib(nil, migGPU(slot3))
		got, err := newTestProvider(t, lib, newFixtureProcRoot(t)).Devices(context.Background())
		require.NoError(t, err)
		require.Equal(t, []MIGDevice{
			{Slot: 0, UUID: "MIG-0d2f5a7c-1e3b-5d4f-9a8c-6b7e0f1d2c3a", MemoryUsedMB: 3072, MemoryTotalMB: 20480, PIDs: []int{100}},
			{Slot: 3, MemoryUsedMB: -1, MemoryTotalMB: -1, PIDs: []int{101}},
		}, got[0].MIG)
		require.Equal(t, []Process{proc100(1024), proc101(2048)}, got[0].Processes)
	})

	t.Run("a failing MIG device list fails the scan", func(t *testing.T) {
		dev := migGPU(migDevice(fails(nvml.ERROR_UNKNOWN), procs()))
		lib, _ := newMockLib(nil, dev)
		_, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
		require.ErrorIs(t, err, nvml.ERROR_UNKNOWN)
		require.ErrorContains(t, err, "gpu 0: mig device 3: get compute processes: ")
	})

	t.Run("a failing MIG handle fails the scan", func(t *testing.T) {
		dev := migGPU(nil)
		dev.GetMigDeviceHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_UNKNOWN }
		lib, _ := newMockLib(nil, dev)
		_, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
		require.ErrorIs(t, err, nvml.ERROR_UNKNOWN)
		require.ErrorContains(t, err, "gpu 0: get mig device 0: ")
	})

	t.Run("MIG capable but disabled", func(t *testing.T) {
		dev := newMockDevice("GPU-0", 0, 0)
		dev.GetMigModeFunc = func() (int, int, nvml.Return) {
			return nvml.DEVICE_MIG_DISABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS
		}
		lib, _ := newMockLib(nil, dev)
		_, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
		require.NoError(t, err)
		require.Empty(t, dev.GetMaxMigDeviceCountCalls())
	})

	t.Run("no MIG calls on drivers without MIG", func(t *testing.T) {
		dev := newMockDevice("GPU-0", 0, 0)
		dev.GetMigModeFunc = nil
		lib, _ := newMockLib([]string{"nvmlDeviceGetMigMode"}, dev)
		_, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
		require.NoError(t, err)
	})

	t.Run("MIG mode failing", func(t *testing.T) {
		dev := newMockDevice("GPU-0", 0, 0)
		dev.GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_UNKNOWN }
		lib, _ := newMockLib(nil, dev)
		_, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
		require.ErrorIs(t, err, nvml.ERROR_UNKNOWN)
		require.ErrorContains(t, err, "gpu 0: get mig mode: ")
	})
}

func TestNVMLRequiredCallErrors(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(lib *mock.Interface, dev *mock.Device)
		wantMsg string
	}{
		{
			name: "count",
			breakIt: func(lib *mock.Interface, _ *mock.Device) {
				lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			wantMsg: "get gpu count: ",
		},
		{
			name: "handle",
			breakIt: func(lib *mock.Interface, _ *mock.Device) {
				lib.DeviceGetHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_UNKNOWN }
			},
			wantMsg: "gpu 0: get handle: ",
		},
		{
			name: "uuid",
			breakIt: func(_ *mock.Interface, dev *mock.Device) {
				dev.GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
			wantMsg: "gpu 1: get uuid: ",
		},
		{
			name: "name",
			breakIt: func(_ *mock.Interface, dev *mock.Device) {
				dev.GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
			wantMsg: "gpu 1: get name: ",
		},
		{
			name: "minor",
			breakIt: func(_ *mock.Interface, dev *mock.Device) {
				dev.GetMinorNumberFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			wantMsg: "gpu 1: get minor number: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broken := newMockDevice("GPU-1", 1, 0)
			lib, _ := newMockLib(nil, newMockDevice("GPU-0", 0, 0), broken)
			tt.breakIt(lib, broken)
			got, err := newTestProvider(t, lib, t.TempDir()).Devices(context.Background())
			require.ErrorIs(t, err, nvml.ERROR_UNKNOWN)
			require.ErrorContains(t, err, tt.wantMsg)
			require.Nil(t, got)
		})
	}
}

func TestNVMLInitFailure(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION} {
		t.Run(ret.Error(), func(t *testing.T) {
			// Only InitFunc is set: any other call panics on its nil Func,
			// as the real library would end the process.
			lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
			p, err := newNVMLProvider(lib, t.TempDir())
			require.Nil(t, p)
			require.ErrorIs(t, err, ret)
			require.ErrorContains(t, err, "NVML unavailable")
			require.ErrorContains(t, err, `use gpu provider "fake"`)
			require.Len(t, lib.InitCalls(), 1)
			require.Empty(t, lib.ExtensionsCalls())
			require.Empty(t, lib.DeviceGetCountCalls())
			require.Empty(t, lib.ShutdownCalls())
		})
	}
}

func TestNVMLSymbolsLookedUpOnce(t *testing.T) {
	lib, ext := newMockLib(nil, newMockDevice("GPU-0", 0, 0))
	p := newTestProvider(t, lib, t.TempDir())
	lookups := len(ext.LookupSymbolCalls())
	require.NotZero(t, lookups)
	for range 3 {
		_, err := p.Devices(context.Background())
		require.NoError(t, err)
	}
	require.Len(t, ext.LookupSymbolCalls(), lookups)
	require.Len(t, lib.InitCalls(), 1)
}

func TestNVMLClose(t *testing.T) {
	lib, _ := newMockLib(nil, newMockDevice("GPU-0", 0, 0))
	p, err := newNVMLProvider(lib, t.TempDir())
	require.NoError(t, err)

	require.NoError(t, p.Close())
	require.Len(t, lib.ShutdownCalls(), 1)
	require.NoError(t, p.Close())
	require.Len(t, lib.ShutdownCalls(), 1, "Shutdown is reference-counted: a second one could close another user's Init")

	_, err = p.Devices(context.Background())
	require.ErrorContains(t, err, "closed")
	require.Empty(t, lib.DeviceGetCountCalls(), "no NVML call after Shutdown")
}

func TestNVMLCloseFailure(t *testing.T) {
	lib, _ := newMockLib(nil)
	lib.ShutdownFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN }
	p, err := newNVMLProvider(lib, t.TempDir())
	require.NoError(t, err)
	err = p.Close()
	require.ErrorIs(t, err, nvml.ERROR_UNKNOWN)
	require.ErrorContains(t, err, "nvml shutdown: ")
}

func TestNVMLCanceledContext(t *testing.T) {
	lib, _ := newMockLib(nil, newMockDevice("GPU-0", 0, 0))
	p := newTestProvider(t, lib, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.Devices(ctx)
	require.ErrorIs(t, err, context.Canceled)
}

// TestNVMLOnRealGPU runs against the driver of this machine, if it has one.
func TestNVMLOnRealGPU(t *testing.T) {
	p, err := newNVMLProvider(nvml.New(), defaultProcRoot)
	if errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) || errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED) {
		t.Skipf("no NVIDIA driver on this machine: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })

	devs, err := p.Devices(context.Background())
	require.NoError(t, err)
	uuids := make(map[string]bool)
	for i, d := range devs {
		t.Logf("gpu %d: %s %s minor %d, %d/%d MB used, %d processes",
			d.Index, d.UUID, d.Name, d.Minor, d.MemoryUsedMB, d.MemoryTotalMB, len(d.Processes))
		require.Equal(t, i, d.Index)
		require.True(t, strings.HasPrefix(d.UUID, "GPU-") || strings.HasPrefix(d.UUID, "MIG-"), "uuid %q", d.UUID)
		require.False(t, uuids[d.UUID], "duplicate uuid %q", d.UUID)
		uuids[d.UUID] = true
		require.NotEmpty(t, d.Name)
		require.GreaterOrEqual(t, d.Minor, 0)
		require.Positive(t, d.MemoryTotalMB)
		require.GreaterOrEqual(t, d.MemoryUsedMB, int64(0))
		require.LessOrEqual(t, d.MemoryUsedMB, d.MemoryTotalMB)
		for j, proc := range d.Processes {
			t.Logf("  pid %d %q user %q job %q: %d MB", proc.PID, proc.Name, proc.User, proc.JobID, proc.UsedMemoryMB)
			require.Positive(t, proc.PID)
			if j > 0 {
				require.Greater(t, proc.PID, d.Processes[j-1].PID)
			}
			require.True(t, proc.UsedMemoryMB == -1 || (proc.UsedMemoryMB >= 0 && proc.UsedMemoryMB <= d.MemoryTotalMB),
				"pid %d uses %d MB", proc.PID, proc.UsedMemoryMB)
		}
	}
	// A second scan on the same Init works too.
	again, err := p.Devices(context.Background())
	require.NoError(t, err)
	require.Len(t, again, len(devs))
}

// Where NVML cannot start (no driver, as on machines without GPUs), Open
// fails with no provider at all, not a provider wrapping nothing.
func TestOpenWithoutNVMLGivesNoProvider(t *testing.T) {
	p, err := Open(Options{Provider: "nvml"})
	if err == nil {
		require.NoError(t, p.Close(), "NVML is here: the provider works")
		return
	}
	require.Nil(t, p)
	require.Contains(t, err.Error(), "NVML unavailable")
}

func TestNVMLUtilization(t *testing.T) {
	rates := func(pct uint32, ret nvml.Return) func() (nvml.Utilization, nvml.Return) {
		return func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: pct, Memory: 1}, ret }
	}
	samples := func(ret nvml.Return, s ...nvml.ProcessUtilizationSample) func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) { return s, ret }
	}
	tests := []struct {
		name     string
		rates    func() (nvml.Utilization, nvml.Return)
		samples  func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return)
		want     Utilization
		wantProc []Utilization // of pids 100 and 101
	}{
		{
			name:  "device and newest sample per process",
			rates: rates(37, nvml.SUCCESS),
			samples: samples(nvml.SUCCESS,
				nvml.ProcessUtilizationSample{Pid: 100, TimeStamp: 2, SmUtil: 20},
				nvml.ProcessUtilizationSample{Pid: 100, TimeStamp: 1, SmUtil: 90},
				nvml.ProcessUtilizationSample{Pid: 101, TimeStamp: 1, SmUtil: 101}), // impossible: dropped
			want:     Percent(37),
			wantProc: []Utilization{Percent(20), {}},
		},
		{
			name:     "an idle GPU is a known 0",
			rates:    rates(0, nvml.SUCCESS),
			samples:  samples(nvml.ERROR_NOT_FOUND), // no process ran a kernel lately
			want:     Percent(0),
			wantProc: []Utilization{{}, {}},
		},
		{
			name:     "a GPU that cannot say is unknown, not idle",
			rates:    rates(0, nvml.ERROR_NOT_SUPPORTED),
			samples:  samples(nvml.ERROR_INSUFFICIENT_SIZE),
			want:     Utilization{},
			wantProc: []Utilization{{}, {}},
		},
		{
			name:     "no data yet is unknown",
			rates:    rates(0, nvml.ERROR_NO_DATA),
			samples:  samples(nvml.ERROR_NO_PERMISSION),
			want:     Utilization{},
			wantProc: []Utilization{{}, {}},
		},
		{
			name:     "any other refusal is unknown too: the scan, which Prologs and grants need, goes on",
			rates:    rates(0, nvml.ERROR_UNKNOWN),
			samples:  samples(nvml.SUCCESS),
			want:     Utilization{},
			wantProc: []Utilization{{}, {}},
		},
		{
			name:     "process samples are for people: a refusal leaves them unknown",
			rates:    rates(5, nvml.SUCCESS),
			samples:  samples(nvml.ERROR_UNKNOWN),
			want:     Percent(5),
			wantProc: []Utilization{{}, {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newMockDevice("GPU-0", 0, 2*gib)
			dev.GetComputeRunningProcessesFunc = procs(pi(100, gib), pi(101, gib))
			dev.GetUtilizationRatesFunc = tt.rates
			dev.GetProcessUtilizationFunc = tt.samples
			lib, _ := newMockLib(nil, dev)
			p := newTestProvider(t, lib, newFixtureProcRoot(t))
			got, err := p.Devices(context.Background(), ReadUtilization)
			require.NoError(t, err)
			require.Equal(t, tt.want, got[0].Utilization)
			var procUtil []Utilization
			for _, pr := range got[0].Processes {
				procUtil = append(procUtil, pr.Utilization)
			}
			require.Equal(t, tt.wantProc, procUtil)
		})
	}
}

// utilNode is a node of 8 GPUs whose driver reports 37% on each; the
// first four run a process each (pids 100 and 101 in turn).
func utilNode() []*mock.Device {
	var devs []*mock.Device
	for i := range 8 {
		d := newMockDevice(fmt.Sprintf("GPU-%d", i), i, 0)
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 37}, nvml.SUCCESS }
		d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			return []nvml.ProcessUtilizationSample{{Pid: 100, SmUtil: 30}, {Pid: 101, SmUtil: 7}}, nvml.SUCCESS
		}
		if i < 4 {
			d.GetComputeRunningProcessesFunc = procs(pi(uint32(100+i%2), gib))
		}
		devs = append(devs, d)
	}
	return devs
}

// The Prolog, the PBS hook, reserve and run scan without asking for
// utilisation and must not pay a driver call for it; status and the
// health check ask, and pay one call per GPU and one per GPU with
// processes.
func TestNVMLUtilizationOnlyWhenAsked(t *testing.T) {
	utilCalls := func(devs []*mock.Device) (rates, samples int) {
		for _, d := range devs {
			rates += len(d.GetUtilizationRatesCalls())
			samples += len(d.GetProcessUtilizationCalls())
		}
		return rates, samples
	}
	for _, tt := range []struct {
		name                    string
		extras                  []Extra
		wantRates, wantSamples  int
		wantDevice, wantProcess Utilization
	}{
		{name: "a grant's scan", extras: nil, wantRates: 0, wantSamples: 0},
		{name: "status's scan", extras: []Extra{ReadUtilization}, wantRates: 8, wantSamples: 4,
			wantDevice: Percent(37), wantProcess: Percent(30)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			devs := utilNode()
			lib, _ := newMockLib(nil, mockDevices(devs)...)
			p := newTestProvider(t, lib, newFixtureProcRoot(t))
			got, err := p.Devices(context.Background(), tt.extras...)
			require.NoError(t, err)
			rates, samples := utilCalls(devs)
			require.Equal(t, tt.wantRates, rates, "GetUtilizationRates calls")
			require.Equal(t, tt.wantSamples, samples, "GetProcessUtilization calls")
			require.Equal(t, tt.wantDevice, got[0].Utilization)
			require.Equal(t, 100, got[0].Processes[0].PID)
			require.Equal(t, tt.wantProcess, got[0].Processes[0].Utilization)
			require.Len(t, got[0].Processes, 1, "the memory and processes are the same either way")
		})
	}
}

func mockDevices(devs []*mock.Device) []nvml.Device {
	out := make([]nvml.Device, len(devs))
	for i, d := range devs {
		out[i] = d
	}
	return out
}
