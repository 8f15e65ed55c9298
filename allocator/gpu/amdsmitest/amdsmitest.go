// Package amdsmitest stands in for amd-smi in tests: a script that prints,
// for "amd-smi <command> … --json", the file <command>.json of a
// directory, and a writer of such files in ROCm 6's format.
package amdsmitest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// GPU describes one GPU as amd-smi reports it.
type GPU struct {
	Index int    // amd-smi's "gpu"
	UUID  string // bare, as amd-smi prints it
	Node  int    // KFD topology node
	Name  string // "" for "AMD Instinct MI300X"
	// Render is the render node minor that list -e reports, with the
	// HIP index (Index); 0 leaves both out, as amd-smi before ROCm 6.4.
	Render  int
	UsedMB  int64
	TotalMB int64 // 0 for 196592
	Procs   []Proc
}

// Proc is one process on a GPU.
type Proc struct {
	PID    int
	Name   string
	VRAMMB int64
}

// Stub writes an amd-smi script that prints the files of dir and returns
// its path. The script and dir must stay readable by whoever runs it.
func Stub(t testing.TB, dir string) string {
	t.Helper()
	if strings.ContainsAny(dir, "'\n") {
		t.Fatalf("amdsmitest: directory %q cannot be quoted", dir)
	}
	script := "#!/bin/sh\n" +
		"case \"$1\" in\n" +
		"list|static|metric|process) exec cat '" + dir + "'/\"$1\".json ;;\n" +
		"esac\n" +
		"echo \"amd-smi stub: unknown command $1\" >&2\n" +
		"exit 2\n"
	path := filepath.Join(dir, "amd-smi")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// Write writes list.json, static.json, metric.json and process.json for
// gpus into dir, replacing what is there, so a test may change usage
// while the system runs.
func Write(t testing.TB, dir string, gpus []GPU) {
	t.Helper()
	var list, static, metric, process []map[string]any
	mb := func(v int64) map[string]any { return map[string]any{"value": v, "unit": "MB"} }
	for _, g := range gpus {
		name, total := g.Name, g.TotalMB
		if name == "" {
			name = "AMD Instinct MI300X"
		}
		if total == 0 {
			total = 196592
		}
		entry := map[string]any{"gpu": g.Index, "bdf": "0000:00:00.0", "uuid": g.UUID,
			"kfd_id": 1000 + g.Node, "node_id": g.Node, "partition_id": 0}
		if g.Render != 0 {
			entry["render"], entry["hip_id"] = "renderD"+strconv.Itoa(g.Render), g.Index
		}
		list = append(list, entry)
		static = append(static, map[string]any{"gpu": g.Index, "asic": map[string]any{"market_name": name}})
		metric = append(metric, map[string]any{"gpu": g.Index, "mem_usage": map[string]any{
			"total_vram": mb(total), "used_vram": mb(g.UsedMB), "free_vram": mb(total - g.UsedMB)}})
		procs := []any{map[string]any{"process_info": "No running processes detected"}}
		if len(g.Procs) > 0 {
			procs = nil
		}
		for _, p := range g.Procs {
			bytes := map[string]any{"value": p.VRAMMB << 20, "unit": "B"}
			procs = append(procs, map[string]any{"process_info": map[string]any{
				"name": p.Name, "pid": p.PID, "mem_usage": bytes,
				"memory_usage": map[string]any{"vram_mem": bytes}}})
		}
		process = append(process, map[string]any{"gpu": g.Index, "process_list": procs})
	}
	for name, v := range map[string]any{"list": list, "static": static, "metric": metric, "process": process} {
		data, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "."+name+".json")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name+".json")); err != nil {
			t.Fatal(err)
		}
	}
}

// WriteRenderNodes writes the KFD topology under sysRoot that gives each
// GPU's node its render node, /dev/dri/renderD<128+i> for the i-th of
// gpus.
func WriteRenderNodes(t testing.TB, sysRoot string, gpus []GPU) {
	t.Helper()
	for i, g := range gpus {
		dir := filepath.Join(sysRoot, "class", "kfd", "kfd", "topology", "nodes", strconv.Itoa(g.Node))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		props := "cpu_cores_count 0\nsimd_count 1216\ndrm_render_minor " + strconv.Itoa(128+i) + "\nunique_id 1234\n"
		if err := os.WriteFile(filepath.Join(dir, "properties"), []byte(props), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
