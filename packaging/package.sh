#!/usr/bin/env bash
# package.sh: build the canhazgpu .deb and .rpm into dist/ (or $DIST).
#
# The programs are built by `make build` (same ldflags and program list as
# the Makefile), the man pages are generated from their --help output
# (packaging/manpage), and nfpm, pinned below and run through `go run`,
# writes both packages from one staged file tree (packaging/nfpm.yaml).
#
# Environment (all optional):
#   VERSION, COMMIT, DATE  stamped into the programs; default as in the Makefile
#   DIST                   output directory (default dist)
#   PKG_MAINTAINER         the packages' Maintainer/Packager field
set -euo pipefail

# nfpm v2.46 and later need go.digitalxero.dev modules that
# proxy.golang.org did not serve when this was pinned.
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DATE=${DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
DIST=${DIST:-dist}
export PKG_MAINTAINER=${PKG_MAINTAINER:-canhazgpu maintainers <canhazgpu@example.org>}

# Debian and RPM versions start with a digit and keep '-' for the
# revision: v1.2.3 -> 1.2.3, v1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234, and an
# untagged tree (abc1234-dirty, or a hash that starts with a digit, such as
# 65c9700) -> 0.0.0~gitabc1234+dirty, which sorts before any release.
# Releases are tagged vMAJOR.MINOR[.PATCH]: a version is a release's only
# when it starts with digits, a dot and a digit, which no hash does.
pkg_version() {
	local v=${1#v}
	[[ $v =~ ^[0-9]+\.[0-9] ]] || v="0.0.0~git$v"
	v=${v/-/+}
	v=${v//-/.}
	printf '%s' "$v" | tr -c 'A-Za-z0-9.+~' '.'
}
export PKG_VERSION
PKG_VERSION=$(pkg_version "$VERSION")
export GOARCH
GOARCH=$(go env GOARCH)

# copyright prints the license of canhazgpu and of each part linked into
# the programs: the Go standard library and the modules the programs import.
copyright() {
	local path version dir f
	printf 'canhazgpu\n\nThe programs are built from the canhazgpu sources and statically\n'
	printf 'linked with the Go standard library and the Go modules below.\n'
	printf '\n== canhazgpu ==\n\n'
	if [ -f LICENSE ]; then cat LICENSE; else echo "The source tree had no LICENSE file."; fi
	printf '\n== Go standard library %s ==\n\n' "$(go env GOVERSION)"
	cat "$(go env GOROOT)/LICENSE"
	go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./... |
		sort -u | while read -r path version dir; do
			f=$(find "$dir" -maxdepth 1 -type f -iregex '.*/\(licen[cs]e\|copying\)\(\.md\|\.txt\)?' | sort | head -n 1)
			if [ -z "$f" ]; then
				echo "package.sh: no license file in module $path $version" >&2
				return 1
			fi
			printf '\n== %s %s ==\n\n' "$path" "$version"
			# Debian policy: refer to common licenses rather than copy them.
			if grep -q 'Apache License' "$f" && grep -q 'Version 2.0, January 2004' "$f"; then
				printf 'Licensed under the Apache License, Version 2.0.\n'
				printf 'On Debian systems its text is in /usr/share/common-licenses/Apache-2.0;\n'
				printf 'it is also at https://www.apache.org/licenses/LICENSE-2.0.\n'
			else
				cat "$f"
			fi
		done
}

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/canhazgpu-package.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
export STAGE
root=$STAGE/root
doc=$root/usr/share/doc/canhazgpu

# Programs: the CLI and the health check in /usr/bin; the scheduler hooks,
# which only Slurm/PBS run, in /usr/libexec/canhazgpu.
# Position-independent, as Debian builds programs (lintian: hardening-no-pie).
GOFLAGS="${GOFLAGS:-} -buildmode=pie" \
	make -s build BIN="$STAGE/bin" VERSION="$VERSION" COMMIT="$COMMIT" DATE="$DATE"
install -d "$root/usr/bin" "$root/usr/libexec/canhazgpu"
for p in canhazgpu:usr/bin:1 canhazgpu-healthcheck:usr/bin:8 \
	canhazgpu-prolog:usr/libexec/canhazgpu:8 canhazgpu-epilog:usr/libexec/canhazgpu:8; do
	IFS=: read -r name dir section <<<"$p"
	if [ ! -x "$STAGE/bin/$name" ]; then
		echo "package.sh: make build made no $name: add it to PROGRAMS in the Makefile" >&2
		exit 1
	fi
	# Debian strips binaries (dh_strip); so do we, and rpm gets the same.
	strip --strip-unneeded -o "$root/$dir/$name" "$STAGE/bin/$name"
	chmod 0755 "$root/$dir/$name"
	pages+=("$STAGE/bin/$name:$section")
done

go run ./packaging/manpage -out "$root/usr/share/man" -version "$VERSION" -date "${DATE%%T*}" "${pages[@]}"
find "$root/usr/share/man" -type f -exec gzip -9n {} +

# contrib/ (Slurm, NHC, PBS, Torque files, examples) without its tests; the
# bash completion and the systemd units go where bash and systemd look (the
# zsh completion's place differs between Debian and RPM distributions:
# nfpm.yaml puts it there).
install -d "$root/usr/share/canhazgpu"
tar -C contrib --exclude=./completion --exclude=./systemd \
	--exclude=tests --exclude=testdata --exclude=__pycache__ --exclude='*.pyc' \
	--exclude='*_test.go' --exclude='test_*.py' --exclude='*_test.py' \
	-cf - . | tar -C "$root/usr/share/canhazgpu" -xf - --no-same-owner
find "$root/usr/share/canhazgpu" -type d -empty -delete
install -D -m 0644 contrib/completion/canhazgpu.bash "$root/usr/share/bash-completion/completions/canhazgpu"
install -D -m 0644 -t "$root/usr/lib/systemd/system" contrib/systemd/*.service contrib/systemd/*.timer
install -D -m 0644 packaging/tmpfiles.d/canhazgpu.conf "$root/usr/lib/tmpfiles.d/canhazgpu.conf"

install -D -m 0644 -t "$doc" README.md docs/*.md
copyright >"$doc/copyright"
{
	printf 'canhazgpu (%s) unstable; urgency=medium\n\n' "$PKG_VERSION"
	printf '  * Built from commit %s (%s).\n\n' "$COMMIT" "$VERSION"
	printf ' -- %s  %s\n' "$PKG_MAINTAINER" "$(date -u -R -d "$DATE")"
} | gzip -9n >"$doc/changelog.gz"

find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f -perm /111 -exec chmod 0755 {} +
find "$root" -type f ! -perm /111 -exec chmod 0644 {} +

mkdir -p "$DIST"
for packager in deb rpm; do
	go run "$NFPM" package --config packaging/nfpm.yaml --packager "$packager" --target "$DIST/"
done
