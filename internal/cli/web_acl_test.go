package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/allocator/store"
	"canhazgpu/internal/config"
	"canhazgpu/internal/redistest"
)

// aclServer starts a private Redis whose users are the lines admin --acl
// prints, with the passwords it wrote into dir: the store as a site sets
// it up (docs/security.md).
func aclServer(t *testing.T, dir string) *redistest.Server {
	t.Helper()
	var lines bytes.Buffer
	require.NoError(t, writeACL(&lines, &config.Config{}, dir))
	users := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		fields := strings.SplitN(line, " ", 3) // user NAME RULES
		require.Len(t, fields, 3, line)
		users[fields[1]] = fields[2]
	}
	own, err := redistest.Start(redistest.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	return own
}

// TestWebUsesTheMonitorRole: with redis.web_username and
// redis.web_password_file set, the dashboard reads every page as the
// monitor role admin --acl made, whoever runs it, and that credential
// cannot change the store: Redis refuses its writes.
func TestWebUsesTheMonitorRole(t *testing.T) {
	_, _ = aclFixture(t) // root and the canhazgpu group, as admin --acl needs
	secrets := filepath.Join(t.TempDir(), "secrets")
	own := aclServer(t, secrets)
	f := newFixture(t, busyGPUs,
		`redis.username = "canhazgpu-admin"`, fmt.Sprintf("redis.password_file = %q", filepath.Join(secrets, "admin.password")),
		`redis.web_username = "canhazgpu-monitor"`, fmt.Sprintf("redis.web_password_file = %q", filepath.Join(secrets, "monitor.password")))
	cfgText, err := os.ReadFile(f.cfgFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(f.cfgFile, bytes.ReplaceAll(cfgText, []byte(srv.SocketURL()), []byte(own.SocketURL())), 0o644))
	r := f.run(root, "admin", "--register")
	require.Equal(t, 0, r.code, r.stderr)
	r = f.run(alice, "reserve", "--gpu-ids", "0", "--duration", "1h")
	require.Equal(t, 0, r.code, r.stderr)

	// From here on, nothing the dashboard or the monitor credential does
	// changes the store.
	before, err := redistest.Dump(context.Background(), own.Client())
	require.NoError(t, err)
	for _, id := range []Identity{alice, root} {
		h, node := webServer(t, f, id)
		for _, path := range []string{"/", "/node/" + f.node, "/usage?days=7", "/usage.csv", "/api/v1/status",
			"/api/v1/queue/" + f.node, "/api/v1/report", "/metrics"} {
			code, body := fetch(t, h, path)
			require.Equal(t, http.StatusOK, code, "%s as %s: %s", path, id.Name, body)
		}
		_, page := fetch(t, h, "/node/"+f.node)
		require.Contains(t, page, "alice")

		// Its connection is the monitor's, root's too: a grant through it
		// is refused.
		_, err = node.Store.Allocate(context.Background(), allocator.Request{RequestID: allocator.NewRequestID(),
			Kind: allocator.KindManual, User: "mallory", Count: 1, Lease: time.Hour})
		require.ErrorIs(t, err, allocator.ErrNotPermitted, "as %s", id.Name)
	}

	monitor := redis.NewClient(&redis.Options{Network: "unix", Addr: own.Socket, Username: "canhazgpu-monitor",
		Password: strings.TrimSpace(readFile(t, filepath.Join(secrets, "monitor.password"))), MaxRetries: -1})
	t.Cleanup(func() { monitor.Close() })
	require.ErrorContains(t, monitor.Set(context.Background(), "chg:x", "1", 0).Err(), "NOPERM")
	require.ErrorContains(t, monitor.HSet(context.Background(), "chg:"+f.node+":res", "x", "y").Err(), "NOPERM")
	require.ErrorContains(t, monitor.Del(context.Background(), "chg:nodes").Err(), "NOPERM")
	after, err := redistest.Dump(context.Background(), own.Client())
	require.NoError(t, err)
	require.Equal(t, before, after)
}

// TestWebRefreshIsOneRoundTrip: once the dashboard has read the node
// registry, every page of the cluster, and /metrics, is one store round
// trip, whatever the cluster's size.
func TestWebRefreshIsOneRoundTrip(t *testing.T) {
	f := registered(t, busyGPUs)
	h, node := webServer(t, f, alice)
	trips := redistest.CountRoundTrips(node.Store.Client())
	for _, path := range []string{"/", "/api/v1/status", "/metrics", "/node/" + f.node} {
		fetch(t, h, path) // learn the registry
		trips.Reset()
		code, body := fetch(t, h, path)
		require.Equal(t, http.StatusOK, code, body)
		require.Equal(t, int64(1), trips.Load(), path)
	}
	for i := range 5 {
		registered(t, idleGPUs(i+1))
	}
	fetch(t, h, "/")
	trips.Reset()
	fetch(t, h, "/")
	require.Equal(t, int64(1), trips.Load(), "five more nodes, one round trip")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// TestWebUnitAndDocsNameTheMonitorCredential: the setting docs/web.md
// gives (also in the unit's comment) is valid, names the monitor role
// admin --acl makes, and the file the unit loads it from and hands over.
func TestWebUnitAndDocsNameTheMonitorCredential(t *testing.T) {
	unit := readFile(t, "../../contrib/systemd/canhazgpu-web.service")
	doc := readFile(t, "../../docs/web.md")
	const credential = "monitor.password"
	require.Contains(t, unit, "\nLoadCredential="+credential+":"+secretFile(&config.Config{}, SecretsDir, store.RoleMonitor)+"\n")
	require.NotContains(t, unit, "SupplementaryGroups", "no group that could read another role's password")

	i := strings.Index(doc, "    [redis]\n")
	require.GreaterOrEqual(t, i, 0, "docs/web.md shows the [redis] settings of the service")
	var lines []string
	for _, l := range strings.Split(doc[i:], "\n") {
		if !strings.HasPrefix(l, "    ") {
			break
		}
		lines = append(lines, strings.TrimPrefix(l, "    "))
		require.Contains(t, unit, "#   "+strings.TrimPrefix(l, "    ")+"\n", "the unit's comment shows the same settings")
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	sys, err := config.ReadSystemConfig(path, 0)
	require.NoError(t, err)
	r, err := sys.Redis()
	require.NoError(t, err)
	require.Equal(t, aclUser(store.RoleMonitor), r.WebUsername)
	require.Equal(t, "/run/credentials/canhazgpu-web.service/"+credential, r.WebPasswordFile)
}
