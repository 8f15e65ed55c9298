package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"canhazgpu/allocator"
)

// reply reads an operation's reply: a flat array whose first element is
// a status ("ok", or a refusal's code) and whose further elements are its
// values (see Replies in lib.lua). The first element that is missing or
// of the wrong type sets err; the getters then return zero values, so a
// caller reads every value and checks err once.
type reply struct {
	op  string
	v   []any
	err error
}

func readReply(op string, v any) *reply {
	r := &reply{op: op}
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		r.err = fmt.Errorf("%s: bad reply %v: want a status and values", op, v)
		return r
	}
	r.v = list
	return r
}

func (r *reply) status() string { return r.str(0) }

func (r *reply) at(i int) any {
	if r.err != nil {
		return nil
	}
	if i >= len(r.v) {
		r.err = fmt.Errorf("%s: reply %v has no element %d", r.op, r.v, i)
		return nil
	}
	return r.v[i]
}

func (r *reply) fail(i int, want string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: reply element %d is %v: want %s", r.op, i, r.v[i], want)
	}
}

func (r *reply) str(i int) string {
	v := r.at(i)
	s, ok := v.(string)
	if !ok && r.err == nil {
		r.fail(i, "a string")
	}
	return s
}

func (r *reply) int(i int) int64 {
	v := r.at(i)
	n, ok := v.(int64)
	if !ok && r.err == nil {
		r.fail(i, "an integer")
	}
	return n
}

func (r *reply) list(i int) []any {
	v := r.at(i)
	l, ok := v.([]any)
	if !ok && r.err == nil {
		r.fail(i, "a list")
	}
	return l
}

// count reads the reply {'ok', n} of the operations that return a number.
func count(op string, v any, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	rep := readReply(op, v)
	if st := rep.status(); st != "ok" && rep.err == nil {
		return 0, fmt.Errorf("%s: unexpected reply %v", op, v)
	}
	n := rep.int(1)
	return int(n), rep.err
}

// pairs reads a flat list of (string, string) pairs: GPUs or queue
// entry ids with their encodings.
func (r *reply) pairs(i int) [][2]string {
	l := r.list(i)
	out := make([][2]string, 0, len(l)/2)
	for j := 0; j+1 < len(l); j += 2 {
		a, ok1 := l[j].(string)
		b, ok2 := l[j+1].(string)
		if !ok1 || !ok2 {
			r.fail(i, "pairs of strings")
			return nil
		}
		out = append(out, [2]string{a, b})
	}
	return out
}

// reservations reads a flat list of (GPU, reservation) pairs.
func (r *reply) reservations(i int) []allocator.Reservation {
	var out []allocator.Reservation
	for _, p := range r.pairs(i) {
		res, ok := decodeReservation(p[0], p[1])
		if !ok {
			r.fail(i, "reservations")
			return nil
		}
		out = append(out, res)
	}
	return out
}

// wireReservation is a reservation as the operations encode it (see Encodings in lib.lua).
type wireReservation struct {
	K  string `json:"k"`
	U  string `json:"u"`
	ID int    `json:"id"`
	J  string `json:"j"`
	N  string `json:"n"`
	T  int64  `json:"t"`
	S  int64  `json:"s"`
	E  int64  `json:"e"`
	H  int64  `json:"h"`
	R  int    `json:"r"`
	B  string `json:"b"`
	Q  string `json:"q"`
	A  int64  `json:"a"`
	W  int64  `json:"w"`
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (w wireReservation) reservation(uuid string) allocator.Reservation {
	return allocator.Reservation{GPU: uuid, Kind: allocator.Kind(w.K), User: w.U, UID: w.ID, JobID: w.J,
		Note: w.N, Token: w.T, StartedAt: msTime(w.S), ExpiresAt: msTime(w.E), HeartbeatAt: msTime(w.H),
		Restart: w.R, BootID: w.B, Queued: w.Q != "", ActiveAt: msTime(w.A), IdleWarned: msTime(w.W)}
}

// decodeReservation reads a stored reservation of GPU uuid (see
// Encodings in lib.lua).
func decodeReservation(uuid, raw string) (allocator.Reservation, bool) {
	var w wireReservation
	if json.Unmarshal([]byte(raw), &w) != nil || w.K == "" {
		return allocator.Reservation{}, false
	}
	return w.reservation(uuid), true
}

// mergeReservations decodes the batch and interactive reservation hashes
// as lib.lua's load_all does: an entry that does not decode, or whose kind
// belongs in the other hash, is ignored (the CLI's Redis user may write
// anything into res, but cannot make a batch reservation there), and a
// batch reservation wins over an interactive entry for the same GPU.
func mergeReservations(bres, res map[string]string) map[string]allocator.Reservation {
	out := make(map[string]allocator.Reservation, len(bres)+len(res))
	add := func(h map[string]string, batch bool) {
		for uuid, raw := range h {
			if _, taken := out[uuid]; taken {
				continue
			}
			if r, ok := decodeReservation(uuid, raw); ok && r.Kind.Batch() == batch {
				out[uuid] = r
			}
		}
	}
	add(bres, true)
	add(res, false)
	return out
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func joinList(l []string) string { return strings.Join(l, ",") }
