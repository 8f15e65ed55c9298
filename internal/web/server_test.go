package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

func TestNonLoopbackBindNeedsTLSAndAuthOrInsecure(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string // "" when served
	}{
		{Config{Listen: DefaultListen}, ""},
		{Config{Listen: "[::1]:8808"}, ""},
		{Config{Listen: "localhost:0"}, ""},
		{Config{Listen: "0.0.0.0:8808"}, `--listen "0.0.0.0:8808" is not a loopback address: want --tls-cert, --tls-key and --auth-file, or --insecure`},
		{Config{Listen: ":8808"}, "is not a loopback address"},
		{Config{Listen: "gpu01.example:8808"}, "is not a loopback address"},
		{Config{Listen: "10.0.0.5:8808", TLSCert: "c", TLSKey: "k"}, "is not a loopback address"},
		{Config{Listen: "10.0.0.5:8808", AuthFile: "u"}, "is not a loopback address"},
		{Config{Listen: "10.0.0.5:8808", TLSCert: "c", TLSKey: "k", AuthFile: "u"}, ""},
		{Config{Listen: "10.0.0.5:8808", Insecure: true}, ""},
		{Config{Listen: "10.0.0.5:8808", TLSCert: "c"}, "--tls-cert and --tls-key: want both PEM files or neither"},
		{Config{Listen: "8808"}, `--listen "8808": want HOST:PORT`},
		{Config{Listen: "127.0.0.1:http"}, "want a port from 0 to 65535"},
	} {
		err := c.cfg.Check()
		if c.want == "" {
			require.NoError(t, err, "%+v", c.cfg)
		} else {
			require.ErrorContains(t, err, c.want, "%+v", c.cfg)
		}
	}
	// Serve checks before it listens: nothing is opened.
	err := Serve(context.Background(), Config{Listen: "0.0.0.0:0"}, nil, io.Discard, func(string) { t.Fatal("listened") })
	require.ErrorContains(t, err, "is not a loopback address")
}

func authFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

func TestAuthFile(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	users, err := LoadUsers(authFile(t, "# admins\n\nops:"+string(hash)+"\n"))
	require.NoError(t, err)
	require.True(t, users.Check("ops", "s3cret"))
	require.False(t, users.Check("ops", "wrong"))
	require.False(t, users.Check("nobody", "s3cret"))

	for text, want := range map[string]string{
		"ops:plaintext\n": "line 1: want NAME:BCRYPT-HASH",
		"# none\n":        "no users",
		"ops\n":           "line 1: want NAME:BCRYPT-HASH",
		"a:" + string(hash) + "\n:" + string(hash) + "\n": "line 2",
	} {
		_, err := LoadUsers(authFile(t, text))
		require.ErrorContains(t, err, want, text)
	}
}

// fakeSource serves fixed documents: a node with an unreserved GPU.
type fakeSource struct{}

const fakeStatus = `{"version":1,"generated_at":"2026-11-30T12:00:00Z","nodes":[{"node":"gpu01","local":true,"flags":[],"gpus":[
{"index":0,"uuid":"GPU-0","status":"unreserved","memory_used_mb":900,"users":["bob"],"foreign_users":[],"processes":[{"pid":4242,"name":"python3","user":"bob"}]},
{"index":1,"uuid":"GPU-1","status":"in_use","memory_used_mb":0,"users":[],"foreign_users":[],"reservation":{"kind":"manual","user":"alice","held_seconds":3725}},
{"index":2,"uuid":"GPU-2","status":"unreserved","memory_used_mb":900,"users":["carol"],"foreign_users":[],"processes":[{"pid":77,"name":"","user":"carol"},{"pid":78,"name":"","user":""}]}]}]}`

func (fakeSource) Cluster(context.Context) (*Docs, error) {
	return &Docs{Status: []byte(fakeStatus), Queues: map[string][]byte{"gpu01": []byte(`{"version":1,"node":"gpu01","queue":[]}`)}}, nil
}

func (fakeSource) Report(_ context.Context, days int) ([]byte, error) {
	return []byte(`{"version":1,"days":7,"start":"2026-11-23T12:00:00Z","end":"2026-11-30T12:00:00Z","nodes":["gpu01"],"users":[
{"user":"alice","seconds":{"run":3600,"manual":0,"slurm":7200,"pbs":0},"total_seconds":10800,"gpu_hours":3,"reservations":2,
 "daily":[{"date":"2026-11-24","seconds":{"run":0,"manual":0,"slurm":7200,"pbs":0}},{"date":"2026-11-30","seconds":{"run":3600,"manual":0,"slurm":0,"pbs":0}}]},
{"user":"=cmd","seconds":{"run":36,"manual":0,"slurm":0,"pbs":0},"total_seconds":36,"gpu_hours":0.01,"reservations":1,
 "daily":[{"date":"2026-11-30","seconds":{"run":36,"manual":0,"slurm":0,"pbs":0}}]}]}`), nil
}

func get(t *testing.T, h http.Handler, method, url string, auth ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, url, nil)
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return string(b)
}

func TestWrongPasswordRefused(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	h := NewHandler(fakeSource{}, Users{"ops": hash}, io.Discard)
	for _, auth := range [][]string{nil, {"ops", "wrong"}, {"bob", "s3cret"}} {
		r := get(t, h, "GET", "/api/v1/status", auth...)
		require.Equal(t, http.StatusUnauthorized, r.StatusCode, "%v", auth)
		require.Contains(t, r.Header.Get("WWW-Authenticate"), "Basic")
		require.NotContains(t, body(t, r), "gpu01")
	}
	r := get(t, h, "GET", "/api/v1/status", "ops", "s3cret")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.JSONEq(t, fakeStatus, body(t, r))
}

func TestHeadersMethodsAndPages(t *testing.T) {
	h := NewHandler(fakeSource{}, nil, io.Discard)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		r := get(t, h, m, "/api/v1/status")
		require.Equal(t, http.StatusMethodNotAllowed, r.StatusCode, m)
		require.Equal(t, "GET, HEAD", r.Header.Get("Allow"))
	}
	r := get(t, h, "GET", "/")
	require.Equal(t, http.StatusOK, r.StatusCode)
	csp := r.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.NotContains(t, csp, "unsafe-inline")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"))
	page := body(t, r)
	require.Contains(t, page, `class="gpu s-unreserved" data-state="unreserved" data-user="bob"`)
	require.Contains(t, page, "PID 4242 (python3, bob)")
	require.Contains(t, page, "PID 77 (carol); PID 78<")
	require.NotContains(t, page, "<script>", "no inline scripts")
	require.NotContains(t, page, "style=", "no inline styles")

	page = body(t, get(t, h, "GET", "/?user=alice"))
	require.Contains(t, page, `data-user="alice"`)
	require.NotContains(t, page, `data-user="bob"`)

	page = body(t, get(t, h, "GET", "/node/gpu01"))
	require.Contains(t, page, `<tr id="gpu-0" class="s-unreserved"`)
	require.Contains(t, page, "1:02:05")
	require.Equal(t, http.StatusNotFound, get(t, h, "GET", "/node/nope").StatusCode)

	page = body(t, get(t, h, "GET", "/usage?days=7"))
	require.Contains(t, page, `<g class="bar" data-user="alice">`)
	// Eight day slots (the 23rd to the 30th) of 75 units; the tallest day
	// is alice's two batch hours, 40 units high.
	require.Contains(t, page, `<g class="day" data-date="2026-11-24" data-interactive="0" data-batch="7200"><rect class="batch" x="232.5" y="8" width="60" height="40">`+
		`<title>alice, 2026-11-24: 2.00 batch GPU-hours</title></rect></g>`)
	require.Contains(t, page, `<g class="day" data-date="2026-11-30" data-interactive="3600" data-batch="0"><rect class="interactive" x="682.5" y="28" width="60" height="20">`)
	require.Contains(t, page, `<title id="chart-title">GPU-hours per user per day, 2026-11-23 to 2026-11-30 (UTC)</title>`)
	r = get(t, h, "GET", "/usage?days=91")
	require.Equal(t, http.StatusBadRequest, r.StatusCode)
	require.Equal(t, "days \"91\": want a whole number from 1 to 90\n", body(t, r))

	csv := body(t, get(t, h, "GET", "/usage.csv?days=7"))
	require.Equal(t, "user,gpu_hours,run,manual,slurm,pbs,reservations\nalice,3.00,1.00,0.00,2.00,0.00,2\n'=cmd,0.01,0.01,0.00,0.00,0.00,1\n", csv)

	for _, p := range []string{"/static/app.js", "/static/style.css", "/metrics", "/api/v1/queue/gpu01", "/api/v1/report?days=1"} {
		require.Equal(t, http.StatusOK, get(t, h, "GET", p).StatusCode, p)
	}
	require.True(t, strings.HasPrefix(get(t, h, "GET", "/static/app.js").Header.Get("Content-Type"), "text/javascript"))
	require.Equal(t, http.StatusNotFound, get(t, h, "GET", "/api/v1/queue/nope").StatusCode)
}

// blockingSource counts the reads in progress and holds each until
// released.
type blockingSource struct {
	fakeSource
	in      chan int // the reads in progress, after each start
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (s *blockingSource) Cluster(ctx context.Context) (*Docs, error) {
	s.mu.Lock()
	s.n++
	s.in <- s.n
	s.mu.Unlock()
	<-s.release
	s.mu.Lock()
	s.n--
	s.mu.Unlock()
	return s.fakeSource.Cluster(ctx)
}

// TestReadsAreBounded: however many clients ask at once, at most
// MaxReads answers are built at a time, so memory is bounded by the
// cluster's size, not by the clients.
func TestReadsAreBounded(t *testing.T) {
	src := &blockingSource{in: make(chan int, 100), release: make(chan struct{})}
	h := NewHandler(src, nil, io.Discard)
	const clients = MaxReads + 3
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.Equal(t, http.StatusOK, get(t, h, "GET", "/metrics").StatusCode)
		}()
	}
	most := 0
	for range MaxReads {
		most = max(most, <-src.in)
	}
	select {
	case n := <-src.in:
		t.Fatalf("read %d started while %d were in progress", n, MaxReads)
	default:
	}
	close(src.release)
	for range clients - MaxReads {
		most = max(most, <-src.in)
	}
	wg.Wait()
	require.Equal(t, MaxReads, most)
}

// countingAuthenticator is an authenticator on the users ops/s3cret whose
// comparisons are counted, on a clock the test moves.
func countingAuthenticator(t *testing.T, clock *time.Time) (*authenticator, *atomic.Int32) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	require.NoError(t, err)
	a := newAuthenticator(Users{"ops": hash}, func() time.Time { return *clock })
	var n atomic.Int32
	check := a.compare
	a.compare = func(name, pass string) bool { n.Add(1); return check(name, pass) }
	return a, &n
}

// TestPassedCredentialsRemembered: a dashboard polling with the same
// credentials costs one bcrypt comparison per passedFor, not one per
// request; a wrong password is compared every time, never remembered.
func TestPassedCredentialsRemembered(t *testing.T) {
	clock := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	a, compared := countingAuthenticator(t, &clock)
	ctx := context.Background()
	for range 3 {
		require.True(t, a.check(ctx, "ops", "s3cret"))
	}
	require.EqualValues(t, 1, compared.Load())
	for range 2 {
		require.False(t, a.check(ctx, "ops", "wrong"))
		require.False(t, a.check(ctx, "ops\x00s", "3cret"), "name and password stay apart")
	}
	require.EqualValues(t, 5, compared.Load())
	clock = clock.Add(passedFor)
	require.True(t, a.check(ctx, "ops", "s3cret"))
	require.EqualValues(t, 6, compared.Load(), "compared again once remembered for passedFor")
}

// TestAtMostMaxChecksAtOnce: comparisons beyond maxChecks wait their turn,
// and one whose request ends while it waits is refused.
func TestAtMostMaxChecksAtOnce(t *testing.T) {
	clock := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	a, _ := countingAuthenticator(t, &clock)
	release := make(chan struct{})
	var running, most atomic.Int32
	a.compare = func(string, string) bool {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		running.Add(-1)
		return false
	}
	var wg sync.WaitGroup
	for range maxChecks + 3 {
		wg.Add(1)
		go func() { defer wg.Done(); a.check(context.Background(), "ops", "guess") }()
	}
	require.Eventually(t, func() bool { return running.Load() == maxChecks }, 10*time.Second, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.False(t, a.check(ctx, "ops", "s3cret"), "refused while every turn is taken and its request has ended")
	close(release)
	wg.Wait()
	require.EqualValues(t, maxChecks, most.Load())
}

// TestUnknownNameComparedAtTheUsersCost: the decoy an unknown name is
// compared with has the cost most users' hashes have, so refusing it
// takes as long as refusing a wrong password.
func TestUnknownNameComparedAtTheUsersCost(t *testing.T) {
	hash := func(cost int) []byte {
		h, err := bcrypt.GenerateFromPassword([]byte("x"), cost)
		require.NoError(t, err)
		return h
	}
	users := Users{"a": hash(5), "b": hash(5), "c": hash(6)}
	require.Equal(t, 5, users.usualCost())
	cost, err := bcrypt.Cost(decoy(users.usualCost()))
	require.NoError(t, err)
	require.Equal(t, 5, cost)
}

// givingUpSource is fakeSource whose reads, once cancel is set, end the
// request they serve: its client gives up while the answer is built.
type givingUpSource struct {
	fakeSource
	cancel atomic.Pointer[context.CancelFunc]
}

func (s *givingUpSource) Cluster(ctx context.Context) (*Docs, error) {
	if f := s.cancel.Load(); f != nil {
		(*f)()
	}
	return s.fakeSource.Cluster(ctx)
}

// stuckClient is a response whose client reads nothing: writing the body
// blocks until the test lets it go.
type stuckClient struct {
	header  http.Header
	writing chan struct{}
	unstuck chan struct{}
}

func (c *stuckClient) Header() http.Header { return c.header }
func (c *stuckClient) WriteHeader(int)     {}
func (c *stuckClient) Write(p []byte) (int, error) {
	c.writing <- struct{}{}
	<-c.unstuck
	return len(p), nil
}

// TestClientsThatDoNotReadHoldNoTurn: MaxReads clients that never read
// their answers leave the store's turns free for the next request.
func TestClientsThatDoNotReadHoldNoTurn(t *testing.T) {
	src := &givingUpSource{}
	h := NewHandler(src, nil, io.Discard)
	writing, unstuck := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for range MaxReads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &stuckClient{header: http.Header{}, writing: writing, unstuck: unstuck}
			h.ServeHTTP(c, httptest.NewRequest("GET", "/api/v1/status", nil))
		}()
		<-writing // its answer is built and being sent
	}
	served := make(chan int)
	go func() { served <- get(t, h, "GET", "/api/v1/status").StatusCode }()
	select {
	case code := <-served:
		require.Equal(t, http.StatusOK, code)
	case <-time.After(time.Minute):
		t.Fatal("a request waited for clients that do not read")
	}

	// Up to MaxSends answers are held for such clients; the next waits
	// to be sent, and is dropped when its client gives up.
	for range MaxSends - MaxReads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &stuckClient{header: http.Header{}, writing: writing, unstuck: unstuck}
			h.ServeHTTP(c, httptest.NewRequest("GET", "/api/v1/status", nil))
		}()
		<-writing
	}
	ctx, cancel := context.WithCancel(context.Background())
	src.cancel.Store(&cancel) // the client gives up while its answer is built
	gaveUp := httptest.NewRecorder()
	h.ServeHTTP(gaveUp, httptest.NewRequest("GET", "/api/v1/status", nil).WithContext(ctx))
	require.Error(t, ctx.Err(), "its answer was built")
	require.Empty(t, gaveUp.Body.String(), "no answer sent beyond MaxSends")
	close(unstuck)
	wg.Wait()
}
