package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExampleIsDefaults keeps example.toml, which is installed as the system
// file, from drifting: loaded, it must give exactly the built-in defaults.
func TestExampleIsDefaults(t *testing.T) {
	want, err := Load(testOptions(t))
	require.NoError(t, err)

	opts := testOptions(t)
	writeFile(t, opts.DefaultFile, ExampleTOML)
	got, err := Load(opts)
	require.NoError(t, err)
	require.Equal(t, opts.DefaultFile, got.File)
	got.File = ""
	require.Equal(t, want, got)
}

// TestExampleListsEveryKey: the example sets every key, section by section in
// the order of the settings table, so a new key cannot be left out of it.
func TestExampleListsEveryKey(t *testing.T) {
	entries, err := readEntries("example.toml", ExampleTOML)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.key)
	}
	var want []string
	for _, section := range append([]string{""}, sections...) {
		n := len(want)
		for _, s := range settings {
			if s.section() == section {
				want = append(want, s.name)
			}
		}
		if n == len(want) {
			want = append(want, section) // [output]: an empty table
		}
	}
	require.Equal(t, want, got)
}
