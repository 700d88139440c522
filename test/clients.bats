#!/usr/bin/env bats
# Real WebSocket clients against wsfilter behind socat (one wsfilter per TCP connection):
# Debian's python3-websockets and Node's `ws` each send 10,000 pipelined messages and
# check every reply, in order, with its suffix.

load common

setup_file() {
	PORT=$(free_port)
	export PORT
	# fd 3 closed: bats waits for whatever holds it
	socat "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=128,nodelay" EXEC:"$WSFILTER" \
		2>"$BATS_FILE_TMPDIR/socat.log" 3>&- &
	echo $! >"$BATS_FILE_TMPDIR/socat.pid"
	wait_port "$PORT"
}

teardown_file() {
	if [ -s "$BATS_FILE_TMPDIR/socat.pid" ]; then
		kill "$(cat "$BATS_FILE_TMPDIR/socat.pid")" 2>/dev/null || true
	fi
}

@test "python websockets: 10,000 pipelined messages all come back in order with the suffix" {
	run timeout 90 "$PY" "$BATS_TEST_DIRNAME/clients/python_websockets.py" "ws://127.0.0.1:$PORT/" 10000 1000
	echo "# python websockets: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
}

@test "node ws: 10,000 pipelined messages all come back in order with the suffix" {
	cd "$TOP" # node resolves ws from $TOP/node_modules
	run timeout 90 node "$BATS_TEST_DIRNAME/clients/node_ws.js" "ws://127.0.0.1:$PORT/" 10000 1000
	echo "# node ws: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
}

@test "each client connection gets its own wsfilter that ends with a clean close" {
	run timeout 30 "$PY" "$BATS_TEST_DIRNAME/clients/python_websockets.py" "ws://127.0.0.1:$PORT/" 10 1000
	assert_success
	# wsfilter's log line for each connection, written at its end
	for i in $(seq 1 50); do
		[ "$(grep -c 'close 1000 by client' "$BATS_FILE_TMPDIR/socat.log")" -ge 3 ] && break
		sleep 0.1
	done
	run grep -c 'close 1000 by client' "$BATS_FILE_TMPDIR/socat.log"
	assert_output 3
}
