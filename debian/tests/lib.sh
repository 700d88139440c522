# What debian/tests/systemd-units and test/lib/package-upgrade.sh share, to
# be sourced from the source tree's top: checks of the installed package's
# units, ports and processes, under the real systemd.

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

ok() { echo "ok: $*"; }

# wait_for SECONDS CMD...: CMD succeeds within SECONDS, tried every 0.1 s.
wait_for() {
	local i n=$(($1 * 10))
	shift
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# listening PORT: a TCP socket listens on PORT.
listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
not_listening() { ! listening "$1"; }

# state UNIT: "ENABLED ACTIVE" as systemctl says, e.g. "disabled inactive".
state() {
	echo "$(systemctl is-enabled "$1" 2>/dev/null || true) $(systemctl is-active "$1" 2>/dev/null || true)"
}

expect_state() {
	local got
	got=$(state "$1")
	[ "$got" = "$2" ] || fail "$1 is '$got', expected '$2' ($3)"
}

no_wsfilter_process() { ! pgrep -x wsfilter >/dev/null; }
