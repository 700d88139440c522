#!/usr/bin/env bats
# The shipped acceptor pair, wsfilter-acceptor.socket (Accept=no) and
# wsfilter-acceptor.service: static checks with systemd-analyze, then a real
# systemd as PID 1 in a Debian bookworm container (systemd-nspawn, as in
# test/systemd.bats) running them from a `make install` tree. The container
# shares the host's loopback; the clients connect from the host. Every
# wsfilter's end is read from the journal (each child's "..., exit N" line,
# the parent's "killed by" lines) and from systemd (the main process's exit
# status).

load lib/common
load lib/launchers
load lib/nspawn

# The container's boot and shutdown are costly: its tests share one boot
# and must run one after the other.
BATS_NO_PARALLELIZE_WITHIN_FILE=true

UNIT=wsfilter-acceptor.service
SOCKET=wsfilter-acceptor.socket
# where the forbidden-call test build sits in the container
FORBIDDEN=/usr/local/lib/wsfilter-test/wsfilter-test-forbidden
DROPIN_DIR=/run/systemd/system/$UNIT.d

# the forbidden-call test build, where FORBIDDEN says
nspawn_stage_extra() {
	if [ -x "$TOP/wsfilter-test-forbidden" ]; then
		mkdir -p "$1$(dirname "$FORBIDDEN")"
		cp "$TOP/wsfilter-test-forbidden" "$1$FORBIDDEN"
	fi
}

# Only the address and port differ from the shipped socket, set as an
# administrator would: a drop-in (one ListenStream=, loopback only).
setup_file() {
	nspawn_setup_file "$SOCKET" 'ListenStream=127.0.0.1:$PORT'
}

teardown_file() {
	nspawn_teardown_file
}

setup() {
	[ -x "$TOP/wsfilter" ] || fail "no wsfilter binary at $TOP/wsfilter (run make)"
	T=$BATS_TEST_TMPDIR
	ACCEPTOR_LOG=$T/journal.log
	ACCEPTOR_JOURNAL=journal_since
	JCURSOR=
	DROPIN=
}

teardown() {
	stop_launchers
	if [ -n "$DROPIN" ]; then
		in_container rm -f "$DROPIN_DIR/$DROPIN"
		in_container systemctl daemon-reload
		in_container systemctl stop "$UNIT"
	fi
}

# use_dropin NAME COMMAND: the service's ExecStart= replaced by COMMAND in a
# runtime drop-in NAME (teardown removes it), the service stopped (the next
# connection starts it), and the journal marked.
use_dropin() {
	DROPIN=$1
	in_container sh -c "mkdir -p $DROPIN_DIR && printf '%s\n' '[Service]' 'ExecStart=' \
		'ExecStart=$2' >$DROPIN_DIR/$DROPIN"
	in_container systemctl daemon-reload
	in_container systemctl stop "$UNIT"
	journal_mark
}

# journal_mark: from now on journal_since prints only newer lines.
journal_mark() {
	JCURSOR=$(in_container journalctl -q -n 1 -o export -u "$UNIT" | sed -n 's/^__CURSOR=//p')
}

# journal_since: the service's journal since journal_mark, messages only (each
# wsfilter line carries its own "wsfilter[PID]: ", PID as the container sees it).
journal_since() {
	if [ -n "$JCURSOR" ]; then
		in_container journalctl -q --no-pager -o cat -u "$UNIT" --after-cursor="$JCURSOR"
	else
		in_container journalctl -q --no-pager -o cat -u "$UNIT"
	fi
}

# main_pid: the service's main process (the wsfilter parent) as the container
# sees it; 0 when it does not run.
main_pid() {
	in_container systemctl show -p MainPID --value "$UNIT"
}

# host_pid PID: the host's pid of the container's process PID.
host_pid() {
	local p
	for p in $(descendants "$CONTAINER_PID"); do
		if grep -qE "^NSpid:.*[[:space:]]$1\$" "/proc/$p/status" 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "no process $1 in the container" >&2
	return 1
}

# service_up: a first connection if the service does not run (the socket
# starts it), then wait_main.
service_up() {
	if [ "$(in_container systemctl is-active "$UNIT")" != active ]; then
		run wst run --connect "$(hostport)" http GET /healthz --host localhost
		assert_success
		assert_line --index 0 'HTTP/1.1 200 OK'
	fi
	wait_main
}

# wait_main: wait up to 5 s until the service runs; sets P (its main process
# in the container) and HP (the same on the host).
wait_main() {
	local i
	for i in $(seq 1 50); do
		P=$(main_pid)
		[ -n "$P" ] && [ "$P" != 0 ] && break
		sleep 0.1
	done
	[ -n "$P" ] && [ "$P" != 0 ] || fail "$UNIT did not start"
	HP=$(host_pid "$P")
	# MainPID is known from the fork on; until its exec the process is
	# systemd's, named "(...)" after the binary
	for i in $(seq 1 50); do
		[[ $(cat "/proc/$HP/comm" 2>/dev/null) != "("* ]] && break
		sleep 0.1
	done
}

# ---- static checks ----------------------------------------------------------

@test "make install puts the acceptor pair in place, with @BINDIR@ replaced in wsfilter-acceptor.service" {
	units_install "$UNIT" "$SOCKET"
	run grep -c '@BINDIR@' "$UNITDIR/$UNIT"
	assert_output 0
	run grep -x "ExecStart=$INSTALL_PREFIX/bin/wsfilter" "$UNITDIR/$UNIT"
	assert_success
	cmp "$TOP/systemd/$SOCKET" "$UNITDIR/$SOCKET"
}

@test "systemd-analyze verify prints nothing for the acceptor pair" {
	units_install "$UNIT" "$SOCKET"
	assert_units_verify "$SOCKET" "$UNIT"
}

@test "systemd-analyze security rates wsfilter-acceptor.service's exposure at most 1.0" {
	units_install "$UNIT" "$SOCKET"
	assert_exposure "$UNIT" 1.0
}

# ---- systemd as PID 1 in a container ----------------------------------------

@test "container: systemctl list-units shows the pair, once a client came, with their descriptions: the service running and its socket handed over to it" {
	need_container
	assert_equal "$(in_container systemctl is-enabled "$SOCKET")" enabled
	service_up
	check_page
	local want_s want_u
	want_s=$(sed -n 's/^Description=//p' "$TOP/systemd/$SOCKET")
	want_u=$(sed -n 's/^Description=//p' "$TOP/systemd/$UNIT.in")
	run in_container systemctl list-units --no-legend --plain 'wsfilter-acceptor.*'
	echo "$output"
	assert_success
	assert_equal "${#lines[@]}" 2
	# with Accept=no the socket's sub-state is "running" while the service holds it
	assert_equal "$(tr -s ' ' <<<"$output" | grep '^wsfilter-acceptor\.socket ')" \
		"wsfilter-acceptor.socket loaded active running $want_s"
	assert_equal "$(tr -s ' ' <<<"$output" | grep '^wsfilter-acceptor\.service ')" \
		"wsfilter-acceptor.service loaded active running $want_u"
	# the service got the socket as fd 3, which systemd handed over
	run in_container systemctl show -p Triggers --value "$SOCKET"
	assert_output "$UNIT"
}

@test "container: 300 clients at once each get 100 replies from the one wsfilter the service runs" {
	need_container
	service_up
	journal_mark
	check_concurrent 300 100
	assert_equal "$(main_pid)" "$P"
	assert_children_ended "$P" 300 0
	assert_equal "$(child_ends "$P" | grep -cE '^wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ websocket .* in 100 msg .*, close 1000 by client, exit 0$')" 300
	wait_no_wsfilter "$HP" 5
}

@test "container: the parent and a connection's process run as a dynamic user without capabilities, under seccomp (the child under its parent's filter, without the gates' pages), in their own network namespace" {
	need_container
	service_up
	journal_mark
	hold_clients 1 "$T/hold"
	local kids
	mapfile -t kids < <(serving "$HP")
	assert_equal "${#kids[@]}" 1
	local who s
	for who in "$HP" "${kids[0]}"; do
		s=$(cat "/proc/$who/status")
		echo "$who: $(grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp)' <<<"$s" | tr -s '\t\n' '  ')"
		# Not root (DynamicUser=yes), no capability (CapabilityBoundingSet=
		# empty), no new privileges, seccomp mode 2 (filter)
		assert_equal "$(awk '/^Uid:/ { print ($2 != 0) }' <<<"$s")" 1
		assert_equal "$(grep -cE '^(CapEff|CapPrm|CapBnd|CapAmb):[[:space:]]+0+$' <<<"$s")" 4
		assert_equal "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$s")" 1
		assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$s")" 2
		# PrivateNetwork=yes: another network namespace than the host's
		[ "$(readlink "/proc/$who/ns/net")" != "$(readlink /proc/self/ns/net)" ]
	done
	# under systemd's filters too: the parent's gated filter is the child's
	assert_child_confined "$HP" "${kids[0]}"
	release "$T/hold" 1
	assert_children_ended "$P" 1 4
}

@test "container: --max-connections 5 set on ExecStart= by a drop-in: five connections are served, a sixth waits until one of them closes" {
	need_container
	use_dropin limit.conf '/usr/local/bin/wsfilter --max-connections 5'
	# the first client starts the service
	hold_clients 5 "$T/hold"
	wait_main
	run parent_lines "$P"
	assert_line --index 0 "accepting on 127.0.0.1:$PORT, at most 5 connections"
	check_sixth_waits "$P" "$HP"
	assert_equal "$(main_pid)" "$P"
}

@test "container: a connection's process killed by SIGSYS (the test build, by a drop-in): the journal says so, another connection goes on, new ones are served" {
	need_container
	[ -x "$TOP/wsfilter-test-forbidden" ] || fail "no $TOP/wsfilter-test-forbidden (make wsfilter-test-forbidden)"
	WSFILTER=$TOP/wsfilter-test-forbidden
	use_dropin forbidden.conf "$FORBIDDEN --handshake-timeout 20"
	# A's connection starts the service
	sigsys_start_a
	wait_main
	assert_equal "$(cat "/proc/$HP/comm")" wsfilter-test-f
	check_sigsys_child "$P" "$HP"
	# the service's main process lives on
	assert_equal "$(main_pid)" "$P"
	assert_equal "$(in_container systemctl is-active "$UNIT")" active
}

@test "container: systemctl stop with 50 open connections: each gets its replies, then close 1001; the service ends cleanly, no wsfilter is left, and the socket starts it again" {
	need_container
	service_up
	journal_mark
	busy_clients_start 50
	assert_equal "$(count_wsfilter "$HP")" 50
	run in_container systemctl stop "$UNIT"
	assert_success
	# the main process exited 0 (ExecMainCode 1 is CLD_EXITED), nothing was killed
	run in_container systemctl show -p Result -p ExecMainCode -p ExecMainStatus "$UNIT"
	assert_line Result=success
	assert_line ExecMainCode=1
	assert_line ExecMainStatus=0
	busy_clients_closed 50
	run parent_lines "$P"
	assert_line 'stopping: 50 connections'
	assert_line 'stopped'
	assert_children_ended "$P" 50 0
	wait_no_wsfilter "$NSPAWN_PID" 5
	# the socket is still listening: the next client starts the service again
	assert_equal "$(in_container systemctl is-active "$SOCKET")" active
	check_page
	local old=$P
	service_up
	[ "$P" != "$old" ] || fail "the same main process after a stop"
}
