#!/bin/bash
# package-upgrade.sh OLD.deb NEW.deb: the package's upgrade under the real
# systemd, in the container package.bats boots, run from the source tree's
# top (it uses debian/tests' helpers and the clients in test/clients):
# - OLD installed, both sockets enabled and started, a client held on each;
# - NEW installed over it with dpkg -i, as apt does an upgrade: it succeeds
#   with no warning, and dpkg has NEW's version;
# - both sockets are still enabled and active;
# - the client of wsfilter.socket goes on with the process it started with
#   (one more message and its reply, then its own close 1000); the
#   acceptor, restarted by the upgrade, closes its client with 1001;
# - new connections to both ports are served, by the new acceptor's process;
# - apt-get purge then leaves no process or listener.
# Prints "ok: ..." lines; the first failure prints "FAIL: ..." and exits 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
OLD=$1 NEW=$2
CLIENT=test/clients/python_websockets.py
HOLD=debian/tests/hold.py
WORK=$(mktemp -d)

. debian/tests/lib.sh

# installed DEB LOG: dpkg -i DEB, its output in LOG; fails on an error or a warning.
installed() {
	dpkg -i "$1" >"$2" 2>&1 || { cat "$2"; fail "dpkg -i $1 failed"; }
	if grep -iE 'warning|error' "$2"; then
		fail "dpkg -i $1 complained (above)"
	fi
	[ "$(dpkg-query -W -f='${Version}' wsfilter)" = "$(dpkg-deb -f "$1" Version)" ] ||
		fail "dpkg has wsfilter $(dpkg-query -W -f='${Version}' wsfilter) after installing $1"
}

# served PORT: 100 messages through PORT, all back in order.
served() {
	local out
	wait_for 10 listening "$1" || fail "nothing listens on $1"
	out=$(timeout 60 python3 "$CLIENT" "ws://127.0.0.1:$1/" 100) || fail "client on $1: $out"
	grep -q '^received 100/100 in ' <<<"$out" || fail "client on $1: $out"
}

installed "$OLD" "$WORK/install.log"
systemctl enable --now wsfilter.socket wsfilter-acceptor.socket 2>&1
held=()
for port in 8765 8766; do
	wait_for 10 listening "$port" || fail "nothing listens on $port after enable --now"
	timeout 90 python3 "$HOLD" "ws://127.0.0.1:$port/" "$WORK/ready.$port" "$WORK/go" \
		>"$WORK/hold.$port" 2>&1 &
	held+=($!)
done
wait_for 20 test -e "$WORK/ready.8765" -a -e "$WORK/ready.8766" ||
	fail "the held connections did not open: $(cat "$WORK"/hold.*)"
acceptor=$(systemctl show -P MainPID wsfilter-acceptor.service)
[ "$acceptor" -gt 0 ] || fail "wsfilter-acceptor.service has no main process"
ok "$(dpkg-deb -f "$OLD" Version) installed, a client held on 8765 and 8766"

installed "$NEW" "$WORK/upgrade.log"
ok "upgraded to $(dpkg-deb -f "$NEW" Version)"
expect_state wsfilter.socket "enabled active" "after the upgrade"
expect_state wsfilter-acceptor.socket "enabled active" "after the upgrade"
touch "$WORK/go"
for i in 0 1; do
	port=$((8765 + i))
	wait "${held[$i]}" || fail "client held on $port: $(cat "$WORK/hold.$port")"
done
[ "$(cat "$WORK/hold.8765")" = "replied again, close 1000" ] ||
	fail "the client of wsfilter.socket: $(cat "$WORK/hold.8765")"
ok "the client held on 8765 went on with its process: $(cat "$WORK/hold.8765")"
[ "$(cat "$WORK/hold.8766")" = "close 1001" ] ||
	fail "the client of wsfilter-acceptor.socket: $(cat "$WORK/hold.8766")"
ok "the client held on 8766 got $(cat "$WORK/hold.8766") from the acceptor's restart"

served 8765
served 8766
now=$(systemctl show -P MainPID wsfilter-acceptor.service)
[ "$now" -gt 0 ] && [ "$now" != "$acceptor" ] ||
	fail "wsfilter-acceptor.service's main process is $now, before the upgrade $acceptor"
ok "new connections served on 8765 and 8766, the acceptor's process a new one"

apt-get purge -y -q wsfilter >"$WORK/purge.log" 2>&1 || {
	cat "$WORK/purge.log"
	fail "apt-get purge failed"
}
wait_for 10 no_wsfilter_process || fail "wsfilter processes after purge: $(pgrep -ax wsfilter)"
not_listening 8765 && not_listening 8766 || fail "a port of the package listens after purge"
ok "purged: no process or listener left"
