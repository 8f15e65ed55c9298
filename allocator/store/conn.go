package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Conn says how to reach Redis; it mirrors the [redis] settings.
type Conn struct {
	URL            string // redis://, rediss:// or unix:///path.sock
	SentinelMaster string
	SentinelAddrs  []string
	ClusterAddrs   []string
	// Username is the Redis ACL user (see ACLRules); empty: the one in the
	// URL, else "default".
	Username string
	// Password, when set, is used instead of PasswordFile: a program that
	// read its credential itself (e.g. before dropping privileges) passes
	// it here.
	Password     string
	PasswordFile string // read here, so the password is never in argv or env
	TLSCAFile    string
	DialTimeout  time.Duration
	OpTimeout    time.Duration
	// WaitReplicas, when above 0, makes every change wait until that many
	// replicas confirm it (Redis WAIT, for at most WaitTimeout) before it
	// is acknowledged, so that a failover cannot lose an acknowledged
	// grant; fewer confirm: a *NotReplicatedError.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// Addr describes the target for messages.
func (c Conn) Addr() string {
	switch {
	case len(c.ClusterAddrs) > 0:
		return "cluster " + strings.Join(c.ClusterAddrs, ",")
	case c.SentinelMaster != "":
		return "sentinel master " + c.SentinelMaster + " via " + strings.Join(c.SentinelAddrs, ",")
	default:
		return redactURL(c.URL)
	}
}

// redactURL hides a password written into the URL.
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	cred := rest[:at]
	if user, _, hasPw := strings.Cut(cred, ":"); hasPw {
		return scheme + "://" + user + ":***@" + rest[at+1:]
	}
	return u
}

// quiet keeps go-redis from printing its own retry and pool messages on
// the users' terminals: every failure reaches the caller as an error.
var quiet sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// Dial builds the client the settings describe: one server, Sentinel or
// Cluster. It does not contact the server.
func Dial(c Conn) (redis.UniversalClient, error) {
	quiet.Do(func() { redis.SetLogger(discardLogger{}) })
	password := c.Password
	if password == "" && c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("redis password file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	var tlsConf *tls.Config
	if c.TLSCAFile != "" || strings.HasPrefix(c.URL, "rediss://") {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("redis tls ca file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis tls ca file %s: no PEM certificate found", c.TLSCAFile)
			}
			tlsConf.RootCAs = pool
		}
	}
	// Every program is a short-lived process with a fresh connection, so
	// the handshake counts: without these, go-redis follows HELLO with
	// CLIENT MAINT_NOTIFICATIONS and CLIENT SETINFO, two more round trips.
	// ContextTimeoutEnabled makes a caller's deadline bound each socket
	// read and write (the scheduler programs have a hard one); otherwise
	// go-redis waits out the op timeout whatever the context says.
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch {
	case len(c.ClusterAddrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.ClusterAddrs, Username: c.Username, Password: password, TLSConfig: tlsConf,
			DialTimeout: c.DialTimeout, ReadTimeout: c.OpTimeout, WriteTimeout: c.OpTimeout,
			DisableIdentity: true, MaintNotificationsConfig: noMaint, ContextTimeoutEnabled: true,
		}), nil
	case c.SentinelMaster != "":
		if len(c.SentinelAddrs) == 0 {
			return nil, fmt.Errorf("redis sentinel master %q: no sentinel_addrs given", c.SentinelMaster)
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.SentinelMaster, SentinelAddrs: c.SentinelAddrs, Username: c.Username, Password: password,
			TLSConfig: tlsConf, DialTimeout: c.DialTimeout, ReadTimeout: c.OpTimeout, WriteTimeout: c.OpTimeout,
			DisableIdentity: true, ContextTimeoutEnabled: true,
		}), nil
	}
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url %q: %w (want redis://host:port/db, rediss://… or unix:///path.sock)", redactURL(c.URL), err)
	}
	opt.DisableIdentity, opt.MaintNotificationsConfig, opt.ContextTimeoutEnabled = true, noMaint, true
	if c.Username != "" {
		opt.Username = c.Username
	}
	if password != "" {
		opt.Password = password
	}
	if tlsConf != nil && opt.Network != "unix" {
		if opt.TLSConfig != nil {
			tlsConf.ServerName = opt.TLSConfig.ServerName
		}
		opt.TLSConfig = tlsConf
	}
	if c.DialTimeout > 0 {
		opt.DialTimeout = c.DialTimeout
	}
	if c.OpTimeout > 0 {
		opt.ReadTimeout, opt.WriteTimeout = c.OpTimeout, c.OpTimeout
	}
	return redis.NewClient(opt), nil
}

// Open dials Redis and returns the store of one node. The connection is
// made lazily; the first operation reports an unreachable server.
func Open(_ context.Context, c Conn, node string, opts Options) (*Store, error) {
	switch {
	case c.WaitReplicas < 0:
		return nil, fmt.Errorf("redis wait_replicas %d: want 0 (acknowledge on the primary's reply) or more replicas", c.WaitReplicas)
	case c.WaitReplicas > 0 && c.WaitTimeout <= 0:
		return nil, fmt.Errorf("redis wait_timeout %s: want a positive duration when wait_replicas is set", c.WaitTimeout)
	case c.WaitReplicas > 0 && c.OpTimeout > 0 && c.WaitTimeout >= c.OpTimeout:
		return nil, fmt.Errorf("redis wait_timeout %s: want less than op_timeout (%s), whose socket reads the wait's reply", c.WaitTimeout, c.OpTimeout)
	}
	rdb, err := Dial(c)
	if err != nil {
		return nil, err
	}
	s, err := New(rdb, c.Addr(), node, opts)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s.owned = true
	s.run.wait = durability{replicas: c.WaitReplicas, timeout: c.WaitTimeout}
	return s, nil
}
