# coding: utf-8
"""Stand-in for the `pbs` module that PBS gives its hooks, for tests.

It mimics the documented objects the canhazgpu hook uses (PBS Hooks
Guide; openpbs src/modules/python/pbs/v1/_svr_types.py): the event types,
pbs.event() with type, job, env (execjob_launch only), vnode_list and
job_list (exechost_periodic only), accept() and reject() ending the hook
with SystemExit, the job's id, euser, run_count, exec_vnode.chunks and
rerun(), vnode state and comment, pbs.server().vnode(), logmsg and
get_local_nodename. A test builds an event with the helpers below, runs
the hook the way PBS does, and reads what the hook did from the objects.
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
    (name -> (state, comment)) and the hook config file."""
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


def set_event(e):
    global _event
    _event = e


class pbs_resource(object):
    """A resource list. Unlike a dict it has no get(): indexing gives None
    for a resource that is not set."""

    def __init__(self, values):
        self._values = dict(values)

    def __getitem__(self, name):
        return self._values.get(name)

    def __setitem__(self, name, value):
        self._values[name] = value

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

    def __init__(self, id, euser, exec_vnode_text, run_count=0):
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

    def rerun(self):
        self.rerun_called = True

    def delete(self):
        self.delete_called = True


class Vnode(object):
    """A vnode; attributes set by a hook are remembered so that accept()
    can send them to the server, as MoM does."""

    def __init__(self, name, state=ND_FREE, comment=None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "comment", comment)
        object.__setattr__(self, "changed", {})

    def __setattr__(self, key, value):
        if key not in ("state", "comment"):
            raise AttributeError("vnode has no settable attribute %r" % key)
        object.__setattr__(self, key, value)
        self.changed[key] = value


class Server(object):

    def __init__(self, vnodes):
        self.vnodes = {n: Vnode(n, s, c) for n, (s, c) in vnodes.items()}

    def vnode(self, name):
        return self.vnodes[name]


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
        if type in (EXECHOST_PERIODIC, EXECHOST_STARTUP):
            # Copies: what the hook sets reaches the server only on accept.
            self.vnode_list = {n: Vnode(n, v.state, v.comment) for n, v in _server.vnodes.items()}
            self.job_list = {j: Job(j, "someone", None) for j in (job_list or [])}

    def accept(self, msg=None):
        self.accepted = True
        if hasattr(self, "vnode_list"):
            for name, v in self.vnode_list.items():
                for key, value in v.changed.items():
                    setattr(_server.vnodes[name], key, value)
        raise SystemExit(0)

    def reject(self, msg=None):
        self.accepted = False
        self.reject_msg = msg
        raise SystemExit(1)
