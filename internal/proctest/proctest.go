// Package proctest helps tests that start real processes: a buffer their
// output can be read from while they run, and the pids they report.
package proctest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// SyncBuffer takes the output of a process that still runs, so a test can
// read it meanwhile.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// PIDs waits until each named file in dir holds a pid (written by the
// processes under test, e.g. `echo $$ > name`) and returns them.
func PIDs(t testing.TB, dir string, names ...string) []int {
	t.Helper()
	out := make([]int, len(names))
	require.Eventually(t, func() bool {
		for i, name := range names {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return false
			}
			if out[i], err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "pid files %v", names)
	return out
}
