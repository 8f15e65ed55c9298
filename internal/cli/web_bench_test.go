package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
)

// BenchmarkWeb serves the overview page and /metrics of 1,000 nodes of 8
// GPUs each, a quarter of them reserved: the server's time per request,
// from the store read to the last byte.
func BenchmarkWeb(b *testing.B) {
	f := newFixture(b, idleGPUs(0))
	st := f.store()
	ctx := context.Background()
	for i := range 1000 {
		node, err := st.ForNode(fmt.Sprintf("webbench%04d", i))
		require.NoError(b, err)
		reg := make([]allocator.GPU, 8)
		for g := range reg {
			reg[g] = allocator.GPU{UUID: fmt.Sprintf("GPU-webbench-%04d-%02d", i, g), Index: g, Minor: g, Name: "NVIDIA H100 80GB HBM3"}
		}
		_, err = node.Register(ctx, reg, false)
		require.NoError(b, err)
		_, err = node.Allocate(ctx, allocator.Request{RequestID: allocator.NewRequestID(), Kind: allocator.KindManual,
			User: fmt.Sprintf("user%d", i%50), Count: 2, Lease: time.Hour, Note: "bench"})
		require.NoError(b, err)
	}
	h := webHandler(b, f)
	for _, path := range []string{"/", "/metrics"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body.String())
				}
			}
		})
	}
}
