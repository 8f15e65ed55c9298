package slurmtest

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"canhazgpu/internal/testreq"
)

// TestNet builds a network over what a killed earlier run left behind,
// checks each host's name and that it reaches this machine through the
// bridge, and leaves nothing behind.
func TestNet(t *testing.T) {
	testreq.NoError(t, NetAvailable())
	// Leftovers of a killed run: a namespace and a bridge with our prefix.
	require.NoError(t, ip("netns", "add", NetPrefix+"stale"))
	require.NoError(t, ip("link", "add", NetPrefix+"stalebr", "type", "bridge"))

	n, err := NewNet("alpha", "beta")
	require.NoError(t, err)
	removed := false
	t.Cleanup(func() {
		if !removed {
			n.Remove()
		}
	})
	require.Equal(t, []string{"chgmn-alpha", "chgmn-beta", "chgmn-br", "chgmn-v0", "chgmn-v1"}, ours(t), "the stale ones are gone")

	l, err := net.Listen("tcp", n.Gateway+":0")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	for _, h := range n.Hosts() {
		// bash's /dev/tcp: a TCP client without another package.
		out, err := n.Command(h, "/bin/bash", "-c",
			`hostname; getent hosts beta | cut -d' ' -f1; exec 3<>/dev/tcp/`+n.Gateway+`/`+strconv.Itoa(port)+`; head -1 <&3`).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, h+"\n"+n.Addrs["beta"]+"\nhello\n", string(out))
	}
	host, err := os.Hostname()
	require.NoError(t, err)
	require.NotEqual(t, "alpha", host, "the host's name stays inside its namespace")
	// No way out: no default route in a host.
	out, err := exec.Command("ip", "-n", n.Namespace("alpha"), "route", "show", "default").CombinedOutput()
	require.NoError(t, err)
	require.Empty(t, strings.TrimSpace(string(out)))

	require.NoError(t, n.Remove())
	removed = true
	require.Empty(t, ours(t))
}

// ours lists the namespaces and links named with NetPrefix.
func ours(t *testing.T) []string {
	var names []string
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], NetPrefix) {
			names = append(names, f[0])
		}
	}
	out, err = exec.Command("ip", "-o", "link", "show").Output()
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], NetPrefix) {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
