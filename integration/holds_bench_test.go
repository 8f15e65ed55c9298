package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/integration/slurmtest"
	"canhazgpu/internal/testreq"
)

// BenchmarkSlurmPlaceholder measures interactive holds Slurm can see, on
// the real slurmd with one GRES type per GPU, per op:
//
//   - reserve-off: `canhazgpu reserve --gpu-ids N` run by the job user on
//     the node with interactive_holds = "off" (the store alone);
//   - reserve-placeholder: the same with "placeholder": the store, then
//     salloc (which on 22.05 returns after the placeholder's Prolog), then
//     recording the job id;
//   - release-to-start: from the start of `canhazgpu release` to the first
//     line of a batch job that waited for exactly that GPU
//     (--gres=gpu:devN:1): scancel, Slurm's scheduling, the job's Prolog
//     and launch.
//
// It reports each one's median and 90th percentile, under this machine's
// Slurm (22.05) and Debian 13's 24.11 (a Slurm root).
//
// Rerun: go test -run '^$' -bench SlurmPlaceholder -benchtime 20x ./integration/
func BenchmarkSlurmPlaceholder(b *testing.B) {
	b.Run("22.05", func(b *testing.B) { benchPlaceholder(b, "") })
	b.Run("24.11", func(b *testing.B) {
		testreq.NoError(b, slurmtest.RootAvailable())
		root, err := slurmtest.DebianRoot("trixie")
		require.NoError(b, err)
		benchPlaceholder(b, root)
	})
}

func benchPlaceholder(b *testing.B, root string) {
	h := newHoldsSiteOn(b, true, root)
	salloc, scancel := "/usr/bin/salloc", "/usr/bin/scancel" // the root's
	if root == "" {
		salloc, scancel = mustLook(b, "salloc"), mustLook(b, "scancel")
	}
	on := holdSettings(h.c, salloc, scancel)
	off := append([]string{`interactive_holds = "off"`}, on[1:]...)
	gpu := strconv.Itoa(nvmlOf(1))
	var reserveOff, reservePlaceholder, releaseToStart []time.Duration
	b.ResetTimer()
	for i := range b.N {
		h.configure(off...)
		start := time.Now()
		out, code := h.canhazgpu(h.user, "reserve", "--gpu-ids", gpu, "--duration", "30m")
		reserveOff = append(reserveOff, time.Since(start))
		require.Equal(b, 0, code, out)
		b.StopTimer()
		out, code = h.canhazgpu(h.user, "release")
		require.Equal(b, 0, code, out)
		h.configure(on...)
		b.StartTimer()

		start = time.Now()
		hold := h.hold(1)
		reservePlaceholder = append(reservePlaceholder, time.Since(start))

		b.StopTimer()
		mark := filepath.Join(h.c.OutDir, fmt.Sprintf("start.%d", i))
		waiting := h.submit("--gres=gpu:dev1:1", "--wrap", "date +%s.%N > "+mark)
		_, err := h.c.WaitJob(waiting, 60*time.Second, func(j map[string]string) bool {
			return j["JobState"] == "PENDING" && j["Reason"] == "Resources"
		})
		require.NoError(b, err)
		b.StartTimer()
		start = time.Now()
		out, code = h.canhazgpu(h.user, "release")
		require.Equal(b, 0, code, out)
		var started time.Time
		require.Eventually(b, func() bool {
			data, err := os.ReadFile(mark)
			if err != nil || !strings.HasSuffix(string(data), "\n") {
				return false
			}
			secs, err := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
			started = time.Unix(0, int64(secs*1e9))
			return err == nil
		}, 60*time.Second, 5*time.Millisecond)
		releaseToStart = append(releaseToStart, started.Sub(start))
		b.StopTimer()
		_, err = h.c.WaitJob(hold, 60*time.Second, slurmtest.JobState("CANCELLED", "COMPLETED"))
		require.NoError(b, err)
		h.finish(waiting, "COMPLETED")
		b.StartTimer()
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-median-ms")
		b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, name+"-p90-ms")
	}
	report("reserve-off", reserveOff)
	report("reserve-placeholder", reservePlaceholder)
	report("release-to-start", releaseToStart)
}

func mustLook(b *testing.B, name string) string {
	b.Helper()
	p, err := exec.LookPath(name)
	require.NoError(b, err)
	return p
}
