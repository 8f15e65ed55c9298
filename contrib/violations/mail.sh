#!/bin/sh
# Mail a violation to its user and to the admins: an example of
# [violations] exec for canhazgpu-healthcheck. Install it root-owned, e.g.
# as /usr/local/sbin/canhazgpu-violation-mail, and set
#   [violations]
#   actions = ["notify", "exec"]
#   exec = "/usr/local/sbin/canhazgpu-violation-mail"
# The check runs it as root with PATH=/usr/sbin:/usr/bin:/sbin:/bin only and
# the violation as JSON on stdin. Process and account names in it are the
# users' choice: they are read as data and never reach a shell command line.
set -eu
ADMINS=${CANHAZGPU_MAIL_ADMINS:-root} # who else gets every mail: edit the default here
DOMAIN=""          # "" mails local accounts; else user@DOMAIN

event=$(cat)
# field KEY...: the value at that path of the event
field() {
	printf '%s' "$event" | python3 -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[k]
print(v)' "$@"
}
user=$(field violation user)
node=$(field violation node)
message=$(field message)

to=$ADMINS
# Only a plain account name becomes a recipient.
if printf '%s' "$user" | grep -Eq '^[a-z_][a-z0-9_.-]{0,31}$'; then
	to="$user${DOMAIN:+@$DOMAIN} $ADMINS"
fi
{
	printf 'Subject: canhazgpu: GPU use against the rules on %s\n\n' "$(printf '%s' "$node" | tr -cd 'A-Za-z0-9._-')"
	printf '%s\n\n' "$message"
	printf 'Reserve GPUs with canhazgpu before you use them (canhazgpu --help).\n'
	printf 'canhazgpu violations --user %s lists what was recorded.\n' "$user"
} | sendmail -- $to
