#!/usr/bin/env bats
# wsfilter [OPTIONS] [--] PROGRAM [ARG...] (issue 14): a program per connection. Text
# messages are lines on its stdin, its lines are text messages (valid UTF-8, long lines
# fragmented), --binary passes bytes as they are; backpressure both ways; how the program's
# end ends the connection and how the connection's end ends the program (EOF, SIGTERM to its
# process group, SIGKILL, nothing left running); its stderr in the log only; the request's
# CGI/1.1 variables; the program runs outside wsfilter's seccomp filter.
# Every run asserts wsfilter's exit status (6: the program exited non-zero or was killed).
# Also run with WSFILTER=$PWD/wsfilter-asan (make test-asan): only the seccomp check is skipped.

load lib/common
load lib/launchers

setup() {
	T=$BATS_TEST_TMPDIR
}

teardown() {
	local p
	stop_launchers
	# programs (and their groups) whose pids a test wrote down
	for p in $(written_pids "$T"); do
		kill -CONT "$p" 2>/dev/null || true # a child a test stopped (stop-child)
		kill -KILL -- "-$p" 2>/dev/null || true
		kill -KILL "$p" 2>/dev/null || true
	done
}

# ---- lines and bytes --------------------------------------------------------

@test "cat: each text message is one line, each line one message; a message with \\n is two lines" {
	ws 0 hs head text:hello 'textesc:a\nb' 'text:héllo ✓' frame frame frame frame close:1000 frame eof -- cat
	assert_success
	assert_line --index 6 "TEXT hello"
	assert_line --index 7 "TEXT a"
	assert_line --index 8 "TEXT b"
	assert_line --index 9 "TEXT héllo ✓"
	assert_line --index 10 "CLOSE 1000"
	assert_line "EXIT 0"
	# in: 3 messages of 5 + 3 + 10 bytes; out: 4 lines
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ websocket [0-9.]+s, in 3 msg 18 B, out 4 msg 17 B, close 1000 by client, program exited 0, exit 0$"
}

@test "sh: exit 0 -> its last output (a last line without \\n too) goes out, then close 1000, exit 0" {
	ws 0 hs head text:x frame frame frame eof -- sh -c 'read l; echo "got $l"; printf "no newline"'
	assert_success
	assert_line --index 6 "TEXT got x"
	assert_line --index 7 "TEXT no newline"
	assert_line --index 8 "CLOSE 1000"
	assert_line --index 9 "EOF"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* close 1000 by server, program exited 0, exit 0$"
}

@test "awk as a filter: every line answered at once" {
	local awk=(awk)
	# mawk reads its input in blocks unless told otherwise
	awk -W version 2>&1 | grep -q mawk && awk=(awk -W interactive)
	ws 0 hs head text:one frame text:two frame text:three frame close:1000 frame eof -- \
		"${awk[@]}" '{ print NR ": " toupper($0); fflush() }'
	assert_success
	assert_line --index 6 "TEXT 1: ONE"
	assert_line --index 7 "TEXT 2: TWO"
	assert_line --index 8 "TEXT 3: THREE"
	assert_line --index 9 "CLOSE 1000"
	assert_line "EXIT 0"
}

@test "python3 -u as a filter: UTF-8 both ways, one reply per message" {
	ws 0 hs head 'text:héllo ✓' frame 'text:日本' frame close:1000 frame eof -- \
		/usr/bin/python3 -u -c 'import sys
for line in sys.stdin:
    print(line.rstrip("\n")[::-1], len(line) - 1)'
	assert_success
	assert_line --index 6 "TEXT ✓ olléh 7"
	assert_line --index 7 "TEXT 本日 2"
	assert_line --index 8 "CLOSE 1000"
	assert_line "EXIT 0"
}

@test "invalid UTF-8 from the program: U+FFFD for each byte that cannot be part of a character, never an invalid text frame" {
	# the tool marks a text frame that is not UTF-8 as BADFRAME and fails
	ws 0 hs head frame frame frame frame frame frame frame eof -- \
		sh -c 'printf "a\377b\n\300\257x\n\355\240\200\n\342\202\254 ok \342\202x\n\360\237\230\200\n\342\202"'
	assert_success
	refute_line --partial BADFRAME
	assert_line --index 6 "TEXT a�b"          # FF
	assert_line --index 7 "TEXT ��x"          # C0 AF: an overlong form, two bytes
	assert_line --index 8 "TEXT ���"          # ED A0 80: a surrogate, three bytes
	assert_line --index 9 "TEXT € ok �x"      # E2 82 AC is €; E2 82 before x: one cut character
	assert_line --index 10 "TEXT 😀"
	assert_line --index 11 "TEXT �"           # E2 82 cut by the end of its output
	assert_line --index 12 "CLOSE 1000"
	assert_line "EXIT 0"
	# the same as a decoder that replaces maximal subparts (Python, WHATWG) gives
	local want
	want=$(printf 'a\377b\n\300\257x\n\355\240\200\n\342\202\254 ok \342\202x\n\360\237\230\200\n\342\202' |
		"$PY" -c 'import sys; [print("TEXT " + l) for l in sys.stdin.buffer.read().decode("utf-8", "replace").split("\n")]')
	assert_equal "$(sed -n '7,12p' <<<"$output")" "$want"
}

@test "a line over 64 KiB goes out as a fragmented text message, whole" {
	run wst run --timeout 10 --expect 0 --hold --frames --max-show 60 hs -- --close-timeout 1 \
		sh -c 'head -c 150000 /dev/zero | tr "\0" x; echo; echo short'
	echo "$output"
	assert_success
	local x64 rest
	x64=$(head -c 65536 /dev/zero | tr '\0' x | sha256sum | cut -c1-16)
	rest=$(head -c 18928 /dev/zero | tr '\0' x | sha256sum | cut -c1-16)
	assert_line --index 4 "TEXT fin=0 <65536 bytes sha256:$x64>"
	assert_line --index 5 "CONT fin=0 <65536 bytes sha256:$x64>"
	assert_line --index 6 "CONT fin=1 <18928 bytes sha256:$rest>"
	assert_line --index 7 'TEXT fin=1 "short"'
	assert_line --index 8 "CLOSE 1000"
	assert_line "EXIT 0"
}

@test "--binary: three 1 MiB messages and a small one through cat, byte for byte; memory bounded" {
	ws 0 hs head bin:1048576 bin:1048576 bin:1048576 collect:3145728 bin:5 collect:5 mem close:1000 frame eof -- \
		--binary cat
	assert_success
	assert_line --regexp '^COLLECTED 3145728 B in [0-9]+ messages, equal$'
	assert_line --regexp '^COLLECTED 5 B in 1 messages, equal$'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	local hwm
	hwm=$(sed -n 's/^VmHWM //p' <<<"$output")
	echo "# --binary 3 MiB through cat: VmHWM $hwm kB" >&3
	if sanitized; then within 0 16384 "$hwm"; else within 0 4096 "$hwm"; fi
	assert_line --regexp "^LOG ${LOGP}.* in 4 msg 3145733 B, out [0-9]+ msg 3145733 B, close 1000 by client, program exited 0, exit 0$"
}

# ---- backpressure -----------------------------------------------------------

@test "a client that pipelines faster than the program reads: nothing lost, in order" {
	# flood sends until wsfilter stops reading; the program takes a pause every 200 lines
	ws 0 hs head flood:1000 drain close:1000 frame eof -- \
		sh -c 'i=0; while IFS= read -r l; do i=$((i + 1)); [ $((i % 200)) = 0 ] && sleep 0.05; printf "%s\n" "$l"; done'
	assert_success
	local n
	n=$(sed -n 's/^FLOODED \([0-9]*\) .*/\1/p' <<<"$output")
	[ "$n" -gt 100 ]
	assert_line "DRAINED $n/$n"
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
}

@test "yes floods a client that reads 200 kB/s: memory bounded; the client closes and yes is gone" {
	ws 0 --rcvbuf 65536 hs head rate:200000 sleep:2 count:2 mem mark close:1000 count:10 elapsed eof -- \
		--grace 1 sh -c 'echo $$ >"$0"; exec yes' "$T/yes.pid"
	assert_success
	local pid hwm took
	pid=$(pid_of "$T/yes.pid")
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	hwm=$(sed -n 's/^VmHWM //p' <<<"$output")
	took=$(sed -n 's/^ELAPSED //p' <<<"$output")
	echo "# yes flood, client at 200 kB/s: VmHWM $hwm kB; close answered in $took s" >&3
	if sanitized; then within 0 16384 "$hwm"; else within 0 4096 "$hwm"; fi
	# yes never reads its stdin: SIGTERM one --grace after the close; what it wrote
	# until then goes out before the close answer
	assert_line --regexp "^LOG ${LOGP}.* close 1000 by client, program killed by SIGTERM, exit 0$"
	within 0 5 "$took"
	assert_gone "$pid"
}

@test "yes floods a client that floods too: no deadlock, the client leaves, nothing left" {
	ws 4 hs head flood:1000 mem rst -- sh -c 'echo $$ >"$0"; exec yes' "$T/yes.pid"
	assert_success
	assert_line --regexp '^FLOODED [0-9]+ in '
	assert_line "EXIT 4"
	local hwm
	hwm=$(sed -n 's/^VmHWM //p' <<<"$output")
	if sanitized; then within 0 16384 "$hwm"; else within 0 4096 "$hwm"; fi
	assert_gone "$(pid_of "$T/yes.pid")"
}

# ---- endings ----------------------------------------------------------------

@test "program exits 3: close 1011 \"program exited 3\", exit 6" {
	ws 6 hs head text:x frame frame eof -- sh -c 'read l; echo "got $l"; exit 3'
	assert_success
	assert_line --index 6 "TEXT got x"
	assert_line --index 7 'CLOSE 1011 program exited 3'
	assert_line "EXIT 6"
	assert_line --regexp "^LOG ${LOGP}.* close 1011 by server \(program exited 3\), exit 6$"
}

@test "program killed by SIGSEGV: close 1011 \"program killed by SIGSEGV\", exit 6" {
	ws 6 hs head text:x frame frame eof -- sh -c 'read l; echo "got $l"; kill -SEGV $$'
	assert_success
	assert_line --index 6 "TEXT got x"
	assert_line --index 7 'CLOSE 1011 program killed by SIGSEGV'
	assert_line "EXIT 6"
	assert_line --regexp "^LOG ${LOGP}.* close 1011 by server \(program killed by SIGSEGV\), exit 6$"
}

@test "a program that cannot be run: HTTP 500 instead of the 101, the exec error in the log, exit 6" {
	ws 6 hs head body eof -- /nonexistent/program
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 500 Internal Server Error'
	assert_line 'BODY 53 500 Internal Server Error: the program cannot be run\n'
	assert_line "EXIT 6"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 500 \"GET /\" [0-9.]+s \(the program cannot be run: No such file or directory\), exit 6$"
	# a file that is not executable: EACCES, the same answer
	printf 'echo never\n' >"$T/noexec.sh"
	ws 6 hs head body eof -- "$T/noexec.sh"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 500 Internal Server Error'
	assert_line --regexp "^LOG ${LOGP}.* http 500 .*\(the program cannot be run: Permission denied\), exit 6$"
	refute_line --partial 'never'
}

@test "the program's pipes cannot be created (open-files limit): HTTP 503 instead of the 101, the reason in the log, exit 6" {
	# wsfilter holds fds 0, 1 and 2, and the program takes 5 pipes (10 descriptors): under
	# RLIMIT_NOFILE 6 the second pipe2() fails, under 10 the fourth
	local n
	for n in 6 10; do
		ws 6 --nofile "$n" hs head body eof -- cat
		assert_success
		assert_line --index 1 'STATUS HTTP/1.1 503 Service Unavailable'
		refute_line --partial '101 Switching'
		assert_line --regexp '^BODY [1-9][0-9]* '
		assert_line "EXIT 6"
		assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 503 \"GET /\" [0-9.]+s \(cannot start the program: Too many open files\), exit 6$"
		# that one line, as for any connection
		assert_equal "$(grep -c '^LOG ' <<<"$output")" 1
	done
}

# ws_stopped_child STATUS STEP... [-- WSFILTER-ARGS]: ws with the child that is to exec
# the program stopped (stop-child: it is forked when wsfilter starts, and SIGSTOP
# reaches it before the request is sent), so that its exec never comes and the request
# waits for it; KID is its pid (also in $T/waiting.pid, for teardown). The transcript
# names it before anything else, and never a 101.
ws_stopped_child() {
	local expect=$1
	shift
	ws "$expect" --timeout 4 stop-child "$@"
	KID=$(sed -n 's/^STOPPED //p' <<<"$output")
	[ -z "$KID" ] || echo "$KID" >"$T/waiting.pid"
	assert_success
	assert_line --index 1 --regexp '^STOPPED [0-9]+$'
	refute_line --partial '101 Switching'
}

@test "SIGTERM while the 101 waits for the program's exec: HTTP 503, exit 0, the waiting child killed" {
	ws_stopped_child 0 hs sleep:0.3 signal:TERM head body eof exit-within:3 -- cat
	# nothing came before the signal: the answer is the first byte
	assert_line --index 2 'STATUS HTTP/1.1 503 Service Unavailable'
	assert_line --regexp '^BODY [1-9][0-9]* '
	assert_line "EXITED 0"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 503 \"GET /\" [0-9.]+s \(server shutting down\), exit 0$"
	assert_gone "$KID"
}

@test "the program's exec does not come within --handshake-timeout (its child stopped): HTTP 500, exit 6, the child killed, not left stopped" {
	ws_stopped_child 6 hs mark head body eof exit-within:3 -- --handshake-timeout 1 cat
	assert_line --index 2 'STATUS HTTP/1.1 500 Internal Server Error'
	assert_line "EXITED 6"
	assert_line "EXIT 6"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 500 \"GET /\" [0-9.]+s \(the program was not running within 1 s\), exit 6$"
	assert_gone "$KID"
}

@test "the program has only its stdin, stdout and stderr open: none of wsfilter's descriptors" {
	# each descriptor number that fstat() finds open, in one line
	ws 0 hs head frame frame eof -- python3 -c '
import os
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(" ".join(str(fd) for fd in range(1024) if is_open(fd)))'
	assert_success
	assert_line --index 6 'TEXT 0 1 2'
	assert_line --index 7 'CLOSE 1000'
	assert_line "EXIT 0"
}

@test "frames sent with the request, then EOF, before the 101: they wait for the program's exec, nothing lost" {
	ws 0 hs text:one text:two close:1000 shut head frame frame frame eof -- cat
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line --index 6 'TEXT one'
	assert_line --index 7 'TEXT two'
	assert_line --index 8 'CLOSE 1000'
	assert_line "EXIT 0"
}

@test "the client closes: the program gets EOF on its stdin and its exit ends the connection" {
	ws 0 hs head text:x frame close:1000 frame eof -- sh -c 'echo $$ >"$0"; cat; echo "EOF seen" >&2' "$T/cat.pid"
	assert_success
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: EOF seen$"
	assert_line --regexp "^LOG ${LOGP}.* close 1000 by client, program exited 0, exit 0$"
	assert_gone "$(pid_of "$T/cat.pid")"
}

@test "the client sends three messages and its close at once: the program's answers to all three come first, then close 1000" {
	# a program slower than the client: its answers are still to come when
	# the close arrives (RFC 6455 5.5.1 lets the close wait for them)
	ws 0 hs head text:a text:b text:c close:1000 frame frame frame frame eof -- \
		sh -c 'while read l; do sleep 0.2; echo "$l!"; done'
	assert_success
	assert_line --index 6 "TEXT a!"
	assert_line --index 7 "TEXT b!"
	assert_line --index 8 "TEXT c!"
	assert_line --index 9 "CLOSE 1000"
	assert_line "EXIT 0"
	assert_line --regexp "^LOG ${LOGP}.* in 3 msg 3 B, out 3 msg 6 B, close 1000 by client, program exited 0, exit 0$"
}

@test "the client closes and the program neither answers nor ends: close 1000 once SIGKILL (two --grace) has ended its output, the program stopped" {
	ws 0 hs head text:a close:1000 mark frame elapsed eof -- --grace 1 \
		sh -c 'echo $$ >"$0"; trap "" TERM; read l; sleep 30' "$T/slow.pid"
	assert_success
	assert_line --index 6 "CLOSE 1000"
	assert_line --regexp '^ELAPSED (1\.9|2\.[0-9])'
	assert_line "EXIT 0"
	assert_gone "$(pid_of "$T/slow.pid")"
}

@test "the client leaves without a close: EOF to the program, exit 4" {
	ws 4 hs head text:x frame shut eof -- sh -c 'echo $$ >"$0"; cat; echo "EOF seen" >&2' "$T/cat.pid"
	assert_success
	assert_line "EXIT 4"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: EOF seen$"
	assert_line --regexp "^LOG ${LOGP}.* \(client left without a close\), program exited 0, exit 4$"
	assert_gone "$(pid_of "$T/cat.pid")"
}

@test "a program that ignores EOF and SIGTERM (and its child): SIGKILL to its group after two --grace, nothing left" {
	ws 0 hs head text:hi frame mark close:1000 frame exit-within:6 elapsed eof -- --grace 1 \
		sh -c 'trap "" TERM; sleep 100 & echo $$ $! >"$0"; read l; echo "$l"; while :; do sleep 1; done' "$T/prog.pid"
	assert_success
	assert_line "TEXT hi"
	assert_line "CLOSE 1000"
	assert_line "EXITED 0"
	assert_line --regexp "^LOG ${LOGP}.* close 1000 by client, program killed by SIGKILL, exit 0$"
	local took
	took=$(sed -n 's/^ELAPSED //p' <<<"$output")
	echo "# EOF, SIGTERM, SIGKILL with --grace 1: wsfilter gone $took s after the close" >&3
	within 1.9 3.5 "$took"
	# shellcheck disable=SC2046
	assert_gone $(cat "$T/prog.pid")
}

@test "SIGTERM to wsfilter: close 1001, then the same stop sequence for the program, exit 0" {
	ws 0 hs head text:hi frame signal:TERM frame exit-within:6 elapsed eof -- --grace 1 \
		sh -c 'trap "" TERM; sleep 100 & echo $$ $! >"$0"; read l; echo "$l"; exec sleep 100' "$T/prog.pid"
	assert_success
	assert_line "TEXT hi"
	assert_line "CLOSE 1001 server shutting down"
	assert_line "EXITED 0"
	assert_line --regexp "^LOG ${LOGP}.* close 1001 by server \(server shutting down\), program killed by SIGKILL, exit 0$"
	within 1.9 3.5 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	# shellcheck disable=SC2046
	assert_gone $(cat "$T/prog.pid")
}

@test "SIGTERM to wsfilter, a program that ends on EOF: close 1001, program exited 0, exit 0" {
	ws 0 hs head text:hi frame signal:TERM frame exit-within:3 eof -- cat
	assert_success
	assert_line "CLOSE 1001 server shutting down"
	assert_line "EXITED 0"
	assert_line --regexp "^LOG ${LOGP}.* close 1001 by server \(server shutting down\), program exited 0, exit 0$"
}

@test "the program exits 0 but a child of its own keeps its stdout: close 1000 once SIGTERM (one --grace) has ended it, the child killed" {
	ws 0 hs head frame mark frame elapsed eof -- --grace 1 \
		sh -c 'sleep 100 & echo $$ $! >"$0"; echo hi; exit 0' "$T/prog.pid"
	assert_success
	assert_line --index 6 "TEXT hi"
	assert_line --index 7 "CLOSE 1000"
	assert_line "EXIT 0"
	within 0.8 2.5 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	assert_line --regexp "^LOG ${LOGP}.* close 1000 by server, program exited 0, exit 0$"
	# shellcheck disable=SC2046
	assert_gone $(cat "$T/prog.pid")
}

@test "SIGTERM to wsfilter while yes floods a client that reads nothing: it still ends (send timeout), nothing left" {
	# wsfilter.c bug: once yes has died of the SIGTERM, prog_stop leaves c->stop_at (the SIGKILL
	# step) in the past, and conn_run turns a deadline already due (next <= now) into an infinite
	# ppoll: the send timeout never fires and wsfilter waits as long as the client keeps the socket
	ws 5 --rcvbuf 65536 --timeout 20 hs head sleep:1 signal:TERM exit-within:12 elapsed -- \
		--close-timeout 1 --send-timeout 3 --ping-interval 0 sh -c 'echo $$ >"$0"; exec yes' "$T/yes.pid"
	assert_success
	assert_line "EXITED 5"
	assert_line "EXIT 5"
	assert_line --regexp "^LOG ${LOGP}.*\(client took no bytes for 3 s\).*exit 5$"
	assert_gone "$(pid_of "$T/yes.pid")"
}

# ---- stderr -----------------------------------------------------------------

@test "stderr: each line becomes a log line 'wsfilter[PID]: PEER program: LINE', never client bytes" {
	ws 0 hs head text:one frame close:1000 frame eof -- \
		sh -c 'echo early >&2; while read l; do echo "err $l" >&2; echo "out $l"; done; printf "last, no newline" >&2'
	assert_success
	assert_line --index 6 "TEXT out one"
	assert_line --index 7 "CLOSE 1000"
	assert_line --index 8 "EOF"
	local pid port
	port=$(sed -n 's/^CLIENT 127\.0\.0\.1://p' <<<"$output")
	assert_line --regexp "^LOG wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: early$"
	assert_line --regexp "^LOG wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: err one$"
	assert_line --regexp "^LOG wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: last, no newline$"
}

@test "stderr with fds 0, 1 and 2 the socket (inetd): never in the stream, always in the log (syslog)" {
	if ! unshare --mount true 2>/dev/null; then
		skip "unshare --mount is not permitted here (needs root)"
	fi
	mkdir "$T/realdev"
	run timeout 60 "$LIB/fake-devlog.sh" "$T/realdev" \
		"$PY" "$LIB/wstest.py" script --timeout 10 --expect 0 --stderr socket --syslog /dev/log \
		hs head text:one frame text:two frame close:1000 frame eof -- --close-timeout 1 \
		sh -c 'echo early >&2; while read l; do echo "err $l" >&2; echo "out $l"; done; echo bye >&2'
	echo "$output"
	assert_success
	# the strict parser would have failed on any stray byte; and exactly these frames came
	assert_equal "$(sed -n '7,10p' <<<"$output")" $'TEXT out one\nTEXT out two\nCLOSE 1000\nEOF'
	refute_line --partial EXTRA
	assert_line "EXIT 0"
	local port
	port=$(sed -n 's/^CLIENT 127\.0\.0\.1://p' <<<"$output")
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: early$"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: err one$"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: err two$"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port program: bye$"
	assert_line --regexp "^SYSLOG <30>wsfilter\[[0-9]+\]: 127\.0\.0\.1:$port websocket .*, program exited 0, exit 0$"
	refute_line --regexp '^LOG '
}

# ---- the request's variables ------------------------------------------------

REQ='GET /app/x?y=1 HTTP/1.1\r\nHost: h.example:99\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Custom: v\r\n'

# env_lines: the TEXT lines of $output without "TEXT ", sorted.
env_lines() {
	sed -n 's/^TEXT //p' <<<"$output" | LC_ALL=C sort
}

# assert_cgi_env TARGET [VARIABLE=VALUE...]: the program's environment (env_lines)
# is exactly the CGI/1.1 variables of an upgrade request for TARGET with the Host
# of REQ and req_for, from the transcript's client, and these.
assert_cgi_env() {
	local target=$1
	shift
	assert_equal "$(env_lines)" "$(printf '%s\n' \
		GATEWAY_INTERFACE=CGI/1.1 \
		SERVER_SOFTWARE=wsfilter/0.1.0 \
		SERVER_PROTOCOL=HTTP/1.1 \
		REQUEST_METHOD=GET \
		"REQUEST_URI=$target" \
		SCRIPT_NAME= \
		"PATH_INFO=${target%%\?*}" \
		"QUERY_STRING=$([[ $target == *\?* ]] && echo "${target#*\?}")" \
		SERVER_NAME=h.example \
		SERVER_PORT=99 \
		REMOTE_ADDR=127.0.0.1 \
		"REMOTE_PORT=$(client_port)" \
		HTTP_HOST=h.example:99 \
		HTTP_UPGRADE=websocket \
		HTTP_CONNECTION=Upgrade \
		HTTP_SEC_WEBSOCKET_KEY=dGhlIHNhbXBsZSBub25jZQ== \
		HTTP_SEC_WEBSOCKET_VERSION=13 \
		"$@" | LC_ALL=C sort)"
}

@test "CGI/1.1 variables of the request; --clear-env leaves only them" {
	ws 0 "send:$REQ\r\n" head wait:3 eof -- --clear-env /usr/bin/env
	assert_success
	assert_line "CLOSE 1000"
	assert_cgi_env /app/x?y=1 HTTP_X_CUSTOM=v
}

@test "without --clear-env: wsfilter's environment too, the request's variables win; no HTTPS without --trust-proxy" {
	ws 0 --env REQUEST_METHOD=POST --env WSFILTER_TEST_VAR=kept "send:${REQ}X-Forwarded-Proto: https\r\n\r\n" head wait:3 eof -- \
		/usr/bin/env
	assert_success
	assert_line "TEXT WSFILTER_TEST_VAR=kept"
	assert_line --regexp '^TEXT PATH=.'
	assert_line "TEXT REQUEST_METHOD=GET"
	refute_line "TEXT REQUEST_METHOD=POST"
	assert_line "TEXT HTTP_X_FORWARDED_PROTO=https"
	refute_line --regexp '^TEXT HTTPS='
	assert_line "EXIT 0"
}

@test "HTTPS=on only with --trust-proxy and X-Forwarded-Proto: https" {
	ws 0 "send:${REQ}X-Forwarded-Proto: https\r\n\r\n" head wait:3 eof -- --trust-proxy --clear-env /usr/bin/env
	assert_success
	assert_line "TEXT HTTPS=on"
	ws 0 "send:${REQ}X-Forwarded-Proto: http\r\n\r\n" head wait:3 eof -- --trust-proxy --clear-env /usr/bin/env
	assert_success
	refute_line --regexp '^TEXT HTTPS='
}

# long_target PATH-BYTES QUERY-BYTES: "/p0001/p0002...?k0001=v&k0002=v...", a path of
# PATH-BYTES bytes and a query (after the ?) of QUERY-BYTES.
long_target() {
	printf '%s?%s' "$(printf '/p%04d' $(seq 1 $(($1 / 6 + 1))) | head -c "$1")" \
		"$(printf 'k%04d=v&' $(seq 1 $(($2 / 8 + 1))) | head -c "$2")"
}

@test "a long legal target: the program gets every request variable, none of wsfilter's own QUERY_STRING or HTTP_*" {
	# a head of 7.7 KB: a target of 6.5 KB and a header of 1 KB. REQUEST_URI, PATH_INFO and
	# QUERY_STRING repeat the target: the variables take more than the head (15 KB).
	local target path query long req port name
	target=$(long_target 3000 3500)
	path=${target%%\?*} query=${target#*\?}
	long=$(printf 'L%.0s' $(seq 1 1000))
	req=$(req_for "$target" 'X-Custom: v' "X-Long: $long")
	within 7000 8192 "$(printf '%b' "$req" | wc -c)"
	ws 0 --env QUERY_STRING=stale --env HTTP_FOO=x "send:$req" head wait:3 eof -- /usr/bin/env
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	port=$(sed -n 's/^CLIENT 127\.0\.0\.1://p' <<<"$output")
	assert_line "TEXT REQUEST_URI=$target"
	assert_line "TEXT PATH_INFO=$path"
	assert_line "TEXT QUERY_STRING=$query"
	assert_line "TEXT REMOTE_ADDR=127.0.0.1"
	assert_line "TEXT REMOTE_PORT=$port"
	assert_line "TEXT HTTP_HOST=h.example:99"
	assert_line "TEXT HTTP_UPGRADE=websocket"
	assert_line "TEXT HTTP_CONNECTION=Upgrade"
	assert_line "TEXT HTTP_SEC_WEBSOCKET_KEY=dGhlIHNhbXBsZSBub25jZQ=="
	assert_line "TEXT HTTP_SEC_WEBSOCKET_VERSION=13"
	assert_line "TEXT HTTP_X_CUSTOM=v"
	assert_line "TEXT HTTP_X_LONG=$long"
	for name in REQUEST_URI PATH_INFO QUERY_STRING REMOTE_ADDR HTTP_HOST HTTP_X_LONG; do
		assert_equal "$name: $(grep -c "^TEXT $name=" <<<"$output")" "$name: 1"
	done
	# wsfilter's own QUERY_STRING and HTTP_* are not the request's: neither reaches the program
	refute_line "TEXT QUERY_STRING=stale"
	refute_line --regexp '^TEXT HTTP_FOO='

	# a Foo header: HTTP_FOO is its value alone
	ws 0 --env HTTP_FOO=x "send:$(req_for "$target" 'Foo: bar' "X-Long: $long")" head wait:3 eof -- /usr/bin/env
	assert_success
	assert_line "TEXT HTTP_FOO=bar"
	assert_equal "$(grep -c '^TEXT HTTP_FOO=' <<<"$output")" 1
	assert_line "TEXT QUERY_STRING=$query"

	# a head of 8,050 bytes, its target 7,900: still a 101, and with --clear-env exactly
	# the request's variables
	target=$(long_target 3900 3999)
	path=${target%%\?*} query=${target#*\?}
	req=$(req_for "$target")
	within 8000 8192 "$(printf '%b' "$req" | wc -c)"
	ws 0 "send:$req" head wait:3 eof -- --clear-env /usr/bin/env
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	assert_cgi_env "$target"
}

@test "no HTTP_PROXY from a request (httpoxy), and a header name with _ is no variable: the program sees wsfilter's HTTP_PROXY and the real X-Forwarded-For only" {
	# a Proxy header would be HTTP_PROXY, the proxy many HTTP clients use; X_Forwarded_For
	# would pass for X-Forwarded-For
	ws 0 --env HTTP_PROXY=http://admin:3128 \
		"send:$(req_for /app 'Proxy: http://attacker:8080' 'X_Forwarded_For: 6.6.6.6')" head wait:3 eof -- /usr/bin/env
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line "CLOSE 1000"
	assert_line "EXIT 0"
	assert_line "TEXT HTTP_PROXY=http://admin:3128"
	assert_equal "$(grep -c '^TEXT HTTP_PROXY=' <<<"$output")" 1
	refute_line --partial attacker
	refute_line --regexp '^TEXT HTTP_X_FORWARDED_FOR='
	refute_line --partial 6.6.6.6

	# no HTTP_PROXY of wsfilter's (--clear-env): none at all; a real X-Forwarded-For among
	# look-alikes before and after it: its value only
	ws 0 "send:$(req_for /app 'pRoXy: http://attacker:8080' 'X_Forwarded_For: 6.6.6.6' \
		'X-Forwarded-For: 127.0.0.2' 'x_forwarded_for: 7.7.7.7')" head wait:3 eof -- --clear-env /usr/bin/env
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line "EXIT 0"
	refute_line --regexp '^TEXT HTTP_PROXY='
	refute_line --partial attacker
	assert_line "TEXT HTTP_X_FORWARDED_FOR=127.0.0.2"
	assert_equal "$(grep -c '^TEXT HTTP_X_FORWARDED_FOR=' <<<"$output")" 1
	refute_line --partial 6.6.6.6
	refute_line --partial 7.7.7.7
}

@test "LISTEN_* never reach the program, not even those of another process" {
	# systemd's sd_listen_fds(unset_environment=1) drops them whether LISTEN_PID matches or not
	ws 0 --env LISTEN_PID=1 --env LISTEN_FDS=1 --env LISTEN_FDNAMES=connection hs head wait:3 eof -- /usr/bin/env
	assert_success
	assert_line "EXIT 0"
	refute_line --regexp '^TEXT LISTEN_'
}

@test "LISTEN_* never reach the program under systemd-socket-activate (fd 3)" {
	UNIT_ARGS=("$WSFILTER" --close-timeout 1 -- /usr/bin/env)
	HOST=127.0.0.1 SCHEME=ws
	start_on_port 127.0.0.1 _ssa_at
	run wst script --timeout 10 --connect "127.0.0.1:$PORT" hs head wait:3 eof
	echo "$output"
	assert_success
	assert_line "CLOSE 1000"
	assert_line --regexp '^TEXT REMOTE_ADDR=127\.0\.0\.1$'
	refute_line --regexp '^TEXT LISTEN_'
	assert_children_ended_well "$T/ssa.log"
	assert_equal "$(grep -c 'died with code 0$' "$T/ssa.log")" 1
}

# ---- sandbox ----------------------------------------------------------------

@test "sandbox: wsfilter runs under its seccomp filter (Seccomp: 2), the program does not (Seccomp: 0)" {
	ws 0 hs head procstatus frame frame eof -- sh -c 'grep "^Seccomp:" /proc/$$/status /proc/$PPID/status'
	assert_success
	local pid
	pid=$(sed -n 's/^LOG wsfilter\[\([0-9]*\)\].*/\1/p' <<<"$output" | head -n 1)
	# the program's own line ($$), then wsfilter's ($PPID)
	assert_line --index 8 --regexp "^TEXT /proc/[0-9]+/status:Seccomp:"$'\t'"0$"
	refute_line --index 8 --partial "/proc/$pid/"
	if sanitized; then
		echo "# the sanitizer build runs without the seccomp filter: its Seccomp: 2 not checked" >&3
		return 0
	fi
	assert_line "Seccomp: 2"
	assert_line --index 9 "TEXT /proc/$pid/status:Seccomp:"$'\t'"2"
}

# ---- usage ------------------------------------------------------------------

@test "usage: --binary or --clear-env without PROGRAM, --echo with PROGRAM: exit 2" {
	local args
	for args in "--binary" "--clear-env" "--binary --" "--echo cat" "--echo -- cat"; do
		# shellcheck disable=SC2086
		run "$WSFILTER" $args </dev/null
		echo "wsfilter $args: exit $status: $output"
		assert_equal "$status" 2
	done
}

# ---- real clients through real launchers ------------------------------------

# loop.sh: a shell while-read loop that answers "LINE - K", pausing every 500 lines (slower
# than the client, which pipelines all its messages at once).
make_loop() {
	cat >"$T/loop.sh" <<-'EOF'
		#!/bin/sh
		i=0
		while IFS= read -r line; do
			i=$((i + 1))
			[ $((i % 500)) = 0 ] && sleep 0.05
			printf '%s - %d\n' "$line" $((i % 1000 + 1))
		done
	EOF
	chmod +x "$T/loop.sh"
}

@test "10,000 pipelined messages through a shell while-read loop: Python websockets via systemd-socket-activate, Node ws via socat" {
	make_loop
	UNIT_ARGS=("$WSFILTER" -- "$T/loop.sh")
	HOST=127.0.0.1 SCHEME=ws
	start_on_port 127.0.0.1 _ssa_at --inetd
	local t0=$SECONDS
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" -n 10000 --timeout 30 "$(url)"
	show_logs_on_fail
	assert_success
	assert_output "received 10000/10000 lost 0"
	assert_equal "$(grep -c 'died with code 0$' "$T/ssa.log")" 1
	stop_launchers

	local wrapper
	wrapper=$(exit_status_wrapper "$T/status")
	_socat_node_at() {
		bg_start "$T/socat.log" socat "TCP4-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork" "EXEC:$wrapper -- $T/loop.sh"
		LAUNCH_PID=$LAST_PID
	}
	start_on_port 127.0.0.1 _socat_node_at
	run bash -c 'cd "$1" && timeout 60 node "$2" "$3" "$4" 1000' _ "$TOP" "$CLIENTS/node_ws.js" "ws://127.0.0.1:$PORT/" 10000
	echo "$output"
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
	for _ in $(seq 1 50); do [ -s "$T/status" ] && break; sleep 0.1; done
	assert_equal "$(cat "$T/status")" 0
	echo "# 10,000 through a while-read loop, Python and Node: $((SECONDS - t0)) s" >&3
}

@test "Chromium: the page's 10,000-message burst through wsfilter -- examples/suffix.sh, 10000/10000, 0 lost" {
	[ -x /usr/bin/chromium ] || skip "/usr/bin/chromium is missing (apt-get install chromium)"
	local wrapper
	wrapper=$(exit_status_wrapper "$T/status")
	_socat_page_at() {
		bg_start "$T/socat.log" socat "TCP4-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=128,nodelay" \
			"EXEC:$wrapper -- $TOP/examples/suffix.sh"
		LAUNCH_PID=$LAST_PID
	}
	start_on_port 127.0.0.1 _socat_page_at
	run timeout 150 node "$TOP/test/browser/drive.mjs" burst "http://127.0.0.1:$PORT/"
	echo "$output"
	summary=$(sed -n 's/^SUMMARY: //p' <<<"$output")
	echo "# Chromium burst through examples/suffix.sh: ${summary:-no summary}" >&3
	assert_success
	assert_line "BUTTON: Start 10,000 Messages"
	assert_line --regexp '^SUMMARY: 10000/10000 received in [0-9]+ ms, 0 lost, [0-9,]+ msg/s$'
	assert_line "COUNT-recv: 10,000"
	assert_line "COUNT-bad: 0"
	# the page (GET /) and the WebSocket both ended with exit 0; Chromium's spare
	# preconnection that never sends a request ends with exit 4, nothing else
	for _ in $(seq 1 50); do
		[ "$(grep -c websocket "$T/socat.log")" -ge 1 ] &&
			[ "$(grep -c . "$T/status")" = "$(grep -c . "$T/socat.log")" ] && break
		sleep 0.1
	done
	cat "$T/status" "$T/socat.log"
	assert_equal "$(grep -cE "^${LOGP}127\.0\.0\.1:[0-9]+ http 200 page \"GET /\" .*, exit 0$" "$T/socat.log")" 1
	assert_equal "$(grep -cE "^${LOGP}127\.0\.0\.1:[0-9]+ websocket .*, in 10000 msg [0-9]+ B, out 10000 msg [0-9]+ B, .*program exited 0, exit 0$" "$T/socat.log")" 1
	assert_equal "$(grep -c . "$T/status")" "$(grep -c . "$T/socat.log")"
	assert_equal "$(grep -cx 0 "$T/status")" 2
	assert_equal "$(grep -cx 4 "$T/status")" "$(grep -cE "^${LOGP}127\.0\.0\.1:[0-9]+ no request .*exit 4$" "$T/socat.log")"
}
