// Package slurmtest starts a private single-node Slurm cluster for tests:
// munged, slurmctld and slurmd from the Debian packages (munge, slurmctld,
// slurmd, slurm-client), each with its own key, ports, state, spool and log
// directories under one temporary directory, so it never meets another
// cluster on the same machine.
//
// The node has GPUs without hardware: gres.conf lists device files that are
// symbolic links to /dev/null, a character device, which is all Slurm 22.05
// checks. Slurm then allocates them and sets SLURM_JOB_GPUS and
// CUDA_VISIBLE_DEVICES as on a real GPU node. (Name=gpu Count=N without
// File= would leave the node INVAL; regular files would give no GPU
// variables.)
//
// The daemons run in the foreground as children of the test process and are
// stopped by pid; job step daemons, which outlive slurmd by design, are
// cancelled through Slurm first and, failing that, killed by pid after
// checking that they belong to this cluster.
//
// Typical use (as root):
//
//	if err := slurmtest.Available(); err != nil {
//		t.Skip(err)
//	}
//	c, err := slurmtest.Start(slurmtest.Options{Prolog: "/abs/prolog"})
//	require.NoError(t, err)
//	t.Cleanup(func() { c.Stop() })
//	id, err := c.Submit("someuser", "--gres=gpu:2", "--wrap", "nvidia-smi")
package slurmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"canhazgpu/internal/porttest"
)

// Options shape the cluster. The zero value gives 8 GPUs, 8 CPUs,
// PrologFlags=Alloc and no Prolog, Epilog or TaskProlog.
type Options struct {
	Node string // node name; default "chgnode"
	GPUs int    // GPUs in gres.conf; default 8
	// CPUs declared for the node; default 8. More than the machine has is
	// fine (SlurmdParameters=config_overrides), so several jobs can run at
	// once on a small test machine.
	CPUs int

	// Absolute paths of the programs Slurm runs; "" leaves the setting out.
	Prolog             string
	Epilog             string
	TaskProlog         string
	HealthCheckProgram string
	// HealthCheckInterval in seconds; 0 with a HealthCheckProgram: 60.
	HealthCheckInterval int

	PrologFlags         string // default "Alloc"; "-" leaves the setting out
	PrologEpilogTimeout int    // seconds; default 30
	// Extra slurm.conf lines; one replaces a setting of the same key.
	Extra []string

	// SpoolDir is SlurmdSpoolDir below the cluster's directory, as
	// slurm.conf gives it (slurmd expands %n to the node's name), e.g.
	// "var/lib/slurm/slurmd" where Debian's package puts it; default "spool".
	SpoolDir string

	Base         string        // parent of the cluster's directory; default os.TempDir()
	StartTimeout time.Duration // default 60 s

	// Net, when set, makes a cluster of several hosts: slurmctld listens on
	// the bridge's address and one slurmd runs on each host named in Nodes,
	// with GPUs and CPUs as above each (see multinode.go). Node is then
	// the first of Nodes.
	Net   *Net
	Nodes []string

	// CgroupConf are the lines of cgroup.conf (default: none, and no
	// cgroup plugin in slurm.conf).
	CgroupConf []string
	// CharDevices makes the GPU device files character devices of their
	// own (NVIDIA's major 195, minor i) instead of links to /dev/null, for
	// ConstrainDevices=yes: denying a job another GPU would otherwise deny
	// it /dev/null.
	CharDevices bool
	// TypedGPUs gives each GPU a GRES type of its own (gres.conf
	// `Name=gpu Type=dev<i> File=…nvidia<i>`, slurm.conf
	// `Gres=gpu:dev0:1,gpu:dev1:1,…`), so a job can ask for one exact
	// GPU, as placeholder holds do.
	TypedGPUs bool

	// Root is a Slurm root (see root.go, DebianRoot): the cluster runs the
	// Slurm of that root file system instead of this machine's.
	Root string
}

// Cluster is one running cluster.
type Cluster struct {
	Dir  string // everything lives here
	Conf string // slurm.conf; SLURM_CONF for every command
	Node string
	// GresDevices are the GPU device files in gres.conf order: Slurm's GPU
	// index i is GresDevices[i] (the [slurm] gres_devices setting).
	GresDevices []string
	Spool       string // SlurmdSpoolDir
	LogDir      string // slurmctld.log, slurmd.log, munged.log
	// OutDir is world-writable, for job output and files jobs read.
	OutDir string
	// Nodes are the names of every slurmd, Node first.
	Nodes []string

	net      *Net   // nil: one slurmd on loopback
	spoolDir string // Options.SpoolDir
	root     string // Options.Root
	// inside are the commands' paths in the Slurm root; nil without one.
	inside map[string]string

	bins    map[string]string
	daemons []*daemon // in start order
}

type daemon struct {
	name string
	node string // the slurmd's node
	cmd  *exec.Cmd
	done chan struct{}
}

// nvidiaMajor is the major number of NVIDIA's GPU device files.
const nvidiaMajor = 195

// commands the harness runs, looked up once.
var commands = []string{"munged", "slurmctld", "slurmd", "slurmstepd", "scontrol", "sinfo", "squeue",
	"sbatch", "srun", "scancel", "runuser", "useradd", "env"}

// Available says why a cluster cannot be started here, or nil: slurmd must
// run as root to start jobs as their users, and the packages must be there.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("slurmtest: needs root (slurmd starts jobs as their users)")
	}
	_, err := lookBins()
	return err
}

func lookBins() (map[string]string, error) {
	bins := map[string]string{}
	var missing []string
	for _, c := range commands {
		p, err := exec.LookPath(c)
		if err != nil {
			missing = append(missing, c)
			continue
		}
		bins[c] = p
	}
	// The packaged slurmstepd is a link to the real executable, which is
	// what /proc/<pid>/exe names.
	if p, ok := bins["slurmstepd"]; ok {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			bins["slurmstepd"] = real
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("slurmtest: %s not found: install the Debian packages munge slurmctld slurmd slurm-client (scripts/install-deps.sh)",
			strings.Join(missing, ", "))
	}
	return bins, nil
}

// Start writes the configuration, starts munged, slurmctld and slurmd, and
// waits until the node is idle.
func Start(opts Options) (*Cluster, error) {
	bins, err := lookBins()
	if err != nil {
		return nil, err
	}
	if opts.Net != nil {
		if len(opts.Nodes) == 0 {
			return nil, errors.New("slurmtest: a cluster on a Net needs Nodes")
		}
		for _, n := range opts.Nodes {
			if _, ok := opts.Net.Addrs[n]; !ok {
				return nil, fmt.Errorf("slurmtest: node %q is not a host of the network", n)
			}
		}
		opts.Node = opts.Nodes[0]
	}
	if opts.Node == "" {
		opts.Node = "chgnode"
	}
	if len(opts.Nodes) == 0 {
		opts.Nodes = []string{opts.Node}
	}
	if opts.GPUs == 0 {
		opts.GPUs = 8
	}
	if opts.CPUs == 0 {
		opts.CPUs = 8
	}
	if opts.PrologFlags == "" {
		opts.PrologFlags = "Alloc"
	}
	if opts.PrologEpilogTimeout == 0 {
		opts.PrologEpilogTimeout = 30
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = "spool"
	}
	dir, err := os.MkdirTemp(opts.Base, "canhazgpu-slurm-")
	if err != nil {
		return nil, fmt.Errorf("slurmtest: %w", err)
	}
	var inside map[string]string
	if opts.Root != "" {
		if bins, inside, err = rootBins(opts.Root, dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "etc", "slurm.conf"), Node: opts.Node,
		Spool: filepath.Join(dir, strings.ReplaceAll(opts.SpoolDir, "%n", opts.Node)), LogDir: filepath.Join(dir, "log"), OutDir: filepath.Join(dir, "out"), bins: bins,
		Nodes: slices.Clone(opts.Nodes), net: opts.Net, spoolDir: opts.SpoolDir, root: opts.Root, inside: inside}
	if err := c.layout(opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.startAll(opts.StartTimeout); err != nil {
		logs := c.logTails()
		c.Stop()
		return nil, fmt.Errorf("%w\n%s", err, logs)
	}
	return c, nil
}

// layout creates the directories, the munge key and the configuration.
// Everything the job user reads (slurm.conf, the munge socket) is reachable
// by all; the key and the controller state are root's alone.
func (c *Cluster) layout(opts Options) error {
	dirs := map[string]os.FileMode{"": 0o755, "etc": 0o755, "munge": 0o755, "munge/key": 0o700, "munge/run": 0o755,
		"state": 0o700, "log": 0o755, "run": 0o755, "dev": 0o755, "out": 0o1777, "tmp": 0o1777}
	for d, mode := range dirs {
		p := filepath.Join(c.Dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("slurmtest: %w", err)
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("slurmtest: %w", err)
		}
	}
	for _, n := range c.Nodes {
		if err := os.MkdirAll(filepath.Join(c.Dir, strings.ReplaceAll(opts.SpoolDir, "%n", n)), 0o755); err != nil {
			return fmt.Errorf("slurmtest: %w", err)
		}
	}
	key := make([]byte, 1024)
	_, _ = rand.Read(key)
	if err := os.WriteFile(c.path("munge/key/munge.key"), key, 0o600); err != nil {
		return fmt.Errorf("slurmtest: munge key: %w", err)
	}
	for i := range opts.GPUs {
		dev := c.path("dev", "nvidia"+strconv.Itoa(i))
		if opts.CharDevices {
			if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, nvidiaMajor<<8|i); err != nil {
				return fmt.Errorf("slurmtest: gpu device: %w", err)
			}
		} else if err := os.Symlink("/dev/null", dev); err != nil {
			return fmt.Errorf("slurmtest: gpu device: %w", err)
		}
		c.GresDevices = append(c.GresDevices, dev)
	}
	ctldPort, slurmdPort, err := freePorts()
	if err != nil {
		return err
	}
	gres := fmt.Sprintf("AutoDetect=off\nNodeName=%s Name=gpu File=%s[0-%d]\n", strings.Join(c.Nodes, ","), c.path("dev", "nvidia"), opts.GPUs-1)
	nodeGres := fmt.Sprintf("gpu:%d", opts.GPUs)
	if opts.TypedGPUs {
		gres = "AutoDetect=off\n"
		var types []string
		for i, dev := range c.GresDevices {
			gres += fmt.Sprintf("NodeName=%s Name=gpu Type=dev%d File=%s\n", strings.Join(c.Nodes, ","), i, dev)
			types = append(types, fmt.Sprintf("gpu:dev%d:1", i))
		}
		nodeGres = strings.Join(types, ",")
	}
	if err := os.WriteFile(c.path("etc", "gres.conf"), []byte(gres), 0o644); err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	// Keep /etc/slurm out: no SPANK plugins, cgroup settings only as asked.
	if err := os.WriteFile(c.path("etc", "plugstack.conf"), nil, 0o644); err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	if err := os.WriteFile(c.path("etc", "cgroup.conf"), []byte(strings.Join(opts.CgroupConf, "\n")), 0o644); err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	conf := []string{
		"ClusterName=canhazgpu",
		"SlurmctldHost=localhost(127.0.0.1)",
		"SlurmctldPort=" + strconv.Itoa(ctldPort),
		"SlurmdPort=" + strconv.Itoa(slurmdPort),
		"SlurmUser=root", "SlurmdUser=root",
		"AuthType=auth/munge", "CredType=cred/munge",
		// A requeued job may only start again once the credentials of its
		// last attempt expire (default 120 s; starting it earlier fails it
		// with "Job credential revoked"). Ten seconds keeps requeue tests short.
		"AuthInfo=socket=" + c.mungeSocket() + ",cred_expire=10",
		"StateSaveLocation=" + c.path("state"),
		"SlurmdSpoolDir=" + filepath.Join(c.Dir, opts.SpoolDir),
		"SlurmctldPidFile=" + c.path("run", "slurmctld.pid"),
		"SlurmdPidFile=" + c.path("run", "slurmd.pid"),
		"SlurmctldLogFile=" + c.path("log", "slurmctld.log"),
		"SlurmdLogFile=" + c.path("log", "slurmd.log"),
		"SlurmctldDebug=info", "SlurmdDebug=debug",
		"PlugStackConfig=" + c.path("etc", "plugstack.conf"),
		"TmpFS=" + c.path("tmp"),
		"MailProg=/bin/true",
		// No cgroups: test machines and containers rarely allow them.
		"ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
		"JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
		"JobCompType=jobcomp/filetxt", "JobCompLoc=" + c.path("log", "jobcomp.log"),
		"JobContainerType=job_container/none", "SwitchType=switch/none", "MpiDefault=none",
		"SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
		// Schedule at once, and often: the defaults wait seconds to minutes.
		"SchedulerType=sched/backfill", "SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1",
		"SlurmdParameters=config_overrides",
		"ReturnToService=2", "SlurmctldTimeout=30", "SlurmdTimeout=60", "MessageTimeout=10",
		"InactiveLimit=0", "KillWait=5", "MinJobAge=300", "Waittime=0",
		"GresTypes=gpu",
		"PrologEpilogTimeout=" + strconv.Itoa(opts.PrologEpilogTimeout),
	}
	if opts.PrologFlags != "-" {
		conf = append(conf, "PrologFlags="+opts.PrologFlags)
	}
	for k, v := range map[string]string{"Prolog": opts.Prolog, "Epilog": opts.Epilog, "TaskProlog": opts.TaskProlog} {
		if v != "" {
			conf = append(conf, k+"="+v)
		}
	}
	if opts.HealthCheckProgram != "" {
		interval := opts.HealthCheckInterval
		if interval == 0 {
			interval = 60
		}
		conf = append(conf, "HealthCheckProgram="+opts.HealthCheckProgram, "HealthCheckInterval="+strconv.Itoa(interval),
			"HealthCheckNodeState=ANY")
	}
	if c.net != nil {
		conf = c.netConf(conf)
	}
	// An Extra line replaces the harness's own setting of the same key.
	for _, line := range opts.Extra {
		key, _, _ := strings.Cut(line, "=")
		conf = slices.DeleteFunc(conf, func(l string) bool { return strings.HasPrefix(l, key+"=") })
	}
	conf = append(conf, opts.Extra...)
	for _, n := range c.Nodes {
		addr, host := "127.0.0.1", "localhost"
		if c.net != nil {
			addr, host = c.net.Addrs[n], n
		}
		conf = append(conf, fmt.Sprintf("NodeName=%s NodeAddr=%s NodeHostname=%s CPUs=%d RealMemory=1000 Gres=%s State=UNKNOWN",
			n, addr, host, opts.CPUs, nodeGres))
	}
	conf = append(conf,
		fmt.Sprintf("PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO", strings.Join(c.Nodes, ",")))
	return writeLines(c.Conf, conf)
}

func writeLines(path string, lines []string) error {
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	return nil
}

func (c *Cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

func (c *Cluster) mungeSocket() string { return c.path("munge", "run", "munge.socket.2") }

// freePorts finds two free loopback ports for slurmctld and slurmd.
func freePorts() (int, int, error) {
	for {
		ctld, err := porttest.Free(0)
		if err != nil {
			return 0, 0, err
		}
		slurmd, err := porttest.Free(0)
		if err != nil || slurmd != ctld {
			return ctld, slurmd, err
		}
	}
}

func (c *Cluster) startAll(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	err := c.launch("munged", "--foreground", "--socket="+c.mungeSocket(), "--key-file="+c.path("munge/key/munge.key"),
		"--log-file="+c.path("log", "munged.log"), "--pid-file="+c.path("run", "munged.pid"),
		"--seed-file="+c.path("munge/key/munged.seed"))
	if err != nil {
		return err
	}
	// slurmctld needs munge to answer before it can do anything.
	if err := c.waitFor(deadline, "munged", func() bool { _, err := os.Stat(c.mungeSocket()); return err == nil }); err != nil {
		return err
	}
	if err := c.launch("slurmctld", "-D", "-f", c.Conf); err != nil {
		return err
	}
	if err := c.waitFor(deadline, "slurmctld", func() bool {
		out, err := c.Run("scontrol", "ping")
		return err == nil && strings.Contains(out, "is UP")
	}); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.StartSlurmd(n); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitFor(deadline, "node "+n, func() bool {
			st, _, err := c.NodeStateOf(n)
			return err == nil && Ready(st)
		}); err != nil {
			return err
		}
	}
	return nil
}

// launch starts a daemon in the foreground in its own process group, with
// the log directory as working directory: slurmd's job step daemons
// inherit it, which tells them apart from another cluster's.
func (c *Cluster) launch(name string, args ...string) error {
	return c.launchCmd(name, "", exec.Command(c.bins[name], args...))
}

// launchCmd starts cmd as launch does; node names a slurmd's node.
func (c *Cluster) launchCmd(name, node string, cmd *exec.Cmd) error {
	cmd.Dir = c.LogDir
	cmd.Env = c.Env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logName := name
	if node != "" {
		logName += "-" + node
	}
	stderr, err := os.OpenFile(c.path("log", logName+".stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("slurmtest: start %s: %w", name, err)
	}
	d := &daemon{name: name, node: node, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(d.done) }()
	c.daemons = append(c.daemons, d)
	return nil
}

func (c *Cluster) waitFor(deadline time.Time, what string, ok func() bool) error {
	for {
		for _, d := range c.daemons {
			select {
			case <-d.done:
				return fmt.Errorf("slurmtest: %s exited while waiting for %s", d.name, what)
			default:
			}
		}
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slurmtest: %s not ready in time", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Env is the environment for Slurm commands against this cluster.
func (c *Cluster) Env() []string {
	return append(os.Environ(), "SLURM_CONF="+c.Conf)
}

// cmdTimeout bounds every Slurm command: none should take long, and a hung
// one must not hang the test run.
const cmdTimeout = 30 * time.Second

// Run runs a Slurm command (scontrol, sinfo, …) as root against this
// cluster and returns its output; a failure includes the output.
func (c *Cluster) Run(name string, args ...string) (string, error) {
	return c.run(nil, name, args...)
}

// RunAs runs a Slurm command as user.
func (c *Cluster) RunAs(user, name string, args ...string) (string, error) {
	if c.inside != nil {
		// runuser runs in the Slurm root: so do env and the command.
		return c.run([]string{c.bins["runuser"], "-u", user, "--", c.inside["env"], "SLURM_CONF=" + c.Conf}, name, args...)
	}
	return c.run([]string{c.bins["runuser"], "-u", user, "--", c.bins["env"], "SLURM_CONF=" + c.Conf}, name, args...)
}

func (c *Cluster) run(prefix []string, name string, args ...string) (string, error) {
	bin := c.bins[name]
	if prefix != nil && c.inside != nil {
		bin = c.inside[name]
	}
	if bin == "" {
		return "", fmt.Errorf("slurmtest: unknown command %q", name)
	}
	argv := append(append(prefix, bin), args...)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = c.Env()
	cmd.Dir = c.OutDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("slurmtest: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Submit runs sbatch as user with the given arguments, the job's output
// going to OutDir/job-<id>.out unless the arguments say otherwise, and
// returns the job id.
func (c *Cluster) Submit(user string, args ...string) (string, error) {
	full := append([]string{"--parsable", "--chdir=" + c.OutDir, "--output=" + filepath.Join(c.OutDir, "job-%j.out")}, args...)
	out, err := c.RunAs(user, "sbatch", full...)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	if _, err := strconv.Atoi(id); err != nil {
		return "", fmt.Errorf("slurmtest: sbatch said %q", out)
	}
	return id, nil
}

// Output is the job's output file (for jobs submitted with the default
// --output).
func (c *Cluster) Output(id string) string {
	b, _ := os.ReadFile(filepath.Join(c.OutDir, "job-"+id+".out"))
	return string(b)
}

var field = regexp.MustCompile(`(\w+)=(\S*)`)

// Job is `scontrol show job` of one job as fields (JobState, Reason,
// Restarts, …).
func (c *Cluster) Job(id string) (map[string]string, error) {
	out, err := c.Run("scontrol", "-o", "show", "job", id)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, kv := range field.FindAllStringSubmatch(out, -1) {
		if _, seen := m[kv[1]]; !seen {
			m[kv[1]] = kv[2]
		}
	}
	return m, nil
}

// WaitJob polls the job until ok accepts it, and returns its last fields.
func (c *Cluster) WaitJob(id string, limit time.Duration, ok func(job map[string]string) bool) (map[string]string, error) {
	deadline := time.Now().Add(limit)
	for {
		job, err := c.Job(id)
		if err == nil && ok(job) {
			return job, nil
		}
		if time.Now().After(deadline) {
			return job, fmt.Errorf("slurmtest: job %s not as expected after %s: %v (last: %v)", id, limit, err, job)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// JobState is a WaitJob condition: the job is in one of the states.
func JobState(states ...string) func(map[string]string) bool {
	return func(job map[string]string) bool {
		for _, s := range states {
			if job["JobState"] == s {
				return true
			}
		}
		return false
	}
}

// ScriptBegun is a WaitJob condition for a job submitted with the default
// --output whose script prints a line first: that line exists only once
// the Prolog and TaskProlog have finished, whereas JobState RUNNING can
// come before the Prolog has run.
func (c *Cluster) ScriptBegun(id string) func(map[string]string) bool {
	return func(job map[string]string) bool {
		return job["JobState"] == "RUNNING" && strings.Contains(c.Output(id), "\n")
	}
}

// NodeState is the node's state as sinfo prints it (%T: idle, mixed,
// allocated, drained, idle* …) and its reason ("none" when there is none).
//
// It asks for every node and picks this one: slurmctld (22.05) answers a
// query for one node (sinfo -n, scontrol show node NAME) with the CPU
// allocation it worked out at the last query for all nodes, so a node
// whose job ended since then stays "mixed" until someone asks for all.
func (c *Cluster) NodeState() (state, reason string, err error) {
	return c.NodeStateOf(c.Node)
}

// NodeStateOf is NodeState of one of the cluster's nodes.
func (c *Cluster) NodeStateOf(node string) (state, reason string, err error) {
	out, err := c.Run("sinfo", "-h", "-N", "-o", "%N|%T|%E")
	if err != nil {
		return "", "", err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if name, rest, ok := strings.Cut(line, "|"); ok && name == node {
			state, reason, _ = strings.Cut(rest, "|")
			return state, reason, nil
		}
	}
	return "", "", fmt.Errorf("slurmtest: sinfo does not list node %s: %q", node, out)
}

// Ready reports whether a node in this state takes jobs: idle, mixed or
// allocated, and responding (no '*').
func Ready(state string) bool {
	switch state {
	case "idle", "mixed", "allocated":
		return true
	}
	return false
}

// WaitNode polls the node until ok accepts its state and reason.
func (c *Cluster) WaitNode(limit time.Duration, ok func(state, reason string) bool) (string, string, error) {
	deadline := time.Now().Add(limit)
	for {
		st, reason, err := c.NodeState()
		if err == nil && ok(st, reason) {
			return st, reason, nil
		}
		if time.Now().After(deadline) {
			return st, reason, fmt.Errorf("slurmtest: node %s not as expected after %s: state %q reason %q %v", c.Node, limit, st, reason, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Resume returns a drained node to service and waits until it takes jobs
// again (after RESUME it shows "idle*" until it registers anew).
func (c *Cluster) Resume() error {
	if _, err := c.Run("scontrol", "update", "NodeName="+c.Node, "State=RESUME"); err != nil {
		return err
	}
	_, _, err := c.WaitNode(30*time.Second, func(st, _ string) bool { return st == "idle" })
	return err
}

// Reconfigure makes the daemons read slurm.conf again, after it was edited
// (see AppendConf).
func (c *Cluster) Reconfigure() error {
	_, err := c.Run("scontrol", "reconfigure")
	return err
}

// AppendConf adds lines to slurm.conf; Reconfigure applies them.
func (c *Cluster) AppendConf(lines ...string) error {
	f, err := os.OpenFile(c.Conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("slurmtest: %w", err)
	}
	defer f.Close()
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	return err
}

// Stop cancels every job, waits for their step daemons, then stops slurmd,
// slurmctld and munged by pid. Step daemons still there (a job Slurm could
// not cancel) are killed with their processes. The directory is kept for
// inspection; Remove deletes it. Calling Stop twice is fine.
func (c *Cluster) Stop() error {
	var errs []error
	if c.alive("slurmctld") && c.alive("slurmd") {
		if out, err := c.Run("squeue", "-h", "-o", "%i"); err == nil && strings.TrimSpace(out) != "" {
			_, _ = c.Run("scancel", strings.Fields(out)...)
			deadline := time.Now().Add(20 * time.Second) // KillWait=5 plus the Epilog
			for time.Now().Before(deadline) {
				left, err := c.Run("squeue", "-h", "-o", "%i")
				if err != nil || (strings.TrimSpace(left) == "" && len(c.stepDaemons()) == 0) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	for i := len(c.daemons) - 1; i >= 0; i-- {
		if err := c.daemons[i].stop(15 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pid := range c.stepDaemons() {
		errs = append(errs, fmt.Errorf("slurmtest: killing leftover slurmstepd %d", pid))
		killGroupOf(pid)
	}
	for deadline := time.Now().Add(10 * time.Second); len(c.stepDaemons()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// Remove stops the cluster and deletes its directory.
func (c *Cluster) Remove() error {
	err := c.Stop()
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// alive: some daemon of that name runs (a slurmd killed and started
// again leaves its first entry behind).
func (c *Cluster) alive(name string) bool {
	for _, d := range c.daemons {
		if d.name == name && d.running() {
			return true
		}
	}
	return false
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) stop(grace time.Duration) error {
	select {
	case <-d.done:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(grace):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("slurmtest: %s (pid %d) ignored SIGTERM for %s and was killed", d.name, d.cmd.Process.Pid, grace)
}

// stepDaemons are the slurmstepd processes of this cluster: the executable
// is slurmstepd and the working directory our log directory (inherited
// from our slurmd; their environment is overwritten for the process title,
// so it cannot tell).
func (c *Cluster) stepDaemons() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err1 := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		cwd, err2 := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		// A step daemon in a Slurm root shows its working directory as
		// the root's bind of /tmp.
		inLogDir := cwd == c.LogDir || c.root != "" && cwd == filepath.Join(c.root, c.LogDir)
		if err1 == nil && err2 == nil && exe == c.bins["slurmstepd"] && inLogDir && !zombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat reads a process's state letter and parent pid.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // state, ppid, …
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// zombie: an exited process not yet reaped still has a /proc entry.
func zombie(pid int) bool {
	st, _, ok := procStat(pid)
	return !ok || st == 'Z' || st == 'X'
}

// killGroupOf kills a step daemon and every process below it: the job's
// processes, which it started.
func killGroupOf(pid int) {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(p); ok {
			children[ppid] = append(children[ppid], p)
		}
	}
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[0]
		todo = append(todo[1:], children[p]...)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
}

// logTails returns the end of every log, for a failed start.
func (c *Cluster) logTails() string {
	var b strings.Builder
	files, _ := filepath.Glob(c.path("log", "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "----- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// EnsureUser creates a local account for jobs, once: Slurm runs jobs only
// as users the node knows. It returns the uid.
func EnsureUser(name string) (int, error) {
	if u, err := user.Lookup(name); err == nil {
		return strconv.Atoi(u.Uid)
	}
	useradd, err := exec.LookPath("useradd")
	if err != nil {
		return 0, fmt.Errorf("slurmtest: useradd not found: %w", err)
	}
	out, err := exec.Command(useradd, "--no-create-home", "--shell", "/bin/sh", name).CombinedOutput()
	// Another test binary may have created it meanwhile.
	if u, lerr := user.Lookup(name); lerr == nil {
		return strconv.Atoi(u.Uid)
	}
	return 0, fmt.Errorf("slurmtest: useradd %s: %v: %s", name, err, out)
}
