#!/usr/bin/env bats
# The test page (web/index.html, served by wsfilter on GET /) in a real headless Chromium,
# driven by test/browser/drive.mjs through playwright-core. wsfilter runs behind socat.
# Every test ends with assert_server_log: one summary line per connection it made (GET / is one
# wsfilter, each WebSocket another), each with the exit status README.md's table gives.

load lib/common

CHROMIUM=/usr/bin/chromium
DRIVE="$BATS_TEST_DIRNAME/browser/drive.mjs"

# One Chromium for the whole file (test/browser/serve.mjs); each test gets a new browser context.
setup_file() {
	[ -x "$CHROMIUM" ] || return 0 # setup skips every test
	local endpoint="$BATS_FILE_TMPDIR/endpoint" i
	node "$BATS_TEST_DIRNAME/browser/serve.mjs" "$endpoint" >"$BATS_FILE_TMPDIR/chromium.log" 2>&1 3>&- &
	echo $! >"$BATS_FILE_TMPDIR/serve.pid"
	for i in $(seq 1 600); do
		[ -s "$endpoint" ] && break
		kill -0 "$(cat "$BATS_FILE_TMPDIR/serve.pid")" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$endpoint" ]; then
		cat "$BATS_FILE_TMPDIR/chromium.log" >&2
		echo "Chromium did not start" >&2
		return 1
	fi
	PW_ENDPOINT=$(cat "$endpoint")
	export PW_ENDPOINT
}

teardown_file() {
	local pid i
	pid=$(cat "$BATS_FILE_TMPDIR/serve.pid" 2>/dev/null) || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	# node did not end: end the browser too (playwright starts it as a process group leader)
	pid=$(cat "$BATS_FILE_TMPDIR/endpoint.browser-pid" 2>/dev/null) && kill -KILL -- "-$pid" 2>/dev/null || true
}

setup() {
	[ -x "$CHROMIUM" ] || skip "$CHROMIUM is missing (apt-get install chromium): browser tests skipped"
	ARTIFACTS="$TOP/test/artifacts"
	mkdir -p "$ARTIFACTS"
	SOCAT_PID=
}

teardown() {
	stop_all
}

# start_server [OPTION...]: wsfilter OPTIONs behind socat on a free port; sets PORT and SOCAT_PID.
# socat runs in its own process group (setsid) so that every child it forks can be found and ended.
start_server() {
	SERVER_ARGS="$*"
	start_on_port 127.0.0.1 socat_at || return 1
	SOCAT_PID=$LAUNCH_PID
	# setsid did not fork, so socat leads its own group
	[ "$(ps -o pgid= -p "$SOCAT_PID" | tr -d ' ')" = "$SOCAT_PID" ]
}

socat_at() {
	setsid socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=128,nodelay" \
		EXEC:"$WSFILTER${SERVER_ARGS:+ $SERVER_ARGS}" 2>>"$BATS_TEST_TMPDIR/server.log" 3>&- &
	LAUNCH_PID=$!
}

# group_pids: every process still alive in socat's process group.
group_pids() {
	[ -n "$SOCAT_PID" ] && pgrep -g "$SOCAT_PID" || true
}

# stop_wsfilters: SIGTERM the wsfilter processes (not socat), as a service manager stopping them
# would; each sends close 1001 through its socat relay. Waits up to 5 s for them to end.
stop_wsfilters() {
	local p i alive
	for p in $(group_pids); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = socat ] || kill -TERM "$p" 2>/dev/null || true
	done
	for i in $(seq 1 50); do
		alive=0
		for p in $(group_pids); do
			[ "$(cat "/proc/$p/comm" 2>/dev/null)" = socat ] || alive=1
		done
		[ "$alive" = 0 ] && return 0
		sleep 0.1
	done
}

stop_all() {
	[ -n "$SOCAT_PID" ] || return 0
	kill -TERM -- "-$SOCAT_PID" 2>/dev/null || true
	local i
	for i in $(seq 1 50); do
		[ -z "$(group_pids)" ] && break
		sleep 0.1
	done
	kill -KILL -- "-$SOCAT_PID" 2>/dev/null || true
	wait "$SOCAT_PID" 2>/dev/null || true
	SOCAT_PID=
}

# assert_server_log REGEX...: every wsfilter socat started logged its summary line, one line
# per REGEX (what follows "wsfilter[PID]: 127.0.0.1:PORT ", to the end of the line, so with its
# exit status), in any order since connections may end in any order, and server.log holds
# nothing else: a wsfilter killed by a signal logs no line, and socat logs "E waitpid(): child
# PID exited on signal N" instead (its "exited with status N" is checked against wsfilter's
# own "exit N" and left out). First ends the wsfilters still running as a service manager
# would (stop_wsfilters: close 1001, exit 0), then waits up to 5 s for the lines. A line takes
# the first REGEX it matches that no other line took: no REGEX may match another's lines (two
# may be the same).
assert_server_log() {
	local log="$BATS_TEST_TMPDIR/server.log" summary="^${LOGP}127\.0\.0\.1:[0-9]+ .*, exit [0-9]+\$"
	local res=("$@") used=() lines=() line re i j n=0 p took
	stop_wsfilters
	for p in $(group_pids); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = socat ] ||
			fail "wsfilter $p still runs 5 s after SIGTERM: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
	done
	for i in $(seq 1 50); do
		n=$(grep -cE -- "$summary" "$log" 2>/dev/null || true)
		[ "$n" -ge $# ] && break
		sleep 0.1
	done
	mapfile -t lines < <(cat "$log" 2>/dev/null)
	echo "--- server log at the end:"
	printf '%s\n' "${lines[@]}"
	# socat may log a child's non-zero exit status ("E waitpid(): child PID exited with
	# status N"): that line is left out once wsfilter[PID]'s own line ends "exit N"
	local kept=() pid st
	for line in "${lines[@]}"; do
		if [[ $line =~ socat\[[0-9]+\]\ E\ waitpid\(\):\ child\ ([0-9]+)\ exited\ with\ status\ ([0-9]+)$ ]]; then
			pid=${BASH_REMATCH[1]} st=${BASH_REMATCH[2]}
			printf '%s\n' "${lines[@]}" | grep -qE "^wsfilter\[$pid\]: .*, exit $st\$" ||
				fail "socat saw wsfilter $pid exit $st, and its own line does not say so"
			continue
		fi
		kept+=("$line")
	done
	lines=("${kept[@]}")
	[ "${#lines[@]}" = $# ] || fail "server.log has ${#lines[@]} lines ($n wsfilter summary lines), not $#"
	for line in "${lines[@]}"; do
		took=
		for j in "${!res[@]}"; do
			re="^${LOGP}127\.0\.0\.1:[0-9]+ ${res[j]}\$"
			if [ -z "${used[j]}" ] && [[ $line =~ $re ]]; then
				used[j]=1 took=1
				break
			fi
		done
		[ -n "$took" ] || fail "unexpected line in server.log: $line"
	done
}

# Summary lines for assert_server_log: the page load (GET /), a WebSocket's start, and the end of
# a WebSocket still open when the page is done: drive.mjs closes the page and Chromium closes with
# 1001 (going away); if it is open still, assert_server_log stops it (1001 by server).
PAGE_GET='http 200 page "GET /" [0-9]+\.[0-9]{3}s, exit 0'
WS='websocket [0-9]+\.[0-9]{3}s'
GONE='close 1001 by (client|server \(server shutting down\)), exit 0'

# drive SCENARIO ARGS...: run the browser script; its "KEY: value" lines land in $output.
drive() {
	run timeout 150 node "$DRIVE" "$@"
	echo "$output"
	echo "--- server log:"
	cat "$BATS_TEST_TMPDIR/server.log" 2>/dev/null || true
}

@test "page served by wsfilter connects back to the same host and port" {
	start_server
	drive open "http://127.0.0.1:$PORT/"
	assert_success
	assert_line "STATUS: WebSocket connection established"
	assert_line "URL-FIELD: ws://127.0.0.1:$PORT/"
	assert_line "SEND-DISABLED: false"
	# no CSP violation, script error or other console complaint
	refute_output --partial "CONSOLE:"
	refute_output --partial "PAGE-ERROR:"
	# the page load and the page's WebSocket, which sent nothing
	assert_server_log "$PAGE_GET" "$WS, in 0 msg 0 B, out 0 msg 0 B, $GONE"
}

@test "Send One Message logs the sent text and the reply with a ' - N' suffix" {
	start_server
	drive send "http://127.0.0.1:$PORT/"
	assert_success
	assert_line "LOG: Sent: Hello there"
	assert_line --regexp '^LOG: Received: Hello there - ([1-9][0-9]{0,2}|1000)$'
	assert_line "COUNT-bad: 0"
	# "Hello there" in (11 B), "Hello there - N" out (15 to 18 B)
	assert_server_log "$PAGE_GET" "$WS, in 1 msg 11 B, out 1 msg 1[5-8] B, $GONE"
}

@test "burst of 10,000 messages all come back in order with none lost" {
	start_server
	drive burst "http://127.0.0.1:$PORT/" --shot "$ARTIFACTS/browser-burst.png"
	summary=$(printf '%s\n' "$output" | sed -n 's/^SUMMARY: //p')
	echo "# browser burst: ${summary:-no summary}" >&3
	assert_success
	assert_line "BUTTON: Start 10,000 Messages"
	assert_line --regexp '^SUMMARY: 10000/10000 received in [0-9]+ ms, 0 lost, [0-9,]+ msg/s$'
	assert_line "COUNT-recv: 10,000"
	assert_line "COUNT-bad: 0"
	[ -s "$ARTIFACTS/browser-burst.png" ]
	assert_server_log "$PAGE_GET" "$WS, in 10000 msg [0-9]+ B, out 10000 msg [0-9]+ B, $GONE"
}

@test "burst size is editable and the visible log keeps only the last 500 lines" {
	start_server
	drive burst "http://127.0.0.1:$PORT/" --count 1200
	assert_success
	assert_line "BUTTON: Start 1,200 Messages"
	assert_line --regexp '^SUMMARY: 1200/1200 received in [0-9]+ ms, 0 lost, '
	assert_line "LOG-LINES: 500"
	# 1 connect line + 1,200 sent + 1,200 received + 1 summary = 2,402 lines, 500 shown
	assert_line "FOLDED: 1,902 earlier lines folded"
	assert_server_log "$PAGE_GET" "$WS, in 1200 msg [0-9]+ B, out 1200 msg [0-9]+ B, $GONE"
}

@test "page opened from a file:// URL connects to the URL typed into the URL field" {
	start_server
	drive file "file://$TOP/web/index.html" --ws "ws://127.0.0.1:$PORT/"
	assert_success
	assert_line "DEFAULT-URL: ws://localhost:8765/"
	assert_line "STATUS: WebSocket connection established"
	assert_line --regexp '^LOG: Received: Hello there - [0-9]+$'
	# no GET: only the WebSocket to the typed URL (the default one is another port)
	assert_server_log "$WS, in 1 msg 11 B, out 1 msg 1[5-8] B, $GONE"
}

@test "Disconnect closes with 1000 and Connect opens a new connection" {
	start_server
	drive reconnect "http://127.0.0.1:$PORT/"
	assert_success
	assert_line --regexp '^CLOSED-STATUS: Connection closed: code 1000'
	assert_line "SEND-DISABLED: true"
	assert_line "BUTTON: Connect"
	assert_line "STATUS: WebSocket connection established"
	assert_line --regexp '^LOG: Received: Hello there - [0-9]+$'
	# the first WebSocket ended by Disconnect, the second open until the page closes
	assert_server_log "$PAGE_GET" "$WS, in 0 msg 0 B, out 0 msg 0 B, close 1000 by client, exit 0" \
		"$WS, in 1 msg 11 B, out 1 msg 1[5-8] B, $GONE"
}

@test "an unchanged reply is counted as a mismatch unless 'server echoes unchanged' is ticked" {
	start_server --echo
	drive mismatch "http://127.0.0.1:$PORT/"
	assert_success
	assert_line --regexp '^LOG: Mismatch: expected "Hello there - N", received "Hello there"'
	assert_line "MISMATCHED-AFTER-FIRST: 1"
	# after ticking the box the same reply is accepted and the count stays at 1
	assert_line "LOG: Received: Hello there"
	assert_line "COUNT-bad: 1"
	# --echo: both messages come back unchanged
	assert_server_log "$PAGE_GET" "$WS, in 2 msg 22 B, out 2 msg 22 B, $GONE"
}

@test "stopping the server shows a closed status with code 1001" {
	start_server
	out="$BATS_TEST_TMPDIR/stop.out"
	timeout 150 node "$DRIVE" stop "http://127.0.0.1:$PORT/" >"$out" 2>&1 3>&- &
	node_pid=$!
	for i in $(seq 1 300); do
		grep -q '^READY:' "$out" && break
		kill -0 "$node_pid" 2>/dev/null || break
		sleep 0.1
	done
	stop_wsfilters
	kill -TERM "$SOCAT_PID" 2>/dev/null || true
	wait "$node_pid" || true
	run cat "$out"
	echo "$output"
	assert_line --regexp '^STATUS: Connection closed: code 1001'
	assert_line "BUTTON: Connect"
	assert_line "SEND-DISABLED: true"
	assert_server_log "$PAGE_GET" \
		"$WS, in 0 msg 0 B, out 0 msg 0 B, close 1001 by server \(server shutting down\), exit 0"
}

# make_route_dir: $BATS_TEST_TMPDIR/dir for --dir, with one program, chat: on connect a greeting
# with its SCRIPT_NAME, PATH_INFO and QUERY_STRING, then two lines for each line it reads (the
# line in capitals, its length): replies the default mode would count as mismatches.
make_route_dir() {
	DIR=$BATS_TEST_TMPDIR/dir
	mkdir -p "$DIR"
	cat >"$DIR/chat" <<-'SH'
		#!/bin/sh
		echo "hello from $SCRIPT_NAME, path $PATH_INFO, query $QUERY_STRING"
		while IFS= read -r l; do
			printf '%s\n' "$l" | tr a-z A-Z
			echo "${#l} characters"
		done
	SH
	chmod 755 "$DIR/chat"
}

# The routed program's connection, ended by the page's close (1001) or the stop at the end.
ROUTED='close 1001 by (client|server \(server shutting down\)), program (exited 0|killed by SIGTERM), exit 0'

@test "console mode against a --dir route: the URL typed, every reply shown as it comes, none judged" {
	make_route_dir
	start_server --dir "$DIR"
	drive console "http://127.0.0.1:$PORT/" --ws "ws://127.0.0.1:$PORT/chat/room1?x=1" \
		--script 'wait 1|send hello|wait 3|send two words|wait 5'
	assert_success
	# the page's own connection: / names no program under --dir
	assert_line --regexp "^FIRST-STATUS: Connection to ws://127\.0\.0\.1:$PORT/ failed: code 1006"
	assert_line "URL-FIELD: ws://127.0.0.1:$PORT/chat/room1?x=1"
	assert_line "CONSOLE-MODE: true"
	assert_line "STATUS: WebSocket connection established"
	local logs
	logs=$(grep '^LOG: ' <<<"$output")
	assert_regex "$(head -n 1 <<<"$logs")" "^LOG: Connection to ws://127\.0\.0\.1:$PORT/ failed: code 1006"
	assert_equal "$(sed 1d <<<"$logs")" "$(printf 'LOG: %s\n' \
		"Connected to ws://127.0.0.1:$PORT/chat/room1?x=1" \
		'Received: hello from /chat, path /room1, query x=1' \
		'Sent: hello' \
		'Received: HELLO' \
		'Received: 5 characters' \
		'Sent: two words' \
		'Received: TWO WORDS' \
		'Received: 9 characters')"
	assert_line "BURST-DISABLED: true"
	assert_line "COUNT-sent: 2"
	assert_line "COUNT-recv: 5"
	assert_line "COUNT-out: 0"
	assert_line "COUNT-lost: 0"
	assert_line "COUNT-bad: 0"
	# no CSP violation or script error; Chromium's only complaint is the 404 of the first try
	refute_output --partial "PAGE-ERROR:"
	assert_equal "$(grep '^CONSOLE:' <<<"$output" | grep -vc ' 404')" 0
	assert_server_log "$PAGE_GET" 'http 404 "GET /" [0-9]+\.[0-9]{3}s \(.*\), exit 3' \
		"$WS, in 2 msg 14 B, out 5 msg [0-9]+ B, $ROUTED"
}

@test "a link to the page with #/PATH opens the console on that route at once" {
	make_route_dir
	start_server --dir "$DIR"
	drive console "http://127.0.0.1:$PORT/#/chat/room2?y=2" --script 'wait 1|send abc|wait 3'
	assert_success
	assert_line "URL-FIELD: ws://127.0.0.1:$PORT/chat/room2?y=2"
	assert_line "CONSOLE-MODE: true"
	assert_line "STATUS: WebSocket connection established"
	assert_line 'LOG: Received: hello from /chat, path /room2, query y=2'
	assert_line 'LOG: Received: ABC'
	assert_line 'LOG: Received: 3 characters'
	assert_line "COUNT-bad: 0"
	refute_output --partial "CONSOLE:"
	refute_output --partial "PAGE-ERROR:"
	assert_server_log "$PAGE_GET" "$WS, in 1 msg 3 B, out 3 msg [0-9]+ B, $ROUTED"
}
