"""Suspend and resume `canhazgpu run` in an interactive bash on a pty.

Usage: jobcontrol.py CANHAZGPU_BINARY. Prints one JSON object: how many
ticks the command printed while suspended (want 0) and after fg.
"""
import json
import os
import pty
import select
import sys
import time

binary = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])

out = b""


def read(seconds, until=None):
    global out
    end = time.time() + seconds
    while time.time() < end:
        if until is not None and until(lines()):
            return True
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return until is not None and until(lines())


def lines():
    return [l.strip("\r") for l in out.decode(errors="replace").split("\n")]


def ticks():
    return sum(1 for l in lines() if l == "tick")


read(0.5)
# The command is one process that never forks: a shell loop would vfork,
# and a Ctrl-Z landing between its vfork and exec leaves the job neither
# running nor reported stopped, under bash alone as much as under run.
os.write(fd, ("PS1='$ '; %s run -- python3 -c 'import time; [(print(\"tick\", flush=True), "
              "time.sleep(0.1)) for _ in range(20)]; print(\"done-ticking\")'\n" % binary).encode())
read(5, lambda ls: sum(1 for l in ls if l == "tick") >= 3)
os.write(fd, b"\x1a")  # Ctrl-Z
stopped = read(5, lambda ls: any("Stopped" in l for l in ls))
time.sleep(0.3)  # let the last tick in flight arrive
read(0.2)
before = ticks()
read(1.0)
while_stopped = ticks() - before
os.write(fd, b"fg\n")
finished = read(10, lambda ls: "done-ticking" in ls)
after_fg = ticks() - before - while_stopped
os.write(fd, b"exit\n")
read(0.5)
# Whatever is left of the session bash led (after a failure) goes too.
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % entry) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if int(fields[3]) == pid and int(entry) != pid:  # field 6: session id
        try:
            os.kill(int(entry), 9)
        except OSError:
            pass
os.kill(pid, 9)
os.waitpid(pid, 0)
print(json.dumps({"stopped": stopped, "ticks_while_stopped": while_stopped,
                  "ticks_after_fg": after_fg, "finished": finished,
                  "transcript": out.decode(errors="replace")}))
