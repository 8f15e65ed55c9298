# coding: utf-8
"""Tests of canhazgpu_hook.py against the stand-in pbs module (pbs.py here),
calling the real canhazgpu-prolog, -epilog and -healthcheck on a real
redis-server with fake GPUs.

Run by `go test ./internal/pbs`, which builds the programs (canhazgpu
itself too, for interactive reservations) and starts a private
redis-server, then runs

    python3 -m unittest discover -s contrib/pbs/tests

with CANHAZGPU_TEST_BIN_DIR (the directory of the built programs) and
CANHAZGPU_TEST_REDIS_URL set.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import pbs

HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "canhazgpu_hook.py")
with open(HOOK) as _f:
    HOOK_CODE = compile(_f.read(), HOOK, "exec")

BIN = os.environ.get("CANHAZGPU_TEST_BIN_DIR", "")
REDIS = os.environ.get("CANHAZGPU_TEST_REDIS_URL", "")


def setUpModule():
    if not BIN or not REDIS:
        raise RuntimeError("CANHAZGPU_TEST_BIN_DIR (the built canhazgpu-prolog, canhazgpu-epilog and "
                           "canhazgpu-healthcheck) and CANHAZGPU_TEST_REDIS_URL (a private redis-server) "
                           "must be set: `go test ./internal/pbs` sets both")


def uuid(i):
    return "GPU-0b5e%04d-0000-4000-8000-000000000000" % i


_seq = [0]


class Node(object):
    """One execution host: its fake GPUs, a canhazgpu config naming its own
    store node, the hook's config file, and the PBS server's vnodes."""

    def __init__(self, test, gpus, host="hostA", vnodes=None, redis=None, **hook_cfg):
        self.dir = tempfile.mkdtemp(prefix="canhazgpu-pbs-hook-")
        test.addCleanup(shutil.rmtree, self.dir)
        _seq[0] += 1
        self.fake = os.path.join(self.dir, "gpus.json")
        self.env_dir = os.path.join(self.dir, "env")
        self.set_gpus(gpus)
        state = os.path.join(self.dir, "state")
        config = os.path.join(self.dir, "config.toml")
        self.config = config
        with open(config, "w") as f:
            f.write('node = "pbshook%d-%d"\n' % (os.getpid(), _seq[0]))
            f.write('[redis]\nurl = "%s"\ndial_timeout = "200ms"\nop_timeout = "500ms"\n' % (redis or REDIS))
            f.write('[gpu]\nprovider = "fake"\nfake_file = "%s"\n' % self.fake)
            f.write('[slurm]\nstate_dir = "%s"\n[pbs]\nstate_dir = "%s"\n' % (state, state))
        cfg = {
            "prolog": os.path.join(BIN, "canhazgpu-prolog"),
            "epilog": os.path.join(BIN, "canhazgpu-epilog"),
            "healthcheck": os.path.join(BIN, "canhazgpu-healthcheck"),
            "config": config,
            "env_dir": self.env_dir,
        }
        cfg.update(hook_cfg)
        self.hook_config = os.path.join(self.dir, "canhazgpu_hook.json")
        with open(self.hook_config, "w") as f:
            json.dump(cfg, f)
        pbs.reset(host, vnodes, self.hook_config)

    def set_gpus(self, n, used=None):
        """n fake GPUs; used: {index: user} runs a 4 GB process of user."""
        gpus = []
        for i in range(n):
            g = {"index": i, "uuid": uuid(i)}
            if used and i in used:
                g["processes"] = [{"pid": 4000 + i, "name": "python3", "user": used[i], "used_memory_mb": 4096}]
            gpus.append(g)
        tmp = self.fake + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"gpus": gpus}, f)
        os.replace(tmp, self.fake)

    def run(self, event):
        """Run the hook for one event as PBS does: the script's code with
        __name__ set to "builtins"."""
        pbs.set_event(event)
        exec(HOOK_CODE, {"__name__": "builtins"})
        if event.accepted is None:
            raise AssertionError("the hook ended without accept() or reject()")
        return event

    def env_file(self, jobid):
        return os.path.join(self.env_dir, jobid + ".env")

    def canhazgpu(self, *args):
        """Run the canhazgpu command on this host (as root, as the tests
        run): interactive reservations the batch jobs must respect."""
        env = dict(os.environ, CANHAZGPU_CONFIG=self.config)
        p = subprocess.run([os.path.join(BIN, "canhazgpu")] + list(args), env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise AssertionError("canhazgpu %s: exit status %d: %s"
                                 % (" ".join(args), p.returncode, p.stdout.decode()))

    def complex(self, **kw):
        """The stand-in PBS server and scheduler around this host's hook."""
        return pbs.Complex(lambda job: begin(self, job),
                           lambda job: self.run(pbs.Event(pbs.EXECJOB_END, job)), **kw)


def begin(node, job):
    return node.run(pbs.Event(pbs.EXECJOB_BEGIN, job))


def launch(node, job):
    return node.run(pbs.Event(pbs.EXECJOB_LAUNCH, job))


def log_text():
    return "\n".join(m for _, m in pbs.log)


class JobEvents(unittest.TestCase):

    def test_begin_reserves_and_launch_sets_escaped_env(self):
        n = Node(self, gpus=4)
        job = pbs.Job("101.server", "nobody", "(hostA:ncpus=2:ngpus=2)+(hostB:ncpus=2:ngpus=1)", run_count=1)
        e = begin(n, job)
        self.assertTrue(e.accepted, e.reject_msg)
        self.assertFalse(job.rerun_called)
        with open(n.env_file("101.server")) as f:
            self.assertEqual(f.read(), "CUDA_VISIBLE_DEVICES=%s,%s\nCANHAZGPU_GPU_INDICES=0,1\n" % (uuid(0), uuid(1)))

        e = launch(n, job)
        self.assertTrue(e.accepted)
        self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], uuid(0) + "\\," + uuid(1))
        self.assertEqual(e.env["CANHAZGPU_GPU_INDICES"], "0\\,1")
        self.assertEqual(e.env["PATH"], "/bin:/usr/bin", "the rest of the environment is left alone")

    def test_launch_sets_only_canhazgpus_variables_from_roots_file(self):
        if os.geteuid() != 0:
            self.fail("needs root: the env file must be root's, and the test gives one to another user")
        n = Node(self, gpus=2)
        job = pbs.Job("104.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        path = n.env_file("104.server")
        with open(path, "a") as f:
            f.write("LD_PRELOAD=/tmp/evil.so\nPATH=/tmp\n")
        e = launch(n, job)
        self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], uuid(0))
        self.assertNotIn("LD_PRELOAD", e.env)
        self.assertEqual(e.env["PATH"], "/bin:/usr/bin")

        # A file another user owns, or may write, or a link, is not used.
        for spoil in (lambda: os.chown(path, 65534, -1), lambda: os.chmod(path, 0o666)):
            self.assertTrue(begin(n, job).accepted)
            spoil()
            pbs.log.clear()
            e = launch(n, job)
            self.assertTrue(e.accepted)
            self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], "", "the job sees no GPU, not every GPU")
            self.assertEqual(e.env["ROCR_VISIBLE_DEVICES"], "")
            self.assertIn("env file not used, the job sees no GPU: %s is not a file of root's that only root may write"
                          % path, log_text())
        self.assertTrue(begin(n, job).accepted)
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
        e = launch(n, job)
        self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], "")
        self.assertIn("env file not used", log_text())

    def test_this_hosts_vnodes_add_up(self):
        n = Node(self, gpus=4)
        job = pbs.Job("102.server", "nobody",
                      "(hostA[0]:ncpus=1:ngpus=1)+(hostA[1]:ncpus=4:ngpus=2)+(hostB:ngpus=4)+(hostAB:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        e = launch(n, job)
        self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], "\\,".join(uuid(i) for i in range(3)))

    def test_job_without_gpus_here_sees_none(self):
        n = Node(self, gpus=2)
        job = pbs.Job("103.server", "nobody", "(hostA:ncpus=1)+(hostB:ngpus=2)")
        self.assertTrue(begin(n, job).accepted)
        self.assertFalse(os.path.exists(n.env_file("103.server")))
        self.assertEqual(launch(n, job).env["CUDA_VISIBLE_DEVICES"], "")

        n = Node(self, gpus=2, hide_gpus_without_request=False)
        self.assertNotIn("CUDA_VISIBLE_DEVICES", launch(n, job).env)

    def test_shortage_rejects_and_release_makes_room(self):
        n = Node(self, gpus=4)
        first = pbs.Job("201.server", "nobody", "(hostA:ngpus=3)")
        second = pbs.Job("202.server", "nobody", "(hostA:ngpus=2)")
        self.assertTrue(begin(n, first).accepted)

        e = begin(n, second)
        self.assertFalse(e.accepted, "a shortage rejects the job: the server requeues it")
        self.assertFalse(second.rerun_called, "without rerun(), which would stick to the job")
        self.assertEqual(e.reject_msg, "canhazgpu: pbs job 202.server of nobody: "
                                       "Not enough GPUs available. Requested: 2, Available: 1")
        self.assertFalse(os.path.exists(n.env_file("202.server")))

        for kind in (pbs.EXECJOB_EPILOGUE, pbs.EXECJOB_END):
            self.assertTrue(n.run(pbs.Event(kind, first)).accepted)
        self.assertIn("pbs job 201.server: released GPUs", log_text())
        self.assertIn("pbs job 201.server held no GPUs on this host", log_text(), "end after epilogue is fine")
        self.assertFalse(os.path.exists(n.env_file("201.server")))

        e = begin(n, second)
        self.assertTrue(e.accepted, e.reject_msg)

    def test_retried_begin_keeps_the_jobs_gpus(self):
        n = Node(self, gpus=2)
        job = pbs.Job("301.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        first = launch(n, job).env["CUDA_VISIBLE_DEVICES"]
        self.assertTrue(begin(n, job).accepted)
        self.assertEqual(launch(n, job).env["CUDA_VISIBLE_DEVICES"], first)
        other = pbs.Job("302.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, other).accepted, "the retry took no second GPU")

    def test_begin_rejects_when_the_program_fails(self):
        cases = [
            ({"prolog": "/nonexistent/canhazgpu-prolog"}, "canhazgpu: cannot run /nonexistent/canhazgpu-prolog"),
            ({"config": "/nonexistent/config.toml"}, "canhazgpu-prolog: config: file named by --config"),
        ]
        for hook_cfg, want in cases:
            with self.subTest(hook_cfg=hook_cfg):
                n = Node(self, gpus=1, **hook_cfg)
                job = pbs.Job("401.server", "nobody", "(hostA:ngpus=1)")
                e = begin(n, job)
                self.assertFalse(e.accepted)
                self.assertFalse(job.rerun_called)
                self.assertIn(want, e.reject_msg)
                self.assertTrue(e.reject_msg.startswith("canhazgpu:"), e.reject_msg)

    def test_bad_hook_config_offlines_the_host_instead_of_failing_every_job(self):
        cases = [
            ({"settle_afer": 600}, 'unknown key "settle_afer" (accepted: config, env_dir, epilog, healthcheck, '
                                   'hide_gpus_without_request, prolog, set_ngpus, settle_after, timeout)'),
            ({"timeout": "20"}, 'timeout = "20": a number of seconds above 0 is accepted'),
            ({"set_ngpus": 1}, "set_ngpus = 1: true or false is accepted"),
            ({"env_dir": "pbs-env"}, 'env_dir = "pbs-env": an absolute path is accepted'),
        ]
        vnodes = {"hostA": (pbs.ND_FREE, None, 2), "hostA[1]": (pbs.ND_OFFLINE, "bad fan")}
        for hook_cfg, want in cases:
            with self.subTest(hook_cfg=hook_cfg):
                n = Node(self, gpus=2, vnodes=vnodes, **hook_cfg)
                c = n.complex()
                job = c.submit(pbs.Job("501.server", "nobody", "(hostA:ngpus=1)"))
                other = c.submit(pbs.Job("502.server", "nobody", "(hostA:ngpus=1)"))
                self.assertEqual(c.begins, 1, "the first job meets the bad config, the host goes offline")
                self.assertEqual((job.job_state, job.Hold_Types, other.run_count), ("Q", "n", 0))
                self.assertEqual(other.comment, "Not Running: Not enough free nodes available")
                state, comment = pbs.server().vnode("hostA").state, pbs.server().vnode("hostA").comment
                self.assertEqual(state, pbs.ND_OFFLINE)
                self.assertTrue(comment.startswith("canhazgpu: hook config %s: " % n.hook_config), comment)
                self.assertIn(want, comment)
                self.assertEqual(pbs.server().vnode("hostA[1]").comment, "bad fan", "an admin's offline is left alone")
                self.assertTrue(launch(n, job).accepted, "launch never rejects")

                # Fixed: the next periodic event brings the host back.
                with open(n.hook_config) as f:
                    fixed = {k: v for k, v in json.load(f).items() if k not in hook_cfg}
                with open(n.hook_config, "w") as f:
                    json.dump(fixed, f)
                n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
                self.assertEqual(pbs.server().vnode("hostA").state, pbs.ND_FREE)
                self.assertEqual((job.job_state, other.job_state), ("Q", "Q"), "a vnode change starts no cycle")
                c.iterate()
                self.assertEqual((job.job_state, other.job_state), ("R", "R"))
                c.finish(job)
                self.assertEqual((job.job_state, job.run_count), ("F", 2), "one refused run, then done")

    def test_bad_hook_config_offlines_in_periodic_too(self):
        n = Node(self, gpus=1, vnodes={"hostA": (pbs.ND_FREE, None, 1)}, settle_afer=1)
        e = n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        self.assertTrue(e.accepted)
        self.assertEqual(pbs.server().vnode("hostA").state, pbs.ND_OFFLINE)
        self.assertIn('unknown key "settle_afer"', pbs.server().vnode("hostA").comment)
        self.assertIn('unknown key "settle_afer"', log_text())

    def test_launch_never_rejects(self):
        n = Node(self, gpus=1)
        job = pbs.Job("502.server", "nobody", "(hostA:ngpus=1)")
        os.makedirs(n.env_file("502.server"))  # unreadable as a file
        e = launch(n, job)
        self.assertTrue(e.accepted)
        self.assertEqual(e.env["CUDA_VISIBLE_DEVICES"], "", "an env file that cannot be used hides every GPU")
        os.rmdir(n.env_file("502.server"))
        e = launch(n, job)  # begin never ran here
        self.assertTrue(e.accepted)
        self.assertIn("job 502.server has GPUs here but no env file", log_text())

    def test_other_events_are_accepted(self):
        n = Node(self, gpus=1)
        self.assertTrue(n.run(pbs.Event(pbs.QUEUEJOB)).accepted)


def ngpus(name="hostA"):
    return pbs.server().vnode(name).resources_available["ngpus"]


class Conflicts(unittest.TestCase):
    """What the scheduler does with a job whose GPUs are taken: the
    stand-in Complex re-runs a rejected job at once and holds it after 20
    runs, starts cycles only on submit, job end and scheduler_iteration,
    and requeues every later run of a job whose rejected begin asked for a
    rerun, as OpenPBS 23.06 does."""

    def test_taken_gpus_neither_spin_nor_hold_the_job(self):
        n = Node(self, gpus=4, vnodes={"hostA": (pbs.ND_FREE, None, 4)})
        n.canhazgpu("reserve", "--gpus", "3", "--duration", "1h")
        c = n.complex()
        job = c.submit(pbs.Job("901.server", "nobody", "(hostA:ncpus=1:ngpus=2)"))
        self.assertEqual(c.begins, 1, "one begin met the conflict; the scheduler did not place the job again")
        self.assertEqual((job.job_state, job.Hold_Types, job.run_count), ("Q", "n", 1))
        self.assertEqual(ngpus(), 1, "PBS now counts only the GPU canhazgpu can give")
        self.assertEqual(job.comment, "Can Never Run: Insufficient amount of resource: ngpus (R: 2 A: 1 T: 1)")

        # The interactive hold ends; the next periodic event counts the
        # GPUs again, and the job runs at the next scheduling cycle.
        n.canhazgpu("release")
        n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        self.assertEqual(ngpus(), 4)
        self.assertEqual(job.job_state, "Q", "a vnode change starts no scheduling cycle")
        c.iterate()
        self.assertEqual((job.job_state, job.run_count), ("R", 2))
        c.finish(job)
        self.assertEqual((job.job_state, job.Exit_status), ("F", 0), "the refused run left nothing behind")
        self.assertEqual(ngpus(), 4)

    def test_job_array_is_not_held(self):
        n = Node(self, gpus=4, vnodes={"hostA": (pbs.ND_FREE, None, 4)})
        n.canhazgpu("reserve", "--gpus", "3", "--duration", "1h")
        c = n.complex()
        array = c.submit(pbs.JobArray("902[].server", "nobody", "(hostA:ngpus=1)", 3))
        first, second, third = array.subjobs
        self.assertEqual([j.job_state for j in array.subjobs], ["R", "Q", "Q"])
        self.assertEqual(c.begins, 2, "the second subjob met the conflict once, the third was not placed")
        self.assertEqual(array.Hold_Types, "n")
        n.canhazgpu("release")
        c.finish(first)  # its end event counts the released GPUs, its end starts a cycle
        self.assertEqual([j.job_state for j in array.subjobs], ["F", "R", "R"])
        c.finish(second)
        c.finish(third)
        self.assertEqual([(j.job_state, j.run_count) for j in array.subjobs], [("F", 1), ("F", 2), ("F", 1)])
        self.assertEqual(array.Hold_Types, "n")

    def test_comment_keeps_the_message_until_the_next_cycle(self):
        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_FREE, None, 2)})
        n.canhazgpu("reserve", "--gpus", "1", "--duration", "1h")
        msg = "canhazgpu: pbs job 903.server of nobody: Not enough GPUs available. Requested: 2, Available: 1"
        for wait, refused in (("execjob_hook", "Not Running: PBS Error: " + msg),
                              ("runjob_hook", "Not Running: PBS Error: Execution server rejected request")):
            with self.subTest(job_run_wait=wait):
                pbs.set_vnode_ngpus("hostA", 2)  # the hold began after the last update
                c = n.complex(job_run_wait=wait)
                job = c.submit(pbs.Job("903.server", "nobody", "(hostA:ngpus=2)"))
                self.assertEqual(c.begins, 1)
                # The cycle the refused run starts at once writes its own.
                self.assertEqual(job.comments, [refused, "Can Never Run: Insufficient amount of resource: "
                                                         "ngpus (R: 2 A: 1 T: 1)"])
                self.assertEqual(job.Hold_Types, "n")

    def test_the_stand_in_holds_a_job_rejected_21_times(self):
        # The real behaviour the hook must not trigger: a hook that always
        # rejects sees the job 21 times, then the server holds it.
        n = Node(self, gpus=1, vnodes={"hostA": (pbs.ND_FREE, None, 1)})
        seen = {}

        def reject(job):
            seen.setdefault(job.id, []).append(job.run_count)
            e = pbs.Event(pbs.EXECJOB_BEGIN, job)
            try:
                e.reject("no")
            except SystemExit:
                pass
            return e
        c = pbs.Complex(reject, None)
        array = c.submit(pbs.JobArray("904[].server", "nobody", "(hostA:ngpus=1)", 2))
        self.assertEqual(seen["904[1].server"], list(range(1, 22)), "run count 1 on the first run")
        self.assertEqual(array.subjobs[0].comment, "job held, too many failed attempts to run")
        self.assertEqual(array.Hold_Types, "s")
        self.assertEqual(array.comment, "Job Array Held, too many failed attempts to run subjob 904[1].server")
        self.assertLessEqual(len(seen["904[2].server"]), 21, "the held array runs no other subjob")

    def test_the_stand_in_requeues_every_run_after_a_rejected_rerun(self):
        # The other real behaviour the hook must not trigger: one refused
        # begin that called rerun() makes every later run end in a requeue.
        n = Node(self, gpus=1, vnodes={"hostA": (pbs.ND_FREE, None, 1)})

        def begin_once_refused(job):
            e = pbs.Event(pbs.EXECJOB_BEGIN, job)
            try:
                if job.run_count == 1:
                    job.rerun()
                    e.reject("no")
                e.accept()
            except SystemExit:
                pass
            return e
        c = pbs.Complex(begin_once_refused, lambda job: None)
        job = c.submit(pbs.Job("905.server", "nobody", "(hostA:ngpus=1)"))
        self.assertEqual((job.job_state, job.run_count), ("R", 2))
        for runs in range(3, 22):
            c.finish(job)
            self.assertEqual((job.job_state, job.run_count), ("R", runs), "requeued and run again")
        c.finish(job)
        self.assertEqual((job.job_state, job.Hold_Types), ("H", "s"))


class Ngpus(unittest.TestCase):
    """The host's vnode resources_available.ngpus follows what canhazgpu
    can give PBS jobs."""

    def test_periodic_follows_holds_and_unreserved_use(self):
        n = Node(self, gpus=4, vnodes={"hostA": (pbs.ND_FREE, None, 4), "hostB": (pbs.ND_FREE, None, 8)})
        periodic = lambda: n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        n.canhazgpu("reserve", "--gpus", "2", "--duration", "1h")
        periodic()
        self.assertEqual(ngpus(), 2, "lowered while an interactive hold lasts")
        self.assertEqual(ngpus("hostB"), 8, "another host is left alone")

        job = pbs.Job("1001.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        periodic()
        self.assertEqual(ngpus(), 2, "a PBS job's GPU stays counted: PBS assigned it")

        n.canhazgpu("release")
        periodic()
        self.assertEqual(ngpus(), 4, "raised when the hold ends")

        n.set_gpus(4, used={3: "bob"})
        periodic()
        self.assertEqual(ngpus(), 3, "a GPU used without a reservation is not counted")
        self.assertEqual(pbs.server().vnode("hostA").state, pbs.ND_OFFLINE, "and the host is offlined for it")

    def test_end_raises_what_ended_meanwhile(self):
        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_FREE, None, 2)})
        c = n.complex()
        job = c.submit(pbs.Job("1002.server", "nobody", "(hostA:ngpus=1)"))
        n.canhazgpu("reserve", "--gpus", "1", "--duration", "1h")
        n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        self.assertEqual(ngpus(), 1)
        n.canhazgpu("release")
        c.finish(job)
        self.assertEqual(ngpus(), 2)

    def test_left_alone_when_it_cannot_be_counted_or_is_turned_off(self):
        dead = "unix://" + os.path.join(tempfile.gettempdir(), "canhazgpu-nobody-listens-%d.sock" % os.getpid())
        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_FREE, None, 7)}, redis=dead)
        n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        self.assertEqual(ngpus(), 7)
        self.assertIn("canhazgpu: resources_available.ngpus left as it is: ", log_text())

        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_FREE, None, 7)}, set_ngpus=False)
        n.run(pbs.Event(pbs.EXECHOST_PERIODIC))
        self.assertEqual(ngpus(), 7)


class Periodic(unittest.TestCase):

    VNODES = {
        "hostA": (pbs.ND_FREE, None),
        "hostA[1]": (pbs.ND_FREE, None),
        "hostA[2]": (pbs.ND_OFFLINE, "new disk, back Monday"),
        "hostB": (pbs.ND_FREE, None),
    }

    def periodic(self, n, running=()):
        e = n.run(pbs.Event(pbs.EXECHOST_PERIODIC, job_list=running))
        self.assertTrue(e.accepted)
        return {name: (v.state, v.comment) for name, v in pbs.server().vnodes.items()}

    def test_offlines_and_onlines_only_its_own(self):
        n = Node(self, gpus=2, vnodes=self.VNODES)
        n.set_gpus(2, used={1: "bob"})
        got = self.periodic(n)
        msg = "canhazgpu: GPU 1 used by bob (pid 4001) without reservation"
        self.assertEqual(got, {
            "hostA": (pbs.ND_OFFLINE, msg),
            "hostA[1]": (pbs.ND_OFFLINE, msg),
            "hostA[2]": (pbs.ND_OFFLINE, "new disk, back Monday"),
            "hostB": (pbs.ND_FREE, None),
        })
        self.assertEqual(self.periodic(n), got, "a second round changes nothing")

        n.set_gpus(2)
        self.assertEqual(self.periodic(n), {
            "hostA": (pbs.ND_FREE, None),
            "hostA[1]": (pbs.ND_FREE, None),
            "hostA[2]": (pbs.ND_OFFLINE, "new disk, back Monday"),
            "hostB": (pbs.ND_FREE, None),
        })

    def test_reserved_use_is_clean(self):
        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_OFFLINE, "canhazgpu: GPU 0 used by nobody (pid 1)")})
        job = pbs.Job("601.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        n.set_gpus(2, used={0: "nobody"})
        self.assertEqual(self.periodic(n, running=["601.server"]), {"hostA": (pbs.ND_FREE, None)})

    def test_could_not_check_changes_nothing(self):
        dead = "unix://" + os.path.join(tempfile.gettempdir(), "canhazgpu-nobody-listens-%d.sock" % os.getpid())
        vnodes = {"hostA": (pbs.ND_OFFLINE, "canhazgpu: GPU 0 used by bob (pid 7)"), "hostA[1]": (pbs.ND_FREE, None)}
        n = Node(self, gpus=1, vnodes=vnodes, redis=dead)
        self.assertEqual(self.periodic(n), vnodes)
        self.assertIn("health check could not check (exit status 2)", log_text())

    def test_releases_jobs_gone_from_this_host(self):
        n = Node(self, gpus=2, vnodes={"hostA": (pbs.ND_FREE, None)})
        gone = pbs.Job("701.server", "nobody", "(hostA:ngpus=1)")
        running = pbs.Job("702.server", "nobody", "(hostA:ngpus=1)")
        for job in (gone, running):
            self.assertTrue(begin(n, job).accepted)
            os.utime(n.env_file(job.id), (1, 1))  # long ago
        self.periodic(n, running=["702.server"])
        self.assertFalse(os.path.exists(n.env_file("701.server")))
        self.assertTrue(os.path.exists(n.env_file("702.server")))
        self.assertIn("job 701.server is gone from this host", log_text())

        # The freed GPU is free again; the running job's is not.
        taker = pbs.Job("704.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, taker).accepted)
        self.assertFalse(begin(n, pbs.Job("705.server", "nobody", "(hostA:ngpus=1)")).accepted)

    def test_recent_env_files_wait(self):
        n = Node(self, gpus=1, vnodes={"hostA": (pbs.ND_FREE, None)})
        job = pbs.Job("801.server", "nobody", "(hostA:ngpus=1)")
        self.assertTrue(begin(n, job).accepted)
        self.periodic(n)  # not in the job list yet: it may just be starting
        self.assertTrue(os.path.exists(n.env_file("801.server")))


if __name__ == "__main__":
    unittest.main()
