package web

import (
	"embed"
	"encoding/csv"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
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
	"hours":  hoursOf,
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

// The usage chart: a row per user, in it a stacked bar per UTC day with
// use, interactive (run, manual) at the bottom and batch (slurm, pbs) on
// top, all on one scale. Sizes are in SVG user units.
const (
	chartLabel = 150 // the user's name
	chartPlot  = 600 // the days
	chartRow   = 48  // a user's row
	chartBar   = 40  // the tallest day
	chartAxis  = 20  // the dates below
)

// userRow is one user's row of the chart.
type userRow struct {
	User string
	Y    int // the row's baseline
	Days []dayBar
}

// dayBar is one day's stacked bar; the seconds are the report's.
type dayBar struct {
	Date                       string
	X, Width                   float64
	Interactive, Batch         int64 // seconds
	InteractiveH, BatchH       float64
	InteractiveText, BatchText string // GPU-hours
	InteractiveTop, BatchTop   float64
}

// usageChart is the chart of a report: its rows and the dates on its axis.
type usageChart struct {
	Rows             []userRow
	Height           int
	First, Last      string // dates at the axis's ends
	AxisY, LabelLast int
}

func chartOf(rep *reportDoc) usageChart {
	first, err1 := time.Parse(time.RFC3339, rep.Start)
	last, err2 := time.Parse(time.RFC3339, rep.End)
	if err1 != nil || err2 != nil { // null: a store without nodes, so no use to draw
		first, last = time.Now().UTC().AddDate(0, 0, -rep.Days), time.Now().UTC()
	}
	first = time.Date(first.UTC().Year(), first.UTC().Month(), first.UTC().Day(), 0, 0, 0, 0, time.UTC)
	ndays := int(last.Sub(first).Hours()/24) + 1
	slot := float64(chartPlot) / float64(ndays)
	var most int64
	for _, u := range rep.Users {
		for _, d := range u.Daily {
			interactive, batch := splitKinds(d.Seconds)
			most = max(most, interactive+batch)
		}
	}
	c := usageChart{First: first.Format(time.DateOnly), Last: last.UTC().Format(time.DateOnly)}
	for i, u := range rep.Users {
		row := userRow{User: u.User, Y: (i + 1) * chartRow}
		for _, d := range u.Daily {
			at, err := time.Parse(time.DateOnly, d.Date)
			if err != nil {
				continue
			}
			b := dayBar{Date: d.Date, X: chartLabel + slot*math.Floor(at.Sub(first).Hours()/24) + slot*0.1, Width: max(slot*0.8, 1)}
			b.Interactive, b.Batch = splitKinds(d.Seconds)
			if most > 0 {
				b.InteractiveH = float64(chartBar) * float64(b.Interactive) / float64(most)
				b.BatchH = float64(chartBar) * float64(b.Batch) / float64(most)
			}
			b.InteractiveTop = float64(row.Y) - b.InteractiveH
			b.BatchTop = b.InteractiveTop - b.BatchH
			b.InteractiveText, b.BatchText = hoursOf(b.Interactive), hoursOf(b.Batch)
			row.Days = append(row.Days, b)
		}
		c.Rows = append(c.Rows, row)
	}
	c.AxisY = len(c.Rows)*chartRow + 16
	c.Height = len(c.Rows)*chartRow + chartAxis + 4
	c.LabelLast = chartLabel + chartPlot
	return c
}

func hoursOf(seconds int64) string { return fmt.Sprintf("%.2f", float64(seconds)/3600) }

func (h *handler) usage(w http.ResponseWriter, r *http.Request) {
	rep, ok := h.report(w, r)
	if !ok {
		return
	}
	h.render(w, "usage.html", struct {
		Report     *reportDoc
		Chart      usageChart
		DayChoices []int
	}{rep, chartOf(rep), []int{1, 7, 30, 90}})
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

// splitKinds sums a day's seconds of interactive and of batch kinds, as
// allocator's kinds say which is which.
func splitKinds(seconds map[string]int64) (interactive, batch int64) {
	for _, k := range allocator.Kinds {
		if k.Batch() {
			batch += seconds[string(k)]
		} else {
			interactive += seconds[string(k)]
		}
	}
	return interactive, batch
}
