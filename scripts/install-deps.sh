#!/usr/bin/env bash
# install-deps.sh: install the Debian packages the tests and the demo need.
# As root it installs what is missing; otherwise it names what to install.
set -euo pipefail
pkgs=(redis-server redis-tools gcc munge slurmctld slurmd slurm-client python3 rpm lintian prometheus iproute2 debootstrap chromium)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages: ${missing[*]}" >&2
	echo "install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
