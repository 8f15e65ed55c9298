package store

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }

var nodeSeq atomic.Int64

// newNode gives each test its own node, so tests share one server safely.
func newNode(t testing.TB, gpus int) *Store {
	t.Helper()
	return newNodeWith(t, gpus, allocator.Policy{})
}

// newNodeWith is newNode registering the node with a policy.
func newNodeWith(t testing.TB, gpus int, policy allocator.Policy) *Store {
	t.Helper()
	node := fmt.Sprintf("node%d", nodeSeq.Add(1))
	s, err := Open(context.Background(), Conn{URL: srv.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, node, Options{Policy: policy})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	if gpus > 0 {
		_, err := s.Register(context.Background(), fakeGPUs(gpus), false)
		require.NoError(t, err)
	}
	return s
}

func fakeGPUs(n int) []allocator.GPU {
	out := make([]allocator.GPU, n)
	for i := range out {
		out[i] = allocator.GPU{UUID: uuid(i), Index: i, Minor: i, Name: "Test GPU"}
	}
	return out
}

func uuid(i int) string { return fmt.Sprintf("GPU-00000000-0000-4000-8000-%012d", i) }

func manual(user string, count int) allocator.Request {
	return allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual, User: user,
		UID: 1000, Count: count, Lease: time.Hour}
}
