# coding: utf-8
"""Stand-in for the `pbs` module that PBS gives its hooks, for tests.

It mimics the documented objects the canhazgpu hook uses (PBS Hooks
Guide; openpbs src/modules/python/pbs/v1/_svr_types.py): the event types,
pbs.event() with type, job, env (execjob_launch only), vnode_list (the
job's vnodes in job events, all of the server's in exechost_periodic) and
job_list (exechost_periodic only), accept() and reject() ending the hook
with SystemExit, the job's id, euser, run_count, exec_vnode.chunks and
rerun(), vnode state, comment and resources_available, pbs.vnode(),
pbs.server().vnode(), logmsg and get_local_nodename. A test builds an
event with the helpers below, runs the hook the way PBS does, and reads
what the hook did from the objects.

Complex models what the server and the scheduler do around the hook, as
OpenPBS 23.06 does it (measured on a single-host complex; openpbs
src/server/req_runjob.c, req_jobobit.c, node_manager.c, src/scheduler):
a scheduling cycle starts when a job is submitted or ends and every
scheduler_iteration, never because a vnode changed; it places a job on a
vnode whose resources_available.ngpus, less what running jobs were
assigned, covers it; every run raises run_count first (the first run has
run count 1); a job rejected in execjob_begin goes back to the queue and
the scheduler starts a new cycle at once; once run_count is above 20 the
server puts a system hold on it ("job held, too many failed attempts to
run"), and on a subjob's whole array too. A rejected begin that also
called job.rerun() leaves Exit_status -18 on the job: every later run
ends in a requeue, qdel included. Vnode changes a job event's hook makes
reach the server whether it accepts or rejects, before the scheduler's
next cycle; an exechost_periodic hook's on accept.
"""

import re

# Event types.
EXECJOB_BEGIN = 64
EXECJOB_LAUNCH = 2048
EXECJOB_EPILOGUE = 256
EXECJOB_END = 512
EXECHOST_PERIODIC = 4096
EXECHOST_STARTUP = 8192
QUEUEJOB = 1

# Vnode states (bits).
ND_FREE = 0
ND_OFFLINE = 1
ND_DOWN = 2

# Log levels.
LOG_DEBUG = 0x0004
LOG_WARNING = 0x0010
LOG_ERROR = 0x0040
EVENT_DEBUG = 0x0080

# Set by the test: the path of the hook's imported config file, or None.
hook_config_filename = None

_local_nodename = "localhost"
_event = None
_server = None
log = []  # (level, message) in order


def reset(local_nodename, server_vnodes=None, config_file=None):
    """Start a fresh scenario: this host's name, the server's vnodes
    (name -> (state, comment) or (state, comment, ngpus)) and the hook
    config file."""
    global _local_nodename, _event, _server, hook_config_filename, log
    _local_nodename = local_nodename
    _event = None
    _server = Server(server_vnodes or {})
    hook_config_filename = config_file
    log = []


def logmsg(level, msg):
    log.append((level, msg))


def get_local_nodename():
    return _local_nodename


def event():
    return _event


def server():
    return _server


def vnode(name):
    """A vnode object a hook adds to vnode_list to change it."""
    return Vnode(name)


def set_event(e):
    global _event
    _event = e


def set_vnode_ngpus(name, n):
    """What `qmgr -c "set node NAME resources_available.ngpus = N"` does."""
    _server.vnodes[name].resources_available._values["ngpus"] = n


class pbs_resource(object):
    """A resource list. Unlike a dict it has no get(): indexing gives None
    for a resource that is not set. on_set, when given, hears every
    assignment (a vnode remembers what a hook set)."""

    def __init__(self, values, on_set=None):
        self._values = dict(values)
        self._on_set = on_set

    def __getitem__(self, name):
        return self._values.get(name)

    def __setitem__(self, name, value):
        if name == "ngpus" and not isinstance(value, int):
            raise TypeError("resources_available['ngpus'] is a long: got %r" % (value,))
        self._values[name] = value
        if self._on_set is not None:
            self._on_set(name, value)

    def keys(self):
        return list(self._values.keys())


class Chunk(object):
    """One chunk of exec_vnode: "(node1:ncpus=4:ngpus=2)"."""

    def __init__(self, text):
        parts = text.strip("()").split(":")
        self.vnode_name = parts[0]
        values = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            values[k] = int(v) if re.match(r"^\d+$", v) else v
        self.chunk_resources = pbs_resource(values)


class exec_vnode(object):
    """The job's exec_vnode: "(node1:ngpus=2)+(node2:ngpus=1)"."""

    def __init__(self, text):
        self._text = text
        self.chunks = [Chunk(c) for c in text.split("+")]

    def __str__(self):
        return self._text


class Job(object):
    """A job as a hook sees it. run_count defaults to 1: the server raises
    it before every run, so the first execjob_begin sees 1."""

    def __init__(self, id, euser, exec_vnode_text, run_count=1, array=None):
        self.id = id
        self.euser = euser
        self.egroup = euser
        self.Job_Owner = euser + "@submithost"
        self.run_count = run_count
        self.exec_vnode = exec_vnode(exec_vnode_text) if exec_vnode_text else None
        total = sum(c.chunk_resources["ngpus"] or 0 for c in self.exec_vnode.chunks) if self.exec_vnode else 0
        self.Resource_List = pbs_resource({"ngpus": total})
        self.rerun_called = False
        self.delete_called = False
        # Server-side state, read by tests through Complex.
        self.job_state = "Q"
        self.Hold_Types = "n"
        self.comment = None
        self.comments = []  # every comment the server set, in order
        # -18 (JOB_EXEC_HOOK_RERUN) once a rejected execjob_begin called
        # rerun(): the server keeps it, and it decides every later run's end.
        self.Exit_status = None
        self.array = array  # the JobArray of a subjob

    def rerun(self):
        self.rerun_called = True

    def delete(self):
        self.delete_called = True


class Vnode(object):
    """A vnode; attributes set by a hook are remembered so that MoM can
    send them to the server."""

    def __init__(self, name, state=ND_FREE, comment=None, ngpus=None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "comment", comment)
        object.__setattr__(self, "changed", {})
        object.__setattr__(self, "resources_available", pbs_resource(
            {"ngpus": ngpus} if ngpus is not None else {}, on_set=self._resource_set))

    def _resource_set(self, name, value):
        self.changed["resources_available." + name] = value

    def __setattr__(self, key, value):
        if key not in ("state", "comment"):
            raise AttributeError("vnode has no settable attribute %r" % key)
        object.__setattr__(self, key, value)
        self.changed[key] = value

    def copy(self):
        v = Vnode(self.name, self.state, self.comment, self.resources_available["ngpus"])
        return v

    def apply(self, changes):
        """The server takes a hook's changes."""
        for key, value in changes.items():
            if key.startswith("resources_available."):
                self.resources_available._values[key[len("resources_available."):]] = value
            else:
                object.__setattr__(self, key, value)


class Server(object):

    def __init__(self, vnodes):
        self.vnodes = {}
        for n, spec in vnodes.items():
            self.vnodes[n] = Vnode(n, *spec)

    def vnode(self, name):
        return self.vnodes[name]

    def take_changes(self, vnode_list):
        for name, v in vnode_list.items():
            if name in self.vnodes and v.changed:
                self.vnodes[name].apply(v.changed)


class Event(object):
    """An event; only the attributes PBS gives this event type exist."""

    def __init__(self, type, job=None, job_list=None):
        self.type = type
        self.hook_name = "canhazgpu"
        self.accepted = None  # True, or False after reject
        self.reject_msg = None
        if job is not None:
            self.job = job
        if type == EXECJOB_LAUNCH:
            self.env = {"PATH": "/bin:/usr/bin", "HOME": "/home/" + job.euser}
        # Copies: what the hook sets reaches the server when the hook ends.
        if type in (EXECHOST_PERIODIC, EXECHOST_STARTUP):
            self.vnode_list = {n: v.copy() for n, v in _server.vnodes.items()}
            self.job_list = {j: Job(j, "someone", None) for j in (job_list or [])}
        elif job is not None:
            names = [c.vnode_name for c in job.exec_vnode.chunks] if job.exec_vnode else []
            self.vnode_list = {n: _server.vnodes[n].copy() for n in names if n in _server.vnodes}

    def accept(self, msg=None):
        self.accepted = True
        if hasattr(self, "vnode_list"):
            _server.take_changes(self.vnode_list)
        raise SystemExit(0)

    def reject(self, msg=None):
        self.accepted = False
        self.reject_msg = msg
        # MoM sends a job event's vnode changes even when its hook rejects.
        if hasattr(self, "vnode_list") and self.type not in (EXECHOST_PERIODIC, EXECHOST_STARTUP):
            _server.take_changes(self.vnode_list)
        raise SystemExit(1)


class JobArray(object):
    """A job array (qsub -J 1-N); subjobs share its hold and comment."""

    def __init__(self, id, euser, exec_vnode_text, count):
        self.id = id
        self.Hold_Types = "n"
        self.comment = None
        base, _, server_name = id.partition(".")
        base = base.rstrip("[]")
        self.subjobs = [Job("%s[%d].%s" % (base, i, server_name), euser, exec_vnode_text, run_count=0, array=self)
                        for i in range(1, count + 1)]


class Complex(object):
    """The PBS server and scheduler around one execution host's hook.

    run_begin(job) runs the hook's execjob_begin for a job and returns the
    event; run_end(job) its execjob_end. What starts a scheduling cycle is
    explicit, as in PBS: submit() and finish() (a job queued or ended) and
    iterate() (scheduler_iteration passed). A hook event that changes a
    vnode starts none: a job waiting for GPUs runs at the next of those.
    job_run_wait is the scheduler's attribute of that name: with
    "execjob_hook" the scheduler waits for the execjob_begin outcome and
    writes the hook's message into the job's comment, until its next cycle
    writes its own; otherwise the comment only says the MoM rejected the
    job."""

    MAX_RUNS = 20  # PBS_MAX_HOPCOUNT + PBS_MAX_HOPCOUNT
    MAX_CYCLES = 200  # a model that would spin longer is broken
    HOOK_RERUN = -18  # JOB_EXEC_HOOK_RERUN

    def __init__(self, run_begin, run_end, job_run_wait="runjob_hook"):
        self.run_begin = run_begin
        self.run_end = run_end
        self.job_run_wait = job_run_wait
        self.queued = []
        self.running = []
        self.begins = 0  # execjob_begin events run
        self.cycles = 0  # scheduling cycles run

    def submit(self, job):
        """qsub: queue a job or, for a JobArray, all its subjobs, and start
        a scheduling cycle."""
        jobs = job.subjobs if isinstance(job, JobArray) else [job]
        for j in jobs:
            j.run_count = 0
            j.job_state = "Q"
            self.queued.append(j)
        self._schedule()
        return job

    def iterate(self):
        """scheduler_iteration (600 s by default) has passed: a cycle."""
        self._schedule()

    @staticmethod
    def _comment(job, text):
        job.comment = text
        job.comments.append(text)

    def _held(self, job):
        return "s" in job.Hold_Types or (job.array is not None and "s" in job.array.Hold_Types)

    def _hold_past_max_runs(self, job):
        """The server's check after a failed run (check_failed_attempts)."""
        if job.run_count <= self.MAX_RUNS:
            return
        job.Hold_Types = "s"
        job.job_state = "H"
        self._comment(job, "job held, too many failed attempts to run")
        if job.array is not None:
            job.array.Hold_Types = "s"
            job.array.comment = "Job Array Held, too many failed attempts to run subjob %s" % job.id

    def _offline(self, name):
        return _server.vnodes[name].state & (ND_OFFLINE | ND_DOWN)

    def _free(self, name):
        v = _server.vnodes[name]
        if self._offline(name):
            return 0
        avail = v.resources_available["ngpus"] or 0
        used = 0
        for j in self.running:
            for c in j.exec_vnode.chunks:
                if c.vnode_name == name:
                    used += c.chunk_resources["ngpus"] or 0
        return avail - used

    def _why_not(self, job):
        """None when the job fits now, else the scheduler's comment."""
        need = {}
        for c in job.exec_vnode.chunks:
            need[c.vnode_name] = need.get(c.vnode_name, 0) + (c.chunk_resources["ngpus"] or 0)
        for name in need:
            if name not in _server.vnodes or self._offline(name):
                return "Not Running: Not enough free nodes available"
        for name, n in need.items():
            free = self._free(name)
            if free < n:
                total = sum(v.resources_available["ngpus"] or 0 for v in _server.vnodes.values())
                # More than the whole complex has: the scheduler calls it
                # "Can Never Run", and the job still waits in the queue.
                why = "Can Never Run" if n > total else "Not Running"
                return ("%s: Insufficient amount of resource: ngpus (R: %d A: %d T: %d)"
                        % (why, n, max(free, 0), total))
        return None

    def cycle(self):
        """One scheduling cycle; returns how many jobs it tried to run."""
        self.cycles += 1
        tried = 0
        for job in list(self.queued):
            if self._held(job):
                continue
            why = self._why_not(job)
            if why is not None:
                self._comment(job, why)
                continue
            tried += 1
            job.run_count += 1
            job.rerun_called = False
            e = self.run_begin(job)
            self.begins += 1
            if e.accepted:
                self.queued.remove(job)
                self.running.append(job)
                job.job_state = "R"
                self._comment(job, "Job run at now on (%s)" % job.exec_vnode)
                continue
            # Requeued, rerun() or not (delete() is not modelled). The
            # rerun request finds the job running on the server and sets
            # Exit_status, which stays.
            if job.rerun_called:
                job.Exit_status = self.HOOK_RERUN
            if self.job_run_wait == "execjob_hook" and e.reject_msg:
                self._comment(job, "Not Running: PBS Error: %s" % e.reject_msg)
            else:
                self._comment(job, "Not Running: PBS Error: Execution server rejected request")
            self._hold_past_max_runs(job)
        return tried

    def _schedule(self):
        """Cycles until one tries nothing: a rejected run makes the
        scheduler start a new cycle at once."""
        for _ in range(self.MAX_CYCLES):
            if self.cycle() == 0:
                return
        raise AssertionError("the scheduler never settled")

    def finish(self, job):
        """The job ends (its script exits, or qdel): execjob_end on the
        host, its ngpus free again, and a scheduling cycle. A job carrying
        Exit_status -18 is requeued instead of finished."""
        self.running.remove(job)
        self.run_end(job)
        if job.Exit_status == self.HOOK_RERUN:
            job.job_state = "Q"
            self.queued.append(job)
            self._hold_past_max_runs(job)
        else:
            job.job_state = "F"
            job.Exit_status = 0
        self._schedule()
