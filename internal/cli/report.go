package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
)

type reportArgs struct {
	days countValue
	json bool
}

// maxReportDays bounds --days; the history keeps history.max_age anyway.
const maxReportDays = 3650

func reportCommand() *command {
	a := reportArgs{days: countValue{n: 30, max: maxReportDays, accepted: fmt.Sprintf("a whole number of days from 1 to %d", maxReportDays)}}
	fs := newFlagSet("report")
	fs.VarP(&a.days, "days", "d", "the window: the last `N` days")
	fs.BoolVarP(&a.json, "json", "j", false, "print one JSON document instead of the table")
	return &command{
		name:  "report",
		usage: "canhazgpu report [--days N] [--json]",
		short: "Report GPU-hours per user over the last days, on every node",
		long: `GPU-hours per user over the window, split by reservation type (run, manual,
slurm, pbs), from the usage history of every node plus the reservations
held now. A reservation counts only for its part inside the window; one
still held counts up to now. USED is GPU-HOURS less the time the health
check's idle clock knows the GPUs were idle after their last use. Hours are
rounded to 0.01 per cell, and the totals are the sums of the cells shown;
--json gives exact seconds.`,
		examples: []string{
			"canhazgpu report",
			"canhazgpu report --days 7 --json",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("report", args); err != nil {
				return err
			}
			return runReport(ctx, inv, a)
		},
	}
}

// span is one reservation's time on one GPU.
type span struct {
	user       string
	kind       allocator.Kind
	start, end time.Time
	// idleFrom: the GPU was idle from then to end, as the health check's
	// idle clock kept it; zero when no clock was kept (batch kinds,
	// GPUs whose utilisation is unknown, a node without the check).
	idleFrom time.Time
}

// heldIdleFrom is the idle spell of a reservation held now, as far as
// the health check has kept its clock.
func heldIdleFrom(r allocator.Reservation) time.Time {
	if r.ActiveAt.IsZero() && r.IdleWarned.IsZero() {
		return time.Time{}
	}
	return r.IdleSince()
}

func runReport(ctx context.Context, inv *invocation, a reportArgs) error {
	_, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	rep, err := reportOf(ctx, node.Store, a.days.n)
	if err != nil {
		return err
	}
	if a.json {
		return writeJSON(inv.env.Stdout, rep.json())
	}
	return rep.write(inv.env.Stdout)
}

// reportOf reads every node's state and history and sums the last days.
func reportOf(ctx context.Context, st *store.Store, days int) (report, error) {
	snaps, err := st.Snapshots(ctx)
	if err != nil {
		return report{}, err
	}
	now := time.Now()
	if len(snaps) > 0 {
		now = snaps[0].Now // the store's clock, as every stored time
	}
	start := now.Add(-time.Duration(days) * 24 * time.Hour)
	var spans []span
	var nodes []string
	for _, snap := range snaps {
		nodes = append(nodes, snap.Node)
	}
	hists, err := st.Histories(ctx, nodes, start)
	if err != nil {
		return report{}, err
	}
	for _, snap := range snaps {
		for _, r := range hists[snap.Node] {
			spans = append(spans, span{r.User, r.Kind, r.StartedAt, r.EndedAt, r.IdleFrom})
		}
		for _, r := range snap.Reservations {
			if !r.Queued { // holds for a waiting request are not handed out yet
				spans = append(spans, span{r.User, r.Kind, r.StartedAt, now, heldIdleFrom(r)})
			}
		}
	}
	rep := buildReport(start, now, days, nodes, spans)
	viols, err := st.ViolationsOf(ctx, nodes, start)
	if err != nil {
		return report{}, err
	}
	rep.addViolations(viols)
	return rep, nil
}

// userUsage is one user's time inside the window.
type userUsage struct {
	user         string
	ms           map[allocator.Kind]int64 // exact, for --json
	idleMS       int64                    // of that, known idle (see span.idleFrom)
	reservations int
	daily        map[string]map[allocator.Kind]int64 // ms per UTC date (2006-01-02), for the dashboard's chart
	violations   int                                 // records of the health check seen in the window
}

type report struct {
	start, end time.Time
	days       int
	nodes      []string
	users      []*userUsage // most GPU time first
}

// buildReport clips every span to [start, end] and sums per user and kind.
func buildReport(start, end time.Time, days int, nodes []string, spans []span) report {
	by := map[string]*userUsage{}
	for _, s := range spans {
		from, to := later(s.start, start), earlier(s.end, end)
		if !to.After(from) {
			continue
		}
		u := by[s.user]
		if u == nil {
			u = &userUsage{user: s.user, ms: map[allocator.Kind]int64{}, daily: map[string]map[allocator.Kind]int64{}}
			by[s.user] = u
		}
		u.ms[s.kind] += to.Sub(from).Milliseconds()
		if !s.idleFrom.IsZero() {
			if idle := later(s.idleFrom, from); to.After(idle) {
				u.idleMS += to.Sub(idle).Milliseconds()
			}
		}
		u.reservations++
		for day := from; day.Before(to); {
			date := day.UTC().Format(time.DateOnly)
			next := earlier(time.Date(day.UTC().Year(), day.UTC().Month(), day.UTC().Day()+1, 0, 0, 0, 0, time.UTC), to)
			if u.daily[date] == nil {
				u.daily[date] = map[allocator.Kind]int64{}
			}
			u.daily[date][s.kind] += next.Sub(day).Milliseconds()
			day = next
		}
	}
	rep := report{start: start, end: end, days: days, nodes: nodes}
	for _, u := range by {
		rep.users = append(rep.users, u)
	}
	slices.SortFunc(rep.users, func(a, b *userUsage) int {
		if d := b.totalMS() - a.totalMS(); d != 0 {
			return int(max(min(d, 1), -1))
		}
		return strings.Compare(a.user, b.user)
	})
	return rep
}

// addViolations counts each user's violation records; a user with
// violations and no reservations gets a row of their own.
func (r *report) addViolations(recs []allocator.ViolationRecord) {
	by := map[string]*userUsage{}
	for _, u := range r.users {
		by[u.user] = u
	}
	for _, v := range recs {
		if v.User == "" {
			continue // no process to name anyone by
		}
		u := by[v.User]
		if u == nil {
			u = &userUsage{user: v.User, ms: map[allocator.Kind]int64{}}
			by[v.User] = u
			r.users = append(r.users, u)
		}
		u.violations++
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (u *userUsage) totalMS() int64 {
	var t int64
	for _, ms := range u.ms {
		t += ms
	}
	return t
}

// centiHours rounds a time to hundredths of an hour, the unit of the
// table: sums of these integers are what the TOTAL cells show.
func centiHours(ms int64) int64 { return int64(math.Round(float64(ms) / 36000)) }

func formatCenti(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }

func (r report) write(w io.Writer) error {
	var b strings.Builder
	writeLine(&b, "GPU usage over the last %s, %s to %s, nodes: %s", plural(r.days, "day"),
		r.start.UTC().Format("2006-01-02 15:04 UTC"), r.end.UTC().Format("2006-01-02 15:04 UTC"), strings.Join(r.nodes, ", "))
	if len(r.users) == 0 {
		b.WriteString("No GPU use in this window.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	header := []string{"USER", "GPU-HOURS", "USED"}
	for _, k := range allocator.Kinds {
		header = append(header, strings.ToUpper(string(k)))
	}
	header = append(header, "RESERVATIONS", "VIOLATIONS")
	totals := make([]int64, len(allocator.Kinds))
	var grand, grandUsed int64
	count, viols := 0, 0
	var rows [][]string
	for _, u := range r.users {
		row := []string{u.user, "", ""}
		var sum int64
		for i, k := range allocator.Kinds {
			c := centiHours(u.ms[k])
			row = append(row, formatCenti(c))
			sum += c
			totals[i] += c
		}
		used := max(sum-centiHours(u.idleMS), 0)
		row[1], row[2] = formatCenti(sum), formatCenti(used)
		row = append(row, strconv.Itoa(u.reservations), strconv.Itoa(u.violations))
		grand += sum
		grandUsed += used
		count += u.reservations
		viols += u.violations
		rows = append(rows, row)
	}
	total := []string{"TOTAL", formatCenti(grand), formatCenti(grandUsed)}
	for _, t := range totals {
		total = append(total, formatCenti(t))
	}
	rows = append(rows, append(total, strconv.Itoa(count), strconv.Itoa(viols)))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	return writeTable(w, header, rows)
}

type reportDoc struct {
	Version      int              `json:"version"`
	Days         int              `json:"days"`
	Start        *string          `json:"start"`
	End          *string          `json:"end"`
	Nodes        []string         `json:"nodes"`
	Users        []jsonUserUsage  `json:"users"`
	Seconds      map[string]int64 `json:"seconds"` // per kind, all users
	TotalSeconds int64            `json:"total_seconds"`
	UsedSeconds  int64            `json:"used_seconds"`
	GPUHours     float64          `json:"gpu_hours"`
	Reservations int              `json:"reservations"`
	Violations   int              `json:"violations"`
}

type jsonUserUsage struct {
	User         string           `json:"user"`
	Seconds      map[string]int64 `json:"seconds"` // per kind: run, manual, slurm, pbs
	TotalSeconds int64            `json:"total_seconds"`
	UsedSeconds  int64            `json:"used_seconds"` // total_seconds less what the idle clock knows was idle
	GPUHours     float64          `json:"gpu_hours"`
	Reservations int              `json:"reservations"`
	Violations   int              `json:"violations"`
	Daily        []jsonDayUsage   `json:"daily"` // the days with use, oldest first
}

// jsonDayUsage is one user's use on one UTC day. Each kind's seconds over
// the days add up to the user's seconds of that kind.
type jsonDayUsage struct {
	Date    string           `json:"date"` // 2006-01-02, UTC
	Seconds map[string]int64 `json:"seconds"`
}

// dailyJSON gives u's days whole seconds such that, kind by kind, they
// add up to the whole seconds of the total: each day gets the seconds
// its milliseconds complete, counted from the window's start.
func (u *userUsage) dailyJSON() []jsonDayUsage {
	dates := make([]string, 0, len(u.daily))
	for d := range u.daily {
		dates = append(dates, d)
	}
	slices.Sort(dates)
	out := make([]jsonDayUsage, 0, len(dates))
	done := map[allocator.Kind]int64{} // ms before the day
	for _, d := range dates {
		day := jsonDayUsage{Date: d, Seconds: kindSeconds()}
		for _, k := range allocator.Kinds {
			ms := u.daily[d][k]
			day.Seconds[string(k)] = (done[k]+ms)/1000 - done[k]/1000
			done[k] += ms
		}
		out = append(out, day)
	}
	return out
}

func kindSeconds() map[string]int64 {
	m := map[string]int64{}
	for _, k := range allocator.Kinds {
		m[string(k)] = 0
	}
	return m
}

// json gives whole seconds per cell; every total is the sum of its cells.
func (r report) json() reportDoc {
	doc := reportDoc{Version: jsonVersion, Days: r.days, Start: jsonTime(r.start), End: jsonTime(r.end),
		Nodes: nonNil(r.nodes), Users: []jsonUserUsage{}, Seconds: kindSeconds()}
	for _, u := range r.users {
		ju := jsonUserUsage{User: u.user, Seconds: kindSeconds(), Reservations: u.reservations, Violations: u.violations,
			Daily: u.dailyJSON()}
		for _, k := range allocator.Kinds {
			s := u.ms[k] / 1000
			ju.Seconds[string(k)] = s
			ju.TotalSeconds += s
			doc.Seconds[string(k)] += s
		}
		ju.GPUHours = hours(ju.TotalSeconds)
		ju.UsedSeconds = max(ju.TotalSeconds-u.idleMS/1000, 0)
		doc.TotalSeconds += ju.TotalSeconds
		doc.UsedSeconds += ju.UsedSeconds
		doc.Reservations += u.reservations
		doc.Violations += u.violations
		doc.Users = append(doc.Users, ju)
	}
	doc.GPUHours = hours(doc.TotalSeconds)
	return doc
}

func hours(seconds int64) float64 { return math.Round(float64(seconds)/36) / 100 }
