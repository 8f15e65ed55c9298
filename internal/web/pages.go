package web

import (
	"embed"
	"encoding/csv"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/internal/clusterview"
	"canhazgpu/internal/metrics"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var embedded embed.FS

// staticFS serves the embedded script and style sheet under /static/.
var staticFS fs.FS = embedded

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"hms":    hms,
	"join":   func(s []string) string { return strings.Join(s, ", ") },
	"hours":  func(s int64) string { return fmt.Sprintf("%.2f", float64(s)/3600) },
	"kinds":  func() []string { return kinds },
	"pidsOf": pidsOf,
	"grid":   grid,
}).ParseFS(templateFS, "templates/*.html"))

// kinds are the reservation kinds, in the order report prints them.
var kinds = func() []string {
	out := make([]string, len(allocator.Kinds))
	for i, k := range allocator.Kinds {
		out[i] = string(k)
	}
	return out
}()

func hms(seconds int64) string {
	d := time.Duration(seconds) * time.Second
	return fmt.Sprintf("%d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

// pidsOf lists a GPU's processes as "PID 12 (python3, bob)".
func pidsOf(g clusterview.GPU) string {
	parts := make([]string, 0, len(g.Processes))
	for _, p := range g.Processes {
		who := strings.Join(slices.DeleteFunc([]string{p.Name, p.User}, func(s string) bool { return s == "" }), ", ")
		if who == "" {
			parts = append(parts, fmt.Sprintf("PID %d", p.PID))
		} else {
			parts = append(parts, fmt.Sprintf("PID %d (%s)", p.PID, who))
		}
	}
	return strings.Join(parts, "; ")
}

func (h *handler) render(w http.ResponseWriter, name string, data any) {
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, b.String())
}

// overviewPage is the cluster overview, filtered by node and user.
type overviewPage struct {
	GeneratedAt  string
	Node, User   string
	Nodes        []clusterview.Node
	Counts       clusterview.Counts
	AllUsers     []string
	AllNodeNames []string
}

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cluster(w, r)
	if !ok {
		return
	}
	p := overviewPage{GeneratedAt: c.GeneratedAt, Node: r.URL.Query().Get("node"), User: r.URL.Query().Get("user"), AllUsers: c.Users()}
	for _, n := range c.Nodes {
		p.AllNodeNames = append(p.AllNodeNames, n.Node)
		if p.Node != "" && !strings.Contains(n.Node, p.Node) {
			continue
		}
		if p.User != "" {
			n.GPUs = slices.DeleteFunc(slices.Clone(n.GPUs), func(g clusterview.GPU) bool { return !slices.Contains(g.Holder(), p.User) })
			if len(n.GPUs) == 0 {
				continue
			}
		}
		p.Nodes = append(p.Nodes, n)
	}
	p.Counts = clusterview.Count(p.Nodes)
	h.render(w, "overview.html", p)
}

func (h *handler) node(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cluster(w, r)
	if !ok {
		return
	}
	name := r.PathValue("node")
	i := slices.IndexFunc(c.Nodes, func(n clusterview.Node) bool { return n.Node == name })
	if i < 0 {
		http.Error(w, fmt.Sprintf("node %q: not registered in the store", name), http.StatusNotFound)
		return
	}
	h.render(w, "node.html", struct {
		GeneratedAt string
		Node        clusterview.Node
	}{c.GeneratedAt, c.Nodes[i]})
}

// bar is one user's row of the usage chart: interactive (run, manual) and
// batch (slurm, pbs) hours, as widths of a 100-wide plot.
type bar struct {
	User                 string
	Y                    int
	Interactive, Batch   float64 // widths
	InteractiveH, BatchH string
}

func (h *handler) usage(w http.ResponseWriter, r *http.Request) {
	rep, ok := h.report(w, r)
	if !ok {
		return
	}
	var most int64
	for _, u := range rep.Users {
		most = max(most, u.TotalSeconds)
	}
	bars := make([]bar, 0, len(rep.Users))
	for i, u := range rep.Users {
		inter, batch := u.Seconds["run"]+u.Seconds["manual"], u.Seconds["slurm"]+u.Seconds["pbs"]
		b := bar{User: u.User, Y: i * 24, InteractiveH: fmt.Sprintf("%.2f", float64(inter)/3600), BatchH: fmt.Sprintf("%.2f", float64(batch)/3600)}
		if most > 0 {
			b.Interactive, b.Batch = 600*float64(inter)/float64(most), 600*float64(batch)/float64(most)
		}
		bars = append(bars, b)
	}
	h.render(w, "usage.html", struct {
		Report      *reportDoc
		Bars        []bar
		ChartHeight int
		DayChoices  []int
	}{rep, bars, len(bars)*24 + 4, []int{1, 7, 30, 90}})
}

func (h *handler) usageCSV(w http.ResponseWriter, r *http.Request) {
	rep, ok := h.report(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="canhazgpu-report-%dd.csv"`, rep.Days))
	cw := csv.NewWriter(w)
	cw.Write(append(append([]string{"user", "gpu_hours"}, kinds...), "reservations"))
	for _, u := range rep.Users {
		row := []string{csvSafe(u.User), strconv.FormatFloat(u.GPUHours, 'f', 2, 64)}
		for _, k := range kinds {
			row = append(row, strconv.FormatFloat(float64(u.Seconds[k])/3600, 'f', 2, 64))
		}
		cw.Write(append(row, strconv.Itoa(u.Reservations)))
	}
	cw.Flush()
}

// csvSafe keeps a spreadsheet from reading a user name as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cluster(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	metrics.Write(w, c)
}
