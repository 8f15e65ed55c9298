// Package web serves the read-only dashboard of the whole cluster: HTML
// pages, the JSON API and the Prometheus metrics, all from the documents
// the status, queue and report commands print. Nothing it serves changes
// the store: it has no handler for anything but GET and HEAD.
package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"canhazgpu/internal/clusterview"
)

// Docs are the documents of one store read: status --json --all-nodes and
// the queue --json document of each node.
type Docs struct {
	Status []byte
	Queues map[string][]byte
}

// Source reads the store. Cluster is one read whatever the cluster's size;
// it backs every page but the usage report.
type Source interface {
	Cluster(ctx context.Context) (*Docs, error)
	Report(ctx context.Context, days int) ([]byte, error)
}

// DefaultListen is where the dashboard listens unless told otherwise:
// this machine only.
const DefaultListen = "127.0.0.1:8808"

// MaxDays bounds the usage report's window.
const MaxDays = 90

// Config is how the dashboard is served.
type Config struct {
	Listen          string // host:port
	TLSCert, TLSKey string // PEM files; both or neither
	AuthFile        string // bcrypt-hashed users; see LoadUsers
	Insecure        bool   // serve a non-loopback address without TLS and authentication
}

// Loopback reports whether host:port names only this machine: a loopback
// IP or "localhost". An empty host is every interface.
func Loopback(listen string) (bool, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("--listen %q: want HOST:PORT, for example %s", listen, DefaultListen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false, fmt.Errorf("--listen %q: want a port from 0 to 65535", listen)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// Check refuses a configuration that would show the cluster to the
// network unprotected: any address but loopback needs TLS and an
// authentication file, or --insecure.
func (c Config) Check() error {
	loop, err := Loopback(c.Listen)
	if err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key: want both PEM files or neither")
	}
	if loop || c.Insecure {
		return nil
	}
	if c.TLSCert == "" || c.AuthFile == "" {
		return fmt.Errorf("--listen %q is not a loopback address: want --tls-cert, --tls-key and --auth-file, or --insecure to serve it to anyone who can reach it", c.Listen)
	}
	return nil
}

// Serve serves the dashboard until ctx ends. ready, when not nil, gets
// the address listened on once the listener is open.
func Serve(ctx context.Context, c Config, src Source, logw io.Writer, ready func(addr string)) error {
	if err := c.Check(); err != nil {
		return err
	}
	var users Users
	if c.AuthFile != "" {
		var err error
		if users, err = LoadUsers(c.AuthFile); err != nil {
			return err
		}
	}
	loop, _ := Loopback(c.Listen)
	if !loop && c.Insecure && (c.TLSCert == "" || users == nil) {
		fmt.Fprintf(logw, "canhazgpu web: WARNING: --insecure: serving %s without TLS and authentication; anyone who can reach it sees every user's reservations\n", c.Listen)
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", c.Listen, err)
	}
	// WriteTimeout: a client that does not read its answer is cut off
	// (answers are built before they are sent, in well under a second at
	// 1,000 nodes).
	srv := &http.Server{Handler: NewHandler(src, users, logw), ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	done := make(chan error, 1)
	go func() {
		if c.TLSCert != "" {
			done <- srv.ServeTLS(ln, c.TLSCert, c.TLSKey)
		} else {
			done <- srv.Serve(ln)
		}
	}()
	scheme := "http"
	if c.TLSCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(logw, "canhazgpu web: serving %s://%s/\n", scheme, ln.Addr())
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	}
}

// NewHandler is every route, behind the security headers, the method
// check and, when users is not nil, HTTP basic authentication.
func NewHandler(src Source, users Users, logw io.Writer) http.Handler {
	h := &handler{src: src, log: logw, reads: make(chan struct{}, MaxReads), sends: make(chan struct{}, MaxSends)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.read(h.overview))
	mux.HandleFunc("GET /node/{node}", h.read(h.node))
	mux.HandleFunc("GET /usage", h.read(h.usage))
	mux.HandleFunc("GET /usage.csv", h.read(h.usageCSV))
	mux.HandleFunc("GET /api/v1/status", h.read(h.apiStatus))
	mux.HandleFunc("GET /api/v1/queue/{node}", h.read(h.apiQueue))
	mux.HandleFunc("GET /api/v1/report", h.read(h.apiReport))
	mux.HandleFunc("GET /metrics", h.read(h.metrics))
	mux.Handle("GET /static/", http.FileServerFS(staticFS))
	var auth *authenticator
	if users != nil {
		auth = newAuthenticator(users, time.Now)
	}
	return secured(auth, mux)
}

type handler struct {
	src   Source
	log   io.Writer
	reads chan struct{} // a token per request reading the store
	sends chan struct{} // a token per built answer being sent
}

// MaxReads bounds the requests that read the store and build an answer at
// once; more wait their turn. Each holds the whole cluster's view while
// it builds a page (about 40 MB at 1,000 nodes of 8 GPUs,
// docs/benchmarks.md), so this bounds the dashboard's memory however
// many clients poll it.
const MaxReads = 4

// read takes a turn to read the store, for as long as the answer is
// built, and gives it back before the answer is sent: a client that reads
// slowly (or not at all, until the server's WriteTimeout) holds no turn.
// A request that gives up waiting is answered 503.
func (h *handler) read(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.reads <- struct{}{}:
		case <-r.Context().Done():
			http.Error(w, "busy: try again", http.StatusServiceUnavailable)
			return
		}
		answer := &builtAnswer{w: w}
		func() {
			defer func() { <-h.reads }()
			next(answer, r)
		}()
		// Built answers wait to be sent MaxSends at a time, so that
		// clients that do not read hold at most that many in memory.
		select {
		case h.sends <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		defer func() { <-h.sends }()
		answer.send()
	}
}

// MaxSends bounds the built answers being sent at once: each is held in
// memory until its client has read it (or WriteTimeout cuts it off).
const MaxSends = 16

// builtAnswer keeps what a handler writes (its headers go to the real
// response at once: nothing is sent before send) until send.
type builtAnswer struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (a *builtAnswer) Header() http.Header { return a.w.Header() }

func (a *builtAnswer) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

func (a *builtAnswer) Write(p []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return a.body.Write(p)
}

func (a *builtAnswer) send() {
	a.WriteHeader(http.StatusOK)
	a.w.WriteHeader(a.status)
	_, _ = a.w.Write(a.body.Bytes()) // a client gone: nothing to tell it
}

// secured sets the headers every answer carries, refuses every method but
// GET and HEAD and checks the credentials.
func secured(auth *authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			hd.Set("Allow", "GET, HEAD")
			http.Error(w, "method "+r.Method+" not allowed: the dashboard only reads (GET, HEAD)", http.StatusMethodNotAllowed)
			return
		}
		if auth != nil {
			name, pass, ok := r.BasicAuth()
			if !ok || !auth.check(r.Context(), name, pass) {
				hd.Set("WWW-Authenticate", `Basic realm="canhazgpu", charset="UTF-8"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// cluster reads the store once and decodes the documents for a page.
func (h *handler) cluster(w http.ResponseWriter, r *http.Request) (*clusterview.Cluster, bool) {
	docs, err := h.src.Cluster(r.Context())
	if err != nil {
		h.fail(w, err)
		return nil, false
	}
	c, err := clusterview.Decode(docs.Status, docs.Queues)
	if err != nil {
		h.fail(w, err)
		return nil, false
	}
	return c, true
}

// fail answers a store error; the details go to the log, not to the
// network.
func (h *handler) fail(w http.ResponseWriter, err error) {
	fmt.Fprintf(h.log, "canhazgpu web: %v\n", err)
	http.Error(w, "the store could not be read; see the server's log", http.StatusBadGateway)
}

// days reads the days query parameter: 1 to MaxDays, 30 by default.
func days(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("days")
	if s == "" {
		return 30, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxDays {
		http.Error(w, fmt.Sprintf("days %q: want a whole number from 1 to %d", s, MaxDays), http.StatusBadRequest)
		return 0, false
	}
	return n, true
}

func writeDoc(w http.ResponseWriter, doc []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}

func (h *handler) apiStatus(w http.ResponseWriter, r *http.Request) {
	docs, err := h.src.Cluster(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	writeDoc(w, docs.Status)
}

func (h *handler) apiQueue(w http.ResponseWriter, r *http.Request) {
	docs, err := h.src.Cluster(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	q, ok := docs.Queues[r.PathValue("node")]
	if !ok {
		http.Error(w, fmt.Sprintf("node %q: not registered in the store", r.PathValue("node")), http.StatusNotFound)
		return
	}
	writeDoc(w, q)
}

func (h *handler) apiReport(w http.ResponseWriter, r *http.Request) {
	n, ok := days(w, r)
	if !ok {
		return
	}
	doc, err := h.src.Report(r.Context(), n)
	if err != nil {
		h.fail(w, err)
		return
	}
	if r.URL.Query().Get("download") != "" {
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="canhazgpu-report-%dd.json"`, n))
	}
	writeDoc(w, doc)
}

// reportDoc is the part of the report --json document the pages show.
type reportDoc struct {
	Days     int      `json:"days"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Nodes    []string `json:"nodes"`
	GPUHours float64  `json:"gpu_hours"`
	Users    []struct {
		User         string           `json:"user"`
		Seconds      map[string]int64 `json:"seconds"`
		TotalSeconds int64            `json:"total_seconds"`
		GPUHours     float64          `json:"gpu_hours"`
		Reservations int              `json:"reservations"`
		Daily        []struct {
			Date    string           `json:"date"`
			Seconds map[string]int64 `json:"seconds"`
		} `json:"daily"`
	} `json:"users"`
}

func (h *handler) report(w http.ResponseWriter, r *http.Request) (*reportDoc, bool) {
	n, ok := days(w, r)
	if !ok {
		return nil, false
	}
	doc, err := h.src.Report(r.Context(), n)
	if err != nil {
		h.fail(w, err)
		return nil, false
	}
	var rep reportDoc
	if err := json.Unmarshal(doc, &rep); err != nil {
		h.fail(w, fmt.Errorf("report document: %w", err))
		return nil, false
	}
	return &rep, true
}
