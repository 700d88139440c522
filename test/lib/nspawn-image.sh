#!/bin/sh
# nspawn-image.sh [DIR]: make sure DIR (default /var/cache/wsfilter-test/bookworm)
# holds a minimal Debian bookworm tree that boots systemd under systemd-nspawn.
# The tree is built once with debootstrap and reused; a half-built tree is never
# left at DIR (it is built beside it and renamed when complete).
# The wsfilter binary and units are not part of the image: each test run copies
# them in (see nspawn.bash), so the cached tree never goes stale.
set -eu

dir=${1:-/var/cache/wsfilter-test/bookworm}
stamp="$dir/.wsfilter-image-v1"
mirror=${WSFILTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -e "$stamp" ]; then
	exit 0
fi

parent=$(dirname "$dir")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

start=$(date +%s)
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
	bookworm "$tmp" "$mirror" >"$parent/debootstrap.log" 2>&1 || {
	tail -n 30 "$parent/debootstrap.log" >&2
	exit 1
}

# Boot quietly and fast: no getty on the console, nothing waiting for a network.
rm -f "$tmp/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$tmp/etc/systemd/system/systemd-networkd-wait-online.service"
echo wsfilter-test >"$tmp/etc/hostname"
# An empty machine-id lets systemd generate one at each boot.
: >"$tmp/etc/machine-id"
# Keep the journal in memory: nothing to clean between runs.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$tmp/etc/systemd/journald.conf.d/volatile.conf"
# The downloaded packages are not needed to boot.
rm -f "$tmp"/var/cache/apt/archives/*.deb

echo "built in $(( $(date +%s) - start ))s" >"$tmp/.wsfilter-image-v1"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT INT TERM
