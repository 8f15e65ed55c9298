package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
)

type violationsArgs struct {
	days     countValue
	user     string
	allNodes bool
	json     bool
}

func violationsCommand() *command {
	a := violationsArgs{days: countValue{n: 7, max: maxReportDays, accepted: fmt.Sprintf("a whole number of days from 1 to %d", maxReportDays)}}
	fs := newFlagSet("violations")
	fs.VarP(&a.days, "days", "d", "the window: violations last seen in the last `N` days")
	fs.StringVarP(&a.user, "user", "u", "", "only the violations of `USER`")
	fs.BoolVarP(&a.allNodes, "all-nodes", "a", false, "every node known to the store, not only this one")
	fs.BoolVarP(&a.json, "json", "j", false, "print one JSON document instead of the table")
	return &command{
		name:  "violations",
		usage: "canhazgpu violations [--days N] [--user U] [--all-nodes] [--json]",
		short: "List the GPU uses against the rules that the health check saw",
		long: `Every use of a GPU without a reservation, by someone other than its holder,
or by a batch job's process outside the job, as the health check recorded
it: node, GPU, user, processes, first and last seen, and what was done
about it (notify, exec, kill; see [violations] in the config). Oldest
first; times in UTC.`,
		examples: []string{
			"canhazgpu violations",
			"canhazgpu violations --days 30 --user bob --all-nodes --json",
		},
		flags: fs,
		run: func(ctx context.Context, inv *invocation, args []string) error {
			if err := noArgs("violations", args); err != nil {
				return err
			}
			if fs.Changed("user") && a.user == "" {
				return usagef(`--user "": want an account name`)
			}
			return runViolations(ctx, inv, a)
		},
	}
}

func runViolations(ctx context.Context, inv *invocation, a violationsArgs) error {
	_, node, err := inv.openNode(ctx)
	if err != nil {
		return err
	}
	defer node.Close()
	since := time.Now().Add(-time.Duration(a.days.n) * 24 * time.Hour)
	var recs []allocator.ViolationRecord
	if a.allNodes {
		recs, err = node.Store.AllViolations(ctx, since)
	} else {
		recs, err = node.Store.Violations(ctx, since)
	}
	if err != nil {
		return err
	}
	recs = slices.DeleteFunc(recs, func(r allocator.ViolationRecord) bool { return a.user != "" && r.User != a.user })
	slices.SortStableFunc(recs, func(x, y allocator.ViolationRecord) int { return x.FirstSeen.Compare(y.FirstSeen) })
	if a.json {
		return writeJSON(inv.env.Stdout, violationsDoc{Version: jsonVersion, Days: a.days.n, Violations: nonNil(recs)})
	}
	return writeViolations(inv.env.Stdout, recs)
}

type violationsDoc struct {
	Version    int                         `json:"version"`
	Days       int                         `json:"days"`
	Violations []allocator.ViolationRecord `json:"violations"`
}

func writeViolations(w io.Writer, recs []allocator.ViolationRecord) error {
	if len(recs) == 0 {
		return writeLine(w, "No violations in this window.")
	}
	const at = "2006-01-02 15:04"
	var rows [][]string
	for _, r := range recs {
		user := r.User
		if user == "" {
			user = "-"
		}
		rows = append(rows, []string{r.Node, strconv.Itoa(r.Index), r.Kind, user, processNames(r.Processes),
			r.FirstSeen.UTC().Format(at), r.LastSeen.UTC().Format(at), actionSummary(r.Actions)})
	}
	return writeTable(w, []string{"NODE", "GPU", "KIND", "USER", "PROCESSES", "FIRST SEEN", "LAST SEEN", "ACTIONS"}, rows)
}

// processNames: "4242 python3, 4243 python3" (at most 3, then +N).
func processNames(ps []allocator.ViolationProcess) string {
	var parts []string
	for i, p := range ps {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("+%d", len(ps)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", p.PID, p.Name))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// actionSummary: "notify×2 exec kill(4242 sigterm, 4243 not_same)": each
// process with how its kill went.
func actionSummary(as []allocator.ViolationAction) string {
	var order []string
	count := map[string]int{}
	var killed []string
	for _, a := range as {
		if count[a.What] == 0 {
			order = append(order, a.What)
		}
		count[a.What]++
		if a.What == "kill" {
			for _, p := range a.PIDs {
				k := strconv.Itoa(p)
				if a.Outcome != "" {
					k += " " + a.Outcome
				}
				killed = append(killed, k)
			}
		}
	}
	var parts []string
	for _, what := range order {
		switch {
		case what == "kill":
			parts = append(parts, "kill("+strings.Join(killed, ", ")+")")
		case count[what] > 1:
			parts = append(parts, fmt.Sprintf("%s×%d", what, count[what]))
		default:
			parts = append(parts, what)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
