#!/bin/sh
# Installs what building and testing wsfilter needs on Debian 12 (run as root).
# wsfilter itself needs only a C compiler and libc; the rest is for the tests,
# the fuzzers, the benchmark and the Debian package (build, lintian,
# hardening-check from devscripts).
set -eu
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	gcc clang make libc6-dev libclang-rt-14-dev \
	bats bats-support bats-assert bats-file \
	socat python3 python3-websockets procps psmisc time curl ca-certificates man-db \
	systemd systemd-container debootstrap iproute2 \
	xinetd ucspi-tcp stunnel4 openssl util-linux haproxy \
	libwrap0 libevent-2.1-7 libbsd0 libtirpc3 \
	websocketd chromium fonts-dejavu-core \
	afl++ valgrind hyperfine \
	git dpkg-dev debhelper fakeroot lintian devscripts \
	>/dev/null

# Node.js runs the Node ws client and Playwright; Debian 12 ships 18, which
# the pinned versions support.
if ! command -v node >/dev/null 2>&1; then
	apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# the npm modules are the tests': test/package.json, into test/node_modules
(cd test && npm ci --no-audit --no-fund --loglevel=error)
