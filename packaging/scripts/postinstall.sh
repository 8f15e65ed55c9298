#!/bin/sh
# canhazgpu post-install, for the .deb (called with "configure") and the
# .rpm (called with the number of installed versions). It sets up what
# docs/security.md describes: the canhazgpu group, which alone may read the
# CLI's store credential; canhazgpu setgid to that group; the secrets
# directory and the modes of any secrets already in it; /run/canhazgpu. It
# also checks the config file as the hooks will read it.
set -e

case "$1" in
configure | [0-9]*) ;;
*) exit 0 ;;
esac

if ! getent group canhazgpu >/dev/null; then
	groupadd --system canhazgpu
fi

# dpkg keeps a registered mode across upgrades; rpm sets it again each time.
if [ "$1" = configure ]; then
	if ! dpkg-statoverride --list /usr/bin/canhazgpu >/dev/null; then
		dpkg-statoverride --update --add root canhazgpu 2755 /usr/bin/canhazgpu
	fi
else
	chgrp canhazgpu /usr/bin/canhazgpu
	chmod 2755 /usr/bin/canhazgpu
fi

secrets=/etc/canhazgpu/secrets
mkdir -p "$secrets"
chown root:canhazgpu "$secrets"
chmod 0750 "$secrets"
for f in admin monitor; do
	if [ -f "$secrets/$f.password" ]; then
		chown root:root "$secrets/$f.password"
		chmod 0600 "$secrets/$f.password"
	fi
done
if [ -f "$secrets/cli.password" ]; then
	chown root:canhazgpu "$secrets/cli.password"
	chmod 0640 "$secrets/cli.password"
fi

# A config file the programs now installed cannot read would fail the next
# job's Prolog, and Slurm would drain the node: say so here, to the admin
# who installs or upgrades. A warning, not a failed install: the new
# programs are in place either way, a failed configure step would hold up
# every later apt run, and rpm goes on after a failing %post anyway.
config=/etc/canhazgpu/config.toml
if [ -f "$config" ] && ! out=$(canhazgpu admin --check-config "$config" 2>&1); then
	echo "canhazgpu: WARNING: $config does not load: the Prolog, Epilog and health check refuse it, so every job on this node fails until it is fixed:" >&2
	echo "$out" >&2
	echo "canhazgpu: fix it, then check it with: canhazgpu admin --check-config" >&2
fi

# The state directory exists before the first job, not only after a reboot.
if [ -d /run/systemd/system ] && command -v systemd-tmpfiles >/dev/null; then
	systemd-tmpfiles --create canhazgpu.conf || true
fi
exit 0
