#!/bin/sh
# canhazgpu post-remove, for the .deb ("remove", "purge", ...) and the .rpm
# (the number of versions left: 0 when it is gone). The canhazgpu group
# stays, as Debian leaves system groups: files may still carry its id.
set -e

case "$1" in
remove | purge)
	if dpkg-statoverride --list /usr/bin/canhazgpu >/dev/null; then
		dpkg-statoverride --remove /usr/bin/canhazgpu
	fi
	if [ "$1" = purge ]; then
		# The secrets are configuration the package set up; purge removes
		# them with the rest of /etc/canhazgpu.
		rm -rf /etc/canhazgpu/secrets
		rmdir /etc/canhazgpu 2>/dev/null || true
	fi
	;;
esac

# Purged (dpkg) or erased (rpm, which has no purge): the job files and
# pending markers of the hooks under the default state_dir would only
# outlive every program that reads or settles them. A state_dir
# configured elsewhere is the admin's.
case "$1" in
purge | 0)
	rm -rf /run/canhazgpu
	;;
esac
exit 0
