#!/usr/bin/env bats
# wsfilter accepting by itself: a launcher passes the listening socket
# (systemd-socket-activate -l without --accept, as systemd does with
# Accept=no; openbsd-inetd with `wait`) and one wsfilter parent accepts, forks
# one child per connection, reaps them, enforces --max-connections and
# --max-per-source and passes SIGTERM on. Every test runs the real launcher on
# a free loopback port and stops it in teardown.
#
# How each wsfilter ended is checked everywhere: the parent's exit status with
# `wait` (systemd-socket-activate execs it in its own place) or from inetd's
# "reaped" line, each child's from its own log line ("..., exit N"), and a
# child killed by a signal from the parent's "PEER connection PID killed by" line.

load lib/common
load lib/launchers

setup() {
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
	T=$BATS_TEST_TMPDIR
}

teardown() {
	stop_launchers
}

# ---- systemd-socket-activate without --accept: the listening socket is fd 3 --

@test "systemd-socket-activate -l (no --accept): 300 clients at once each get 100 replies from one wsfilter" {
	start_acceptor
	check_concurrent 300 100
	local p
	p=$(acceptor_parent)
	# systemd-socket-activate execed the parent in its own place
	assert_equal "$p" "$ROOT_PID"
	assert_equal "$(acceptor_parents | wc -l)" 1
	run parent_lines "$p"
	assert_line --index 0 "accepting on 127.0.0.1:$PORT, at most 4096 connections"
	assert_children_ended "$p" 300 0
	assert_equal "$(child_ends "$p" | grep -cE '^wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ websocket .* in 100 msg .* out 100 msg .*, close 1000 by client, exit 0$')" 300
	# one process per connection, each with its own pid
	assert_equal "$(child_ends "$p" | cut -d' ' -f1 | sort -u | wc -l)" 300
	wait_no_wsfilter "$ROOT_PID" 5
	stop_acceptor "$p"
}

@test "--max-connections 5: five connections are served, a sixth waits until one of them closes" {
	start_acceptor --max-connections 5
	hold_clients 5 "$T/hold"
	local p
	p=$(acceptor_parent)
	check_sixth_waits "$p" "$ROOT_PID"
	stop_acceptor "$p"
}

@test "--max-per-source 3: a 4th connection from 127.0.0.1 gets 429 and a log line; one from 127.0.0.2 is served" {
	start_acceptor --max-per-source 3
	hold_clients 3 "$T/hold"
	local p
	p=$(acceptor_parent)
	run wst run --connect "$(hostport)" hs --random-key --host localhost
	assert_success
	assert_line --index 0 'HTTP/1.1 429 Too Many Requests'
	assert_line 'Retry-After: 1'
	assert_line --regexp '^Content-Length: [0-9]+$'
	assert_line 'Connection: close'
	refute_line --partial MALFORMED
	wait_parent_line "$p" '^127\.0\.0\.1:[0-9]+ http 429 refused: 3 connections from 127\.0\.0\.1 \(--max-per-source 3\)$'
	# the refusal forked no process
	assert_equal "$(count_wsfilter "$ROOT_PID")" 3
	# another source address: socat relays from 127.0.0.2
	start_source_relay 127.0.0.2
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" -n 10 "ws://127.0.0.1:$RELAY_PORT/"
	assert_success
	assert_output 'received 10/10 lost 0'
	wait_child_ends "$p" 1
	assert_regex "$(child_ends "$p")" '^wsfilter\[[0-9]+\]: 127\.0\.0\.2:[0-9]+ websocket .* in 10 msg .*, close 1000 by client, exit 0$'
	assert_equal "$(held "$T/hold" 3)" 3
	release "$T/hold" 3
	assert_children_ended "$p" 4 '0|4'
	assert_equal "$(child_ends "$p" | grep -c '^wsfilter\[[0-9]*\]: 127\.0\.0\.1:.*, exit 4$')" 3
	stop_acceptor "$p"
}

@test "--max-per-source 1: the 429 carries a valid Date (IMF-fixdate) and the log says '1 connection from'; at 2, '2 connections'" {
	local n p date
	for n in 1 2; do
		start_acceptor --max-per-source "$n"
		hold_clients "$n" "$T/hold$n"
		p=$(acceptor_parent)
		run wst run --connect "$(hostport)" hs --random-key --host localhost
		assert_success
		assert_line --index 0 'HTTP/1.1 429 Too Many Requests'
		refute_line --partial MALFORMED
		assert_equal "$(grep -c '^Date: ' <<<"$output")" 1
		date=$(sed -n 's/^Date: //p' <<<"$output")
		assert_imf_fixdate "$date"
		if [ "$n" = 1 ]; then
			wait_parent_line "$p" '^127\.0\.0\.1:[0-9]+ http 429 refused: 1 connection from 127\.0\.0\.1 \(--max-per-source 1\)$'
		else
			wait_parent_line "$p" '^127\.0\.0\.1:[0-9]+ http 429 refused: 2 connections from 127\.0\.0\.1 \(--max-per-source 2\)$'
		fi
		release "$T/hold$n" "$n"
		assert_children_ended "$p" "$n" 4
		stop_acceptor "$p"
	done
}

@test "SIGTERM with 50 open connections: each gets its replies, then close 1001; the parent exits 0 and no wsfilter is left" {
	start_acceptor
	# the replies wait for each client when the signal comes
	busy_clients_start 50
	local p kids all
	p=$(acceptor_parent)
	mapfile -t kids < <(serving "$ROOT_PID")
	assert_equal "${#kids[@]}" 50
	# and the spare
	mapfile -t all < <(descendants "$ROOT_PID")
	assert_equal "${#all[@]}" 51
	stop_acceptor "$p"
	busy_clients_closed 50
	run parent_lines "$p"
	assert_line 'stopping: 50 connections'
	assert_children_ended "$p" 50 0
	gone_or_kill 50 0.1 "${all[@]}" || fail "wsfilter processes left after the parent exited, of ${all[*]}"
}

@test "the parent killed by SIGKILL: each open connection gets close 1001 and its process exits 0, none is left behind" {
	start_acceptor
	local k logs kids
	for k in 1 2 3; do
		script_bg "$T/c.$k" hs head text:one frame wait:10 close:1001 eof
	done
	mapfile -t logs < <(seq -f "$T/c.%g" 1 3)
	wait_files_match 3 '^TEXT one - [0-9]+$' "${logs[@]}"
	local p
	p=$(acceptor_parent)
	mapfile -t kids < <(serving "$ROOT_PID")
	assert_equal "${#kids[@]}" 3
	# the spare too must go
	mapfile -t kids < <(descendants "$ROOT_PID")
	assert_equal "${#kids[@]}" 4
	kill -KILL "$ROOT_PID"
	for k in "${BG_PIDS[@]}"; do
		wait "$k" || fail "a client failed: $(tail -n 3 "${logs[@]}")"
	done
	for k in 1 2 3; do
		run cat "$T/c.$k"
		assert_line --regexp '^CLOSE 1001( |$)'
		assert_line EOF
	done
	assert_children_ended "$p" 3 0
	assert_equal "$(child_ends "$p" | grep -c ', close 1001 by server (server shutting down), exit 0$')" 3
	gone_or_kill 50 0.1 "${kids[@]}" || fail "children outlived their parent: ${kids[*]}"
}

@test "a child killed by SIGSYS (test build): the parent logs it, another open connection goes on, and new ones are served" {
	[ -x "$TOP/wsfilter-test-forbidden" ] || fail "no $TOP/wsfilter-test-forbidden (make wsfilter-test-forbidden)"
	WSFILTER=$TOP/wsfilter-test-forbidden
	start_acceptor --handshake-timeout 20
	sigsys_start_a
	local p
	p=$(acceptor_parent)
	check_sigsys_child "$p" "$ROOT_PID"
	# the parent lives on, the only one
	kill -0 "$ROOT_PID"
	assert_equal "$(acceptor_parents | wc -l)" 1
	stop_acceptor "$p"
}

@test "the parent and each connection's process run under seccomp (Seccomp: 2); a child under its parent's filter alone and without the gates' pages (x86_64; a spare without the first), else its own filter on top" {
	skip_if_sanitized "it runs without the seccomp filter"
	start_acceptor
	hold_serving 1
	local ps cs kids
	ps=$(cat "/proc/$ROOT_PID/status")
	cs=$(cat "/proc/${KIDS[0]}/status")
	echo "parent: $(grep -E '^(Seccomp|NoNewPrivs)' <<<"$ps" | paste -sd' ')"
	echo "child:  $(grep -E '^(Seccomp|NoNewPrivs)' <<<"$cs" | paste -sd' ')"
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$ps")" 2
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' <<<"$cs")" 2
	assert_equal "$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$cs")" 1
	assert_child_confined "$ROOT_PID" "${KIDS[0]}"
	mapfile -t kids < <(spares "$ROOT_PID")
	assert_equal "${#kids[@]}" 1
	assert_child_confined "$ROOT_PID" "${kids[0]}" spare
	release "$T/hold" 1
	assert_children_ended "$PARENT" 1 4
	stop_acceptor "$PARENT"
}

@test "without a gate (test build, as where there is none): each child installs its own filter on its parent's, and serves" {
	skip_if_sanitized "it runs without the seccomp filter"
	[ -x "$TOP/wsfilter-test-nogate" ] || fail "no $TOP/wsfilter-test-nogate (make wsfilter-test-nogate)"
	WSFILTER=$TOP/wsfilter-test-nogate
	start_acceptor
	hold_serving 2
	assert_equal "$(awk '/^Seccomp:/ { print $2 }' "/proc/$ROOT_PID/status")" 2
	assert_child_confined "$ROOT_PID" "${KIDS[0]}" nogate
	release "$T/hold" 2
	assert_children_ended "$PARENT" 2 4
	stop_acceptor "$PARENT"
}

@test "--spares 2: two processes wait, forked ahead; a connection goes to one of them and another is forked; they end quietly with the parent" {
	start_acceptor --spares 2
	check_page
	local p before kids all
	p=$(acceptor_parent)
	wait_spares "$ROOT_PID" 2
	mapfile -t before < <(spares "$ROOT_PID")
	hold_clients 1 "$T/hold"
	mapfile -t kids < <(serving "$ROOT_PID")
	assert_equal "${#kids[@]}" 1
	[[ " ${before[*]} " == *" ${kids[0]} "* ]] ||
		fail "the connection went to ${kids[0]}, not to a spare (${before[*]})"
	wait_spares "$ROOT_PID" 2
	release "$T/hold" 1
	assert_children_ended "$p" 2 "0|4"
	mapfile -t all < <(descendants "$ROOT_PID")
	assert_equal "${#all[@]}" 2
	stop_acceptor "$p"
	gone_or_kill 50 0.1 "${all[@]}" || fail "spares left after the parent exited: ${all[*]}"
	# a spare has nothing to log: only the two connections' lines
	assert_children_ended "$p" 2 "0|4"
	run parent_lines "$p"
	refute_line --partial spare
	refute_line --partial 'stop timeout'
}

@test "--spares 0: no process waits; each connection is forked when it comes, and served" {
	start_acceptor --spares 0
	check_page
	local p
	p=$(acceptor_parent)
	check_page
	assert_equal "$(descendants "$ROOT_PID" | wc -l)" 0
	assert_children_ended "$p" 2 0
	stop_acceptor "$p"
}

@test "a spare killed by SIGKILL: the parent logs it, and the next connection is served by a new one" {
	start_acceptor
	check_page
	local p s
	p=$(acceptor_parent)
	wait_spares "$ROOT_PID" 1
	s=$(spares "$ROOT_PID")
	kill -KILL "$s"
	wait_parent_line "$p" "^spare $s killed by SIGKILL\$"
	assert_equal "$(spares "$ROOT_PID" | wc -l)" 0
	check_page
	wait_spares "$ROOT_PID" 1
	assert_children_ended "$p" 2 0
	stop_acceptor "$p"
}

@test "the parent at its open-files limit with a client waiting: 'cannot accept' once a second with a count, no CPU spin; the client is served once the limit rises" {
	start_acceptor
	# the first connection: systemd-socket-activate execs the parent in its place
	check_page
	local p n cpu0 cpu1 fails client i
	p=$(acceptor_parent)
	wait_child_ends "$p" 1
	# a limit of the lowest descriptor it does not hold: accept4() fails with EMFILE. (The
	# hard limit goes down to 64 only: raising a hard limit takes CAP_SYS_RESOURCE.)
	n=$(lowest_free_fd "$p")
	echo "# the parent holds $(ls "/proc/$p/fd" | wc -l) descriptors: RLIMIT_NOFILE $n" >&3
	prlimit --pid "$p" --nofile="$n:64"
	cpu0=$(proc_cpu "$p")
	script_bg "$T/client" hs head text:hi frame close:1000 frame eof
	client=${BG_PIDS[-1]}
	wait_parent_line "$p" '^cannot accept: ' 2
	sleep 3
	cpu1=$(proc_cpu "$p")
	fails=$(parent_lines "$p" | grep '^cannot accept: ' || true)
	echo "# 3 s at EMFILE: $(wc -l <<<"$fails") 'cannot accept' lines, $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }') s of CPU" >&3
	printf '%s\n' "$fails"
	# once a second: the first one plain, the later ones with a count
	within 2 5 "$(wc -l <<<"$fails")"
	assert_equal "$(head -n 1 <<<"$fails")" 'cannot accept: Too many open files'
	if tail -n +2 <<<"$fails" | grep -vxE 'cannot accept: Too many open files \([0-9]+ more times?\)'; then
		fail "a later line without its count: $(tail -n +2 <<<"$fails")"
	fi
	within 0 0.3 "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')"
	# no answer meanwhile: the client waits in the backlog
	! grep -q '^STATUS ' "$T/client" || fail "an answer came at the limit: $(cat "$T/client")"
	kill -0 "$client"
	# the limit rises: the waiting client gets its 101 within 2 s, and the connection works
	prlimit --pid "$p" --nofile=64:64
	for i in $(seq 1 20); do
		grep -q '^STATUS ' "$T/client" && break
		sleep 0.1
	done
	run cat "$T/client"
	assert_line --index 0 'STATUS HTTP/1.1 101 Switching Protocols'
	wait "$client" || fail "the client failed: $(cat "$T/client")"
	run cat "$T/client"
	assert_line 'ACCEPT ok'
	assert_line --regexp '^TEXT hi - [0-9]+$'
	assert_line 'CLOSE 1000'
	assert_line 'EOF'
	assert_children_ended "$p" 2 0
	stop_acceptor "$p"
}

@test "--spares 0 with the parent one descriptor short of a spare's socket pair: the connection is closed, logged as that; served once the limit rises" {
	start_acceptor --spares 0
	check_page
	local p n
	p=$(acceptor_parent)
	wait_child_ends "$p" 1
	# room for the accepted connection's descriptor alone: the pair (two) fails with EMFILE
	n=$(lowest_free_fd "$p")
	prlimit --pid "$p" --nofile="$((n + 1)):64"
	script_bg "$T/client" hs head
	wait "${BG_PIDS[-1]}" || true
	run cat "$T/client"
	assert_output --regexp '^EOF in head after 0 bytes'
	wait_parent_line "$p" "^127\\.0\\.0\\.1:[0-9]+ closed: cannot make a spare's socket pair: Too many open files\$"
	prlimit --pid "$p" --nofile=64:64
	# the retry pause (ACCEPT_RETRY_MS) is past by the time this connects
	sleep 0.3
	check_page
	assert_children_ended "$p" 2 0
	stop_acceptor "$p"
}

# ---- openbsd-inetd `wait`: the listening socket is fds 0, 1 and 2 -----------

@test "openbsd-inetd wait: one wsfilter serves a burst of 10,000 pipelined messages and 20 clients at once, logging to syslog" {
	need_unshare
	start_inetd_wait
	run timeout 120 "$PY" "$CLIENTS/load_websockets.py" -n 10000 "$(url)"
	assert_success
	assert_output 'received 10000/10000 lost 0'
	check_concurrent 20 100
	local p
	p=$(acceptor_parent)
	assert_equal "$(acceptor_parents | wc -l)" 1
	# inetd started it, and it is still running
	assert_equal "$(ps -o ppid= -p "$p" | tr -d ' ')" "$ROOT_PID"
	run parent_lines "$p"
	assert_line --index 0 --regexp "^accepting on 127\.0\.0\.1:$PORT, at most [0-9]+ connections$"
	assert_children_ended "$p" 21 0
	assert_equal "$(child_ends "$p" | grep -c ' in 10000 msg .* out 10000 msg .*, exit 0$')" 1
	stop_acceptor "$p"
}

@test "openbsd-inetd wait with --idle-exit 1: the parent exits 0 when idle and inetd starts a new one on the next connection" {
	need_unshare
	start_inetd_wait --idle-exit 1
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" -n 100 "$(url)"
	assert_output 'received 100/100 lost 0'
	local p1 p2
	p1=$(acceptor_parent)
	wait_parent_line "$p1" '^idle for 1 s: exiting$' 10
	wait_gone 100 0.1 "$p1" || fail "the parent still runs after its idle line"
	# inetd reaped it with status 0
	local i
	for i in $(seq 1 50); do
		grep -qx "$p1 reaped, status 0" "$T/inetd.log" && break
		sleep 0.1
	done
	run cat "$T/inetd.log"
	assert_line "$p1 reaped, status 0"
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" -n 100 "$(url)"
	assert_output 'received 100/100 lost 0'
	p2=$(acceptor_parent)
	[ "$p2" != "$p1" ] || fail "no new parent after the idle exit"
	assert_equal "$(acceptor_parents | wc -l)" 2
	assert_children_ended "$p1" 2 0
	assert_equal "$(child_ends "$p1" | grep -c ' in 100 msg .*, exit 0$')" 2
	stop_acceptor "$p2"
	refute_killed "$p2"
}
