#!/bin/sh
# Post a violation to a chat webhook (Slack, Mattermost, Teams and others
# take {"text": ...}): an example of [violations] exec for
# canhazgpu-healthcheck. Install it root-owned, e.g. as
# /usr/local/sbin/canhazgpu-violation-webhook, put the webhook's URL in a
# root-only file (it is a secret), and set
#   [violations]
#   actions = ["notify", "exec"]
#   exec = "/usr/local/sbin/canhazgpu-violation-webhook"
# The check runs it as root with PATH=/usr/sbin:/usr/bin:/sbin:/bin only and
# the violation as JSON on stdin; the text is built by a JSON encoder, so
# what users chose (process names) stays data.
set -eu
URL_FILE=${CANHAZGPU_WEBHOOK_URL_FILE:-/etc/canhazgpu/webhook-url}

python3 -c 'import json, sys
e = json.load(sys.stdin)
v = e["violation"]
print(json.dumps({"text": "canhazgpu on %s: %s" % (v["node"], e["message"])}))' |
	curl --silent --show-error --fail --max-time 5 -H 'Content-Type: application/json' \
		--data-binary @- "$(cat "$URL_FILE")"
