#!/usr/bin/env bats
# Issue 13: every connection ends, bounded and complete. A client that takes
# its replies late still gets all of them; one that takes nothing (or sends
# nothing) is gone within the timeouts; nothing but protocol bytes reaches
# the client's socket. (The strict HTTP heads and the Date of every plain
# answer are in handshake.bats.)
#
# Each connection is scripted with ops (lib/common.bash: `wstest.py script`),
# which kills what it started when it ends; the others run under
# `timeout -s KILL`: nothing is left running after a test.

load lib/common

setup() {
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
}

# ==== A reader that comes late gets everything ===============================

@test "a client with a 4 KiB window that starts reading 3.5 s after its close gets the whole 200 KB reply and the close; out counts bytes written, exit 0" {
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

# ==== Pipes after EOF: no spin; the send timeout; fd 3 =======================

@test "over pipes, a client that half-closes and never reads costs no CPU while wsfilter waits; the send timeout ends it, exit 5" {
	# 350 000 bytes fill wsfilter's stdout pipe (64 KiB) and its queue (256 KiB),
	# the rest sits in its input buffer: it reads the EOF with its queue full,
	# stdin is finished, and only the send timeout (4 s) can end the connection.
	run ops --expect 5 --pipes hs head big:350000 shut mark sleep:3 cpu exit-within:6 elapsed \
		-- --echo --send-timeout 4
	assert_success
	assert_line "EXITED 5"
	# 3 s of waiting with stdin at EOF: a spinning poll would burn them all
	within 0 0.2 "$(transcript_value CPU)"
	within 2.5 5.5 "$(transcript_value ELAPSED)"
	assert_line --regexp "^LOG ${LOGP}stdin websocket .*, [0-9]+ B unsent \(client took no bytes for 4 s\), exit 5\$"
}

@test "over pipes, a client that half-closes has not left: a reply it never reads is ended by the send timeout, exit 5 (not 4)" {
	# The reply (200 KB) fits wsfilter's queue: it reads the EOF with room to
	# spare, before the send timeout. The end still comes from the send timeout
	# (output pending, no byte taken for 2 s), so the status is 5 as for any
	# client that takes no bytes -- not 4 ("left without a close"): a half-closed
	# client has not left, it could still read.
	run ops --expect 5 --pipes hs head big:200000 shut mark sleep:1 cpu exit-within:4 \
		-- --echo --send-timeout 2
	within 0 0.2 "$(transcript_value CPU)"
	assert_line --regexp "^LOG ${LOGP}stdin websocket .*, [0-9]+ B unsent \(client took no bytes for 2 s\), exit 5\$"
	assert_line "EXIT 5"
	assert_success
}

@test "LISTEN_FDS=1 with fd 3 closed is a usage error, exit 2 at once; a listening socket on fd 3 makes the acceptor, which a SIGTERM stops with exit 0" {
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

# ==== A client that takes nothing, and one that takes slowly =================

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

@test "a client that keeps sending and never reads is gone within a few seconds (--ping-interval 1 --ping-timeout 1), exit 5" {
	# It sends until its sends stall (wsfilter stopped reading: its queue is
	# full), then waits without reading.
	run ops --expect 5 --small-buffers hs head flood:16384 mark exit-within:8 elapsed \
		-- --echo --ping-interval 1 --ping-timeout 1
	assert_success
	assert_line --regexp '^FLOODED [0-9]+ in '
	assert_line "EXITED 5"
	within 0 8 "$(transcript_value ELAPSED)"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, [0-9]+ B unsent \(client took no bytes for 1 s\), exit 5\$"
}

# assert_drained_all: the flood of 16 KiB messages filled wsfilter's 256 KiB queue,
# the client then read every reply in order and closed with 1000, exit 0, and the
# log line counts every message both ways.
assert_drained_all() {
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

@test "a client that reads slowly but steadily (120 KB/s, answering pings) behind a full queue is never dropped: every reply in order, exit 0" {
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
	assert_drained_all
	refute_line --regexp '^CLOSE 1011'
	assert_line --regexp '^PINGS [1-9][0-9]*$'
}

@test "the send timeout counts what the client has taken: a steady 120 KB/s reader is not dropped with --send-timeout 1" {
	# pings off: only the send timeout could drop this reader. Up to 1.3 s pass
	# without a write while the kernel's 160 KB drain; the bytes the client takes
	# meanwhile (the socket's unacked count falling) are progress.
	run ops --expect 0 --small-buffers hs head flood:16384 drain:120000 close:1000 frame eof \
		-- --echo --ping-interval 0 --send-timeout 1
	assert_success
	assert_drained_all
}

# ==== A silent peer: keepalive ===============================================

@test "a silent peer gets a ping after the default 20 s and, without a pong, close 1011 (no pong within 2 s), exit 5" {
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

# ==== inetd: nothing but protocol bytes on the client's socket ==============

# inetd_transcript LINE... -- OPS-ARGS...: with fds 0, 1 and 2 one socket (inetd),
# the transcript is exactly LINE..., run as it is and again with a fake /dev/log
# (ops_devlog), where the SYSLOG lines come after them; $output is the second run's.
inetd_transcript() {
	local want=()
	while [ "$1" != -- ]; do
		want+=("$1")
		shift
	done
	shift
	run ops --stderr socket "$@"
	assert_success
	expect_transcript "${want[@]}"
	need_unshare
	run ops_devlog --stderr socket "$@"
	assert_success
	expect_transcript "${want[@]}" "$(grep '^SYSLOG ' <<<"$output")"
}

@test "under inetd (fds 0, 1, 2 = socket) a usage error sends the client no byte, exit 2; the message goes to /dev/log" {
	inetd_transcript "EOF" "EXIT 2" -- --expect 2 eof -- --no-such-option
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: unknown option '--no-such-option'\$"
}

@test "under inetd (fds 0, 1, 2 = socket) with --log=stderr, a SIGTERM during the handshake sends the client no log text; the line goes to /dev/log" {
	inetd_transcript "EXITED 0" "EOF" "EXIT 0" -- --expect 0 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' \
		sleep:0.3 signal:TERM exit-within:2 eof -- --log=stderr --handshake-timeout 10
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:[0-9]+ no request .*\(server shutting down\), exit 0\$"
}

# ==== The empty close, the log line's pid, numbers on the command line =======

@test "an empty client close is answered with an empty close and logged as close 1005 by client" {
	run ops --expect 0 hs head 'send:\x88\x80\x01\x02\x03\x04' frame eof
	assert_success
	expect_transcript "${HEAD_101[@]}" "CLOSE" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}.* websocket .*, close 1005 by client, exit 0\$"
}

@test "log lines on stderr carry wsfilter's pid" {
	run ops --expect 0 pid req:GET:/healthz head body eof
	assert_success
	local pid
	pid=$(transcript_value PID)
	[ -n "$pid" ] || fail "no PID line"
	assert_line --regexp "^LOG wsfilter\[$pid\]: 127\.0\.0\.1:[0-9]+ http 200 health check "
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
