package gpu

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ID names one GPU the two ways people and tools do: by the UUID that
// stays put and by the index users type and runtimes count.
type ID struct {
	UUID  string
	Index int
}

// Set is a set of GPUs, ordered by index: the one place that maps UUIDs
// to indices and back and writes them out, whether the GPUs come from a
// scan or from a node's registration in the store.
type Set struct {
	ids []ID // sorted by Index, one entry per UUID
}

// NewSet makes a set of ids; of two entries with the same UUID the later
// wins, so a scan added after a registration corrects it.
func NewSet(ids ...ID) Set {
	byUUID := make(map[string]int, len(ids))
	var out []ID
	for _, id := range ids {
		if i, ok := byUUID[id.UUID]; ok {
			out[i] = id
			continue
		}
		byUUID[id.UUID] = len(out)
		out = append(out, id)
	}
	slices.SortStableFunc(out, func(a, b ID) int { return cmp.Compare(a.Index, b.Index) })
	return Set{ids: out}
}

// SetOf is the set of a scan's devices.
func SetOf(devs []Device) Set {
	ids := make([]ID, len(devs))
	for i, d := range devs {
		ids[i] = ID{UUID: d.UUID, Index: d.Index}
	}
	return NewSet(ids...)
}

// Union is s with the GPUs of o added; o wins where both know a UUID.
func (s Set) Union(o Set) Set {
	return NewSet(append(slices.Clone(s.ids), o.ids...)...)
}

// Len is the number of GPUs.
func (s Set) Len() int { return len(s.ids) }

// IDs returns the GPUs in index order.
func (s Set) IDs() []ID { return slices.Clone(s.ids) }

// UUIDs returns the UUIDs in index order.
func (s Set) UUIDs() []string {
	out := make([]string, len(s.ids))
	for i, id := range s.ids {
		out[i] = id.UUID
	}
	return out
}

// Indices returns the indices in ascending order.
func (s Set) Indices() []int {
	out := make([]int, len(s.ids))
	for i, id := range s.ids {
		out[i] = id.Index
	}
	return out
}

// ByIndex finds the GPU with index i.
func (s Set) ByIndex(i int) (ID, bool) {
	for _, id := range s.ids {
		if id.Index == i {
			return id, true
		}
	}
	return ID{}, false
}

// ByUUID finds the GPU with UUID uuid.
func (s Set) ByUUID(uuid string) (ID, bool) {
	for _, id := range s.ids {
		if id.UUID == uuid {
			return id, true
		}
	}
	return ID{}, false
}

// UnknownIndexError is an index that names no GPU of a set.
type UnknownIndexError struct {
	Index int
}

func (e *UnknownIndexError) Error() string {
	return fmt.Sprintf("no GPU with index %d", e.Index)
}

// UUIDsAt maps indices to UUIDs, in the order given; an index the set
// lacks is an *UnknownIndexError.
func (s Set) UUIDsAt(indices []int) ([]string, error) {
	out := make([]string, 0, len(indices))
	for _, i := range indices {
		id, ok := s.ByIndex(i)
		if !ok {
			return nil, &UnknownIndexError{Index: i}
		}
		out = append(out, id.UUID)
	}
	return out, nil
}

// Pick returns the GPUs of uuids that the set knows, as a set, and the
// UUIDs it does not know, in the order given.
func (s Set) Pick(uuids []string) (Set, []string) {
	var ids []ID
	var unknown []string
	for _, u := range uuids {
		if id, ok := s.ByUUID(u); ok {
			ids = append(ids, id)
		} else {
			unknown = append(unknown, u)
		}
	}
	return NewSet(ids...), unknown
}

// Name is a GPU's index as users know it, or its UUID when the set does
// not know it (a GPU that vanished since it was reserved).
func (s Set) Name(uuid string) string {
	if id, ok := s.ByUUID(uuid); ok {
		return strconv.Itoa(id.Index)
	}
	return uuid
}

// Names names uuids in index order, the UUIDs the set does not know last.
func (s Set) Names(uuids []string) []string {
	known, unknown := s.Pick(uuids)
	out := make([]string, 0, len(uuids))
	for _, i := range known.Indices() {
		out = append(out, strconv.Itoa(i))
	}
	return append(out, unknown...)
}

// List is Names joined with commas: "0,2".
func (s Set) List(uuids []string) string {
	return strings.Join(s.Names(uuids), ",")
}

// IndexList is the set's indices joined with commas: "0,2".
func (s Set) IndexList() string {
	return s.List(s.UUIDs())
}
