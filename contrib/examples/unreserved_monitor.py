#!/usr/bin/env python3
"""Monitor unreserved GPU use through `canhazgpu status --json`.

Logs one warning per GPU used without a reservation (or by someone other
than its owner), once or every --interval seconds. As a check, it exits 1
when it found any, 0 when none, 2 when the status could not be read; it
can also be imported for check_unreserved_usage().
"""

import argparse
import json
import logging
import subprocess
import sys
import time

log = logging.getLogger("unreserved_monitor")


def check_unreserved_usage(canhazgpu="canhazgpu"):
    """Return one dict per GPU of this node used without a reservation."""
    out = subprocess.run([canhazgpu, "status", "--json"], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    if doc.get("version") != 1:
        raise RuntimeError("unknown canhazgpu JSON version %r" % doc.get("version"))
    found = []
    for g in doc["gpus"]:
        if g["status"] == "unreserved":
            users, owner = g["users"], None
        elif g["foreign_users"]:
            users, owner = g["foreign_users"], g["reservation"]["user"]
        else:
            continue
        found.append({
            "node": doc["node"],
            "gpu": g["index"],
            "users": users,
            "reserved_by": owner,
            "memory_mb": g["memory_used_mb"],
            "processes": [p for p in g["processes"] if owner is None or p["user"] in users],
            "model": g["model"],
        })
    return found


def describe(v):
    procs = ", ".join("PID %d (%s)" % (p["pid"], p["name"]) for p in v["processes"]) or "no process information"
    where = "node %s GPU %d" % (v["node"], v["gpu"])
    if v["reserved_by"]:
        where += ", reserved by %s" % v["reserved_by"]
    return "Unreserved GPU usage on %s: %s using %dMB (%s)" % (where, ",".join(v["users"]) or "unknown users", v["memory_mb"], procs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canhazgpu", default="canhazgpu", help="the canhazgpu binary")
    parser.add_argument("--interval", type=float, default=0, help="check every N seconds (default: once)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    while True:
        try:
            violations = check_unreserved_usage(args.canhazgpu)
        except (OSError, subprocess.CalledProcessError, ValueError, RuntimeError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            log.error("cannot read the GPU status: %s", detail.strip())
            if not args.interval:
                return 2
            violations = None
        for v in violations or []:
            log.warning(describe(v))
        if not args.interval:
            return 1 if violations else 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
