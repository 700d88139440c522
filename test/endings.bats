#!/usr/bin/env bats
# Issue 13: every connection ends, bounded and complete. A client that takes
# its replies late still gets all of them; one that takes nothing (or sends
# nothing) is gone within the timeouts; nothing but protocol bytes reaches
# the client's socket; strict HTTP heads; a Date on every plain answer.
#
# `wstest.py script` (test/lib/wstest.py; see its --help) starts wsfilter on an
# accepted loopback TCP socket (fds 0/1; with --stderr socket 0/1/2 like inetd;
# with --pipes two pipes), runs the steps and prints a transcript ("STATUS ...",
# "TEXT ...", "CLOSE 1000", "EOF", "EXIT 0", "LOG <stderr line>"). Every run
# names the exit status wsfilter must end with (--expect); a death by a signal,
# a malformed answer or a step that runs out of time fail the run.

load lib/common

setup() {
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
}

# Every wsfilter here is started by wstest.py (which kills what it started when
# it exits) or by `timeout -s KILL`: nothing is left running after a test.

# ops [--expect STATUS] STEP... [-- WSFILTER-ARGS]: one scripted connection.
ops() {
	timeout -s KILL 60 "$PY" "$LIB/wstest.py" script "$@"
}

# ops_devlog ...: the same in a private mount namespace whose /dev/log is the
# script's (--syslog /dev/log prints what arrives there as SYSLOG lines).
ops_devlog() {
	mkdir -p "$BATS_TEST_TMPDIR/realdev"
	timeout -s KILL 60 "$LIB/fake-devlog.sh" "$BATS_TEST_TMPDIR/realdev" \
		"$PY" "$LIB/wstest.py" script --syslog /dev/log "$@"
}

need_unshare() {
	unshare --mount true 2>/dev/null || skip "unshare --mount is not permitted here (needs root)"
}

# expect_transcript LINE...: the transcript without its CLIENT line is exactly these.
expect_transcript() {
	assert_equal "$(sed 1d <<<"$output")" "$(printf '%s\n' "$@")"
}

# field NAME: the number after "NAME " in the transcript (the first such line).
field() {
	sed -n "s/^$1 \([0-9.]*\)\$/\1/p" <<<"$output" | head -1
}

# assert_http_date: exactly one Date header, an IMF-fixdate (RFC 9110 5.6.7)
# that names a real instant (weekday included) within a minute of now.
assert_http_date() {
	local d t now
	assert_equal "$(grep -c '^H date: ' <<<"$output")" 1
	d=$(sed -n 's/^H date: //p' <<<"$output")
	[[ $d =~ ^(Mon|Tue|Wed|Thu|Fri|Sat|Sun),\ [0-3][0-9]\ (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\ [0-9]{4}\ [0-2][0-9]:[0-5][0-9]:[0-6][0-9]\ GMT$ ]] ||
		fail "Date '$d' is not an IMF-fixdate"
	t=$(LC_ALL=C date -u -d "$d" +%s) || fail "Date '$d' does not parse"
	assert_equal "$(LC_ALL=C date -u -d "@$t" '+%a, %d %b %Y %H:%M:%S GMT')" "$d"
	now=$(date +%s)
	((t >= now - 60 && t <= now + 60)) || fail "Date '$d' is not within a minute of now"
}

HEAD_101=(
	"STATUS HTTP/1.1 101 Switching Protocols"
	"H upgrade: websocket"
	"H connection: Upgrade"
	"H sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	"ACCEPT ok"
)

# The upgrade headers of RFC 6455's sample request, after a request line and a Host.
UPG='Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'

# ==== 1. A reader that comes late gets everything ============================

@test "row 1: a client with a 4 KiB window that starts reading 3.5 s after its close gets the whole 200 KB reply and the close; out counts bytes written, exit 0" {
	# 64 KiB kernel buffers on wsfilter's side (as a remote client's slow window
	# would keep them): most of the reply waits in wsfilter's own queue, and the
	# close timeout (2 s) must not run while it does.
	run ops --expect 0 --small-buffers --rcvbuf 4096 --max-show 100 \
		hs head big:200000 close:1000 sleep:3.5 frame frame eof -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "TEXT <pattern 200000>" "CLOSE 1000" "EOF" "EXIT 0" \
		"$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ websocket [0-9]+\.[0-9]{3}s, in 1 msg 200000 B, out 1 msg 200000 B, close 1000 by client, exit 0\$"
}

@test "the close timeout runs from the last byte written: a slow reader of a large reply is given it all, then --close-timeout 1 from there" {
	# The client sends a 200 KB message and its close at once, then reads the reply
	# at 100 KB/s (about 2 s) and never sends EOF: wsfilter's last byte (the close
	# frame) is written only near the end, and the 1 s close timeout counts from it.
	run ops --expect 0 --small-buffers --rcvbuf 4096 --max-show 100 \
		hs head rate:100000 big:200000 close:1000 mark frame frame elapsed mark exit-within:3 elapsed \
		-- --echo --close-timeout 1
	assert_success
	assert_line "TEXT <pattern 200000>"
	assert_line "CLOSE 1000"
	assert_line "EXITED 0"
	assert_line "EXIT 0"
	local t
	t=($(sed -n 's/^ELAPSED //p' <<<"$output"))
	[ "${#t[@]}" = 2 ] || fail "two ELAPSED lines expected: $output"
	# the reply took longer to read than the close timeout...
	within 1.5 10 "${t[0]}"
	# ...and wsfilter stayed until about 1 s after the client had read its last byte
	within 0.5 1.6 "${t[1]}"
	assert_line --regexp "^LOG ${LOGP}.* out 1 msg 200000 B, close 1000 by client, exit 0\$"
}

# ==== 2. Pipes after EOF: no spin; the send timeout ==========================

@test "row 2: pipes, the client half-closes and never reads: no CPU spin while wsfilter waits, the send timeout ends it, exit 5" {
	# 350 000 bytes fill wsfilter's stdout pipe (64 KiB) and its queue (256 KiB),
	# the rest sits in its input buffer: it reads the EOF with its queue full,
	# stdin is finished, and only the send timeout (4 s) can end the connection.
	run ops --expect 5 --pipes hs head big:350000 shut mark sleep:3 cpu exit-within:6 elapsed \
		-- --echo --send-timeout 4
	assert_success
	assert_line "EXITED 5"
	# 3 s of waiting with stdin at EOF: a spinning poll would burn them all
	within 0 0.2 "$(field CPU)"
	within 2.5 5.5 "$(field ELAPSED)"
	assert_line --regexp "^LOG ${LOGP}stdin websocket .*, [0-9]+ B unsent \(client took no bytes for 4 s\), exit 5\$"
}

@test "row 2: pipes, a client that sends a request, half-closes and never reads is ended by the send timeout with exit 5" {
	# The reply (200 KB) fits wsfilter's queue: it reads the EOF with room to
	# spare, before the send timeout. The end still comes from the send timeout
	# (output pending, no byte taken for 2 s), so the status is 5 as for any
	# client that takes no bytes -- not 4 ("left without a close"): a half-closed
	# client has not left, it could still read.
	run ops --expect 5 --pipes hs head big:200000 shut mark sleep:1 cpu exit-within:4 \
		-- --echo --send-timeout 2
	within 0 0.2 "$(field CPU)"
	assert_line --regexp "^LOG ${LOGP}stdin websocket .*, [0-9]+ B unsent \(client took no bytes for 2 s\), exit 5\$"
	assert_line "EXIT 5"
	assert_success
}

@test "row 2: LISTEN_FDS=1 with fd 3 closed: usage error, exit 2 at once; a listening socket on fd 3 makes the acceptor, which a SIGTERM stops with exit 0" {
	local t0 t1
	t0=$(date +%s%N)
	run timeout -s KILL 5 sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0"' "$WSFILTER" 3<&- </dev/null
	t1=$(date +%s%N)
	assert_equal "$status" 2
	assert_output --partial "descriptor 3 is not open"
	within 0 2 "$(((t1 - t0) / 1000000))e-3"
	# a launcher without Accept=yes hands over its listening socket: it is
	# not a connection that "left before a request" (exit 4), and it is
	# not a usage error either
	run timeout --preserve-status -k 5 -s TERM 1 "$PY" -c '
import os, socket, sys
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
os.dup2(l.fileno(), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[1], sys.argv[1:])' "$WSFILTER" --log=stderr </dev/null
	assert_equal "$status" 0
	assert_line --regexp "^${LOGP}accepting on 127\.0\.0\.1:[0-9]+, at most 4096 connections\$"
	assert_line --regexp "^${LOGP}stopping: 0 connections\$"
	assert_line --regexp "^${LOGP}stopped\$"
}

# ==== 3. A client that takes nothing, and one that takes slowly ==============

@test "SIGTERM while a client has megabytes of pipelined input unread: every reply queued before it and the close 1001 still reach it, exit 0" {
	# The flood leaves wsfilter's 256 KiB queue full and several MiB in the
	# kernel's buffers; the signal ends the connection, and the input after
	# it is read and dropped (or left unread) while the queue goes out.
	run ops --expect 0 hs head flood:16384 signal:TERM count:8 eof exit-within:5 \
		-- --echo --close-timeout 1
	assert_success
	local flooded counted
	flooded=$(sed -n 's/^FLOODED \([0-9]*\) in .*/\1/p' <<<"$output")
	counted=$(sed -n 's/^COUNTED \([0-9]*\) messages .*/\1/p' <<<"$output")
	((flooded * 16384 > 2 * 1024 * 1024)) || fail "only $flooded messages flooded"
	((counted > 0)) || fail "no reply came"
	assert_line "CLOSE 1001 server shutting down"
	assert_line "EXITED 0"
	# every message wsfilter took is answered: nothing queued is cut
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, in $counted msg [0-9]+ B, out $counted msg [0-9]+ B, close 1001 by server \(server shutting down\), exit 0\$"
}

@test "row 3: a client that keeps sending and never reads is gone within a few seconds (--ping-interval 1 --ping-timeout 1), exit 5" {
	# It sends until its sends stall (wsfilter stopped reading: its queue is
	# full), then waits without reading.
	run ops --expect 5 --small-buffers hs head flood:16384 mark exit-within:8 elapsed \
		-- --echo --ping-interval 1 --ping-timeout 1
	assert_success
	assert_line --regexp '^FLOODED [0-9]+ in '
	assert_line "EXITED 5"
	within 0 8 "$(field ELAPSED)"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, [0-9]+ B unsent \(client took no bytes for 1 s\), exit 5\$"
}

@test "row 3: a client that reads slowly but steadily (120 KB/s, answering pings) behind a full queue is never dropped: every reply in order, exit 0" {
	# The flood stalls only once wsfilter stops reading, that is with its 256 KiB
	# queue full; then the client reads everything at 120 KB/s (about 6 s, three
	# times the send and ping timeouts of 2 s), answering the pings. About 160 KB
	# sit in the kernel between wsfilter and the reader, which takes them for up to
	# 1.3 s without wsfilter writing a byte: the clocks count what the client has
	# taken (the socket's unacked bytes), so it is not dropped. (With 1 s the pong
	# clock itself is too short for this reader: a ping that reaches its kernel
	# still waits behind up to 64 KiB of its receive buffer, 0.5 s of reading.)
	run ops --expect 0 --small-buffers --pong hs head flood:16384 drain:120000 pings close:1000 frame eof \
		-- --echo --ping-interval 1 --ping-timeout 2
	assert_success
	local n
	n=$(sed -n 's/^FLOODED \([0-9]*\) in .*/\1/p' <<<"$output")
	[ -n "$n" ] || fail "no FLOODED line"
	((n * 16384 > 256 * 1024)) || fail "only $n messages flooded"
	assert_line "DRAINED $n/$n"
	refute_line --partial "ORDER:"
	refute_line --regexp '^CLOSE 1011'
	assert_line --regexp '^PINGS [1-9][0-9]*$'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, in $n msg $((n * 16384)) B, out $n msg $((n * 16384)) B, close 1000 by client, exit 0\$"
}

# ==== 4. A silent peer: keepalive ============================================

@test "row 3: the send timeout counts what the client has taken: a steady 120 KB/s reader is not dropped with --send-timeout 1" {
	# pings off: only the send timeout could drop this reader. Up to 1.3 s pass
	# without a write while the kernel's 160 KB drain; the bytes the client takes
	# meanwhile (the socket's unacked count falling) are progress.
	run ops --expect 0 --small-buffers hs head flood:16384 drain:120000 close:1000 frame eof \
		-- --echo --ping-interval 0 --send-timeout 1
	assert_success
	local n
	n=$(sed -n 's/^FLOODED \([0-9]*\) in .*/\1/p' <<<"$output")
	[ -n "$n" ] || fail "no FLOODED line"
	((n * 16384 > 256 * 1024)) || fail "only $n messages flooded"
	assert_line "DRAINED $n/$n"
	refute_line --partial "ORDER:"
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, in $n msg $((n * 16384)) B, out $n msg $((n * 16384)) B, close 1000 by client, exit 0\$"
}

@test "row 4: a silent peer gets a ping after the default 20 s and, without a pong, close 1011 (no pong within 2 s), exit 5" {
	# The default interval is waited for once (20 s); the pong timeout is cut to
	# 2 s, its default (the interval: 20 s) is read from --help.
	run "$WSFILTER" --help
	assert_success
	assert_output --regexp '--ping-interval S +keepalive ping every S seconds \(default 20; 0: off\)'
	assert_output --regexp '--ping-timeout S +close with 1011 when no pong comes \(default: interval\)'
	assert_output --regexp '--send-timeout S +a client that takes no byte of pending output for S'
	run ops --expect 5 --timeout 30 hs head mark ping elapsed wait:5 elapsed pings eof -- --ping-timeout 2
	assert_success
	local t
	t=($(sed -n 's/^ELAPSED //p' <<<"$output"))
	expect_transcript "${HEAD_101[@]}" "PING wsfilter" "ELAPSED ${t[0]}" "CLOSE 1011 no pong within 2 s" \
		"ELAPSED ${t[1]}" "PINGS 1" "EOF" "EXIT 5" "$(grep '^LOG ' <<<"$output")"
	within 19.5 21.5 "${t[0]}"
	within 21.5 23.5 "${t[1]}"
	assert_line --regexp "^LOG ${LOGP}.* close 1011 by server \(no pong within 2 s\), exit 5\$"
}

# ==== 5. inetd: nothing but protocol bytes on the client's socket ============

@test "row 5: inetd (fds 0, 1, 2 = socket) with --no-such-option: the client gets no byte, exit 2; the message goes to /dev/log" {
	run ops --expect 2 --stderr socket eof -- --no-such-option
	assert_success
	expect_transcript "EOF" "EXIT 2"
	need_unshare
	run ops_devlog --expect 2 --stderr socket eof -- --no-such-option
	assert_success
	expect_transcript "EOF" "EXIT 2" "$(grep '^SYSLOG ' <<<"$output")"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: unknown option '--no-such-option'\$"
}

@test "row 5: SIGTERM during the handshake with --log=stderr and fds 0, 1, 2 = socket: no log text reaches the client" {
	run ops --expect 0 --stderr socket 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' sleep:0.3 signal:TERM \
		exit-within:2 eof -- --log=stderr --handshake-timeout 10
	assert_success
	expect_transcript "EXITED 0" "EOF" "EXIT 0"
	need_unshare
	run ops_devlog --expect 0 --stderr socket 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' sleep:0.3 signal:TERM \
		exit-within:2 eof -- --log=stderr --handshake-timeout 10
	assert_success
	expect_transcript "EXITED 0" "EOF" "EXIT 0" "$(grep '^SYSLOG ' <<<"$output")"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ no request .*\(server shutting down\), exit 0\$"
}

# ==== 6-10. Strict HTTP ======================================================

@test "row 6: GET / HTTP/1.1 without Host: 400, exit 3" {
	run ops --expect 3 'send:GET / HTTP/1.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_line --regexp '^BODY [0-9]+ 400 Bad Request: missing Host'
	assert_equal "$(grep -A1 '^BODY ' <<<"$output" | sed 1d)" "EOF"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 400 \"GET /\" [0-9.]+s \(missing Host\), exit 3\$"
	assert_http_date
}

@test "row 7: 'get / HTTP/1.1' with all the upgrade headers: not 101 but 405 (methods are case-sensitive), exit 3" {
	run ops --expect 3 "send:get / HTTP/1.1\r\nHost: 127.0.0.1\r\n$UPG\r\n" head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 405 Method Not Allowed"
	assert_line "H allow: GET"
	refute_line --partial "101"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}.* http 405 \"get /\" .*, exit 3\$"
	assert_http_date
	# without the upgrade headers: an unknown method of plain HTTP
	run ops --expect 3 'send:get / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 405 Method Not Allowed"
	assert_line "H allow: GET, HEAD"
	assert_line "EXIT 3"
	assert_http_date
}

@test "row 8: HEAD /nope: 404 with Content-Length and not one body byte after the head" {
	run ops --expect 3 req:HEAD:/nope head eof
	assert_success
	expect_transcript "STATUS HTTP/1.1 404 Not Found" \
		"$(grep '^H date: ' <<<"$output")" \
		"H content-type: text/plain; charset=utf-8" \
		"$(grep '^H content-length: ' <<<"$output")" \
		"H connection: close" "EOF" "EXIT 3" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp '^H content-length: [1-9][0-9]*$'
	assert_line --regexp "^LOG ${LOGP}.* http 404 \"HEAD /nope\" .*\(no such page\), exit 3\$"
	assert_http_date
}

@test "row 9: a second Origin (evil, then the allowed one) is 400; so are a second Host, Sec-WebSocket-Key or Sec-WebSocket-Version" {
	local base='GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n'
	run ops --expect 3 "send:${base}Origin: http://evil.example\r\nOrigin: http://good.example\r\n$UPG\r\n" \
		head body eof -- --origin http://good.example
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_line --regexp '^BODY [0-9]+ 400 Bad Request: more than one Origin'
	assert_line "EXIT 3"
	assert_http_date
	# the allowed Origin alone is let in (the 400 above is for the second field)
	run ops --expect 0 "send:${base}Origin: http://good.example\r\n$UPG\r\n" head close:1000 frame eof \
		-- --origin http://good.example
	assert_success
	assert_line "ACCEPT ok"
	local extra why
	for extra in 'Host: 127.0.0.1\r\n:more than one Host' \
		'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n:more than one Sec-WebSocket-Key' \
		'Sec-WebSocket-Version: 13\r\n:more than one Sec-WebSocket-Version'; do
		why=${extra##*:}
		run ops --expect 3 "send:$base${extra%:*}$UPG\r\n" head body eof
		assert_success
		assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
		assert_line --regexp "^BODY [0-9]+ 400 Bad Request: $why"
		assert_line "EXIT 3"
		assert_http_date
	done
}

@test "row 10: the absolute form GET http://x/ HTTP/1.1 with Host and the upgrade headers: 101 with the right accept; without them, the page" {
	run ops --expect 0 "send:GET http://x/ HTTP/1.1\r\nHost: x\r\n$UPG\r\n" head text:hi frame close:1000 frame eof -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "TEXT hi" "CLOSE 1000" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
	local size
	size=$(stat -c %s "$TOP/web/index.html")
	run ops --expect 0 'send:GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n' head eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "H content-length: $size"
	assert_line --regexp "^EXTRA $size <!doctype html>"
	assert_line --regexp "^LOG ${LOGP}.* http 200 page \"GET http://x/\" .*exit 0\$"
	assert_http_date
}

# ==== Also seen ==============================================================

@test "an empty client close is answered with an empty close and logged as close 1005 by client" {
	run ops --expect 0 hs head 'send:\x88\x80\x01\x02\x03\x04' frame eof
	assert_success
	expect_transcript "${HEAD_101[@]}" "CLOSE" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, close 1005 by client, exit 0\$"
}

@test "HTTP log lines carry the method and the target, control characters and quotes as '?'" {
	run ops --expect 0 req:GET:/healthz?probe=1 head body eof
	assert_success
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 200 health check \"GET /healthz\?probe=1\" [0-9]+\.[0-9]{3}s, exit 0\$"
	assert_http_date
	run ops --expect 3 'send:GET /a\x01b"c\x1b[1m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_equal "$(grep -c '^LOG ' <<<"$output")" 1
	assert_line --regexp "^LOG ${LOGP}.* http 400 \"GET /a\?b\?c\?\[1m\" [0-9.]+s \(malformed request target\), exit 3\$"
	refute_output --partial $'\x1b'
}

@test "log lines on stderr carry wsfilter's pid" {
	run ops --expect 0 pid req:GET:/healthz head body eof
	assert_success
	local pid
	pid=$(field PID)
	[ -n "$pid" ] || fail "no PID line"
	assert_line --regexp "^LOG wsfilter\[$pid\]: 127\.0\.0\.1:[0-9]+ http 200 health check "
}

@test "every plain HTTP answer carries a Date that is an IMF-fixdate within a minute of now" {
	local req
	for req in req:GET:/healthz req:HEAD:/ req:GET:/nope req:POST:/; do
		run ops --expect "$([ "$req" = req:GET:/healthz ] || [ "$req" = req:HEAD:/ ] && echo 0 || echo 3)" \
			"$req" head eof
		assert_success
		refute_line --regexp '^MALFORMED'
		assert_http_date
	done
	run ops --expect 3 "send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n${UPG/13/8}\r\n" head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 426 Upgrade Required"
	assert_http_date
	run ops --expect 5 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' head body eof -- --handshake-timeout 1
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 408 Request Timeout"
	assert_http_date
	# the 101 is not a plain answer: no Date there
	run ops --expect 0 hs head close:1000 frame eof
	assert_success
	refute_line --partial "H date:"
}

@test "numbers on the command line are digits only: ' +7' and '+7' are usage errors, exit 2" {
	local v
	for v in ' +7' '+7' '7 ' '-0' '0x10'; do
		run timeout -s KILL 5 "$WSFILTER" --idle-timeout "$v" </dev/null
		assert_equal "$status" 2
		assert_output --partial -- "--idle-timeout"
	done
	run timeout -s KILL 5 "$WSFILTER" --idle-timeout=+7 </dev/null
	assert_equal "$status" 2
}

@test "--ping-timeout with --ping-interval 0 is a usage error, exit 2" {
	run timeout -s KILL 5 "$WSFILTER" --ping-timeout 5 --ping-interval 0 </dev/null
	assert_equal "$status" 2
	assert_output --partial -- "--ping-timeout"
	run timeout -s KILL 5 "$WSFILTER" --ping-interval 0 --ping-timeout 5 </dev/null
	assert_equal "$status" 2
}
