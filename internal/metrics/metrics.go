// Package metrics writes the cluster's reservations in the Prometheus text
// exposition format. GPU series carry the labels dcgm-exporter puts on its
// own (Hostname, gpu, UUID), so that PromQL can join the two on them.
package metrics

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"canhazgpu/internal/clusterview"
)

// States are the values of the state label of canhazgpu_gpu_state.
var States = []string{"free", "reserved", "unreserved", "foreign"}

// state is the state label of a GPU: free, reserved, in use without a
// reservation, or reserved and used by another account too.
func state(g clusterview.GPU) string {
	switch g.State() {
	case clusterview.Free:
		return "free"
	case clusterview.Unreserved:
		return "unreserved"
	case clusterview.Foreign:
		return "foreign"
	}
	return "reserved"
}

// Write writes every series of the cluster.
func Write(w io.Writer, c *clusterview.Cluster) error {
	var b strings.Builder
	family(&b, "canhazgpu_gpu_info", "gauge", "Always 1: the holder of each GPU (user, kind run/manual/slurm/pbs or unreserved, job_id of batch jobs).")
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			user, kind, job := strings.Join(g.Holder(), ","), "", ""
			if r := g.Reservation; r != nil {
				kind, job = r.Kind, r.JobID
			} else if g.State() == clusterview.Unreserved {
				kind = "unreserved"
			}
			sample(&b, "canhazgpu_gpu_info", gpuLabels(n, g, "user", user, "kind", kind, "job_id", job), 1)
		}
	}
	family(&b, "canhazgpu_gpu_state", "gauge", "1 for the state each GPU is in (free, reserved, unreserved, foreign), 0 for the others.")
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			s := state(g)
			for _, st := range States {
				v := 0
				if st == s {
					v = 1
				}
				sample(&b, "canhazgpu_gpu_state", gpuLabels(n, g, "state", st), float64(v))
			}
		}
	}
	family(&b, "canhazgpu_gpu_memory_used_bytes", "gauge", "GPU memory in use, for the GPUs of the node that serves the metrics.")
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			if g.MemoryUsedMB != nil {
				sample(&b, "canhazgpu_gpu_memory_used_bytes", gpuLabels(n, g), float64(*g.MemoryUsedMB)*1024*1024)
			}
		}
	}
	family(&b, "canhazgpu_queue_requests", "gauge", "Requests waiting for GPUs on each node.")
	for _, n := range c.Nodes {
		sample(&b, "canhazgpu_queue_requests", []string{"Hostname", n.Node}, float64(len(n.Queue)))
	}
	family(&b, "canhazgpu_queue_oldest_wait_seconds", "gauge", "How long the oldest waiting request on each node has waited; 0 when none waits.")
	for _, n := range c.Nodes {
		var oldest int64
		for _, e := range n.Queue {
			oldest = max(oldest, e.WaitingSeconds)
		}
		sample(&b, "canhazgpu_queue_oldest_wait_seconds", []string{"Hostname", n.Node}, float64(oldest))
	}
	family(&b, "canhazgpu_user_reserved_gpus", "gauge", "GPUs each user holds, by reservation kind, on every node.")
	type userKind struct{ user, kind string }
	held := map[userKind]int{}
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			if r := g.Reservation; r != nil {
				held[userKind{r.User, r.Kind}]++
			}
		}
	}
	keys := make([]userKind, 0, len(held))
	for k := range held {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].user != keys[j].user {
			return keys[i].user < keys[j].user
		}
		return keys[i].kind < keys[j].kind
	})
	for _, k := range keys {
		sample(&b, "canhazgpu_user_reserved_gpus", []string{"user", k.user, "kind", k.kind}, float64(held[k]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// gpuLabels are dcgm-exporter's labels for a GPU, then extra name, value
// pairs.
func gpuLabels(n clusterview.Node, g clusterview.GPU, extra ...string) []string {
	return append([]string{"Hostname", n.Node, "gpu", strconv.Itoa(g.Index), "UUID", g.UUID}, extra...)
}

func family(b *strings.Builder, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one line; labels are name, value pairs.
func sample(b *strings.Builder, name string, labels []string, v float64) {
	b.WriteString(name)
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(EscapeLabel(labels[i+1]))
		b.WriteByte('"')
	}
	b.WriteString("} ")
	b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	b.WriteByte('\n')
}

// EscapeLabel escapes a label value as the text format wants: user names,
// notes and node names come from other people and may hold anything.
func EscapeLabel(s string) string { return labelEscaper.Replace(s) }

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
