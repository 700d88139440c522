#!/usr/bin/env bats
# What the launchers really hand wsfilter, and what operators see: the
# connection on fds 0, 1 and 2 at once (inetd, xinetd), fd 3 from systemd,
# tcpserver's environment, signals, health checks, keepalive pings, the peer
# named in the log line, and the exit status of every way a connection ends.
#
# Each connection is scripted with ops (lib/common.bash: `wstest.py script`, which
# prints a transcript of what the client saw); the tests assert on that transcript.

load lib/common

setup() {
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
	LAUNCHER_PID=
}

teardown() {
	if [ -n "$LAUNCHER_PID" ]; then
		stop_tree "$LAUNCHER_PID"
	fi
}

# start_ssa_echo LOG / start_tcpserver_at LOG: a launcher on $PORT (for start_on_port)
start_ssa_echo() {
	systemd-socket-activate -l "127.0.0.1:$PORT" --accept "$WSFILTER" --echo </dev/null >/dev/null 2>"$1" 3>&- &
	LAUNCH_PID=$! LAUNCHER_PID=$!
}
start_tcpserver_at() {
	tcpserver -HRl0 127.0.0.1 "$PORT" "$WSFILTER" </dev/null >/dev/null 2>"$1" 3>&- &
	LAUNCH_PID=$! LAUNCHER_PID=$!
}

# wait_for_line FILE REGEX: wait up to 5 s for a line matching REGEX in FILE.
wait_for_line() {
	local i
	for i in $(seq 1 50); do
		grep -Eq -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "no line matching /$2/ in $1:" >&2
	cat "$1" >&2
	return 1
}

# A WebSocket upgrade by POST: a handshake error (405).
POST_UPGRADE='POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'

# ==== 1. inetd and xinetd: fd 2 is the client's socket ======================

@test "inetd (fds 0, 1, 2 one socket): a normal close puts only the 101 head, replies and close frame on the wire, then EOF" {
	run ops --expect 0 --stderr socket hs head text:one text:two text:three frame frame frame close:1000 frame eof -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "TEXT one" "TEXT two" "TEXT three" "CLOSE 1000" "EOF" "EXIT 0"
}

@test "inetd (fds 0, 1, 2 one socket): a protocol error puts only close 1002 after the head, then EOF" {
	run ops --expect 3 --stderr socket hs head unmasked:x frame eof -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "CLOSE 1002 unmasked client frame" "EOF" "EXIT 3"
}

@test "inetd (fds 0, 1, 2 one socket): a handshake error body is exactly Content-Length bytes, then EOF" {
	run ops --expect 3 --stderr socket "send:$POST_UPGRADE" head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 405 Method Not Allowed"
	refute_line --partial "BADHEAD"
	refute_line --partial "EXTRA"
	# the body is the Content-Length bytes read by "body"; the next event is EOF
	assert_equal "$(grep -A1 '^BODY ' <<<"$output" | sed 1d)" "EOF"
	assert_line --regexp '^BODY [0-9]+ 405 '
	assert_line "EXIT 3"
}

@test "inetd harness check: text written to fd 2 does reach the client in this set-up" {
	# A launcher stand-in that writes to fd 2 before it starts wsfilter: if the
	# harness could not see fd 2 text, the tests above would prove nothing.
	local wrapper="$BATS_TEST_TMPDIR/noisy-wsfilter"
	printf '#!/bin/sh\necho "wsfilter: stray text on fd 2" >&2\nexec "%s" "$@"\n' "$WSFILTER" >"$wrapper"
	chmod +x "$wrapper"
	WSFILTER="$wrapper" run ops --expect 0 --stderr socket hs head text:one frame close:1000 frame eof -- --echo
	# the stray text is caught: it spoils the status line, and the run fails
	assert_failure
	assert_line --partial "wsfilter: stray text on fd 2"
	assert_line --regexp '^MALFORMED: bad status line'
	refute_line "STATUS HTTP/1.1 101 Switching Protocols"
	# and nothing else is wrong: wsfilter itself ended well
	assert_line "EXIT 0"
	refute_line --partial "FAIL:"
}

@test "inetd with --log=auto: the log line goes to /dev/log (a fake one in a private mount namespace), not the socket" {
	need_unshare
	run ops_devlog --expect 0 --stderr socket hs head text:one text:two frame frame close:1000 frame eof -- --echo
	assert_success
	local port
	port=$(client_port)
	[ -n "$port" ] || fail "no CLIENT line"
	expect_transcript "${HEAD_101[@]}" "TEXT one" "TEXT two" "CLOSE 1000" "EOF" "EXIT 0" \
		"$(grep '^SYSLOG ' <<<"$output")"
	assert_equal "$(grep -c '^SYSLOG ' <<<"$output")" 1
	# LOG_DAEMON | LOG_INFO, tag wsfilter[pid]
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port websocket [0-9.]+s, in 2 msg 6 B, out 2 msg 6 B, close 1000 by client, exit 0\$"
}

@test "inetd with --log=auto and a handshake error: the line for the error goes to /dev/log too" {
	need_unshare
	run ops_devlog --expect 3 --stderr socket "send:$POST_UPGRADE" head body eof
	assert_success
	refute_line --partial "EXTRA"
	assert_line "EXIT 3"
	assert_line --regexp '^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ http 405 .*exit 3$'
}

# ==== 2. systemd Accept=yes without --inetd: the connection is fd 3 ==========

@test "systemd-socket-activate --accept (fd 3, LISTEN_FDS=1): the client gets its replies and the log names the peer" {
	local log="$BATS_TEST_TMPDIR/launcher.err"
	# stdin is /dev/null: replies can only come from fd 3
	start_on_port 127.0.0.1 start_ssa_echo "$log"
	run ops --connect "127.0.0.1:$PORT" hs head text:one text:two frame frame close:1000 frame eof
	assert_success
	assert_equal "$output" "$(printf '%s\n' "${HEAD_101[@]}" "TEXT one" "TEXT two" "CLOSE 1000" "EOF")"
	wait_for_line "$log" "^${LOGP}127\.0\.0\.1:[0-9]+ websocket .* in 2 msg 6 B, out 2 msg 6 B, close 1000 by client, exit 0\$"
	assert_children_ended_well "$log"
}

# ==== 3. Stopping: SIGTERM, SIGINT, SIGHUP ===================================

# stop_with SIG: three messages and their replies, then SIG: close 1001, exit 0
# within 2 s of the signal (the client answers the close, as clients do).
stop_with() {
	run ops --expect 0 hs head text:one text:two text:three frame frame frame "signal:$1" frame close:1001 eof exit-within:2 -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "TEXT one" "TEXT two" "TEXT three" \
		"CLOSE 1001 server shutting down" "EOF" "EXITED 0" "EXIT 0" \
		"$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ websocket .* in 3 msg 11 B, out 3 msg 11 B, close 1001 by server \(.*\), exit 0\$"
}

@test "SIGTERM: the client gets its replies, then close 1001; wsfilter exits 0 within 2 s" {
	stop_with TERM
}

@test "SIGINT: the client gets its replies, then close 1001; wsfilter exits 0 within 2 s" {
	stop_with INT
}

@test "SIGHUP: the client gets its replies, then close 1001; wsfilter exits 0 within 2 s" {
	stop_with HUP
}

# ==== 4. HTTP for operators ==================================================

@test "GET /healthz: 200 \"ok\", no-store, Content-Length 2, Connection: close; logged as a health check, exit 0" {
	run ops --expect 0 req:GET:/healthz head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "H cache-control: no-store"
	assert_line "H content-length: 2"
	assert_line "H connection: close"
	assert_line "BODY 2 ok"
	assert_equal "$(grep -A1 '^BODY ' <<<"$output" | sed 1d)" "EOF"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 200 health check .*exit 0\$"
}

@test "HEAD /healthz: the GET headers and no body; logged as a health check, exit 0" {
	run ops --expect 0 req:HEAD:/healthz head eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "H cache-control: no-store"
	assert_line "H content-length: 2"
	assert_line "H connection: close"
	refute_line --partial "EXTRA"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* http 200 health check .*exit 0\$"
}

@test "HEAD /: Content-Length is the size of web/index.html, no body, and a CSP with connect-src" {
	local size
	size=$(stat -c %s "$TOP/web/index.html")
	run ops --expect 0 req:HEAD:/ head eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "H content-type: text/html; charset=utf-8"
	assert_line "H content-length: $size"
	assert_line --regexp "^H content-security-policy: .*connect-src "
	refute_line --partial "EXTRA"
	assert_line "EXIT 0"
}

# ==== 5. Dead peers: keepalive pings =========================================

@test "ping timeout: a client that never answers pings gets close 1011 (no pong), exit 5" {
	run ops --expect 5 hs head wait:6 pings eof -- --ping-interval 1 --ping-timeout 1
	assert_success
	expect_transcript "${HEAD_101[@]}" "CLOSE 1011 no pong within 1 s" "PINGS 1" "EOF" "EXIT 5" \
		"$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}.* close 1011 by server \(no pong within 1 s\), exit 5\$"
}

@test "pings: a client that answers them is still connected after 3 s, and got pings" {
	run ops --expect 0 --pong hs head wait:3 pings open close:1000 frame eof -- --ping-interval 1 --ping-timeout 2
	assert_success
	refute_line --regexp '^CLOSE 1011'
	assert_line --regexp '^PINGS [1-9][0-9]*$'
	assert_line "OPEN"
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
}

@test "pings: the pong clock starts when the ping is written, not while it waits behind a full output queue" {
	# Kernel buffers of 64 KiB; the client fills wsfilter's queues and then reads
	# nothing for 3.5 s, past the first ping (2 s) plus its timeout (1 s). The
	# ping waits in wsfilter's queue behind the replies, so no 1011 may come:
	# once the client reads, it gets every reply and answers the ping.
	# --send-timeout 5: a client that takes no byte for the ping timeout is
	# otherwise gone (the send timeout defaults to the ping timeout).
	run ops --expect 0 --small-buffers --pong hs head flood:16384 sleep:3.5 drain pings close:1000 frame eof \
		-- --echo --ping-interval 2 --ping-timeout 1 --send-timeout 5
	local flood n secs
	flood=$(grep '^FLOODED ' <<<"$output")
	n=$(cut -d' ' -f2 <<<"$flood")
	secs=$(cut -d' ' -f4 <<<"$flood")
	[ -n "$n" ] || fail "no FLOODED line: $output"
	if awk -v s="$secs" 'BEGIN { exit !(s >= 1.5) }'; then
		skip "filling the queues took $secs s, too close to the first ping"
	fi
	assert_success
	refute_line --regexp '^CLOSE 1011'
	assert_line "DRAINED $n/$n"
	assert_line --regexp '^PINGS [1-9][0-9]*$'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
}

# ==== 6. Who the peer is =====================================================

# peer_log ENV...: the log line of a health check with these --env settings.
peer_log() {
	local args=() e
	for e in "$@"; do
		args+=(--env "$e")
	done
	run ops --expect 0 "${args[@]}" req:GET:/healthz head body eof
	assert_success
	assert_line "EXIT 0"
}

@test "peer: REMOTE_ADDR/REMOTE_PORT come first" {
	peer_log REMOTE_ADDR=192.0.2.1 REMOTE_PORT=1001 TCPREMOTEIP=192.0.2.2 TCPREMOTEPORT=1002 \
		SOCAT_PEERADDR=192.0.2.3 SOCAT_PEERPORT=1003
	assert_line --regexp "^LOG ${LOGP}192\.0\.2\.1:1001 http 200 "
}

@test "peer: then TCPREMOTEIP/TCPREMOTEPORT (tcpserver)" {
	peer_log TCPREMOTEIP=192.0.2.2 TCPREMOTEPORT=1002 SOCAT_PEERADDR=192.0.2.3 SOCAT_PEERPORT=1003
	assert_line --regexp "^LOG ${LOGP}192\.0\.2\.2:1002 http 200 "
}

@test "peer: then SOCAT_PEERADDR/SOCAT_PEERPORT (socat)" {
	peer_log SOCAT_PEERADDR=192.0.2.3 SOCAT_PEERPORT=1003
	assert_line --regexp "^LOG ${LOGP}192\.0\.2\.3:1003 http 200 "
}

@test "peer: with no launcher variables, getpeername of the accepted TCP socket" {
	peer_log
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:$(client_port) http 200 "
}

@test "peer: an IPv6 REMOTE_ADDR is written in brackets before the port" {
	peer_log REMOTE_ADDR=2001:db8::1 REMOTE_PORT=1001
	assert_line --regexp "^LOG ${LOGP}\[2001:db8::1\]:1001 http 200 "
}

@test "peer: X-Forwarded-For is logged with --trust-proxy" {
	run ops --expect 0 --header "X-Forwarded-For: 203.0.113.7" hs head close:1000 frame eof -- --trust-proxy
	assert_success
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:$(client_port) for 203\.0\.113\.7 websocket "
}

@test "peer: X-Forwarded-For is ignored without --trust-proxy" {
	run ops --expect 0 --header "X-Forwarded-For: 203.0.113.7" hs head close:1000 frame eof
	assert_success
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:$(client_port) websocket "
	refute_output --partial "203.0.113.7"
}

@test "peer: control characters in REMOTE_ADDR come out as '?' (one log line, no escape sequences)" {
	peer_log 'REMOTE_ADDR=10.0.0.1\x1b[31m\nforged line\x7f"' REMOTE_PORT=5
	assert_equal "$(grep -c '^LOG ' <<<"$output")" 1
	assert_line --regexp "^LOG ${LOGP}10\.0\.0\.1\?\[31m\?forged line\?\?:5 http 200 "
	refute_output --partial $'\x1b'
}

@test "peer: a 500-character REMOTE_ADDR is capped in the log line" {
	local long
	long=$(printf 'a%.0s' $(seq 1 500))
	peer_log "REMOTE_ADDR=$long" REMOTE_PORT=5
	assert_equal "$(grep -c '^LOG ' <<<"$output")" 1
	# the peer text is capped at PEER_MAX - 1 = 79 characters: 79 a's, the port cut off
	assert_line --regexp "^LOG ${LOGP}a{79} http 200 health check "
}

# ==== 7. Exit status and the log line ========================================

@test "exit 0: the client closes with 1000 (logged: close 1000 by client)" {
	run ops --expect 0 hs head text:hi frame close:1000 frame eof -- --echo
	assert_success
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* websocket .* close 1000 by client, exit 0\$"
}

@test "exit 0: the page is served (logged: http 200 page)" {
	run ops --expect 0 req:GET:/ head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* http 200 page .*exit 0\$"
}

@test "exit 3: an unmasked client frame (close 1002 and its reason in the log)" {
	run ops --expect 3 hs head unmasked:x frame eof
	assert_success
	assert_line "CLOSE 1002 unmasked client frame"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}.* close 1002 by server \(unmasked client frame\), exit 3\$"
}

@test "exit 3: HTTP 400 for an upgrade without Sec-WebSocket-Key (status and reason in the log)" {
	run ops --expect 3 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}.* http 400 .*\(.*Sec-WebSocket-Key.*\), exit 3\$"
}

@test "exit 4: EOF in the middle of a frame's payload, without a close" {
	run ops --expect 4 hs head text:hi frame trunc eof -- --echo
	assert_success
	assert_line "TEXT hi"
	assert_line "EOF"
	assert_line "EXIT 4"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*\(client left without a close.*\), exit 4\$"
}

@test "exit 5: handshake timeout with a partial request head (408)" {
	run ops --expect 5 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' head body eof -- --handshake-timeout 1
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 408 Request Timeout"
	refute_line --partial "EXTRA"
	assert_line "EXIT 5"
	assert_line --regexp "^LOG ${LOGP}.* http 408 .*exit 5\$"
}

@test "exit 5: handshake timeout without a single byte (nothing sent back)" {
	run ops --expect 5 eof -- --handshake-timeout 1
	assert_success
	expect_transcript "EOF" "EXIT 5" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}.* no request .*\(no request within 1 s\), exit 5\$"
}

@test "exit 5: idle timeout (close 1001 \"idle for 1 s\"; close code and reason in the log)" {
	run ops --expect 5 hs head frame close:1001 eof -- --idle-timeout 1
	assert_success
	assert_line "CLOSE 1001 idle for 1 s"
	assert_line "EXIT 5"
	assert_line --regexp "^LOG ${LOGP}.* websocket .* close 1001 by server \(idle.*\), exit 5\$"
}

@test "exit 2: an unknown option is a usage error" {
	run "$WSFILTER" --no-such-option </dev/null
	assert_failure 2
	assert_output --partial "usage:"
}

@test "exit 2: a bad option value is a usage error" {
	run "$WSFILTER" --ping-interval soon </dev/null
	assert_failure 2
	assert_output --partial "--ping-interval"
}

# ==== 8. tcpserver (ucspi-tcp) ===============================================

@test "tcpserver -HRl0: the client gets its replies and the log names the peer (TCPREMOTEIP/PORT)" {
	local log="$BATS_TEST_TMPDIR/launcher.err"
	start_on_port 127.0.0.1 start_tcpserver_at "$log"
	run ops --connect "127.0.0.1:$PORT" --timeout 5 hs head text:one text:two frame frame close:1000 frame eof
	assert_success
	assert_line --index 0 "STATUS HTTP/1.1 101 Switching Protocols"
	assert_line --regexp '^TEXT one - [0-9]+$'
	assert_line --regexp '^TEXT two - [0-9]+$'
	assert_line "CLOSE 1000"
	assert_line "EOF"
	wait_for_line "$log" "^${LOGP}127\.0\.0\.1:[0-9]+ websocket .* close 1000 by client, exit 0\$"
}

# ==== 9. Signals at the edges, IPv6, where the log goes =======================

@test "SIGTERM during the handshake: wsfilter exits 0 at once and sends no byte" {
	run ops --expect 0 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' sleep:0.3 signal:TERM exit-within:2 eof \
		-- --handshake-timeout 10
	assert_success
	expect_transcript "EXITED 0" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ no request .*exit 0$"
}

@test "SIGTERM before any byte: exit 0, nothing sent" {
	run ops --expect 0 sleep:0.3 signal:TERM exit-within:2 eof -- --handshake-timeout 10
	assert_success
	expect_transcript "EXITED 0" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
}

@test "a second signal while wsfilter waits for the client's close ends it at once" {
	# --close-timeout 10: after the first TERM, wsfilter sends close 1001 and waits for
	# the client, which does not answer; a second TERM ends the wait
	run ops --expect 0 hs head text:one frame signal:TERM frame sleep:1 alive signal:TERM exit-within:1 eof \
		-- --close-timeout 10 --random-max 1
	assert_success
	assert_line "TEXT one - 1"
	assert_line "CLOSE 1001 server shutting down"
	assert_line "ALIVE"
	assert_line "EXITED 0"
	assert_line "EXIT 0"
}

@test "peer: an IPv6 client (::1) is written as [::1]:port" {
	run ops --expect 0 --ipv6 req:GET:/healthz head body eof
	assert_success
	local port
	port=$(sed -n '1s/^CLIENT \[::1\]:\([0-9]*\)$/\1/p' <<<"$output")
	[ -n "$port" ] || fail "no CLIENT line: $output"
	assert_line --regexp "^LOG ${LOGP}\[::1\]:$port http 200 health check "
}

@test "--log=none: no log line anywhere" {
	run ops --expect 0 req:GET:/healthz head body eof -- --log=none
	assert_success
	assert_line "BODY 2 ok"
	refute_line --regexp '^LOG '
	# and under inetd nothing but the answer reaches the socket
	run ops --expect 0 --stderr socket req:GET:/healthz head body eof -- --log=none
	assert_success
	refute_line --partial "EXTRA"
	refute_line --regexp '^LOG '
}

@test "--log=syslog: the line goes to /dev/log (a fake one in a private mount namespace), not to stderr" {
	need_unshare
	run ops_devlog --expect 0 req:GET:/healthz head body eof -- --log=syslog
	assert_success
	refute_line --regexp '^LOG '
	assert_equal "$(grep -c '^SYSLOG ' <<<"$output")" 1
	assert_line --regexp '^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ http 200 health check .*exit 0$'
}
