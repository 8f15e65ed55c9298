package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/BurntSushi/toml"
)

// entry is one value of a config file: a known key, a section header, or
// something unknown, with the line it was written on.
type entry struct {
	key   string // dotted, as toml.Key.String writes it
	line  int    // 0 when the TOML parser kept no position
	value any    // as decoded by BurntSushi/toml: string, int64, []any, ...
}

// readEntries parses a config file into its entries, ordered by line, so
// that the first bad one in the file is the one reported.
//
// Values are not decoded into Config directly: toml's own type errors carry
// no position and name Go types, while an error here must name the file, the
// line, the key and the value in config terms.
func readEntries(path, text string) ([]entry, error) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(text, &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("config: %s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	var entries []entry
	for name, p := range top {
		entries = flatten(&md, toml.Key{name}, p, entries)
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.key, b.key))
	})
	return entries, nil
}

// flatten adds the entry for key, or descends into it when it is a table that
// is not itself a key: sections, but also unknown tables, whose first unknown
// key is then reported at its own line. A known key is never descended into,
// so "provider = {}" is reported as a wrong type, not as unknown keys.
func flatten(md *toml.MetaData, key toml.Key, p toml.Primitive, entries []entry) []entry {
	name := key.String()
	if _, known := lookupSetting(name); !known {
		var table map[string]toml.Primitive
		if md.PrimitiveDecode(p, &table) == nil && len(table) > 0 {
			for sub, sp := range table {
				entries = flatten(md, append(slices.Clone(key), sub), sp, entries)
			}
			return entries
		}
	}
	var value any
	// Decoding into an empty interface cannot fail: it takes any TOML value.
	_ = md.PrimitiveDecode(p, &value)
	return append(entries, entry{key: name, line: lineOf(md, p), value: value})
}

// errLineProbe is returned by lineProbe and never leaves this file.
var errLineProbe = errors.New("line probe")

// lineProbe finds the line of a key. BurntSushi/toml v1.6 keeps key
// positions private and only reports them in the ParseError it builds when a
// toml.Unmarshaler fails, so decoding into a probe that always fails yields
// the position of exactly that key, for any kind of value.
type lineProbe struct{}

func (lineProbe) UnmarshalTOML(any) error { return errLineProbe }

func lineOf(md *toml.MetaData, p toml.Primitive) int {
	var pe toml.ParseError
	errors.As(md.PrimitiveDecode(p, &lineProbe{}), &pe)
	return pe.Position.Line
}
