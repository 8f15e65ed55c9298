package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/localnode"
	"canhazgpu/internal/redistest"
	"canhazgpu/internal/web"
)

// busyGPUs is a fake GPU file whose GPU 1 bob uses without a reservation.
const busyGPUs = `{"gpus": [{"index": 0, "memory_used_mb": 0},
 {"index": 1, "utilization": 61, "processes": [{"pid": 4242, "name": "python3", "user": "bob", "uid": 2002, "used_memory_mb": 3000}]},
 {"index": 2, "memory_used_mb": 0}]}`

// webHandler serves the dashboard of f's node as canhazgpu web would.
func webHandler(t testing.TB, f *fixture) http.Handler {
	t.Helper()
	h, _ := webServer(t, f, alice)
	return h
}

// webServer is the dashboard of f's node as canhazgpu web run by id
// serves it, and the store connection it reads through.
func webServer(t testing.TB, f *fixture, id Identity) (http.Handler, *localnode.Node) {
	t.Helper()
	env, _, _ := f.env(id)
	inv := &invocation{env: env}
	cfg, node, err := inv.openWebNode(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { node.Close() })
	return web.NewHandler(&webSource{cfg: cfg, node: node}, nil, io.Discard), node
}

func fetch(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

// timeless drops the fields that move with the clock between two reads.
func timeless(t *testing.T, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(doc), &m))
	delete(m, "generated_at")
	delete(m, "end")
	delete(m, "start")
	for _, n := range m["nodes"].([]any) {
		if node, ok := n.(map[string]any); ok {
			for _, g := range node["gpus"].([]any) {
				if r, ok := g.(map[string]any)["reservation"].(map[string]any); ok {
					delete(r, "held_seconds")
				}
			}
		}
	}
	return m
}

func TestWebServesTheCommandsDocuments(t *testing.T) {
	f := registered(t, busyGPUs)
	other := registered(t, idleGPUs(2))
	require.Equal(t, 0, other.run(alice, "reserve", "--gpus", "1", "--duration", "1h").code)
	require.Equal(t, 0, f.run(alice, "reserve", "--gpu-ids", "0", "--duration", "1h", "--note", "notebook").code)
	h := webHandler(t, f)

	code, got := fetch(t, h, "/api/v1/status")
	require.Equal(t, http.StatusOK, code)
	r := f.run(alice, "status", "--json", "--all-nodes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, timeless(t, r.stdout), timeless(t, got))
	require.Equal(t, []*int{nil, new(61), nil}, utilizations(t, got, f.node), "the dashboard's scan asked for utilisation")

	code, got = fetch(t, h, "/api/v1/queue/"+f.node)
	require.Equal(t, http.StatusOK, code)
	r = f.run(alice, "queue", "--json")
	require.JSONEq(t, r.stdout, got)

	code, got = fetch(t, h, "/api/v1/report?days=3")
	require.Equal(t, http.StatusOK, code)
	r = f.run(alice, "report", "--json", "--days", "3")
	var want, have map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &want))
	require.NoError(t, json.Unmarshal([]byte(got), &have))
	require.Equal(t, want["nodes"], have["nodes"])
	require.Equal(t, want["reservations"], have["reservations"])

	// The textfile form is /metrics, line for line.
	code, got = fetch(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)
	r = f.run(alice, "status", "--all-nodes", "--prometheus")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, got, r.stdout)
	require.Contains(t, got, `canhazgpu_gpu_state{Hostname="`+f.node+`",gpu="1",UUID="GPU-fa4e0000-0000-4000-8000-000000000001",state="unreserved"} 1`)
	r = f.run(alice, "status", "--prometheus")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `canhazgpu_gpu_memory_used_bytes{Hostname="`+f.node+`",gpu="1",UUID="GPU-fa4e0000-0000-4000-8000-000000000001"} 3.145728e+09`)
	require.NotContains(t, r.stdout, other.node, "without --all-nodes, this node only")
	r = f.run(alice, "status", "--json", "--prometheus")
	require.Equal(t, 2, r.code)
	require.Equal(t, "Error: --json and --prometheus: want one output format\n", r.stderr)

	_, page := fetch(t, h, "/?user=bob")
	require.Contains(t, page, `data-state="unreserved" data-user="bob"`)
	require.Contains(t, page, "PID 4242 (python3, bob)")
	require.NotContains(t, page, `data-user="alice"`)
}

// TestWebCrawlLeavesTheStoreAsItWas reads every route, with good and bad
// parameters and every method, and compares the whole store before and
// after, byte for byte.
func TestWebCrawlLeavesTheStoreAsItWas(t *testing.T) {
	f := registered(t, busyGPUs)
	require.Equal(t, 0, f.run(alice, "reserve", "--gpus", "1", "--duration", "1h").code)
	h := webHandler(t, f)
	ctx := context.Background()
	before, err := redistest.Dump(ctx, srv.Client())
	require.NoError(t, err)

	paths := []string{"/", "/?node=" + f.node, "/?user=alice", "/?user=nobody", "/node/" + f.node, "/node/nope",
		"/usage", "/usage?days=1", "/usage?days=90", "/usage?days=0", "/usage.csv?days=7", "/api/v1/status",
		"/api/v1/queue/" + f.node, "/api/v1/queue/nope", "/api/v1/report", "/api/v1/report?days=x", "/metrics",
		"/static/app.js", "/static/style.css", "/nothing"}
	for _, p := range paths {
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(m, p, nil))
			require.NotEqual(t, http.StatusBadGateway, rec.Code, "%s %s: %s", m, p, rec.Body.String())
		}
	}
	after, err := redistest.Dump(ctx, srv.Client())
	require.NoError(t, err)
	require.Equal(t, before, after)
}
