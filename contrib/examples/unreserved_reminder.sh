#!/bin/bash
# unreserved_reminder.sh: remind everyone that GPUs of this node are used
# without a reservation. Prints nothing while all GPU use is reserved, so it
# suits cron (mail only when there is something to say) or a login script.
#
# Built on `canhazgpu status --json`; needs python3 to read the JSON.
# CANHAZGPU names the binary (default: canhazgpu in PATH).
set -euo pipefail

CANHAZGPU=${CANHAZGPU:-canhazgpu}

violations=$("$CANHAZGPU" status --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for g in doc["gpus"]:
    procs = ", ".join("PID %d (%s)" % (p["pid"], p["name"]) for p in g["processes"])
    if g["status"] == "unreserved":
        print("GPU %d: %s WITHOUT RESERVATION, %dMB used%s" % (
            g["index"], ",".join(g["users"]) or "unknown users", g["memory_used_mb"],
            " by " + procs if procs else ""))
    elif g["foreign_users"]:
        print("GPU %d: %s WITHOUT RESERVATION on the GPU reserved by %s" % (
            g["index"], ",".join(g["foreign_users"]), g["reservation"]["user"]))
')

if [ -n "$violations" ]; then
	echo "Reminder: Please use canhazgpu for GPU reservations"
	echo "$violations"
fi
