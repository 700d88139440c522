#!/bin/sh
# package-image.sh BASE DIR PACKAGE...: make sure DIR holds the image of
# nspawn-image.sh (built at BASE when missing) plus autopkgtest and the
# PACKAGEs, for the package test (test/package.bats): there the container has
# no network, so what the test installs besides the package must already be
# in. The stamp lists the PACKAGEs: another list builds the image again. The
# image keeps no apt source, so that apt in the container never tries the
# network.
set -eu

base=$1 dir=$2
shift 2
want=$(printf '%s\n' autopkgtest "$@" | sort -u | tr '\n' ' ')
stamp="$dir/.wsfilter-package-image-v1"

if [ -e "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	exit 0
fi

sh "$(dirname "$0")/nspawn-image.sh" "$base"

parent=$(dirname "$dir")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.build-package.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
cp -a "$base/." "$tmp/"
rm -f "$tmp/.wsfilter-image-v1"
# shellcheck disable=SC2086 # $want is a list of package names
timeout 600 systemd-nspawn -q --register=no --keep-unit -D "$tmp" --pipe \
	sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $want && apt-get clean && rm -rf /var/lib/apt/lists/*" \
	</dev/null >"$parent/package-image.log" 2>&1 || {
	tail -n 30 "$parent/package-image.log" >&2
	exit 1
}
: >"$tmp/etc/apt/sources.list"
rm -f "$tmp"/etc/apt/sources.list.d/*
printf '%s' "$want" >"$tmp/.wsfilter-package-image-v1"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT INT TERM
