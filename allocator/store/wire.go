package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"canhazgpu/allocator"
)

// wireReservation is a reservation as the scripts encode it (see lua/lib.lua).
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

func decodeReservation(uuid, raw string) (allocator.Reservation, error) {
	var w wireReservation
	if err := json.Unmarshal([]byte(raw), &w); err != nil {
		return allocator.Reservation{}, fmt.Errorf("decode reservation of %s: %w", uuid, err)
	}
	return w.reservation(uuid), nil
}

// decodeReservations reads a JSON list the scripts produced (empty string:
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
