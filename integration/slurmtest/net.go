package slurmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Net is a private network of test hosts on this machine: each host is a
// network namespace with one address on a bridge the harness creates, and
// runs its programs in a UTS namespace of their own under the host's name.
// The bridge has the first address of the subnet and stays in this
// machine's namespace, so the test itself, slurmctld and Redis reach every
// host through it. The hosts have no default route and forwarding is not
// touched: nothing leaves them but for the bridge.
//
// Every name begins with NetPrefix, so a later run removes what a killed
// one left behind. A lock file keeps two test binaries from building the
// network at the same time.
type Net struct {
	Bridge  string            // the bridge's interface name
	Gateway string            // the bridge's address: this machine as the hosts see it
	Addrs   map[string]string // host name → address
	hosts   []string          // in creation order
	lock    *os.File
}

// NetPrefix begins the name of every namespace, link and /etc/netns
// directory the harness creates.
const NetPrefix = "chgmn-"

const (
	netBridge = NetPrefix + "br"
	netSubnet = "10.213.77." // a /24 of the private range; .1 is the bridge
	netLock   = "/run/canhazgpu-test-net.lock"
	netnsEtc  = "/etc/netns"
)

// NetAvailable says why a Net cannot be built here, or nil.
func NetAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("slurmtest: a test network needs root (ip netns)")
	}
	for _, c := range []string{"ip", "nsenter", "unshare", "mount", "hostname"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("slurmtest: %s not found: install the Debian packages iproute2 util-linux hostname (scripts/install-deps.sh)", c)
		}
	}
	return nil
}

// NewNet builds the network with one host per name (at most 200; each
// name a short hostname: letters, digits, '-'). Remove takes it down.
func NewNet(hosts ...string) (*Net, error) {
	if err := NetAvailable(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 || len(hosts) > 200 {
		return nil, fmt.Errorf("slurmtest: %d hosts: want 1 to 200", len(hosts))
	}
	for _, h := range hosts {
		if !validHost(h) {
			return nil, fmt.Errorf("slurmtest: host name %q: want 1 to 8 letters, digits or '-'", h)
		}
	}
	lock, err := os.OpenFile(netLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("slurmtest: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("slurmtest: lock %s: %w", netLock, err)
	}
	n := &Net{Bridge: netBridge, Gateway: netSubnet + "1", Addrs: map[string]string{}, lock: lock}
	// What an earlier run left behind (it held the lock, so it is gone).
	if err := n.removeStale(); err != nil {
		n.unlock()
		return nil, err
	}
	if err := n.build(hosts); err != nil {
		err = errors.Join(err, n.removeStale())
		n.unlock()
		return nil, err
	}
	return n, nil
}

// validHost keeps names short enough for interface names (15 bytes with
// the prefix) and harmless in the commands that carry them.
func validHost(h string) bool {
	if h == "" || len(h) > 8 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func (n *Net) build(hosts []string) error {
	steps := [][]string{
		{"link", "add", n.Bridge, "type", "bridge"},
		{"addr", "add", n.Gateway + "/24", "dev", n.Bridge},
		{"link", "set", n.Bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	var etcHosts strings.Builder
	fmt.Fprintf(&etcHosts, "127.0.0.1 localhost\n%s %s\n", n.Gateway, "controller")
	for i, h := range hosts {
		n.Addrs[h] = fmt.Sprintf("%s%d", netSubnet, 11+i)
		fmt.Fprintf(&etcHosts, "%s %s\n", n.Addrs[h], h)
	}
	for i, h := range hosts {
		ns, veth := n.Namespace(h), fmt.Sprintf("%sv%d", NetPrefix, i)
		steps := [][]string{
			{"netns", "add", ns},
			{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"link", "set", veth, "master", n.Bridge},
			{"link", "set", veth, "up"},
			{"-n", ns, "addr", "add", n.Addrs[h] + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				return err
			}
		}
		// Mounted over /etc/hosts for the host's programs (Command): every
		// host resolves every other by name, as on a real cluster.
		dir := filepath.Join(netnsEtc, ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("slurmtest: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(etcHosts.String()), 0o644); err != nil {
			return fmt.Errorf("slurmtest: %w", err)
		}
		n.hosts = append(n.hosts, h)
	}
	return nil
}

// Namespace is the network namespace of a host.
func (n *Net) Namespace(host string) string { return NetPrefix + host }

// Hosts are the hosts' names in the order given to NewNet.
func (n *Net) Hosts() []string { return slices.Clone(n.hosts) }

// Command runs argv on a host: in its network namespace, with the
// host's /etc/hosts (every host by name), and in a new UTS namespace whose
// hostname is the host's name. The process keeps its pid through every
// step (each execs the next), so it can be signalled as the program
// itself. (Not `ip netns exec`: it mounts a new /sys, without the cgroup
// file systems slurmd needs.)
func (n *Net) Command(host string, argv ...string) *exec.Cmd {
	ns := n.Namespace(host)
	args := append([]string{"--net=" + filepath.Join("/run/netns", ns), "unshare", "--uts", "--mount", "--",
		"/bin/sh", "-c", `mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"`,
		filepath.Join(netnsEtc, ns, "hosts"), host}, argv...)
	return exec.Command("nsenter", args...)
}

// Remove takes down every namespace, link and /etc/netns directory of the
// network and lets the next network be built.
func (n *Net) Remove() error {
	if n.lock == nil {
		return nil
	}
	err := n.removeStale()
	n.unlock()
	return err
}

func (n *Net) unlock() {
	_ = syscall.Flock(int(n.lock.Fd()), syscall.LOCK_UN)
	n.lock.Close()
	n.lock = nil
}

// removeStale deletes everything named with NetPrefix: the links first
// (deleting a veth deletes its peer inside a namespace), then the
// namespaces and their /etc/netns directories.
func (n *Net) removeStale() error {
	var errs []error
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("slurmtest: ip link show: %w", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		// "7: chgmn-v0@if2: <...>" or "5: chgmn-br: <...>"
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, NetPrefix) {
			if err := ip("link", "delete", name); err != nil && linkExists(name) {
				errs = append(errs, err)
			}
		}
	}
	out, err = exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("slurmtest: ip netns list: %w", err)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], NetPrefix) {
			if err := ip("netns", "delete", f[0]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(netnsEtc, NetPrefix+"*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("slurmtest: %w", err))
		}
	}
	return errors.Join(errs...)
}

// linkExists: a veth whose peer was just deleted goes with it.
func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", name).Run() == nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("slurmtest: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
