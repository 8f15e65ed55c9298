// Package redistest starts private redis-server processes for tests.
//
// Each server listens on a unix socket and a free loopback port inside its
// own temporary directory, so test binaries never touch a Redis they did not
// start, and every server is stopped by its pid.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"canhazgpu/internal/porttest"
)

// Server is one running redis-server owned by the test binary.
type Server struct {
	Dir    string // temp dir holding config, data and socket
	Port   int
	Socket string
	cmd    *exec.Cmd
	args   []string
}

// Binary is the redis-server executable the harness runs.
func Binary() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found in PATH: install it with 'apt-get install redis-server' (tests start their own private server)")
	}
	return p, nil
}

// Options tune a server.
type Options struct {
	// Cluster starts the server with cluster mode enabled.
	Cluster bool
	// Port forces a port (0: pick a free one).
	Port int
	// Args are extra redis-server arguments (e.g. --requirepass, TLS).
	Args []string
	// Users are ACL users besides "default" (which keeps every right, for
	// the test's own inspection): name -> rules after "user NAME", e.g.
	// "on >secret +@read ~*". They are written to an ACL file in the
	// server's directory.
	Users map[string]string
}

// Start launches a redis-server in a new temp dir and waits until it answers.
func Start(opts Options) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "canhazgpu-redis-")
	if err != nil {
		return nil, fmt.Errorf("redistest: temp dir: %w", err)
	}
	port := opts.Port
	if port == 0 {
		if port, err = porttest.Free(0); err != nil {
			return nil, err
		}
	}
	s := &Server{Dir: dir, Port: port, Socket: filepath.Join(dir, "redis.sock")}
	s.args = []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--unixsocket", s.Socket,
		"--unixsocketperm", "777",
		"--dir", dir,
		// AOF keeps data across Restart, as a production server configured
		// for durability would.
		"--appendonly", "yes",
		"--appendfsync", "everysec",
		"--save", "",
		"--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
		// A replica's first copy starts at once instead of after
		// Redis's default 5 s wait for more replicas to share it.
		"--repl-diskless-sync-delay", "0",
	}
	s.args = append(s.args, opts.Args...)
	if len(opts.Users) > 0 {
		acl, err := writeACLFile(dir, opts.Users)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.args = append(s.args, "--aclfile", acl)
	}
	if opts.Cluster {
		s.args = append(s.args, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000")
	}
	if err := s.launch(bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func writeACLFile(dir string, users map[string]string) (string, error) {
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "user %s %s\n", name, users[name])
	}
	path := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("redistest: acl file: %w", err)
	}
	return path, nil
}

func (s *Server) launch(bin string) error {
	cmd := exec.Command(bin, s.args...)
	// Own process group: a Ctrl-C on the test run must not kill the server
	// before the harness stops it and checks state.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.cmd = cmd
	if err := s.waitReady(10 * time.Second); err != nil {
		s.kill()
		return err
	}
	return nil
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c := redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket, MaxRetries: -1})
		err := c.Ping(context.Background()).Err()
		c.Close()
		// A server with a password answers, which is all "ready" means.
		if err == nil || strings.HasPrefix(err.Error(), "NOAUTH") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server on port %d not ready after %s: %w (log: %s)", s.Port, limit, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	f, err := os.Open(filepath.Join(s.Dir, "redis.log"))
	if err != nil {
		return "no log"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 5 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, " | ")
}

// Addr is host:port of the TCP listener.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is a redis:// URL for the TCP listener.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// SocketURL is a unix:// URL for the socket listener.
func (s *Server) SocketURL() string { return "unix://" + s.Socket }

// Pid of the running server, 0 when stopped.
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Pause stops the server's process (SIGSTOP) until the returned resume
// is called or the test ends: a replica that lags, or a primary that
// hangs, without losing anything. resume may be called more than once.
func (s *Server) Pause(t testing.TB) (resume func()) {
	t.Helper()
	pid := s.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("redistest: pause %d: %v", pid, err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("redistest: resume %d: %v", pid, err)
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

// Halt stops the server but keeps its data directory, for restart tests.
func (s *Server) Halt() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// The waiting goroutine reaps it: a second Wait would race.
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Restart halts the server and starts it again on the same port and socket
// with the same data.
func (s *Server) Restart() error {
	s.Halt()
	bin, err := Binary()
	if err != nil {
		return err
	}
	return s.launch(bin)
}

// RestartEmpty halts the server and starts it again on the same port and
// socket without its data, as a server run without persistence comes back
// after a crash or a reboot. Clients reconnect to an empty store.
func (s *Server) RestartEmpty() error {
	s.Halt()
	// The append-only file (a directory since Redis 7) and the snapshot.
	for _, name := range []string{"appendonlydir", "appendonly.aof", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(s.Dir, name)); err != nil {
			return fmt.Errorf("redistest: remove the data: %w", err)
		}
	}
	bin, err := Binary()
	if err != nil {
		return err
	}
	return s.launch(bin)
}

func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Stop ends the server by pid and removes its directory.
func (s *Server) Stop() {
	s.Halt()
	os.RemoveAll(s.Dir)
}

// Client returns a plain client on the unix socket.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket})
}

// Cluster is a set of cluster-mode servers joined into one Redis Cluster.
type Cluster struct {
	Servers []*Server
}

// StartCluster starts n masters (no replicas) and joins them with
// redis-cli --cluster create. opts.Args and opts.Users apply to every
// node; the port and cluster mode are chosen here.
func StartCluster(n int, opts Options) (*Cluster, error) {
	return StartReplicatedCluster(n, 0, opts)
}

// StartReplicatedCluster is StartCluster with replicas replicas of every
// master (Servers: the masters first, as redis-cli assigns them), and
// waits until every replica's link is up.
func StartReplicatedCluster(n, replicas int, opts Options) (*Cluster, error) {
	c := &Cluster{}
	for range n * (1 + replicas) {
		s, err := startClusterNode(opts)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		c.Stop()
		return nil, errors.New("redis-cli not found: install redis-tools")
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redistest: cluster create: %w: %s", err, out)
	}
	if err := c.waitOK(15 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	for _, s := range c.Servers[n:] {
		if err := s.WaitReplicaLinkUp(15 * time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// startClusterNode picks a port whose cluster bus port (+10000) is free too.
func startClusterNode(opts Options) (*Server, error) {
	p, err := porttest.Free(10000)
	if err != nil {
		return nil, err
	}
	opts.Cluster, opts.Port = true, p
	return Start(opts)
}

// Addrs lists host:port of every node.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Addr())
	}
	return out
}

func (c *Cluster) waitOK(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ok := true
		for _, s := range c.Servers {
			cl := s.Client()
			info, err := cl.ClusterInfo(context.Background()).Result()
			cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: cluster not ok after %s", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

// StartSentinel runs a Redis Sentinel on a free port watching the master
// at masterAddr under the name master, and waits until it knows it.
func StartSentinel(master, masterAddr string) (*Server, error) {
	return startSentinel(master, masterAddr, "1", "")
}

// Sentinels are a quorum of Redis Sentinels watching one master.
type Sentinels struct {
	Master  string
	Servers []*Server
}

// StartSentinels runs n Sentinels (quorum: a majority) watching the master
// at masterAddr under the name master. They call it down after downAfter
// without an answer and then fail over at once, so that tests see a
// failover in seconds instead of Sentinel's default half minute.
func StartSentinels(n int, master, masterAddr string, downAfter time.Duration) (*Sentinels, error) {
	tuning := fmt.Sprintf("sentinel down-after-milliseconds %[1]s %[2]d\nsentinel failover-timeout %[1]s %[3]d\n",
		master, downAfter.Milliseconds(), (10 * downAfter).Milliseconds())
	ss := &Sentinels{Master: master}
	for range n {
		s, err := startSentinel(master, masterAddr, strconv.Itoa(n/2+1), tuning)
		if err != nil {
			ss.Stop()
			return nil, err
		}
		ss.Servers = append(ss.Servers, s)
	}
	return ss, nil
}

// Addrs lists host:port of every Sentinel.
func (ss *Sentinels) Addrs() []string {
	var out []string
	for _, s := range ss.Servers {
		out = append(out, s.Addr())
	}
	return out
}

// MasterAddr is host:port of the master as the first Sentinel that
// answers knows it.
func (ss *Sentinels) MasterAddr(ctx context.Context) (string, error) {
	var err error
	for _, s := range ss.Servers {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		var hp []string
		hp, err = c.GetMasterAddrByName(ctx, ss.Master).Result()
		c.Close()
		if err == nil {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
	}
	return "", fmt.Errorf("redistest: no sentinel knows master %s: %w", ss.Master, err)
}

// Stop stops every Sentinel.
func (ss *Sentinels) Stop() {
	for _, s := range ss.Servers {
		s.Stop()
	}
}

// StartReplica starts a server replicating primary and waits until its
// link to primary is up and the initial copy is done.
func StartReplica(primary *Server, opts Options) (*Server, error) {
	host, port, _ := strings.Cut(primary.Addr(), ":")
	opts.Args = append(append([]string(nil), opts.Args...), "--replicaof", host, port)
	s, err := Start(opts)
	if err != nil {
		return nil, err
	}
	if err := s.WaitReplicaLinkUp(10 * time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// WaitReplicaLinkUp waits until the server is a replica whose link to its
// primary is up, and has written the copy to its AOF: until then it
// refuses to shut down ("Writing initial AOF, can't exit").
func (s *Server) WaitReplicaLinkUp(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c := s.Client()
		info, err := c.Info(context.Background(), "replication", "persistence").Result()
		c.Close()
		if err == nil && strings.Contains(info, "master_link_status:up") &&
			strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: replica on port %d not linked after %s (log: %s)", s.Port, limit, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Crash kills the server with SIGKILL, as a crash or the OOM killer
// would, keeping its data directory; Restart brings it back.
func (s *Server) Crash() { s.kill() }

func startSentinel(master, masterAddr, quorum, tuning string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "canhazgpu-sentinel-")
	if err != nil {
		return nil, fmt.Errorf("redistest: temp dir: %w", err)
	}
	port, err := porttest.Free(0)
	if err != nil {
		return nil, err
	}
	host, mport, _ := strings.Cut(masterAddr, ":")
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s %s\n%s", port, dir, master, host, mport, quorum, tuning)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("redistest: sentinel config: %w", err)
	}
	s := &Server{Dir: dir, Port: port, Socket: ""}
	cmd := exec.Command(bin, conf, "--sentinel", "--logfile", filepath.Join(dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redistest: start sentinel: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		_, err := c.GetMasterAddrByName(context.Background(), master).Result()
		c.Close()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redistest: sentinel not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Run is the body of a test package's TestMain: it starts a private server
// into *srv, runs the tests, stops the server and returns the exit code.
//
//	func TestMain(m *testing.M) { os.Exit(redistest.Run(m, &srv)) }
func Run(m *testing.M, srv **Server) int {
	s, err := Start(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*srv = s
	defer s.Stop()
	return m.Run()
}

// Dump is every key of the server with its serialized value (DUMP): two
// dumps are equal only when the data is byte for byte the same. The client
// needs KEYS and DUMP, which no canhazgpu role has.
func Dump(ctx context.Context, c *redis.Client) (map[string]string, error) {
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		return nil, fmt.Errorf("redistest: keys: %w", err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		v, err := c.Dump(ctx, k).Result()
		if err != nil {
			return nil, fmt.Errorf("redistest: dump %s: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

// RoundTrips counts a client's exchanges with the server: each command,
// and each whole pipeline once. The HELLO that opens each connection is
// not counted: every program pays it once, whatever it then does.
type RoundTrips struct{ n atomic.Int64 }

// CountRoundTrips starts counting c's round trips.
func CountRoundTrips(c redis.UniversalClient) *RoundTrips {
	r := &RoundTrips{}
	c.AddHook(r)
	return r
}

// Load is the count so far.
func (r *RoundTrips) Load() int64 { return r.n.Load() }

// Reset starts the count again from 0.
func (r *RoundTrips) Reset() { r.n.Store(0) }

// DialHook is part of redis.Hook.
func (*RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook is part of redis.Hook.
func (r *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hello" {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook is part of redis.Hook.
func (r *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}
