package health

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"canhazgpu/internal/metrics"
)

// WriteMetrics renders the report in the Prometheus text format for
// node_exporter's textfile collector: per-GPU series, then what settling
// did (a "restored" job means the store had lost its reservations), then
// whether the store answered, whether the check could run and how long it
// took. When the store did not answer, only the GPU series that need no
// store are written. No timestamps: the collector rejects a file that has
// them.
func WriteMetrics(w io.Writer, r *Report) error {
	ew := &errWriter{w: w}
	type series struct {
		name, help string
		needsStore bool
		value      func(GPUState) int64
	}
	perGPU := []series{
		{"canhazgpu_gpu_in_use", "Whether the GPU's memory use reached the in-use threshold (1) or not (0).", false,
			func(g GPUState) int64 { return b2i(g.Busy) }},
		{"canhazgpu_gpu_reserved", "Whether the GPU is reserved (1) or not (0).", true,
			func(g GPUState) int64 { return b2i(g.Reserved) }},
		{"canhazgpu_gpu_unreserved", "Whether the GPU is in use without a reservation (1) or not (0).", true,
			func(g GPUState) int64 { return b2i(g.State == "unreserved") }},
		{"canhazgpu_gpu_memory_used_bytes", "GPU memory in use, in bytes.", false,
			func(g GPUState) int64 { return g.MemoryUsedMB << 20 }},
		{"canhazgpu_gpu_violations", "Violations found on the GPU: unreserved use, or use by someone other than its owner.", true,
			func(g GPUState) int64 { return int64(g.Violations) }},
	}
	if len(r.GPUs) > 0 {
		for _, s := range perGPU {
			if s.needsStore && !r.StoreUp {
				continue
			}
			ew.printf("# HELP %s %s\n# TYPE %s gauge\n", s.name, s.help, s.name)
			for _, g := range r.GPUs {
				ew.printf("%s{gpu=\"%d\",uuid=\"%s\"} %d\n", s.name, g.Index, metrics.EscapeLabel(g.UUID), s.value(g))
			}
		}
		// A GPU whose driver does not say has no sample: absent is
		// unknown, which 0 would not be.
		help := false
		for _, g := range r.GPUs {
			if g.Utilization.Known && !help {
				help = true
				ew.printf("# HELP canhazgpu_gpu_utilization_percent The GPU's compute utilisation over the driver's last sample period.\n")
				ew.printf("# TYPE canhazgpu_gpu_utilization_percent gauge\n")
			}
			if g.Utilization.Known {
				ew.printf("canhazgpu_gpu_utilization_percent{gpu=\"%d\",uuid=\"%s\"} %d\n", g.Index, metrics.EscapeLabel(g.UUID), g.Utilization.Percent)
			}
		}
	}
	ew.printf("# HELP canhazgpu_health_check_settled Changes this run made to bring the store in line with the node, and those it could not make, by kind.\n")
	ew.printf("# TYPE canhazgpu_health_check_settled gauge\n")
	for _, what := range SettleKinds {
		n := 0
		for _, s := range r.Settled {
			if s.What == what {
				n++
			}
		}
		ew.printf("canhazgpu_health_check_settled{what=\"%s\"} %d\n", what, n)
	}
	if r.StoreUp {
		ew.printf("# HELP canhazgpu_health_check_idle Idle interactive reservations this run warned about or released.\n")
		ew.printf("# TYPE canhazgpu_health_check_idle gauge\n")
		for _, what := range []string{IdleWarned, IdleReleased} {
			n := 0
			for _, f := range r.Idle {
				if f.What == what {
					n++
				}
			}
			ew.printf("canhazgpu_health_check_idle{what=\"%s\"} %d\n", what, n)
		}
	}
	ew.printf("# HELP canhazgpu_store_up Whether the reservation store answered this run (1) or not (0: down, or not reached).\n")
	ew.printf("# TYPE canhazgpu_store_up gauge\n")
	ew.printf("canhazgpu_store_up %d\n", b2i(r.StoreUp))
	ew.printf("# HELP canhazgpu_health_check_success Whether the health check could check the node (1) or not (0).\n")
	ew.printf("# TYPE canhazgpu_health_check_success gauge\n")
	ew.printf("canhazgpu_health_check_success %d\n", b2i(r.Status != StatusError))
	ew.printf("# HELP canhazgpu_health_check_duration_seconds How long the health check took.\n")
	ew.printf("# TYPE canhazgpu_health_check_duration_seconds gauge\n")
	ew.printf("canhazgpu_health_check_duration_seconds %s\n", strconv.FormatFloat(r.Duration, 'g', -1, 64))
	return ew.err
}

// checkTextfilePath refuses a textfile node_exporter would never read (a
// name not ending in .prom) or that cannot be written (its directory does
// not exist), before the check runs. The error starts with the path.
func checkTextfilePath(path string) error {
	if filepath.Ext(path) != ".prom" || filepath.Base(path) == ".prom" {
		return fmt.Errorf("%s: node_exporter's textfile collector reads only files named *.prom, e.g. canhazgpu.prom", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("%s: cannot write there: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("%s: cannot write there: %s is not a directory", path, dir)
	}
	return nil
}

// WriteTextfile writes the metrics to path atomically: a temp file in the
// same directory, renamed over path, so the collector never reads half a
// file.
func WriteTextfile(path string, r *Report) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("prometheus textfile: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing left to remove
	if err := WriteMetrics(f, r); err != nil {
		f.Close()
		return fmt.Errorf("prometheus textfile: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("prometheus textfile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("prometheus textfile: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("prometheus textfile: %w", err)
	}
	return nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
