//go:build linux && cgo

package gpu

import (
	"context"
	"testing"
)

// BenchmarkNVMLScan is one scan of a node of 8 GPUs through go-nvml's
// mock, four of them running a process, as a grant (the Prolog, reserve)
// and as status scan. The mock answers at once, so the time is the
// provider's own work; on a real node every NVML call is a call into the
// driver, and the calls per scan are what the figure is for.
//
// Run: go test -run '^$' -bench NVMLScan ./allocator/gpu/
func BenchmarkNVMLScan(b *testing.B) {
	for _, tc := range []struct {
		name   string
		extras []Extra
	}{{"grant", nil}, {"status", []Extra{ReadUtilization}}} {
		b.Run(tc.name, func(b *testing.B) {
			devs := utilNode()
			lib, _ := newMockLib(nil, mockDevices(devs)...)
			p := newTestProvider(b, lib, b.TempDir())
			for b.Loop() {
				if _, err := p.Devices(context.Background(), tc.extras...); err != nil {
					b.Fatal(err)
				}
			}
			calls := 0
			for _, d := range devs {
				calls += len(d.GetUtilizationRatesCalls()) + len(d.GetProcessUtilizationCalls())
			}
			b.ReportMetric(float64(calls)/float64(b.N), "utilcalls/op")
		})
	}
}
