package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"canhazgpu/allocator"
)

// wireReservation is a reservation as the operations encode it (see lua/lib.lua).
type wireReservation struct {
	K   string `json:"k"`
	U   string `json:"u"`
	ID  int    `json:"id"`
	J   string `json:"j"`
	N   string `json:"n"`
	T   int64  `json:"t"`
	S   int64  `json:"s"`
	E   int64  `json:"e"`
	H   int64  `json:"h"`
	R   int    `json:"r"`
	B   string `json:"b"`
	Q   string `json:"q"`
	GPU string `json:"gpu"`
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (w wireReservation) reservation(uuid string) allocator.Reservation {
	if uuid == "" {
		uuid = w.GPU
	}
	return allocator.Reservation{GPU: uuid, Kind: allocator.Kind(w.K), User: w.U, UID: w.ID, JobID: w.J,
		Note: w.N, Token: w.T, StartedAt: msTime(w.S), ExpiresAt: msTime(w.E), HeartbeatAt: msTime(w.H),
		Restart: w.R, BootID: w.B, Queued: w.Q != ""}
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
			var w wireReservation
			if _, taken := out[uuid]; taken || json.Unmarshal([]byte(raw), &w) != nil || allocator.Kind(w.K).Batch() != batch {
				continue
			}
			out[uuid] = w.reservation(uuid)
		}
	}
	add(bres, true)
	add(res, false)
	return out
}

// decodeReservations reads a JSON list the operations produced (empty string:
// none).
func decodeReservations(raw string) ([]allocator.Reservation, error) {
	if raw == "" {
		return nil, nil
	}
	var ws []wireReservation
	if err := json.Unmarshal([]byte(raw), &ws); err != nil {
		return nil, fmt.Errorf("decode reservations: %w", err)
	}
	out := make([]allocator.Reservation, len(ws))
	for i, w := range ws {
		out[i] = w.reservation("")
	}
	return out, nil
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func joinList(l []string) string { return strings.Join(l, ",") }
