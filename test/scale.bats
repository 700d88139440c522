#!/usr/bin/env bats
# Past one machine: three wsfilter hosts behind the real HAProxy running the
# shipped haproxy/wsfilter.cfg, TLS at HAProxy, each host in its own network
# namespace under systemd-socket-activate --accept with --trust-proxy, the
# clients in another namespace (test/scale/scale.bash draws the network).
# The tests spread connections, carry 10,000-message bursts over wss://, kill a
# host, drain one, and read every host's log lines. They talk only to the
# namespaces they create; teardown_file ends every process in them and
# deletes them.

load lib/common
load scale/scale

setup_file() {
	[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
	command -v haproxy >/dev/null || fail "haproxy is not installed (make deps)"
	export NS_PREFIX="wsfs$$"
	net_up
	make_certs
	local h
	for h in "${HOSTS[@]}"; do
		host_start "$h"
	done
	haproxy_start
	for h in "${HOSTS[@]}"; do
		wait_status "host$h" UP 20
	done
}

teardown_file() {
	net_down
	# nothing of this file's is left: no namespace, no process
	if ip netns list | grep -F "${NS_PREFIX:-none}-"; then
		echo "namespaces left behind" >&2
		return 1
	fi
}

# Every test starts from three hosts up, whatever the one before did to them.
setup() {
	HAPROXY_SOCK=$BATS_FILE_TMPDIR/admin.sock
	local h
	for h in "${HOSTS[@]}"; do
		ip -n "$(ns "h$h")" link set eth0 up
		if ! kill -0 "$(host_launcher_pid "$h")" 2>/dev/null; then
			host_start "$h"
		fi
		case $(server_status "host$h") in
		MAINT | DRAIN*) hapi "set server wsfilter/host$h state ready" >/dev/null ;;
		esac
	done
	for h in "${HOSTS[@]}"; do
		wait_status "host$h" UP 20
	done
}

teardown() {
	kill_clients
	[ -z "${BATS_TEST_COMPLETED:-}" ] && show_scale_logs
	return 0
}

@test "the shipped HAProxy configuration, with only addresses and paths replaced, is valid" {
	run in_ns lb haproxy -c -f "$(haproxy_config)"
	assert_success
	assert_output --partial 'Configuration file is valid'
	refute_output --partial WARNING
	# the substitutions touched exactly what they should
	run diff "$SHIPPED_HAPROXY" "$(haproxy_config)"
	assert_equal "$(grep -c '^[<>]' <<<"$output")" 12
}

@test "connections spread over every host; each log line names the client from HAProxy's X-Forwarded-For" {
	# a client's own X-Forwarded-For is dropped: only HAProxy's reaches the hosts
	run clients connect "$URI" "$(sources 10 30)" 5 --header 'X-Forwarded-For: 203.0.113.66'
	assert_success
	assert_equal "$(grep -c ' result ok code 1000 sent 5 received 5 bad 0$' <<<"$output")" 30
	mapfile -t srcs < <(sources 10 30 | tr , '\n')
	wait_lines_for 10 "${srcs[@]}"
	local h n s line
	for h in "${HOSTS[@]}"; do
		n=$(host_lines "$h" | grep -cE ' for 10\.77\.9\.([1-3][0-9]) websocket ')
		echo "# host$h: $n of 30 connections" >&3
		[ "$n" -ge 3 ] || fail "host $h got $n of 30 connections"
	done
	for s in "${srcs[@]}"; do
		line=$(lines_for "$s")
		assert_equal "$(wc -l <<<"$line")" 1
		# peer: HAProxy's address on the hosts' link; then the client
		assert_regex "$line" "^host[1-3] ${LOGP}10\.77\.0\.1:[0-9]+ for ${s//./\\.} websocket [0-9.]+s, in 5 msg [0-9]+ B, out 5 msg [0-9]+ B, close 1000 by client, exit 0$"
	done
	run grep -r 203.0.113.66 "$BATS_FILE_TMPDIR" --include='host*.log'
	assert_failure
	all_exits_clean
}

@test "python websockets: 10,000 pipelined messages over wss:// through HAProxy all come back" {
	run in_ns c env SSL_CERT_FILE="$BATS_FILE_TMPDIR/ca.pem" \
		timeout 90 "$PY" "$BATS_TEST_DIRNAME/clients/python_websockets.py" "$URI" 10000 1000
	echo "# python websockets through HAProxy: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
	wait_lines_for 10 10.77.9.2
	assert_regex "$(lines_for 10.77.9.2 | tail -n 1)" ' for 10\.77\.9\.2 websocket [0-9.]+s, in 10000 msg [0-9]+ B, out 10000 msg [0-9]+ B, close 1000 by client, exit 0$'
	all_exits_clean
}

@test "node ws: 10,000 pipelined messages over wss:// through HAProxy all come back" {
	local before
	before=$(lines_for 10.77.9.2 | wc -l)
	cd "$TOP" # node resolves ws from test/node_modules, above the script
	run in_ns c env NODE_EXTRA_CA_CERTS="$BATS_FILE_TMPDIR/ca.pem" \
		timeout 90 node "$BATS_TEST_DIRNAME/clients/node_ws.js" "$URI" 10000 1000
	echo "# node ws through HAProxy: ${lines[0]}" >&3
	assert_success
	assert_line --regexp '^received 10000/10000 in [0-9]+ ms$'
	assert_line 'close code 1000'
	refute_line --partial 'BAD:'
	local i
	for i in $(seq 1 100); do
		[ "$(lines_for 10.77.9.2 | wc -l)" -gt "$before" ] && break
		sleep 0.1
	done
	assert_regex "$(lines_for 10.77.9.2 | tail -n 1)" ' for 10\.77\.9\.2 websocket [0-9.]+s, in 10000 msg [0-9]+ B, out 10000 msg [0-9]+ B, close 1000 by client, exit 0$'
	all_exits_clean
}

@test "a host killed mid-run: its clients are cut within seconds, the others lose nothing, new connections go to live hosts, and it comes back" {
	hold_split host1 40 12
	local s line
	sleep 1

	# host1 dies: no FIN, no reset, nothing reaches HAProxy from it
	local t0 t1
	t0=$(date +%s%N)
	host_kill 1
	# HAProxy's checks fail, it marks host1 down and cuts its connections
	# (on-marked-down shutdown-sessions); every client of host1 sees its
	# connection end, none hangs
	wait_status host1 DOWN 30
	wait_hold_results 10 "${VICTIMS[@]}"
	t1=$(date +%s%N)
	echo "# host1's clients cut $(( (t1 - t0) / 1000000 )) ms after it died" >&3
	assert_holds_ended dropped "10 s after host1 went down" "${VICTIMS[@]}"
	# the clients of host2 and host3 are still running
	for s in "${OTHERS[@]}"; do
		assert_equal "$(hold_result "$s")" ''
	done

	# new connections while host1 is down all succeed, on host2 and host3
	connect_lands 52 9 20 '^host[23] '

	# the clients on live hosts lost nothing: every message they sent was
	# read by wsfilter (its log line) and answered, in order
	holds_finish_ok "${OTHERS[@]}"
	wait_lines_for 10 "${OTHERS[@]}"
	for s in "${OTHERS[@]}"; do
		line=$(lines_for "$s")
		assert_regex "$line" '^host[23] .* close 1000 by client, exit 0$'
		assert_equal "$(log_field "$line" in)" "$(field "$(hold_result "$s")" sent)"
		assert_equal "$(log_field "$line" out)" "$(field "$(hold_result "$s")" sent)"
	done

	# host1 comes back: link up, launcher started; once its checks pass it
	# gets new connections again
	ip -n "$(ns h1)" link set eth0 up
	host_start 1
	wait_status host1 UP 30
	host_gets_some 1 61 9 20
	all_exits_clean
}

@test "a host drained: set to drain in HAProxy it gets no new connection; stopped, each of its clients gets its replies, then close 1001" {
	hold_split host2 70 12
	local s line pids

	# step 1: HAProxy's runtime API takes host2 out of the rotation
	run hapi 'set server wsfilter/host2 state drain'
	assert_success
	wait_status host2 DRAIN 5
	connect_lands 82 6 5 '^host[13] '
	# its clients are still being served
	sleep 0.5
	for s in "${VICTIMS[@]}"; do
		assert_equal "$(hold_result "$s")" ''
	done

	# step 2: stop the host as systemd stops wsfilter.socket and the
	# wsfilter@ instances: SIGTERM to the listener and to every wsfilter
	# (systemd-socket-activate passes its SIGTERM on to its children, too)
	mapfile -t pids < <(host_wsfilter_pids 2)
	[ "${#pids[@]}" -ge "${#VICTIMS[@]}" ] || fail "${#pids[@]} wsfilter processes on host2 for ${#VICTIMS[@]} clients"
	kill -TERM "$(host_launcher_pid 2)" "${pids[@]}" 2>/dev/null || true
	wait_hold_results 10 "${VICTIMS[@]}"
	for _ in $(seq 1 50); do
		[ -z "$(host_wsfilter_pids 2)" ] && break
		sleep 0.1
	done
	assert_equal "$(host_wsfilter_pids 2)" ''
	wait_lines_for 10 "${VICTIMS[@]}"
	# close 1001 from wsfilter, after every reply it had produced: the client
	# got all of them, in order, before the close
	assert_holds_ended closed "10 s after the stop" "${VICTIMS[@]}"
	for s in "${VICTIMS[@]}"; do
		line=$(hold_result "$s")
		assert_equal "$(field "$line" code)" 1001
		local logline
		logline=$(lines_for "$s")
		assert_regex "$logline" '^host2 .* close 1001 by server.*, exit 0$'
		assert_equal "$(log_field "$logline" out)" "$(field "$line" received)"
		[ "$(field "$line" received)" -gt 0 ]
	done
	# the failing checks then mark it down; no connection is left to cut
	wait_op_down host2 30
	hapi 'show sess' | grep -c ' srv=host2 ' && fail "sessions left on host2"

	# the others go on to the end, untouched
	holds_finish_ok "${OTHERS[@]}"

	# step 3: the host starts again and is made ready: it gets traffic again
	host_start 2
	run hapi 'set server wsfilter/host2 state ready'
	assert_success
	wait_status host2 UP 20
	host_gets_some 2 90 9 5
	all_exits_clean
}

@test "disable server (maintenance) takes a host out at once: its connections are cut, new ones go elsewhere" {
	hold_split host3 100 6
	local s
	run hapi 'disable server wsfilter/host3'
	assert_success
	wait_status host3 MAINT 5
	wait_hold_results 5 "${VICTIMS[@]}"
	assert_holds_ended dropped "5 s after disable server" "${VICTIMS[@]}"
	# host3 sees its clients leave without a close (exit 4)
	expect_client_left "${VICTIMS[@]}"
	wait_lines_for 10 "${VICTIMS[@]}"
	for s in "${VICTIMS[@]}"; do
		assert_regex "$(lines_for "$s")" '^host3 .*, exit 4$'
	done
	connect_lands 110 6 5 '^host[12] '
	holds_finish_ok "${OTHERS[@]}"
	run hapi 'enable server wsfilter/host3'
	assert_success
	wait_status host3 UP 20
}

@test "GET /healthz on HAProxy: 200 while a host is up, 503 when none is; never passed to a host" {
	local h before=()
	for h in "${HOSTS[@]}"; do
		before+=("$(host_lines "$h" | grep -c ' for 10\.77\.9\.2 ' || true)")
	done
	run in_ns c curl -sS -o /dev/null -w '%{http_code}' --cacert "$BATS_FILE_TMPDIR/ca.pem" "https://$LB_ADDR/healthz"
	assert_output 200
	for h in "${HOSTS[@]}"; do
		hapi "disable server wsfilter/host$h" >/dev/null
	done
	run in_ns c curl -sS -o /dev/null -w '%{http_code}' --cacert "$BATS_FILE_TMPDIR/ca.pem" "https://$LB_ADDR/healthz"
	assert_output 503
	for h in "${HOSTS[@]}"; do
		hapi "enable server wsfilter/host$h" >/dev/null
	done
	for h in "${HOSTS[@]}"; do
		wait_status "host$h" UP 20
	done
	run in_ns c curl -sS -o /dev/null -w '%{http_code}' --cacert "$BATS_FILE_TMPDIR/ca.pem" "https://$LB_ADDR/healthz"
	assert_output 200
	for h in "${HOSTS[@]}"; do
		assert_equal "$(host_lines "$h" | grep -c ' for 10\.77\.9\.2 ' || true)" "${before[$((h - 1))]}"
	done
}

@test "statistics and Prometheus metrics answer on HAProxy's loopback only" {
	run in_ns lb curl -sS --max-time 5 http://127.0.0.1:8404/metrics
	assert_success
	assert_line --regexp '^haproxy_server_status\{proxy="wsfilter",server="host1",state="UP"\} 1$'
	run in_ns lb curl -sS --max-time 5 'http://127.0.0.1:8404/stats;csv'
	assert_success
	assert_line --regexp '^wsfilter,host3,'
	run in_ns c curl -sS --max-time 5 "http://$LB_ADDR:8404/metrics"
	assert_failure 7 # connection refused
}

@test "every wsfilter so far ended cleanly: each log line ends with exit 0, no child died of a signal" {
	all_exits_clean
}
