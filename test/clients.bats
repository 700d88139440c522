#!/usr/bin/env bats
# Real WebSocket clients against wsfilter behind socat (one wsfilter per TCP connection):
# Debian's python3-websockets and Node's `ws` each send 10,000 pipelined messages and
# check every reply, in order, with its suffix. Every wsfilter socat starts records its
# exit status (a wrapper script), and each test checks its connection ended with 0.

load lib/common

setup_file() {
	export STATUS_FILE=$BATS_FILE_TMPDIR/statuses
	: >"$STATUS_FILE"
	local wrapper
	wrapper=$(exit_status_wrapper "$STATUS_FILE")
	start_on_port 127.0.0.1 start_socat_at "$wrapper" || return 1
	export PORT
	echo "$LAUNCH_PID" >"$BATS_FILE_TMPDIR/socat.pid"
}

# start_socat_at WRAPPER: socat on $PORT, one WRAPPER (wsfilter) per connection
start_socat_at() {
	# fd 3 closed: bats waits for whatever holds it
	socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=128,nodelay" EXEC:"$1" \
		2>>"$BATS_FILE_TMPDIR/socat.log" 3>&- &
	LAUNCH_PID=$!
}

teardown_file() {
	if [ -s "$BATS_FILE_TMPDIR/socat.pid" ]; then
		stop_tree "$(cat "$BATS_FILE_TMPDIR/socat.pid")"
	fi
}

@test "python websockets: 10,000 pipelined messages all come back in order with the suffix" {
	local before
	before=$(status_count "$STATUS_FILE" 0)
	run timeout 90 "$PY" "$CLIENTS/python_websockets.py" "ws://127.0.0.1:$PORT/" 10000 1000
	echo "# python websockets: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
	wait_status_count "$STATUS_FILE" 0 $((before + 1))
}

@test "node ws: 10,000 pipelined messages all come back in order with the suffix" {
	local before
	before=$(status_count "$STATUS_FILE" 0)
	cd "$TOP" # node resolves ws from test/node_modules, above the script
	run timeout 90 node "$CLIENTS/node_ws.js" "ws://127.0.0.1:$PORT/" 10000 1000
	echo "# node ws: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
	wait_status_count "$STATUS_FILE" 0 $((before + 1))
}

@test "each client connection gets its own wsfilter that ends with a clean close" {
	local before logs
	before=$(status_count "$STATUS_FILE" 0)
	logs=$(grep -c 'close 1000 by client' "$BATS_FILE_TMPDIR/socat.log" || true)
	run timeout 30 "$PY" "$CLIENTS/python_websockets.py" "ws://127.0.0.1:$PORT/" 10 1000
	assert_success
	# one more wsfilter ended with 0, and wrote its log line at its end
	wait_status_count "$STATUS_FILE" 0 $((before + 1))
	run grep -c 'close 1000 by client' "$BATS_FILE_TMPDIR/socat.log"
	assert_output $((logs + 1))
}
