package slurmtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// A cluster on a Net (Options.Net) has one slurmctld on this machine,
// listening on the bridge's address, and a slurmd on each node's host,
// started there under the node's name (slurmd -N). They share the
// cluster's directory: one slurm.conf and one munge socket (a file path,
// so every namespace reaches it), a log and pid file per slurmd (%n) and
// a spool directory per node when SpoolDir has %n.

// netConf adapts the single-node settings to a cluster on c.net.
func (c *Cluster) netConf(conf []string) []string {
	set := map[string]string{
		"SlurmctldHost": "localhost(" + c.net.Gateway + ")",
		"SlurmdLogFile": c.path("log", "slurmd-%n.log"),
		"SlurmdPidFile": c.path("run", "slurmd-%n.pid"),
	}
	for i, line := range conf {
		key, _, _ := strings.Cut(line, "=")
		if v, ok := set[key]; ok {
			conf[i] = key + "=" + v
		}
	}
	return conf
}

// StartSlurmd starts the slurmd of node (on its host, for a cluster on a
// Net), as Start does, e.g. after KillSlurmd. It does not wait for the
// node to register: see WaitNodeOf.
func (c *Cluster) StartSlurmd(node string) error {
	if !slices.Contains(c.Nodes, node) {
		return fmt.Errorf("slurmtest: no node %q", node)
	}
	args := []string{c.bins["slurmd"], "-D", "-s", "-f", c.Conf, "-N", node}
	cmd := exec.Command(args[0], args[1:]...)
	if c.net != nil {
		cmd = c.net.Command(node, args...)
	}
	return c.launchCmd("slurmd", node, cmd)
}

// KillSlurmd kills the slurmd of node with SIGKILL, as a crash would, and
// waits until it is gone. Its job step daemons keep running.
func (c *Cluster) KillSlurmd(node string) error {
	for _, d := range c.daemons {
		if d.name == "slurmd" && d.node == node && d.running() {
			if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				return fmt.Errorf("slurmtest: kill slurmd of %s: %w", node, err)
			}
			<-d.done
			return nil
		}
	}
	return fmt.Errorf("slurmtest: no running slurmd for node %q", node)
}

// SpoolOf is the SlurmdSpoolDir of node (Spool is the first node's).
func (c *Cluster) SpoolOf(node string) string {
	return filepath.Join(c.Dir, strings.ReplaceAll(c.spoolDir, "%n", node))
}

// WaitNodeOf polls node until ok accepts its state and reason.
func (c *Cluster) WaitNodeOf(node string, limit time.Duration, ok func(state, reason string) bool) (string, string, error) {
	deadline := time.Now().Add(limit)
	for {
		st, reason, err := c.NodeStateOf(node)
		if err == nil && ok(st, reason) {
			return st, reason, nil
		}
		if time.Now().After(deadline) {
			return st, reason, fmt.Errorf("slurmtest: node %s not as expected after %s: state %q reason %q %v", node, limit, st, reason, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// OnHost runs argv on one of the Net's hosts with the cluster's
// environment (SLURM_CONF) plus env; without a Net, on this machine.
func (c *Cluster) OnHost(host string, env []string, argv ...string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	if c.net != nil {
		cmd = c.net.Command(host, argv...)
	}
	cmd.Env = append(c.Env(), env...)
	return cmd
}
