package gpu

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// DefaultAMDSMIPath is where ROCm installs amd-smi.
const DefaultAMDSMIPath = "/opt/rocm/bin/amd-smi"

// amdsmiProvider runs amd-smi at every scan, as the fake provider reads
// its file: list -e (identity; -e adds each GPU's render node and HIP
// index), static --asic (names), metric --mem-usage (memory) and process
// (PIDs), all with --json. ROCm 6 prints a JSON list of per-GPU objects;
// ROCm 7 wraps that list as {"gpu_data": [...]}; both are read, and the
// commands are joined on their "gpu" field.
type amdsmiProvider struct {
	path     string
	procRoot string
	sysRoot  string
	// noEnumeration: this amd-smi (before ROCm 6.4) refused list -e, so
	// plain list is run, and the KFD topology gives render nodes.
	noEnumeration atomic.Bool
}

var _ Provider = (*amdsmiProvider)(nil)

func newAMDSMIProvider(path, procRoot, sysRoot string) *amdsmiProvider {
	return &amdsmiProvider{path: path, procRoot: procRoot, sysRoot: sysRoot}
}

func (p *amdsmiProvider) Close() error { return nil }

// Devices reads no utilisation, asked or not: on AMD it stays unknown,
// which the idle clock never takes for idle.
func (p *amdsmiProvider) Devices(ctx context.Context, _ ...Extra) ([]Device, error) {
	list, err := p.list(ctx)
	if err != nil {
		return nil, err
	}
	var out [3][]map[string]any
	for i, args := range [][]string{{"static", "--asic"}, {"metric", "--mem-usage"}, {"process"}} {
		if out[i], err = p.run(ctx, args...); err != nil {
			return nil, err
		}
	}
	return p.devices(list, out[0], out[1], out[2])
}

// list runs list -e, or plain list where amd-smi does not know -e.
func (p *amdsmiProvider) list(ctx context.Context) ([]map[string]any, error) {
	if !p.noEnumeration.Load() {
		entries, err := p.run(ctx, "list", "-e")
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			return entries, err
		}
		p.noEnumeration.Store(true)
	}
	return p.run(ctx, "list")
}

// run runs amd-smi with args and --json, with a fixed environment: the
// program belongs to root's configuration, not to the caller.
func (p *amdsmiProvider) run(ctx context.Context, args ...string) ([]map[string]any, error) {
	what := "amd-smi " + strings.Join(args, " ")
	cmd := exec.CommandContext(ctx, p.path, append(args, "--json")...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w; set gpu.amdsmi_path, or use gpu provider \"fake\" on machines without AMD GPUs", what, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		return nil, fmt.Errorf("%s: %w: %.200q", what, err, msg)
	}
	entries, err := decodeAMDSMI(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return entries, nil
}

// decodeAMDSMI reads amd-smi's JSON output: a list of per-GPU objects
// (ROCm 6) or an object holding it under "gpu_data" (ROCm 7). Lines
// before the JSON (warnings some versions print to stdout) are skipped.
func decodeAMDSMI(data []byte) ([]map[string]any, error) {
	for len(data) > 0 && data[0] != '[' && data[0] != '{' {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			data = nil
			break
		}
		data = bytes.TrimLeft(data[nl+1:], " \t\r")
	}
	if len(data) == 0 {
		return nil, errors.New("no JSON in the output")
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("bad JSON: %w", err)
	}
	if obj, ok := v.(map[string]any); ok {
		inner, found := obj["gpu_data"]
		if !found {
			return nil, errors.New(`a JSON object without "gpu_data"`)
		}
		v = inner
	}
	list, ok := v.([]any)
	if !ok {
		return nil, errors.New("not a list of GPUs")
	}
	out := make([]map[string]any, 0, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("entry %d is not an object", i)
		}
		out = append(out, m)
	}
	return out, nil
}

// amdGPU is one GPU of amd-smi list.
type amdGPU struct {
	smiIndex int // amd-smi's own number, the key between commands
	node     int // KFD topology node; -1 when not reported
	hipID    int // HIP's (and so ROCr's) index; -1 when not reported
	render   int // render node minor; 0 when not reported
	uuid     string
}

func (p *amdsmiProvider) devices(list, static, metric, process []map[string]any) ([]Device, error) {
	gpus := make([]amdGPU, 0, len(list))
	for i, e := range list {
		g, err := parseAMDListEntry(e)
		if err != nil {
			return nil, fmt.Errorf("amd-smi list: entry %d: %w", i, err)
		}
		gpus = append(gpus, g)
	}
	index, err := rocrIndices(gpus)
	if err != nil {
		return nil, fmt.Errorf("amd-smi list: %w", err)
	}
	names := byGPU(static)
	mem := byGPU(metric)
	procs := byGPU(process)

	devs := make([]Device, 0, len(gpus))
	for _, g := range gpus {
		d := Device{Index: index[g.smiIndex], UUID: g.uuid, Name: "AMD GPU", Minor: g.render, MemoryUsedMB: -1}
		if d.Minor == 0 {
			d.Minor = p.renderMinor(g.node)
		}
		if asic, ok := names[g.smiIndex]["asic"].(map[string]any); ok {
			if name, ok := asic["market_name"].(string); ok && name != "" && name != "N/A" {
				d.Name = name
			}
		}
		if m, ok := mem[g.smiIndex]["mem_usage"].(map[string]any); ok {
			if v, ok := megabytes(m["total_vram"], "MB"); ok {
				d.MemoryTotalMB = v
			}
			if v, ok := megabytes(m["used_vram"], "MB"); ok {
				d.MemoryUsedMB = v
			}
		}
		if d.Processes, err = p.processes(procs[g.smiIndex]); err != nil {
			return nil, fmt.Errorf("amd-smi process: gpu %d: %w", g.smiIndex, err)
		}
		if d.MemoryUsedMB < 0 {
			d.MemoryUsedMB = 0
			for _, proc := range d.Processes {
				d.MemoryUsedMB += max(proc.UsedMemoryMB, 0)
			}
		}
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b Device) int { return cmp.Compare(a.Index, b.Index) })
	return devs, nil
}

func parseAMDListEntry(e map[string]any) (amdGPU, error) {
	idx, ok := integer(e["gpu"])
	if !ok || idx < 0 {
		return amdGPU{}, fmt.Errorf(`bad or missing "gpu": %v`, e["gpu"])
	}
	g := amdGPU{smiIndex: idx, node: -1, hipID: -1}
	if n, ok := integer(e["node_id"]); ok && n >= 0 {
		g.node = n
	}
	if n, ok := integer(e["hip_id"]); ok && n >= 0 {
		g.hipID = n
	}
	if r, ok := e["render"].(string); ok {
		digits, found := strings.CutPrefix(r, "renderD")
		if n, err := strconv.Atoi(digits); found && err == nil && n > 0 && n < 1<<20 {
			g.render = n
		}
	}
	raw, _ := e["uuid"].(string)
	if raw == "" || raw == "N/A" {
		return g, fmt.Errorf("gpu %d: no uuid", idx)
	}
	// The store keys GPUs by "GPU-…" ids; amd-smi prints the bare UUID.
	g.uuid = "GPU-" + strings.TrimPrefix(raw, "GPU-")
	if strings.IndexFunc(raw, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-')
	}) >= 0 || len(raw) > 64 {
		return g, fmt.Errorf("gpu %d: bad uuid %q (accepted: letters, digits and '-')", idx, raw)
	}
	return g, nil
}

// rocrIndices numbers the GPUs as the ROCm runtime does, which is what
// ROCR_VISIBLE_DEVICES counts: HIP's index where list -e gives it, else
// the order of the KFD topology nodes. When either is missing for a GPU,
// amd-smi's own order stands in for it.
func rocrIndices(gpus []amdGPU) (map[int]int, error) {
	sorted := slices.Clone(gpus)
	byHIP := !slices.ContainsFunc(gpus, func(g amdGPU) bool { return g.hipID < 0 })
	byNode := !slices.ContainsFunc(gpus, func(g amdGPU) bool { return g.node < 0 })
	slices.SortFunc(sorted, func(a, b amdGPU) int {
		switch {
		case byHIP:
			return cmp.Or(cmp.Compare(a.hipID, b.hipID), cmp.Compare(a.smiIndex, b.smiIndex))
		case byNode:
			return cmp.Or(cmp.Compare(a.node, b.node), cmp.Compare(a.smiIndex, b.smiIndex))
		}
		return cmp.Compare(a.smiIndex, b.smiIndex)
	})
	out := make(map[int]int, len(sorted))
	seen := make(map[string]bool, len(sorted))
	for i, g := range sorted {
		if _, dup := out[g.smiIndex]; dup {
			return nil, fmt.Errorf("gpu %d listed twice", g.smiIndex)
		}
		if seen[g.uuid] {
			return nil, fmt.Errorf("duplicate uuid %q", g.uuid)
		}
		seen[g.uuid] = true
		out[g.smiIndex] = i
	}
	return out, nil
}

// renderMinor reads the GPU's render node (/dev/dri/renderD<minor>) from
// its KFD topology node; 0 when that cannot be read. Render minors start
// at 128, so 0 matches no device file gres.conf can list, and the Slurm
// Prolog refuses the job naming the GPU rather than guess.
func (p *amdsmiProvider) renderMinor(node int) int {
	if node < 0 {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(p.sysRoot, "class", "kfd", "kfd", "topology", "nodes", strconv.Itoa(node), "properties"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "drm_render_minor "); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// processes reads one GPU's "process_list". ROCm 6 wraps each process as
// {"process_info": {...}}, and says "No running processes detected" (or
// "N/A") in place of the object when there are none; ROCm 7 may list the
// objects bare.
func (p *amdsmiProvider) processes(entry map[string]any) ([]Process, error) {
	list, _ := entry["process_list"].([]any)
	memMB := make(map[int]int64)
	for i, item := range list {
		obj, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("process_list[%d] is not an object", i)
		}
		if inner, wrapped := obj["process_info"]; wrapped {
			if obj, ok = inner.(map[string]any); !ok {
				continue // the text that stands for "none"
			}
		}
		pid, ok := integer(obj["pid"])
		if !ok || pid <= 0 {
			return nil, fmt.Errorf("process_list[%d]: bad pid %v", i, obj["pid"])
		}
		mb := int64(-1)
		if usage, ok := obj["memory_usage"].(map[string]any); ok {
			if v, ok := megabytes(usage["vram_mem"], "B"); ok {
				mb = v
			}
		}
		if v, ok := megabytes(obj["mem_usage"], "B"); ok && mb < 0 {
			mb = v
		}
		if prev, ok := memMB[pid]; !ok || mb > prev {
			memMB[pid] = mb
		}
	}
	var procs []Process
	for _, pid := range slices.Sorted(maps.Keys(memMB)) {
		proc, _ := LookupProcess(p.procRoot, pid)
		proc.UsedMemoryMB = memMB[pid]
		procs = append(procs, proc)
	}
	return procs, nil
}

// byGPU keys the entries of one command by their "gpu" field.
func byGPU(entries []map[string]any) map[int]map[string]any {
	out := make(map[int]map[string]any, len(entries))
	for _, e := range entries {
		if i, ok := integer(e["gpu"]); ok {
			out[i] = e
		}
	}
	return out
}

// integer reads a JSON number that is a whole number.
func integer(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || f != float64(int(f)) {
		return 0, false
	}
	return int(f), true
}

// megabytes reads an amount of memory: {"value": N, "unit": "MB"} since
// ROCm 6.1, or a bare number in the command's unit before that. "N/A"
// and unknown units are no value.
func megabytes(v any, bareUnit string) (int64, bool) {
	unit := bareUnit
	if m, ok := v.(map[string]any); ok {
		unit, _ = m["unit"].(string)
		v = m["value"]
	}
	f, ok := v.(float64)
	if !ok || f < 0 {
		return 0, false
	}
	switch strings.ToUpper(unit) {
	case "B":
		return int64(f) >> 20, true
	case "KB", "KIB":
		return int64(f) >> 10, true
	case "MB", "MIB":
		return int64(f), true
	case "GB", "GIB":
		return int64(f * 1024), true
	}
	return 0, false
}
