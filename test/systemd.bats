#!/usr/bin/env bats
# The shipped systemd units: static checks with systemd-analyze, then a real
# systemd as PID 1 in a Debian bookworm container (systemd-nspawn) running
# wsfilter.socket from a `make install` tree. The container shares the host's
# loopback; the clients connect from the host. The last part runs
# wsfilter -- PROGRAM (issue 14) with the drop-in shipped in examples/.

load lib/common
load lib/launchers
load lib/nspawn

# The container's boot and shutdown are costly: its tests share one boot
# and must run one after the other.
BATS_NO_PARALLELIZE_WITHIN_FILE=true

# Only the address and port differ from the shipped socket, set as an
# administrator would: a drop-in.
setup_file() {
	nspawn_setup_file wsfilter.socket 'ListenStream=127.0.0.1:$PORT' 'ListenStream=[::1]:$PORT'
	export ROOT_PID=${NSPAWN_PID:-}
}

teardown_file() {
	nspawn_teardown_file
}

setup() {
	[ -x "$TOP/wsfilter" ] || fail "no wsfilter binary at $TOP/wsfilter (run make)"
}

teardown() {
	stop_launchers
	[ -z "${PROGRAM_SET:-}" ] || program_reset
}

# held_connection: a client holds a connection open (aborting_client_start);
# HELD_PID is the instance's wsfilter as the host sees it.
held_connection() {
	local p
	HELD_PID=
	aborting_client_start
	for p in $(descendants "$ROOT_PID"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = wsfilter ] && HELD_PID=$p
	done
	[ -n "$HELD_PID" ] || fail "no wsfilter below $ROOT_PID"
}

# ---- static checks ----------------------------------------------------------

@test "make install turns @BINDIR@ into the binary's path in wsfilter@.service" {
	units_install wsfilter@.service wsfilter.socket
	run grep -c '@BINDIR@' "$UNITDIR/wsfilter@.service"
	assert_output 0
	run grep -x "ExecStart=$INSTALL_PREFIX/bin/wsfilter" "$UNITDIR/wsfilter@.service"
	assert_success
}

@test "systemd-analyze verify prints nothing for the installed units" {
	units_install wsfilter@.service wsfilter.socket
	assert_units_verify wsfilter.socket wsfilter@.service
}

@test "systemd-analyze security rates wsfilter@.service's exposure at most 1.0" {
	units_install wsfilter@.service wsfilter.socket
	assert_exposure wsfilter@.service 1.0
}

# ---- systemd as PID 1 in a container ----------------------------------------

@test "container: systemctl enable --now wsfilter.socket listens on IPv4 and IPv6 loopback" {
	need_container
	run in_container systemctl is-active wsfilter.socket
	assert_output active
	run in_container systemctl is-enabled wsfilter.socket
	assert_output enabled
	wait_port "$PORT" 127.0.0.1
	wait_port "$PORT" ::1
}

@test "container: GET / serves the page" {
	need_container
	check_page
}

@test "container: 10,000 pipelined messages all come back in order" {
	need_container
	check_pipelined 10000
}

@test "container: IPv6 clients are served on [::1]" {
	need_container
	HOST=::1
	check_pipelined 1000
}

@test "container: the shipped MaxConnectionsPerSource (32) refuses the 33rd connection from one address" {
	need_container
	wait_no_wsfilter "$ROOT_PID" 5
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" --barrier -c 40 -n 100 --timeout 10 --total-timeout 50 "$(url)"
	assert_failure
	assert_output --partial 'clients 32/40 received 3200/4000 lost 800'
}

@test "container: 100 clients at once each get 1,000 replies (MaxConnectionsPerSource raised)" {
	need_container
	wait_no_wsfilter "$ROOT_PID" 5
	in_container sh -c "mkdir -p /run/systemd/system/wsfilter.socket.d &&
		printf '[Socket]\nMaxConnectionsPerSource=128\n' >/run/systemd/system/wsfilter.socket.d/load.conf"
	in_container systemctl daemon-reload
	in_container systemctl restart wsfilter.socket
	wait_port "$PORT"
	check_concurrent 100 1000
	in_container rm -f /run/systemd/system/wsfilter.socket.d/load.conf
	in_container systemctl daemon-reload
	in_container systemctl restart wsfilter.socket
}

@test "container: a client that vanishes leaves no wsfilter process and no failed unit" {
	need_container
	wait_no_wsfilter "$ROOT_PID" 5
	check_abrupt_disconnect
	# The instance ends with exit status 4, which the unit counts as success.
	local i
	for i in $(seq 1 50); do
		[ -z "$(in_container systemctl list-units --no-legend --state=activating,active,deactivating 'wsfilter@*')" ] && break
		sleep 0.1
	done
	run in_container systemctl list-units --no-legend --all --state=failed 'wsfilter@*'
	assert_output ''
}

@test "container: a connection's process runs as a dynamic user without capabilities, under seccomp, in its own network namespace" {
	need_container
	wait_no_wsfilter "$ROOT_PID" 5
	local pid status
	held_connection
	pid=$HELD_PID
	status=$(cat "/proc/$pid/status")
	rm -f "$ABORT_READY"
	echo "$status" | grep -E '^(Uid|Gid|Cap|NoNewPrivs|Seccomp)'
	# Not root (DynamicUser=yes).
	assert_equal "$(awk '/^Uid:/ { print ($2 != 0) }' <<<"$status")" 1
	# No capability at all (CapabilityBoundingSet= empty).
	assert_equal "$(grep -cE '^(CapEff|CapPrm|CapBnd|CapAmb):[[:space:]]+0+$' <<<"$status")" 4
	assert_equal "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")" 1
	# Mode 2 (filter): systemd's filters (SystemCallFilter=, and the ones
	# behind MemoryDenyWriteExecute=, RestrictNamespaces=...) and wsfilter's.
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$status")" 2
	assert_equal "$(awk '/^Seccomp_filters:/ { print ($2 >= 2) }' <<<"$status")" 1
	# PrivateNetwork=yes: another network namespace than the host's.
	[ "$(readlink "/proc/$pid/ns/net")" != "$(readlink /proc/self/ns/net)" ]
}

@test "container: a connection's log line reaches the journal" {
	need_container
	run "$PY" "$CLIENTS/load_websockets.py" -n 7 "$(url)"
	assert_output 'received 7/7 lost 0'
	local i
	for i in $(seq 1 50); do
		run in_container journalctl --no-pager -o cat -u 'wsfilter@*'
		grep -qE "^${LOGP}127\.0\.0\.1:[0-9]+ .*[^0-9]7 msgs? " <<<"$output" && break
		sleep 0.1
	done
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ .*[^0-9]7 msgs? "
	# wsfilter's seccomp filter went in under the unit's own filter.
	refute_output --partial 'seccomp'
}

# ---- wsfilter -- PROGRAM under the real systemd (issue 14) ------------------

PROGRAM_DROPIN=$TOP/examples/wsfilter@.service.d/program.conf

# use_program [LINES]: set the unit up as examples/wsfilter@.service.d/program.conf
# says: examples/suffix.sh installed as /usr/local/libexec/wsfilter-suffix.sh (in
# the staged tree, which the container sees read-only on /usr/local) and the
# shipped drop-in copied to /etc/systemd/system/wsfilter@.service.d/. LINES, if
# given, go into a runtime drop-in (/run/..., zz-test.conf, read after
# program.conf) for what one test changes. systemd logs at level debug, so that
# every instance's exit status is in the journal; JOURNAL_CURSOR marks where this
# test's part of it starts. program_reset (teardown) undoes all of it.
use_program() {
	need_container
	wait_no_wsfilter "$ROOT_PID" 5
	PROGRAM_SET=1
	install -D -m 755 "$TOP/examples/suffix.sh" "$STAGE/usr/local/libexec/wsfilter-suffix.sh"
	in_container mkdir -p /etc/systemd/system/wsfilter@.service.d
	in_container sh -c 'cat >/etc/systemd/system/wsfilter@.service.d/program.conf' <"$PROGRAM_DROPIN"
	if [ $# -gt 0 ]; then
		in_container mkdir -p /run/systemd/system/wsfilter@.service.d
		printf '%s\n' "$@" | in_container sh -c 'cat >/run/systemd/system/wsfilter@.service.d/zz-test.conf'
	fi
	in_container systemctl daemon-reload
	SAVED_LOG_LEVEL=$(in_container systemctl log-level)
	in_container systemctl log-level debug
	JOURNAL_CURSOR=$(in_container journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p')
	[ -n "$JOURNAL_CURSOR" ] || fail "no journal cursor"
	PROGRAM_LOG=(in_container journalctl --no-pager -o cat -u 'wsfilter@*' --after-cursor "$JOURNAL_CURSOR")
	PROGRAM_EXITS=journal
	PROGRAM_COMMS=(wsfilter-suffix.sh)
	run in_container systemctl cat wsfilter@x.service
	assert_line 'ExecStart=/usr/local/bin/wsfilter -- /usr/local/libexec/wsfilter-suffix.sh'
	run in_container systemctl show -p TasksMax wsfilter@x.service
	assert_output 'TasksMax=16'
}

program_reset() {
	wait_no_wsfilter "$ROOT_PID" 5 || true
	in_container rm -rf /etc/systemd/system/wsfilter@.service.d /run/systemd/system/wsfilter@.service.d
	in_container systemctl daemon-reload
	in_container systemctl log-level "${SAVED_LOG_LEVEL:-info}"
	rm -f "$STAGE/usr/local/libexec/wsfilter-suffix.sh"
	PROGRAM_SET=
}

@test "container, the shipped program drop-in: 10,000 pipelined messages through examples/suffix.sh all come back in order with the suffix" {
	use_program
	check_program_pipelined 10000
	run in_container systemctl list-units --no-legend --all --state=failed 'wsfilter@*'
	assert_output ''
}

@test "container, wsfilter -- PROGRAM: the program's stderr lines reach the journal, never the client" {
	# the lines of launchers.bash's PROG_NOISY ($$ is systemd's escape for $)
	use_program '[Service]' 'ExecStart=' \
		"ExecStart=/usr/local/bin/wsfilter -- /bin/sh -c 'echo \"noisy-suffix.sh: pid \$\$\$\$ started\" >&2; /usr/local/libexec/wsfilter-suffix.sh; echo \"noisy-suffix.sh: pid \$\$\$\$ saw EOF\" >&2'"
	check_program_stderr
}

@test "container, the shipped program drop-in: a client that vanishes leaves neither wsfilter nor the program running, and no unit" {
	use_program
	check_program_abrupt_disconnect 1
	local i
	for i in $(seq 1 50); do
		[ -z "$(in_container systemctl list-units --no-legend --state=activating,active,deactivating 'wsfilter@*')" ] && break
		sleep 0.1
	done
	run in_container systemctl list-units --no-legend --all 'wsfilter@*'
	assert_output ''
}

@test "container, the shipped program drop-in: wsfilter adds its own seccomp filter to the unit's (Seccomp: 2 both), the program has the unit's only" {
	use_program
	local pid prog
	held_connection
	pid=$HELD_PID
	prog=$(program_pids "$ROOT_PID")
	[ -n "$prog" ]
	local ws ps
	ws=$(cat "/proc/$pid/status")
	ps=$(cat "/proc/$prog/status")
	rm -f "$ABORT_READY"
	grep -E '^(Name|PPid|Uid|NoNewPrivs|Seccomp)' <<<"$ws"
	grep -E '^(Name|PPid|Uid|NoNewPrivs|Seccomp)' <<<"$ps"
	# the program is wsfilter's child, the same dynamic user, no new privileges
	assert_equal "$(awk '/^PPid:/ { print $2 }' <<<"$ps")" "$pid"
	assert_equal "$(awk '/^Uid:/ { print $2 }' <<<"$ps")" "$(awk '/^Uid:/ { print $2 }' <<<"$ws")"
	assert_equal "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$ps")" 1
	# mode 2 (filter) for both: the unit's filters (SystemCallFilter= and the others)
	# hold the program too; wsfilter's own, installed after the program was forked,
	# is one filter more on wsfilter alone
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$ws")" 2
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$ps")" 2
	assert_equal "$(awk '/^Seccomp_filters:/ { print $2 }' <<<"$ws")" \
		"$(($(awk '/^Seccomp_filters:/ { print $2 }' <<<"$ps") + 1))"
}

@test "container, wsfilter -- PROGRAM: the program's exit 3 closes with 1011 \"program exited 3\"; the instance exits 6, which the unit counts as failed" {
	use_program '[Service]' 'ExecStart=' \
		"ExecStart=/usr/local/bin/wsfilter -- /bin/sh -c 'read l; echo \"got \$\$l\"; exit 3'"
	run wst script --timeout 10 --connect "$(hostport)" hs head text:x frame frame eof
	echo "$output"
	assert_success
	assert_equal "$(sed -n '/^ACCEPT /,$p' <<<"$output")" \
		$'ACCEPT ok\nTEXT got x\nCLOSE 1011 program exited 3\nEOF'
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ websocket .*, close 1011 by server \(program exited 3\), exit 6$"
	assert_program_exits 6 1
	# SuccessExitStatus=3 4 5: 6 is a failure of the instance (CollectMode= then
	# forgets it, so it does not stay listed as failed)
	run in_container systemctl show -p SuccessExitStatus wsfilter@x.service
	assert_output --regexp '^SuccessExitStatus=3 4 5( |$)'
	wait_program_log 1 "^wsfilter@[^ ]*: Failed with result 'exit-code'\.$"
}
