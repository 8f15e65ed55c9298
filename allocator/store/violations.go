package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"canhazgpu/allocator"
)

// ViolationRun is what one health-check run saw, and the site's steps,
// for RecordViolations.
type ViolationRun struct {
	// Now is the node's clock: grace times and the kill limit are the
	// node's business, and the check's tests drive it.
	Now time.Time
	// Gap: a record not seen for longer is closed; the next sighting of
	// the same (kind, GPU, user) starts a new one.
	Gap          time.Duration
	Steps        []ViolationStep // in order
	Renotify     time.Duration   // notify and exec repeat at most this often
	KillsPerHour int
	// KillPending is how long a kill claimed by this run may wait for
	// its outcome (RecordKillOutcomes): a claim older without one is
	// "unknown", and the process, seen again, is claimed again.
	KillPending time.Duration
	MaxAge      time.Duration // records last seen longer ago are dropped
	MaxRecords  int
	Seen        []Sighting
}

// ViolationStep is an action of [violations] actions with its grace time
// since first seen.
type ViolationStep struct {
	Action string        // notify, exec or kill
	After  time.Duration //
}

// Sighting is one (kind, GPU, user) violation seen by this run. Kill is
// the processes that may be killed (exemptions already left out), by PID
// and start time.
type Sighting struct {
	Kind      string
	GPU       string
	Index     int
	User      string
	Holder    string
	JobID     string
	Model     string
	Processes []allocator.ViolationProcess
	Kill      []allocator.ViolationProcess
}

// ViolationPlan is a sighting's record after this run and the steps this
// run claimed: Due (notify, exec), recorded already, and Kill (PIDs),
// recorded as pending until RecordKillOutcomes; Limited are PIDs the
// hourly kill limit spared.
type ViolationPlan struct {
	Record  allocator.ViolationRecord
	Due     []string
	Kill    []int
	Limited []int
}

// wire forms (violations.lua)
type wireSighting struct {
	K    string                       `json:"k"`
	G    string                       `json:"g"`
	I    int                          `json:"i"`
	U    string                       `json:"u"`
	H    string                       `json:"h"`
	J    string                       `json:"j"`
	M    string                       `json:"m"`
	P    []allocator.ViolationProcess `json:"p"`
	Kill [][2]uint64                  `json:"kill"`
}

type wireStep struct {
	A     string `json:"a"`
	After int64  `json:"after"`
}

type wireViolationRun struct {
	Now          int64          `json:"now"`
	Gap          int64          `json:"gap"`
	Steps        []wireStep     `json:"steps"`
	Renotify     int64          `json:"renotify"`
	KillsPerHour int            `json:"kills_per_hour"`
	KillPending  int64          `json:"pending"`
	MaxAge       int64          `json:"max_age"`
	MaxRecords   int            `json:"max_records"`
	Seen         []wireSighting `json:"seen"`
}

type wireAction struct {
	W string             `json:"w"`
	T int64              `json:"t"`
	P luaList[[2]uint64] `json:"p"`
	O string             `json:"o"` // a kill's outcome
	D int64              `json:"d"` // a pending kill's deadline for its outcome
	E string             `json:"e"` // what failed
}

type wireViolation struct {
	K string                              `json:"k"`
	G string                              `json:"g"`
	I int                                 `json:"i"`
	U string                              `json:"u"`
	H string                              `json:"h"`
	J string                              `json:"j"`
	M string                              `json:"m"`
	F int64                               `json:"f"`
	L int64                               `json:"l"`
	P luaList[allocator.ViolationProcess] `json:"p"`
	A luaList[wireAction]                 `json:"a"`
}

// luaList decodes a Lua list, which cjson writes as {} when empty.
type luaList[T any] []T

func (l *luaList[T]) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("{}")) {
		*l = nil
		return nil
	}
	return json.Unmarshal(b, (*[]T)(l))
}

// RecordViolations merges this run's sightings into the node's records,
// claims the steps now due and trims the records to the bounds, in one
// round trip.
func (s *Store) RecordViolations(ctx context.Context, run ViolationRun) ([]ViolationPlan, error) {
	w := wireViolationRun{Now: run.Now.UnixMilli(), Gap: run.Gap.Milliseconds(), Renotify: run.Renotify.Milliseconds(),
		KillsPerHour: run.KillsPerHour, KillPending: run.KillPending.Milliseconds(), MaxAge: run.MaxAge.Milliseconds(), MaxRecords: run.MaxRecords,
		Steps: []wireStep{}, Seen: []wireSighting{}}
	for _, st := range run.Steps {
		w.Steps = append(w.Steps, wireStep{A: st.Action, After: st.After.Milliseconds()})
	}
	for _, x := range run.Seen {
		if strings.Contains(x.Kind+x.GPU+x.User, "|") {
			return nil, &allocator.InputError{Field: "violation", Value: x.Kind + " " + x.GPU + " " + x.User,
				Accepted: "kind, GPU and user without '|'"}
		}
		ws := wireSighting{K: x.Kind, G: x.GPU, I: x.Index, U: x.User, H: x.Holder, J: x.JobID, M: x.Model,
			P: append([]allocator.ViolationProcess{}, x.Processes...), Kill: [][2]uint64{}}
		for _, p := range x.Kill {
			ws.Kill = append(ws.Kill, [2]uint64{uint64(p.PID), p.Start})
		}
		w.Seen = append(w.Seen, ws)
	}
	arg, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	v, err := s.run.run(ctx, violationsOp, []string{s.keys.viol, s.keys.violt, s.keys.kills}, arg).Slice()
	if err != nil {
		return nil, s.wrap("record violations", err)
	}
	if len(v) != len(run.Seen)+1 || v[0] != "ok" {
		return nil, fmt.Errorf("record violations: unexpected reply %v", v)
	}
	out := make([]ViolationPlan, 0, len(run.Seen))
	for _, item := range v[1:] {
		raw, _ := item.(string)
		var rep struct {
			ID      string        `json:"id"`
			R       wireViolation `json:"r"`
			Due     []string      `json:"due"`
			Kill    []int         `json:"kill"`
			Limited []int         `json:"limited"`
		}
		if err := json.Unmarshal([]byte(raw), &rep); err != nil {
			return nil, fmt.Errorf("record violations: %w", err)
		}
		out = append(out, ViolationPlan{Record: rep.R.record(s.node, rep.ID, run.Now), Due: rep.Due, Kill: rep.Kill, Limited: rep.Limited})
	}
	return out, nil
}

// record is the stored record as of now: a kill claim pending past its
// deadline is unknown.
// KillOutcome is how one kill that RecordViolations handed out went.
type KillOutcome struct {
	Record  string    // the violation's ID
	PID     int       //
	Start   uint64    // the process's start time, as in the sighting's Kill
	Claimed time.Time // the run's Now, when the kill was claimed
	Outcome string    // allocator.KillTerm … allocator.KillFailed
	// Sent: a signal went out. A kill that sent none does not count
	// against kills_per_hour.
	Sent  bool
	Error string // why it failed
}

type wireKillOutcome struct {
	ID    string `json:"id"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	T     int64  `json:"t"`
	O     string `json:"o"`
	Sent  bool   `json:"sent"`
	E     string `json:"e,omitempty"`
}

// RecordKillOutcomes writes into the records how the claimed kills went,
// in one round trip. A claim that has been claimed again since (it was
// late: unknown, and retried) is left as it is.
func (s *Store) RecordKillOutcomes(ctx context.Context, outcomes []KillOutcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	w := make([]wireKillOutcome, 0, len(outcomes))
	for _, o := range outcomes {
		w = append(w, wireKillOutcome{ID: o.Record, PID: o.PID, Start: o.Start, T: o.Claimed.UnixMilli(), O: o.Outcome, Sent: o.Sent, E: o.Error})
	}
	arg, err := json.Marshal(w)
	if err != nil {
		return err
	}
	v, err := s.run.run(ctx, violationKillsOp, []string{s.keys.viol, s.keys.kills}, arg).Slice()
	if err != nil {
		return s.wrap("record kill outcomes", err)
	}
	if len(v) != 2 || v[0] != "ok" {
		return fmt.Errorf("record kill outcomes: unexpected reply %v", v)
	}
	return nil
}

func (w wireViolation) record(node, id string, now time.Time) allocator.ViolationRecord {
	if strings.Count(id, "|") == 2 { // the open record: its id ends with its first sighting
		id += "|" + strconv.FormatInt(w.F, 10)
	}
	r := allocator.ViolationRecord{ID: id, Node: node, Kind: w.K, GPU: w.G, Index: w.I, User: w.U, Holder: w.H, JobID: w.J, Model: w.M,
		Processes: append([]allocator.ViolationProcess{}, w.P...), FirstSeen: msTime(w.F), LastSeen: msTime(w.L),
		Actions: []allocator.ViolationAction{}}
	for _, a := range w.A {
		act := allocator.ViolationAction{What: a.W, At: msTime(a.T), Outcome: a.O, Error: a.E}
		if a.O == allocator.KillPending && !now.Before(msTime(a.D)) {
			act.Outcome = allocator.KillUnknown
		}
		for _, p := range a.P {
			act.PIDs = append(act.PIDs, int(p[0]))
		}
		r.Actions = append(r.Actions, act)
	}
	return r
}

// Violations returns the node's violation records last seen at or after
// since, oldest first.
func (s *Store) Violations(ctx context.Context, since time.Time) ([]allocator.ViolationRecord, error) {
	return s.violationsOf(ctx, []string{s.node}, since)
}

// AllViolations is Violations for every registered node, by node: one
// round trip for the registry, one for the records.
func (s *Store) AllViolations(ctx context.Context, since time.Time) ([]allocator.ViolationRecord, error) {
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	sort.Strings(nodes)
	return s.violationsOf(ctx, nodes, since)
}

// ViolationsOf is Violations for the given nodes, by node, in one
// pipelined round trip.
func (s *Store) ViolationsOf(ctx context.Context, nodes []string, since time.Time) ([]allocator.ViolationRecord, error) {
	for _, n := range nodes {
		if err := ValidateNode(n); err != nil {
			return nil, err
		}
	}
	return s.violationsOf(ctx, nodes, since)
}

// violationsOf reads the nodes' records in one pipeline: a read for each
// node, since each node's keys hash to a slot of their own.
func (s *Store) violationsOf(ctx context.Context, nodes []string, since time.Time) ([]allocator.ViolationRecord, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	keys := make([][]string, len(nodes))
	for i, n := range nodes {
		k := keysFor(n)
		keys[i] = []string{k.viol, k.violt}
	}
	cmds, err := s.run.runAll(ctx, violationsReadOp, keys, nil, since.UnixMilli())
	if err != nil {
		return nil, s.wrap("violations", err)
	}
	now := time.Now()
	var out []allocator.ViolationRecord
	for i, node := range nodes {
		v, err := cmds[i].Slice()
		if err != nil {
			return nil, s.wrap("violations of "+node, err)
		}
		if len(v) == 0 || v[0] != "ok" {
			return nil, fmt.Errorf("violations of %s: unexpected reply", node)
		}
		for j := 1; j+1 < len(v); j += 2 {
			id, _ := v[j].(string)
			raw, _ := v[j+1].(string)
			var w wireViolation
			if err := json.Unmarshal([]byte(raw), &w); err != nil {
				return nil, fmt.Errorf("violations of %s: %w", node, err)
			}
			out = append(out, w.record(node, id, now))
		}
	}
	return out, nil
}
