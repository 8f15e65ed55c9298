# coding: utf-8
"""canhazgpu hook for OpenPBS / PBS Pro execution hosts.

PBS counts the site resource ngpus but never says which GPUs a job gets;
canhazgpu decides, so that batch jobs and interactive users share the GPUs
of a node through one set of reservations. One hook serves five events:

execjob_begin      reserve this host's share of ngpus for the job
                   (canhazgpu-prolog --pbs); the chosen GPUs go to a
                   per-job env file. Not enough free GPUs, or any other
                   failure: e.reject(msg), so the job goes back to the
                   queue instead of running on taken GPUs. Never
                   e.job.rerun(): see reject_begin.
execjob_launch     read the env file into e.env (commas escaped as \\,).
                   Never rejects: a rejected launch deletes the job.
execjob_epilogue   release the job's GPUs on this host (canhazgpu-epilog
execjob_end        --pbs); end repeats it for the cases where the epilogue
                   was skipped. Releasing twice is fine.
exechost_periodic  run canhazgpu-healthcheck --nhc: on violations offline
                   this host's vnodes with a comment starting "canhazgpu:";
                   when clean, bring back only vnodes carrying that comment.
                   It also releases the GPUs of jobs that ended here
                   without an epilogue or end event.

After begin, end and periodic, the host's vnode gets
resources_available.ngpus = what canhazgpu can give PBS jobs here
(canhazgpu-prolog --pbs --available): PBS does not know about interactive
holds, and a job it places on held GPUs would be rejected, placed again
at once, and held by the server after 20 runs. A hook config that cannot
be used offlines the host's vnodes with a comment naming the bad key.

Install (as root on the PBS server; docs/pbs.md has the details):

    qmgr -c "create hook canhazgpu event='execjob_begin,execjob_launch,execjob_epilogue,execjob_end,exechost_periodic'"
    qmgr -c "set hook canhazgpu user = pbsadmin"
    qmgr -c "set hook canhazgpu alarm = 30"
    qmgr -c "set hook canhazgpu freq = 120"
    qmgr -c "set hook canhazgpu fail_action = offline_vnodes"
    qmgr -c "import hook canhazgpu application/x-python default canhazgpu_hook.py"
    qmgr -c "import hook canhazgpu application/x-config default canhazgpu_hook.json"

The optional JSON config file overrides the keys of DEFAULTS below.
"""

import json
import os
import re
import stat
import subprocess
import time

import pbs

DEFAULTS = {
    # The programs, by absolute path: MoM gives hooks no useful PATH.
    "prolog": "/usr/libexec/canhazgpu/canhazgpu-prolog",
    "epilog": "/usr/libexec/canhazgpu/canhazgpu-epilog",
    "healthcheck": "/usr/bin/canhazgpu-healthcheck",
    # Passed to the programs as --config; "" lets them read
    # /etc/canhazgpu/config.toml (or $CANHAZGPU_CONFIG).
    "config": "",
    # Per-job env files, written at begin and read at launch.
    "env_dir": "/run/canhazgpu/pbs-env",
    # Seconds a program may take; below the hook's alarm (default 30 s).
    "timeout": 20,
    # Jobs without GPUs on this host get CUDA_VISIBLE_DEVICES="", so they
    # cannot use GPUs they did not ask for.
    "hide_gpus_without_request": True,
    # exechost_periodic releases the GPUs of a job that is no longer on
    # this host once its env file is this old (seconds), which leaves
    # time for a starting job to show up in the event's job list.
    "settle_after": 600,
    # Keep the host's vnode resources_available.ngpus equal to the GPUs
    # canhazgpu can give PBS jobs. Off where the site sets it itself (a
    # host split into several vnodes that carry ngpus, for example).
    "set_ngpus": True,
}

# What each key accepts, for the message naming a bad one.
ACCEPTED = {
    "prolog": "an absolute path",
    "epilog": "an absolute path",
    "healthcheck": "an absolute path",
    "config": '"" or an absolute path',
    "env_dir": "an absolute path",
    "timeout": "a number of seconds above 0",
    "hide_gpus_without_request": "true or false",
    "settle_after": "a number of seconds, 0 or more",
    "set_ngpus": "true or false",
}

# Every vnode comment this hook sets starts with MARKER; the hook brings
# back online only vnodes whose comment starts with it.
MARKER = "canhazgpu:"

# What canhazgpu-healthcheck --nhc prints before each problem.
NHC_PREFIX = "ERROR:  canhazgpu:  "

# Exit statuses of canhazgpu-prolog --pbs (internal/pbs).
PROLOG_REASONS = {
    1: "error",
    2: "reservation store unreachable",
    3: "not enough free GPUs",
}


class ConfigError(Exception):
    """The hook's config file cannot be used."""


def accepts(key, value):
    """Whether value is one ACCEPTED[key] describes."""
    if key in ("prolog", "epilog", "healthcheck", "env_dir"):
        return isinstance(value, str) and value.startswith("/")
    if key == "config":
        return isinstance(value, str) and (value == "" or value.startswith("/"))
    if key in ("hide_gpus_without_request", "set_ngpus"):
        return isinstance(value, bool)
    # bool is an int to Python; true is no number of seconds.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "timeout":
        return number and value > 0
    return number and value >= 0  # settle_after


def load_config():
    """The DEFAULTS, overridden by the hook's imported config file. A file
    that is not a JSON object, an unknown key or a value of the wrong kind
    is a ConfigError naming it and what is accepted."""
    cfg = dict(DEFAULTS)
    path = getattr(pbs, "hook_config_filename", None)
    if not path:
        return cfg
    try:
        with open(path) as f:
            given = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError("hook config %s: %s (a JSON object of settings is accepted)" % (path, exc))
    if not isinstance(given, dict):
        raise ConfigError("hook config %s: a JSON object of settings is accepted" % path)
    for key in sorted(given):
        if key not in DEFAULTS:
            raise ConfigError("hook config %s: unknown key %s (accepted: %s)"
                              % (path, json.dumps(key), ", ".join(sorted(DEFAULTS))))
        if not accepts(key, given[key]):
            raise ConfigError("hook config %s: %s = %s: %s is accepted"
                              % (path, key, json.dumps(given[key]), ACCEPTED[key]))
    cfg.update(given)
    return cfg


def is_local(vnode_name, host):
    """A vnode of this host: the host itself or host[N]."""
    return vnode_name == host or re.match(re.escape(host) + r"\[.*\]$", vnode_name) is not None


def local_ngpus(job, host):
    """This host's share of the job's ngpus, from exec_vnode's chunks."""
    total = 0
    exec_vnode = job.exec_vnode
    if exec_vnode is None:
        return 0
    for chunk in exec_vnode.chunks:
        if is_local(chunk.vnode_name, host):
            # chunk_resources is a pbs_resource, not a dict: indexing gives
            # None for a resource the chunk does not name.
            n = chunk.chunk_resources["ngpus"]
            if n is not None:
                total += int(n)
    return total


def env_file(cfg, jobid):
    return os.path.join(cfg["env_dir"], jobid + ".env")


def command(cfg, program, *args):
    argv = [cfg[program], "--pbs"] + list(args)
    if cfg["config"]:
        argv += ["--config", cfg["config"]]
    return argv


def run(cfg, argv):
    """Run a program; returns (exit status, last line of stderr)."""
    rc, msg, _ = run_output(cfg, argv)
    return rc, msg


def run_output(cfg, argv):
    """Run a program; returns (exit status, last line of stderr, stdout).

    A program that cannot be started or does not finish in time counts as
    status 1 with a message saying so."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=cfg["timeout"])
    except subprocess.TimeoutExpired:
        return 1, "%s %s did not finish within %s s" % (MARKER, argv[0], cfg["timeout"]), ""
    except OSError as exc:
        return 1, "%s cannot run %s: %s" % (MARKER, argv[0], exc), ""
    lines = p.stderr.decode("utf-8", "replace").strip().splitlines()
    return p.returncode, lines[-1] if lines else "", p.stdout.decode("utf-8", "replace")


def escape(value):
    """e.env values are comma-separated lists to PBS: a comma inside one
    value must be written as \\,."""
    return value.replace(",", "\\,")


def begin(e, cfg, host):
    job = e.job
    n = local_ngpus(job, host)
    if n == 0:
        remove_quietly(env_file(cfg, job.id))
        e.accept()
    args = ["--job", job.id, "--user", job.euser, "--ngpus", str(n),
            "--env-file", env_file(cfg, job.id)]
    if job.run_count is not None:
        args += ["--run-count", str(int(job.run_count))]
    rc, msg = run(cfg, command(cfg, "prolog", *args))
    if rc == 3:
        # Refused for GPUs held outside PBS: PBS's count is behind (a hold
        # began since the last update). MoM sends a begin hook's vnode
        # changes even when it rejects, so the scheduler stops placing
        # jobs on GPUs canhazgpu cannot give. A grant needs no update: a
        # PBS job's GPUs stay in the count (PBS subtracts them itself), and
        # the periodic and end events catch holds that began elsewhere.
        set_ngpus(e, cfg, host)
    if rc == 0:
        pbs.logmsg(pbs.LOG_DEBUG, msg)
        e.accept()
    reason = PROLOG_REASONS.get(rc, "error")
    msg = msg or "%s canhazgpu-prolog failed (%s, exit status %d)" % (MARKER, reason, rc)
    if not msg.startswith(MARKER):
        msg = "%s %s" % (MARKER, msg)
    pbs.logmsg(pbs.LOG_WARNING, "job %s requeued: %s" % (job.id, msg))
    reject_begin(e, msg)


def reject_begin(e, msg):
    """Refuse the job in execjob_begin: the server requeues it, as it does
    any job its MoM refuses to start.

    Without e.job.rerun(): the rerun request reaches the server while it
    counts the job as running and leaves Exit_status = -18 (a hook asked
    for a rerun) on the job, which no later run clears. OpenPBS 23.06 then
    requeues the job at the end of every later run, and on qdel, until it
    holds it after 20 runs (src/server/node_manager.c, the hook job
    actions; src/server/req_jobobit.c, job_obit)."""
    e.reject(msg)


# The variables canhazgpu-prolog --pbs writes to a job's env file: the GPU
# vendors' (allocator/gpu/vendor.go) and the indices. Nothing else in the
# file reaches a job: it would be another user's job's LD_PRELOAD where
# env_dir is a directory users can write.
EXPORTS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
           "CANHAZGPU_GPU_INDICES")
# Of those, the ones that hide every GPU when empty.
HIDING = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def read_env_file(path):
    """The lines of a job's env file, only when root wrote it: a regular
    file of root's that only root may write (not a link: opened with
    O_NOFOLLOW). Anything else raises ValueError naming what is wrong."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise ValueError("%s is not a file of root's that only root may write (owner uid %d, mode %o)"
                             % (path, st.st_uid, stat.S_IMODE(st.st_mode)))
        return f.read().splitlines()


def launch(e, cfg, host):
    job = e.job
    path = env_file(cfg, job.id)
    try:
        lines = read_env_file(path)
    except (ValueError, OSError) as exc:
        if not isinstance(exc, FileNotFoundError):
            # Someone other than root made it: the job sees no GPU rather
            # than every GPU, or whichever the file named.
            pbs.logmsg(pbs.LOG_WARNING, "%s job %s: env file not used, the job sees no GPU: %s" % (MARKER, job.id, exc))
            for name in HIDING:
                e.env[name] = ""
            e.accept()
        if local_ngpus(job, host) == 0:
            if cfg["hide_gpus_without_request"]:
                e.env["CUDA_VISIBLE_DEVICES"] = ""
        else:
            pbs.logmsg(pbs.LOG_WARNING, "%s job %s has GPUs here but no env file %s: "
                       "its environment is left as it is" % (MARKER, job.id, path))
        e.accept()
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name in EXPORTS:
            e.env[name] = escape(value)
    e.accept()


def release(e, cfg, host):
    job = e.job
    path = env_file(cfg, job.id)
    if local_ngpus(job, host) == 0 and not os.path.exists(path):
        e.accept()
    rc, msg = run(cfg, command(cfg, "epilog", "--job", job.id, "--env-file", path))
    # Rejecting here would not bring the GPUs back: log and go on; the
    # end event and the periodic settling try again.
    pbs.logmsg(pbs.LOG_DEBUG if rc == 0 else pbs.LOG_WARNING, msg or "canhazgpu-epilog exit status %d" % rc)
    if e.type == pbs.EXECJOB_END:
        # Holds that ended while the job ran show up now rather than at
        # the next periodic event.
        set_ngpus(e, cfg, host)
    e.accept()


def periodic(e, cfg, host):
    settle(e, cfg)
    health(e, cfg, host)
    set_ngpus(e, cfg, host)
    e.accept()


def health(e, cfg, host):
    """Run the health check and offline or online this host's vnodes."""
    argv = [cfg["healthcheck"], "--nhc"]
    if cfg["config"]:
        argv += ["--config", cfg["config"]]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=cfg["timeout"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        pbs.logmsg(pbs.LOG_WARNING, "%s health check not run: %s" % (MARKER, exc))
        return
    out = p.stdout.decode("utf-8", "replace").splitlines()
    problems = [line[len(NHC_PREFIX):] for line in out if line.startswith(NHC_PREFIX)]
    if p.returncode == 0:
        set_vnodes(e, host, None)
    elif p.returncode == 1 and problems:
        msg = "%s %s" % (MARKER, problems[0])
        if len(problems) > 1:
            msg += " (+%d more)" % (len(problems) - 1)
        set_vnodes(e, host, msg)
    else:
        # Could not check (store or NVML down): change nothing this round.
        pbs.logmsg(pbs.LOG_WARNING, "%s health check could not check (exit status %d): %s"
                   % (MARKER, p.returncode, "; ".join(problems) or p.stderr.decode("utf-8", "replace").strip()))


def local_vnode(e, host):
    """This host's natural vnode in the event's vnode_list, added when the
    event does not carry it, so that what the hook sets on it reaches the
    server."""
    if host not in e.vnode_list:
        e.vnode_list[host] = pbs.vnode(host)
    return e.vnode_list[host]


def set_ngpus(e, cfg, host):
    """Set the host's vnode resources_available.ngpus to the GPUs canhazgpu
    can give PBS jobs here. When they cannot be counted (store or NVML
    down) the vnode keeps what it has: the prolog still refuses taken GPUs."""
    if not cfg["set_ngpus"]:
        return
    rc, msg, out = run_output(cfg, command(cfg, "prolog", "--available"))
    try:
        n = int(out.strip()) if rc == 0 else None
    except ValueError:
        n = None
    if n is None:
        pbs.logmsg(pbs.LOG_WARNING, "%s resources_available.ngpus left as it is: %s"
                   % (MARKER, msg or "canhazgpu-prolog --available exit status %d" % rc))
        return
    vnode = local_vnode(e, host)
    if vnode.resources_available["ngpus"] != n:
        vnode.resources_available["ngpus"] = n
        pbs.logmsg(pbs.LOG_DEBUG, "%s vnode %s resources_available.ngpus = %d" % (MARKER, host, n))


def current_comment(name, vnode):
    """The vnode's comment as the server has it; the event's copy may not
    carry it."""
    try:
        return pbs.server().vnode(name).comment
    except Exception:
        return vnode.comment


def current_state(name, vnode):
    try:
        return pbs.server().vnode(name).state
    except Exception:
        return vnode.state


def set_vnodes(e, host, msg):
    """msg: offline this host's vnodes with it; None: bring back those
    offlined by this hook. A vnode offlined by anyone else is left alone."""
    for name, vnode in e.vnode_list.items():
        if not is_local(name, host):
            continue
        comment = current_comment(name, vnode) or ""
        ours = comment.startswith(MARKER)
        if msg is None:
            if ours:
                vnode.state = pbs.ND_FREE
                vnode.comment = None
                pbs.logmsg(pbs.LOG_DEBUG, "%s vnode %s clean again: back online" % (MARKER, name))
            continue
        offline = (current_state(name, vnode) or 0) & pbs.ND_OFFLINE
        if offline and not ours:
            continue
        if not offline or comment != msg:
            vnode.state = pbs.ND_OFFLINE
            vnode.comment = msg
            pbs.logmsg(pbs.LOG_WARNING, "vnode %s offline: %s" % (name, msg))


def settle(e, cfg):
    """Release the GPUs of jobs that left this host without an epilogue or
    end event: their env file is old and PBS no longer lists the job."""
    try:
        names = os.listdir(cfg["env_dir"])
    except FileNotFoundError:
        return
    running = set(e.job_list.keys()) if e.job_list is not None else set()
    now = time.time()
    for name in names:
        if not name.endswith(".env") or name.startswith("."):
            continue
        jobid = name[:-len(".env")]
        path = os.path.join(cfg["env_dir"], name)
        try:
            old = now - os.stat(path).st_mtime >= cfg["settle_after"]
        except FileNotFoundError:
            continue
        if jobid in running or not old:
            continue
        rc, msg = run(cfg, command(cfg, "epilog", "--job", jobid, "--env-file", path))
        pbs.logmsg(pbs.LOG_WARNING if rc else pbs.LOG_DEBUG,
                   "%s job %s is gone from this host: %s" % (MARKER, jobid, msg))


def remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


HANDLERS = {
    pbs.EXECJOB_BEGIN: begin,
    pbs.EXECJOB_LAUNCH: launch,
    pbs.EXECJOB_EPILOGUE: release,
    pbs.EXECJOB_END: release,
    pbs.EXECHOST_PERIODIC: periodic,
}


def bad_config(e, host, msg):
    """A hook config that cannot be used takes this host's vnodes offline
    with msg, so that PBS stops sending jobs here, instead of each job
    failing in turn until the server holds it. The first periodic event
    with a good config brings them back (the comment is ours)."""
    pbs.logmsg(pbs.LOG_ERROR, msg)
    if hasattr(e, "vnode_list"):
        local_vnode(e, host)
        set_vnodes(e, host, msg)
    if e.type == pbs.EXECJOB_BEGIN:
        # No reservation was made: the job must not run here.
        reject_begin(e, msg)
    e.accept()


def main():
    e = pbs.event()
    handler = HANDLERS.get(e.type)
    if handler is None:
        e.accept()
    host = pbs.get_local_nodename()
    try:
        cfg = load_config()
    except ConfigError as exc:
        bad_config(e, host, "%s %s" % (MARKER, exc))
    try:
        handler(e, cfg, host)
    except SystemExit:
        # accept() and reject() end the hook by raising SystemExit.
        raise
    except Exception as exc:
        msg = "%s hook error: %s: %s" % (MARKER, type(exc).__name__, exc)
        pbs.logmsg(pbs.LOG_ERROR, msg)
        if e.type == pbs.EXECJOB_BEGIN:
            # The job must not run on GPUs nobody reserved for it.
            reject_begin(e, msg)
        # Anywhere else a reject would do harm (launch: the job would be
        # deleted) or nothing useful.
        e.accept()


# PBS runs a hook with __name__ set to "builtins"; tests import it.
if __name__ in ("builtins", "__builtin__"):
    try:
        main()
    except SystemExit:
        pass
