#!/bin/bash
# unreserved_notify.sh: tell each user who uses a GPU of this node without a
# reservation, once per run, and keep a log of what was found.
#
# Built on `canhazgpu status --json`; needs python3 to read the JSON.
# Settings (environment):
#   CANHAZGPU       the binary (default: canhazgpu in PATH)
#   NOTIFY_COMMAND  run as `$NOTIFY_COMMAND USER` with the message on stdin
#                   (default: write, which reaches the user's terminal when
#                   logged in; e.g. "mail -s 'GPU usage policy'" for mail)
#   EXEMPT_USERS    space-separated users never notified (default: root)
#   LOG_FILE        append one line per violation here (default: none)
# Exit status: 0, also when some user could not be reached (reported on
# stderr); non-zero when the status could not be read.
set -euo pipefail

CANHAZGPU=${CANHAZGPU:-canhazgpu}
NOTIFY_COMMAND=${NOTIFY_COMMAND:-write}
EXEMPT_USERS=${EXEMPT_USERS:-root}
LOG_FILE=${LOG_FILE:-}

# One line per violation: user<TAB>node<TAB>gpu<TAB>description
violations=$("$CANHAZGPU" status --json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
for g in doc["gpus"]:
    if g["status"] == "unreserved":
        users, what = g["users"], "without a reservation"
    elif g["foreign_users"]:
        users, what = g["foreign_users"], "reserved by %s" % g["reservation"]["user"]
    else:
        continue
    for u in users:
        pids = ", ".join("PID %d (%s)" % (p["pid"], p["name"]) for p in g["processes"] if p["user"] == u)
        print("%s\t%s\t%d\tGPU %d (%s) %s" % (u, doc["node"], g["index"], g["index"], pids or "no process information", what))
')

[ -z "$violations" ] && exit 0

while IFS=$'\t' read -r user node gpu what; do
	if [ -n "$LOG_FILE" ]; then
		printf '%s %s: %s uses %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$node" "$user" "$what" >>"$LOG_FILE"
	fi
	case " $EXEMPT_USERS " in *" $user "*) continue ;; esac
	message="Please use canhazgpu for GPU reservations: on $node you use $what.
Reserve it with:  canhazgpu reserve --gpu-ids $gpu --duration 4h
or run your job with:  canhazgpu run --gpu-ids $gpu -- <command>"
	# Word splitting of NOTIFY_COMMAND is wanted: it may carry arguments.
	# shellcheck disable=SC2086
	if ! printf '%s\n' "$message" | $NOTIFY_COMMAND "$user"; then
		echo "unreserved_notify: could not notify $user with '$NOTIFY_COMMAND'" >&2
	fi
done <<<"$violations"
