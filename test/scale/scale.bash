# Network namespaces, wsfilter hosts and HAProxy for test/scale.bats
# (load scale/scale after common).
#
# The test builds its own small network, with addresses only on links it
# creates and inside namespaces it creates:
#
#   client ns  eth0 10.77.9.2/24, plus 10.77.9.10-250 (one source address
#      |            per test client, so a host's log line names its client)
#   lb ns      c0   10.77.9.1/24   HAProxy, the shipped haproxy/wsfilter.cfg:
#      |            *:443 TLS, stats on 127.0.0.1:8404, runtime API socket
#      |       br0  10.77.0.1/24   bridge over h1, h2, h3
#   host ns N  eth0 10.77.0.1N/24  systemd-socket-activate --accept on
#                                  10.77.0.1N:8765 running wsfilter --trust-proxy
#
# Namespace names carry the pid of the bats process that made them
# (wsfs<PID>-lb, ...), so concurrent runs do not meet and leftovers of a
# killed run are recognised and removed. net_down (from teardown_file) kills
# every process in every namespace and deletes them.

SCALE_DIR="$TOP/test/scale"
SHIPPED_HAPROXY="$TOP/haproxy/wsfilter.cfg"
HOSTS=(1 2 3)
LB_ADDR=10.77.9.1
URI="wss://$LB_ADDR/"
WS_PORT=8765

# ns NAME: the full name of one of this run's namespaces (lb, c, h1, h2, h3).
ns() { echo "${NS_PREFIX}-$1"; }

# in_ns NAME CMD...: run CMD in namespace NAME. Descriptor 3 (bats') is never
# passed on, or bats would wait for whatever holds it.
in_ns() {
	local n=$1
	shift
	ip netns exec "$(ns "$n")" "$@" 3>&-
}

host_addr() { echo "10.77.0.1$1"; }

# sources FIRST COUNT: COUNT client source addresses from 10.77.9.FIRST, comma-separated.
sources() {
	seq "$1" $(($1 + $2 - 1)) | sed 's/^/10.77.9./' | paste -sd, -
}

# ---- the network ------------------------------------------------------------

# ns_kill_all NAME: end every process in the namespace (TERM, then KILL
# after 2 s), each wait bounded.
ns_kill_all() {
	local name=$1 pids
	pids=$(ip netns pids "$name" 2>/dev/null) || return 0
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	for _ in $(seq 1 40); do
		[ -z "$(ip netns pids "$name" 2>/dev/null)" ] && return 0
		sleep 0.05
	done
	pids=$(ip netns pids "$name" 2>/dev/null)
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
	for _ in $(seq 1 40); do
		[ -z "$(ip netns pids "$name" 2>/dev/null)" ] && return 0
		sleep 0.05
	done
	echo "processes left in $name: $(ip netns pids "$name" 2>/dev/null | paste -sd' ')" >&2
	return 1
}

# net_remove_stale: namespaces of an earlier run whose bats process is gone.
net_remove_stale() {
	local name pid
	for name in $(ip netns list | awk '{print $1}' | grep -E '^wsfs[0-9]+-'); do
		pid=${name#wsfs}
		pid=${pid%%-*}
		kill -0 "$pid" 2>/dev/null && continue
		ns_kill_all "$name" || true
		ip netns del "$name" 2>/dev/null || true
	done
}

# net_up: the namespaces, links and addresses drawn above.
net_up() {
	local h
	net_remove_stale
	for h in lb c "${HOSTS[@]/#/h}"; do
		ip netns add "$(ns "$h")" || return 1
		ip -n "$(ns "$h")" link set lo up || return 1
	done
	ip -n "$(ns lb)" link add br0 type bridge || return 1
	ip -n "$(ns lb)" addr add 10.77.0.1/24 dev br0
	ip -n "$(ns lb)" link set br0 up
	for h in "${HOSTS[@]}"; do
		ip link add "h$h" netns "$(ns lb)" type veth peer name eth0 netns "$(ns "h$h")" || return 1
		ip -n "$(ns lb)" link set "h$h" master br0 up
		ip -n "$(ns "h$h")" addr add "$(host_addr "$h")/24" dev eth0
		ip -n "$(ns "h$h")" link set eth0 up
	done
	ip link add c0 netns "$(ns lb)" type veth peer name eth0 netns "$(ns c)" || return 1
	ip -n "$(ns lb)" addr add "$LB_ADDR/24" dev c0
	ip -n "$(ns lb)" link set c0 up
	ip -n "$(ns c)" addr add 10.77.9.2/24 dev eth0
	seq 10 250 | sed 's|.*|addr add 10.77.9.&/24 dev eth0|' | ip -n "$(ns c)" -b - || return 1
	ip -n "$(ns c)" link set eth0 up
}

# net_down: every process in every namespace of this run ended, the
# namespaces deleted (their links go with them).
net_down() {
	local name rc=0
	[ -n "${NS_PREFIX:-}" ] || return 0
	for name in $(ip netns list | awk '{print $1}' | grep -F "${NS_PREFIX}-"); do
		ns_kill_all "$name" || rc=1
		ip netns del "$name" || rc=1
	done
	return $rc
}

# ---- certificates -----------------------------------------------------------

# make_certs: a test CA (ca.pem) and a certificate for 10.77.9.1 signed by it,
# as one PEM with its key (haproxy.pem), the form HAProxy's crt wants.
make_certs() {
	local d=$BATS_FILE_TMPDIR
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/ca.key" -out "$d/ca.pem" -days 1 -subj "/CN=wsfilter scale test CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		2>/dev/null || return 1
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=$LB_ADDR" 2>/dev/null || return 1
	printf '%s\n' "subjectAltName=IP:$LB_ADDR" "extendedKeyUsage=serverAuth" \
		"keyUsage=critical,digitalSignature" "basicConstraints=CA:FALSE" \
		"subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -set_serial 2 \
		-days 1 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null || return 1
	cat "$d/server.pem" "$d/server.key" >"$d/haproxy.pem"
	chmod 600 "$d/haproxy.pem"
}

# ---- wsfilter hosts ---------------------------------------------------------

WSF_NAME=$(basename "$WSFILTER")
WSF_NAME=${WSF_NAME:0:15}

# host_log N: the file that gets host N's launcher and wsfilter stderr.
host_log() { echo "$BATS_FILE_TMPDIR/host$1.log"; }

# host_wsfilter_pids N: the wsfilter processes running in host N's namespace.
host_wsfilter_pids() {
	local p comm state
	for p in $(ip netns pids "$(ns "h$1")" 2>/dev/null); do
		comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
		state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
		[ "$comm" = "$WSF_NAME" ] && [ "$state" != Z ] && echo "$p"
	done
}

# host_listening N: something listens on host N's wsfilter port.
host_listening() {
	in_ns "h$1" ss -Hltn "sport = :$WS_PORT" | grep -q .
}

# host_start N: systemd-socket-activate --accept on host N, wsfilter on fd 3
# (as wsfilter.socket with Accept=yes does), waiting up to 5 s for the
# listener. The readiness check looks at the listening socket instead of
# connecting, so it starts no wsfilter.
host_start() {
	local h=$1
	# a simple command, so that $! is the launcher itself (ip netns exec
	# execs it) and not a subshell
	ip netns exec "$(ns "h$h")" systemd-socket-activate --accept -l "$(host_addr "$h"):$WS_PORT" \
		"$WSFILTER" --trust-proxy </dev/null >>"$(host_log "$h")" 2>&1 3>&- &
	echo $! >"$BATS_FILE_TMPDIR/host$h.pid"
	disown $! # killing it on purpose is no news for bats' output
	for _ in $(seq 1 100); do
		host_listening "$h" && return 0
		sleep 0.05
	done
	echo "host $h does not listen on $(host_addr "$h"):$WS_PORT" >&2
	return 1
}

# host_launcher_pid N: the pid of host N's systemd-socket-activate.
host_launcher_pid() { cat "$BATS_FILE_TMPDIR/host$1.pid" 2>/dev/null; }

# host_kill N: host N dies: its link goes down (so not even a reset reaches
# HAProxy) and every process in it is killed with SIGKILL.
host_kill() {
	local pids
	ip -n "$(ns "h$1")" link set eth0 down
	pids=$(ip netns pids "$(ns "h$1")")
	# shellcheck disable=SC2086
	[ -z "$pids" ] || kill -KILL $pids
}

# host_lines N: host N's wsfilter log lines ("wsfilter[PID]: ...").
host_lines() { grep -E "^$LOGP" "$(host_log "$1")" || true; }

# lines_for SOURCE: every host's log lines for the client at SOURCE, each
# prefixed with "hostN ".
lines_for() {
	local h
	for h in "${HOSTS[@]}"; do
		host_lines "$h" | grep -E " for ${1//./\\.} " | sed "s/^/host$h /"
	done
}

# wait_lines_for SECONDS SOURCE...: until each SOURCE has a log line on some host.
wait_lines_for() {
	local secs=$1 s missing
	shift
	for _ in $(seq 1 $((secs * 10))); do
		missing=
		for s in "$@"; do
			[ -n "$(lines_for "$s")" ] || { missing=$s; break; }
		done
		[ -z "$missing" ] && return 0
		sleep 0.1
	done
	echo "no log line for $missing after $secs s" >&2
	return 1
}

# ---- HAProxy ----------------------------------------------------------------

HAPROXY_CFG=
HAPROXY_SOCK=

# haproxy_config: the shipped configuration with only the certificate, the
# runtime API socket, the log target and the hosts' addresses replaced.
haproxy_config() {
	local d=$BATS_FILE_TMPDIR out=$BATS_FILE_TMPDIR/haproxy.cfg
	sed -e "s|crt /etc/haproxy/certs/wsfilter.pem|crt $d/haproxy.pem|" \
		-e "s|stats socket /run/haproxy/admin.sock|stats socket $d/admin.sock|" \
		-e "s|^\([[:space:]]*log\) /dev/log |\1 stderr format short |" \
		-e "s|server host\([0-9]\) 10\.0\.0\.1\([0-9]\):8765|server host\1 10.77.0.1\2:$WS_PORT|" \
		"$SHIPPED_HAPROXY" >"$out" || return 1
	echo "$out"
}

haproxy_log() { echo "$BATS_FILE_TMPDIR/haproxy.log"; }

# haproxy_start: the real haproxy in the lb namespace, in the foreground
# (-db), waiting up to 5 s for its runtime API.
haproxy_start() {
	HAPROXY_CFG=$(haproxy_config) || return 1
	HAPROXY_SOCK=$BATS_FILE_TMPDIR/admin.sock
	ip netns exec "$(ns lb)" haproxy -db -f "$HAPROXY_CFG" </dev/null >>"$(haproxy_log)" 2>&1 3>&- &
	echo $! >"$BATS_FILE_TMPDIR/haproxy.pid"
	disown $!
	for _ in $(seq 1 100); do
		hapi 'show info' 2>/dev/null | grep -q '^Name: HAProxy' && return 0
		sleep 0.05
	done
	echo "haproxy did not start:" >&2
	cat "$(haproxy_log)" >&2
	return 1
}

# hapi COMMAND: one command on HAProxy's runtime API.
hapi() {
	echo "$1" | socat -t 5 stdio "UNIX-CONNECT:$HAPROXY_SOCK"
}

# server_status NAME: host NAME's status in the wsfilter backend (UP, DOWN,
# MAINT, "UP 1/2"...) from `show stat`.
server_status() {
	hapi 'show stat' | awk -F, -v srv="$1" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") col = i; next }
		$1 == "wsfilter" && $2 == srv { print $col }'
}

# wait_status NAME STATUS SECONDS: until NAME's status is exactly STATUS.
wait_status() {
	local s
	for _ in $(seq 1 $(($3 * 10))); do
		s=$(server_status "$1")
		[ "$s" = "$2" ] && return 0
		sleep 0.1
	done
	echo "$1 is \"$s\", not $2, after $3 s" >&2
	hapi 'show stat' | cut -d, -f1,2,18 >&2
	return 1
}

# wait_op_down NAME SECONDS: until NAME's operational state (whatever its
# administrative state, drain included) is down (0 in `show servers state`).
wait_op_down() {
	for _ in $(seq 1 $(($2 * 10))); do
		[ "$(hapi 'show servers state wsfilter' | awk -v srv="$1" '$4 == srv { print $6 }')" = 0 ] && return 0
		sleep 0.1
	done
	echo "$1 is not down after $2 s:" >&2
	hapi 'show servers state wsfilter' >&2
	return 1
}

# sessions_by_server: "SOURCE SERVER" for every client session to the
# wsfilter backend, from `show sess`.
sessions_by_server() {
	hapi 'show sess' | sed -n 's/.* src=\([0-9.]*\):[0-9]* fe=wsfilter be=wsfilter srv=\([^ ]*\) .*/\1 \2/p'
}

# ---- clients ----------------------------------------------------------------

CLIENTS_PIDS=()

# clients ARGS...: test/scale/wsclients.py in the client namespace, trusting the test CA.
clients() {
	in_ns c "$PY" "$SCALE_DIR/wsclients.py" --cafile "$BATS_FILE_TMPDIR/ca.pem" "$@"
}

# hold_start FIRST COUNT: COUNT clients from 10.77.9.FIRST on, each sending a
# message every 20 ms until hold_stop; waits up to 20 s until all are open.
# Their result lines go to $HOLD_OUT.
hold_start() {
	HOLD_OUT=$BATS_TEST_TMPDIR/hold.out
	HOLD_READY=$BATS_TEST_TMPDIR/hold.ready
	HOLD_STOP=$BATS_TEST_TMPDIR/hold.stop
	rm -f "$HOLD_READY" "$HOLD_STOP"
	ip netns exec "$(ns c)" "$PY" "$SCALE_DIR/wsclients.py" --cafile "$BATS_FILE_TMPDIR/ca.pem" \
		hold "$URI" "$(sources "$1" "$2")" --ready "$HOLD_READY" --stop "$HOLD_STOP" \
		--max-seconds 150 </dev/null >"$HOLD_OUT" 2>&1 3>&- &
	HOLD_PID=$!
	CLIENTS_PIDS+=("$HOLD_PID")

	for _ in $(seq 1 200); do
		[ -e "$HOLD_READY" ] && return 0
		kill -0 "$HOLD_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "the clients did not all connect:" >&2
	cat "$HOLD_OUT" >&2
	return 1
}

# hold_split HOST FIRST COUNT: hold_start FIRST COUNT; then VICTIMS are the held
# clients HAProxy sent to HOST (one at least), OTHERS the rest (every held client
# has its session).
hold_split() {
	local s srv want
	hold_start "$2" "$3" || return 1
	want=" $(sources "$2" "$3" | tr , ' ') "
	VICTIMS=() OTHERS=()
	while read -r s srv; do
		[[ $want == *" $s "* ]] || continue
		if [ "$srv" = "$1" ]; then VICTIMS+=("$s"); else OTHERS+=("$s"); fi
	done < <(sessions_by_server)
	echo "# on $1: ${VICTIMS[*]}" >&3
	[ "${#VICTIMS[@]}" -ge 1 ] || fail "no client landed on $1"
	[ $((${#VICTIMS[@]} + ${#OTHERS[@]})) -eq "$3" ] ||
		fail "show sess lists $((${#VICTIMS[@]} + ${#OTHERS[@]})) of $3 clients"
}

# wait_hold_results SECONDS SOURCE...: wait up to SECONDS until each held client
# at SOURCE has ended (has its result line).
wait_hold_results() {
	local secs=$1 s n
	shift
	for _ in $(seq 1 $((secs * 10))); do
		n=0
		for s in "$@"; do
			[ -n "$(hold_result "$s")" ] && n=$((n + 1))
		done
		[ "$n" -eq $# ] && return 0
		sleep 0.1
	done
	return 0 # the callers say which one did not end
}

# assert_holds_ended RESULT WHAT SOURCE...: each held client at SOURCE has ended
# (else it "still runs WHAT"), with RESULT and no bad reply.
assert_holds_ended() {
	local want=$1 what=$2 s line
	shift 2
	for s in "$@"; do
		line=$(hold_result "$s")
		[ -n "$line" ] || fail "client $s still runs $what"
		assert_equal "$(field "$line" result)" "$want"
		assert_equal "$(field "$line" bad)" 0
	done
}

# holds_finish_ok SOURCE...: hold_stop; each held client at SOURCE then ended
# well, every message it sent answered.
holds_finish_ok() {
	local s line
	hold_stop
	for s in "$@"; do
		line=$(hold_result "$s")
		assert_equal "$(field "$line" result)" ok
		assert_equal "$(field "$line" received)" "$(field "$line" sent)"
	done
}

# connect_lands FIRST COUNT MESSAGES REGEX: COUNT clients from 10.77.9.FIRST on
# each exchange MESSAGES messages and close, all well; each one's log line,
# prefixed with its host (lines_for), matches REGEX, e.g. '^host[23] '.
connect_lands() {
	local s fresh
	run clients connect "$URI" "$(sources "$1" "$2")" "$3"
	assert_success
	mapfile -t fresh < <(sources "$1" "$2" | tr , '\n')
	wait_lines_for 10 "${fresh[@]}"
	for s in "${fresh[@]}"; do
		assert_regex "$(lines_for "$s")" "$4"
	done
}

# websocket_count N: how many WebSocket connections host N has logged.
websocket_count() {
	host_lines "$1" | grep -c ' websocket ' || true
}

# host_gets_some N FIRST COUNT MESSAGES: connect_lands FIRST COUNT MESSAGES (any
# host), and host N logged one of the new connections at least.
host_gets_some() {
	local before
	before=$(websocket_count "$1")
	connect_lands "$2" "$3" "$4" '^host[1-3] '
	[ "$(websocket_count "$1")" -gt "$before" ] || fail "host$1 got none of $3 new connections"
}

# hold_stop: the held clients stop sending, collect their replies and close;
# waits up to 30 s for them to end.
hold_stop() {
	touch "$HOLD_STOP"
	for _ in $(seq 1 300); do
		kill -0 "$HOLD_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$HOLD_PID" 2>/dev/null; then
		echo "held clients still running 30 s after stop" >&2
		kill -KILL "$HOLD_PID"
	fi
	wait "$HOLD_PID" || true # its status is in its result lines
}

# hold_result SOURCE: the result line of the held client at SOURCE (empty
# while it runs).
hold_result() {
	grep -E "^client ${1//./\\.} result " "$HOLD_OUT" || true
}

# field LINE NAME: the word after NAME in LINE ("result", "code", "sent", ...).
field() {
	awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$1"
}

# log_field LINE WHAT: from a wsfilter log line, the count of "in N msg" (in)
# or "out N msg" (out).
log_field() {
	sed -n "s/.* $2 \([0-9]*\) msg .*/\1/p" <<<"$1"
}

# kill_clients: end the clients a test started (from teardown): held
# clients are asked to stop first, so that a failed test does not leave
# "client left" lines behind on the hosts.
kill_clients() {
	local p
	[ -n "${HOLD_STOP:-}" ] && touch "$HOLD_STOP"
	wait_gone 50 0.1 "${CLIENTS_PIDS[@]}" || true
	for p in "${CLIENTS_PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	CLIENTS_PIDS=()
}

# ---- checks over the whole run ----------------------------------------------

# expect_client_left SOURCE...: these clients' connections are cut on
# purpose between HAProxy and the host, which then logs "exit 4".
expect_client_left() {
	printf '%s\n' "$@" >>"$BATS_FILE_TMPDIR/client-left"
}

# all_exits_clean: every wsfilter log line on every host ends with "exit 0"
# (but "exit 4" for the clients of expect_client_left), and no wsfilter died
# of a signal: systemd-socket-activate logs "Child PID died with code N" for
# each child, N being the signal number for a signal death.
all_exits_clean() {
	local h bad s
	for h in "${HOSTS[@]}"; do
		bad=$(host_lines "$h" | grep -Ev ', exit 0$' || true)
		if [ -s "$BATS_FILE_TMPDIR/client-left" ]; then
			while read -r s; do
				bad=$(grep -Ev " for ${s//./\\.} .*, exit 4$" <<<"$bad" || true)
			done <"$BATS_FILE_TMPDIR/client-left"
		fi
		if [ -n "$bad" ]; then
			echo "host $h: log lines without exit 0:" >&2
			echo "$bad" >&2
			return 1
		fi
		# as many non-zero "died with code N" as log lines ending "exit N"
		bad=$(awk -v re="$LOG_RE" '
			/^Child [0-9]+ died with code [1-9]/ { died[$NF]++ }
			$0 ~ re && / exit [1-9][0-9]*$/ { logged[$NF]++ }
			END {
				for (c in died) if (died[c] != logged[c]) print died[c] " children died with code " c ", " logged[c] + 0 " log lines say exit " c
			}' "$(host_log "$h")")
		if [ -n "$bad" ]; then
			echo "host $h: $bad (a signal death?)" >&2
			return 1
		fi
	done
}

show_scale_logs() {
	local f
	for f in "$BATS_FILE_TMPDIR"/*.log "${HOLD_OUT:-/nonexistent}"; do
		[ -e "$f" ] || continue
		echo "---- $f"
		tail -n 30 "$f"
	done
}
