# Launchers and checks for wsfilter's launcher tests (load lib/launchers after lib/common).
#
# Each start_* function starts one real launcher in the foreground, in the
# background of the test, listening on a free port (start_on_port: the launcher
# must be the one that holds it, else another port is tried), with the shipped
# configuration rewritten only for the port, the address and the binary path.
# It sets:
#   HOST      address the launcher listens on (127.0.0.1 or ::1)
#   PORT      its port
#   SCHEME    ws or wss
#   ROOT_PID  the process whose descendants are the wsfilter processes
# stop_launchers (called from teardown) ends every process started here and
# their descendants, each wait bounded.

SHIPPED_UNIT="$TOP/systemd/wsfilter@.service.in"
SHIPPED_INETD="$TOP/inetd/inetd.conf"
SHIPPED_XINETD="$TOP/inetd/xinetd.d/wsfilter"
# openbsd-inetd conflicts with xinetd as an installed package: it is unpacked
# (not installed) once into this cache and run from there.
CACHE_DIR=${WSFILTER_TEST_CACHE:-/var/cache/wsfilter-test}

STARTED_PIDS=()

# ---- process helpers --------------------------------------------------------

# count_wsfilter PID: how many live (not zombie) wsfilter processes descend
# from PID, an acceptor's spares not counted (serving). A process is wsfilter
# when its name is "wsfilter" or the name of $WSFILTER (wsfilter-asan under
# make test-asan), cut as the kernel cuts it.
count_wsfilter() {
	local n=0 p comm state name
	name=$(basename "$WSFILTER")
	name=${name:0:15}
	for p in $(serving "$1"); do
		comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
		state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
		if { [ "$comm" = wsfilter ] || [ "$comm" = "$name" ]; } && [ "$state" != Z ]; then
			n=$((n + 1))
		fi
	done
	echo "$n"
}

# wait_no_wsfilter PID SECONDS: wait until no wsfilter descends from PID.
wait_no_wsfilter() {
	local i
	for i in $(seq 1 $(($2 * 20))); do
		[ "$(count_wsfilter "$1")" = 0 ] && return 0
		sleep 0.05
	done
	echo "wsfilter processes still running under $1 after $2 s:" >&2
	ps -o pid,ppid,stat,etime,args -p "$(descendants "$1" | paste -sd, -)" >&2 || true
	return 1
}

# bg_start LOG CMD...: start CMD in the background with its output in LOG and
# record its pid in STARTED_PIDS and LAST_PID. Descriptor 3 is bats' own
# and must not be inherited, or bats would wait for the launcher.
bg_start() {
	local log=$1
	shift
	"$@" </dev/null >"$log" 2>&1 3>&- &
	LAST_PID=$!
	STARTED_PIDS+=("$LAST_PID")
}

# stop_launchers: TERM each started process and its descendants, then KILL
# whatever is left after 3 s.
stop_launchers() {
	local p all=() kids
	for p in "${STARTED_PIDS[@]}"; do
		mapfile -t kids < <(descendants "$p")
		all+=("$p" "${kids[@]}")
	done
	if [ ${#all[@]} -gt 0 ]; then
		kill -TERM "${all[@]}" 2>/dev/null || true
		wait_gone 60 0.05 "${all[@]}" || true
		kill -KILL "${all[@]}" 2>/dev/null || true
	fi
	for p in "${STARTED_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	STARTED_PIDS=()
	if [ -n "${LAUNCH_DIR:-}" ]; then
		rm -rf "$LAUNCH_DIR"
		LAUNCH_DIR='' LAUNCH_BIN=''
	fi
}

# show_logs: print the launchers' logs (shown by bats when a test fails).
show_logs() {
	local f
	for f in "$BATS_TEST_TMPDIR"/*.log; do
		[ -e "$f" ] || continue
		echo "---- $f"
		tail -n 40 "$f"
	done
}

# ---- shared set-up ----------------------------------------------------------

# launch_bin: set LAUNCH_BIN to a copy of $WSFILTER in a directory every user
# can enter, for launchers that run it as nobody (the work tree may sit below
# a private directory). stop_launchers removes it.
launch_bin() {
	if [ -z "${LAUNCH_BIN:-}" ]; then
		LAUNCH_DIR=$(mktemp -d /tmp/wsfilter-launch.XXXXXX)
		chmod 755 "$LAUNCH_DIR"
		cp "$WSFILTER" "$LAUNCH_DIR/wsfilter"
		chmod 755 "$LAUNCH_DIR/wsfilter"
		LAUNCH_BIN=$LAUNCH_DIR/wsfilter
	fi
}

# unit_exec_args: the ExecStart= command line of the shipped unit, one word a
# line, with @BINDIR@/wsfilter replaced by $WSFILTER.
unit_exec_args() {
	local line
	line=$(sed -n 's/^ExecStart=//p' "$SHIPPED_UNIT")
	[ -n "$line" ] || { echo "no ExecStart= in $SHIPPED_UNIT" >&2; return 1; }
	# shellcheck disable=SC2086
	set -- $line
	[ "$1" = "@BINDIR@/wsfilter" ] || { echo "ExecStart= runs $1, not @BINDIR@/wsfilter" >&2; return 1; }
	shift
	printf '%s\n' "$WSFILTER" "$@"
}

# url [PATH]: the WebSocket URL of the running launcher.
url() {
	case $HOST in
	*:*) echo "$SCHEME://[$HOST]:$PORT${1:-/}" ;;
	*) echo "$SCHEME://$HOST:$PORT${1:-/}" ;;
	esac
}

# make_cert: a self-signed certificate and key for 127.0.0.1, ::1 and localhost.
make_cert() {
	CERT=$BATS_TEST_TMPDIR/cert.pem
	KEY=$BATS_TEST_TMPDIR/key.pem
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$KEY" -out "$CERT" -days 1 -subj /CN=localhost \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" 2>/dev/null
	cat "$CERT" "$KEY" >"$BATS_TEST_TMPDIR/both.pem"
}

# openbsd_inetd: path of an unpacked openbsd-inetd, fetched once with
# apt-get download and dpkg -x.
openbsd_inetd() {
	local dir=$CACHE_DIR/openbsd-inetd tmp
	if [ ! -x "$dir/usr/sbin/inetd" ]; then
		mkdir -p "$CACHE_DIR"
		tmp=$(mktemp -d "$CACHE_DIR/.inetd.XXXXXX")
		(cd "$tmp" && apt-get download openbsd-inetd >/dev/null 2>&1 && dpkg -x openbsd-inetd_*.deb root) || {
			rm -rf "$tmp"
			echo "cannot fetch openbsd-inetd with apt-get download (run apt-get update?)" >&2
			return 1
		}
		rm -rf "$dir"
		mv "$tmp/root" "$dir"
		rm -rf "$tmp"
	fi
	echo "$dir/usr/sbin/inetd"
}

# ---- launchers --------------------------------------------------------------

# start_listening LOG WORD...: start_on_port HOST with the command WORD... (each
# '$PORT' in a WORD standing for the port) as the server, started by bg_start with
# its output in LOG; ROOT_PID is its pid.
start_listening() {
	LISTEN_LOG=$1
	shift
	LISTEN_CMD=("$@")
	start_on_port "$HOST" _listening_at && ROOT_PID=$LAUNCH_PID
}

_listening_at() {
	bg_start "$LISTEN_LOG" "${LISTEN_CMD[@]//\$PORT/$PORT}"
	LAUNCH_PID=$LAST_PID
}

# start_ssa_inetd [HOST]: systemd-socket-activate --accept --inetd, running the
# shipped unit's ExecStart= command.
start_ssa_inetd() {
	HOST=${1:-127.0.0.1} SCHEME=ws
	mapfile -t UNIT_ARGS < <(unit_exec_args)
	[ ${#UNIT_ARGS[@]} -gt 0 ] || return 1
	start_on_port "$HOST" _ssa_at --inetd && ROOT_PID=$LAUNCH_PID
}

# start_ssa_fd3: systemd-socket-activate --accept without --inetd: wsfilter
# finds the connection as fd 3 through LISTEN_FDS/LISTEN_PID.
start_ssa_fd3() {
	HOST=127.0.0.1 SCHEME=ws
	mapfile -t UNIT_ARGS < <(unit_exec_args)
	[ ${#UNIT_ARGS[@]} -gt 0 ] || return 1
	start_on_port "$HOST" _ssa_at && ROOT_PID=$LAUNCH_PID
}

_ssa_at() {
	local addr=$HOST:$PORT
	[[ $HOST == *:* ]] && addr="[$HOST]:$PORT"
	bg_start "$BATS_TEST_TMPDIR/ssa.log" systemd-socket-activate -l "$addr" --accept "$@" "${UNIT_ARGS[@]}"
	LAUNCH_PID=$LAST_PID
}

# start_openbsd_inetd [4|6]: inetd -d with the shipped line (4: the active
# line, bound to 127.0.0.1; 6: the commented [::1] tcp6 line).
start_openbsd_inetd() {
	SCHEME=ws
	if [ "${1:-4}" = 6 ]; then
		HOST=::1
		start_inetd_line plain '^#\[::1\]:8765[[:space:]]' '[::1]:8765' '[::1]:$PORT'
	else
		HOST=127.0.0.1
		start_inetd_line plain '^8765[[:space:]]' 8765 '127.0.0.1:$PORT'
	fi
}

# start_inetd_line plain|devlog REGEX ADDR NEWADDR [WORD...]: openbsd-inetd -d on a
# free port of HOST, configured with the line of the shipped inetd.conf that REGEX
# matches (inetd_line REGEX ADDR NEWADDR; '$PORT' in NEWADDR stands for the port),
# the WORDs appended to its argv; inetd's output in inetd.log, under devlog_start
# with devlog.
start_inetd_line() {
	INETD=$(openbsd_inetd) || return 1
	launch_bin
	INETD_HOW=$1
	shift
	INETD_LINE=("$@")
	start_on_port "$HOST" _inetd_line_at && ROOT_PID=$LAUNCH_PID
}

_inetd_line_at() {
	local conf=$BATS_TEST_TMPDIR/inetd.conf line
	line=$(inetd_line "${INETD_LINE[0]}" "${INETD_LINE[1]}" "${INETD_LINE[2]//\$PORT/$PORT}") || return 1
	[ ${#INETD_LINE[@]} -gt 3 ] && line+=" ${INETD_LINE[*]:3}"
	echo "$line" >"$conf"
	cat "$conf"
	if [ "$INETD_HOW" = devlog ]; then
		devlog_start "$BATS_TEST_TMPDIR/inetd.log" "$INETD" -d "$conf"
	else
		bg_start "$BATS_TEST_TMPDIR/inetd.log" "$INETD" -d "$conf"
	fi
	LAUNCH_PID=$LAST_PID
}

# inetd_line REGEX ADDR NEWADDR: the line of the shipped inetd.conf that
# REGEX matches (a commented-out one uncommented), its service ADDR turned
# into NEWADDR and the binary's path into $LAUNCH_BIN; fails when none does.
inetd_line() {
	local line
	line=$(grep -E "$1" "$SHIPPED_INETD" | sed 's/^#//')
	[ -n "$line" ] || { echo "no line matching $1 in $SHIPPED_INETD" >&2; return 1; }
	line=${line/"$2"/$3}
	echo "${line//\/usr\/local\/bin\/wsfilter/$LAUNCH_BIN}"
}

# start_xinetd [SED...]: xinetd -dontfork with the shipped service, bound to
# 127.0.0.1 on a free port; extra sed expressions adjust it further.
start_xinetd() {
	start_xinetd_with plain '' "$@"
}

# start_xinetd_with plain|devlog DEFAULT SED...: xinetd -dontfork with the shipped
# service, bound to 127.0.0.1 on a free port, its binary LAUNCH_BIN, adjusted
# further by the sed expressions SED (and rlimit_as lifted for a sanitizer build,
# which reserves terabytes of address space), after a defaults section that logs
# to xinetd-service.log, with the line DEFAULT if any; xinetd's own output in
# xinetd.log, under devlog_start with devlog.
start_xinetd_with() {
	local e
	launch_bin
	HOST=127.0.0.1 SCHEME=ws
	XINETD_HOW=$1 XINETD_DEFAULT=$2
	shift 2
	XINETD_SED=()
	for e in "$@"; do XINETD_SED+=(-e "$e"); done
	if sanitized; then
		XINETD_SED+=(-e '/^[[:space:]]*rlimit_as/d')
	fi
	start_on_port "$HOST" _xinetd_at && ROOT_PID=$LAUNCH_PID
}

_xinetd_at() {
	local conf=$BATS_TEST_TMPDIR/xinetd.conf
	{
		printf 'defaults\n{\n\tlog_type = FILE %s\n' "$BATS_TEST_TMPDIR/xinetd-service.log"
		[ -z "$XINETD_DEFAULT" ] || printf '\t%s\n' "$XINETD_DEFAULT"
		printf '}\n'
		sed -e "s|^\([[:space:]]*port[[:space:]]*=\).*|\1 $PORT|" \
			-e "s|/usr/local/bin/wsfilter|$LAUNCH_BIN|" \
			-e "s|^\([[:space:]]*\)# *bind\([[:space:]]*=\).*|\1bind\2 127.0.0.1|" \
			-e '/^[[:space:]]*flags/s/IPv6 *//' \
			"${XINETD_SED[@]}" "$SHIPPED_XINETD"
	} >"$conf"
	if [ "$XINETD_HOW" = devlog ]; then
		devlog_start "$BATS_TEST_TMPDIR/xinetd.log" \
			xinetd -dontfork -f "$conf" -pidfile "$BATS_TEST_TMPDIR/xinetd.pid"
	else
		bg_start "$BATS_TEST_TMPDIR/xinetd.log" xinetd -dontfork -f "$conf" -pidfile "$BATS_TEST_TMPDIR/xinetd.pid"
	fi
	LAUNCH_PID=$LAST_PID
}

# start_socat_plain: the one-liner as users write it.
start_socat_plain() {
	HOST=127.0.0.1 SCHEME=ws
	start_listening "$BATS_TEST_TMPDIR/socat.log" socat 'TCP-LISTEN:$PORT,fork' "EXEC:$WSFILTER"
}

# start_socat [HOST]: the recommended form.
start_socat() {
	local listen=TCP4-LISTEN
	HOST=${1:-127.0.0.1} SCHEME=ws
	[[ $HOST == *:* ]] && listen=TCP6-LISTEN
	start_listening "$BATS_TEST_TMPDIR/socat.log" socat \
		"$listen:\$PORT,bind=$HOST,reuseaddr,backlog=128,nodelay,fork" "EXEC:$WSFILTER"
}

# start_tcpserver [OPTIONS...]: tcpserver -HRl0 127.0.0.1 PORT wsfilter.
start_tcpserver() {
	HOST=127.0.0.1 SCHEME=ws
	start_listening "$BATS_TEST_TMPDIR/tcpserver.log" tcpserver -HRl0 "$@" "$HOST" '$PORT' "$WSFILTER"
}

# start_socat_tls: socat OPENSSL-LISTEN with a fresh self-signed certificate.
start_socat_tls() {
	make_cert
	HOST=127.0.0.1 SCHEME=wss
	start_listening "$BATS_TEST_TMPDIR/socat.log" socat \
		"OPENSSL-LISTEN:\$PORT,bind=$HOST,cert=$CERT,key=$KEY,verify=0,reuseaddr,backlog=128,nodelay,fork" \
		"EXEC:$WSFILTER"
}

# start_stunnel_socat: stunnel4 terminates TLS and forwards to the
# recommended socat form on a second port.
start_stunnel_socat() {
	start_socat || return 1
	# ROOT_PID stays socat's: the wsfilter processes run below it.
	BACK_PORT=$PORT
	make_cert
	SCHEME=wss
	start_on_port "$HOST" _stunnel_at
}

_stunnel_at() {
	local conf=$BATS_TEST_TMPDIR/stunnel.conf
	cat >"$conf" <<-EOF
		foreground = yes
		pid =
		[wsfilter]
		accept = $HOST:$PORT
		connect = $HOST:$BACK_PORT
		cert = $CERT
		key = $KEY
	EOF
	bg_start "$BATS_TEST_TMPDIR/stunnel.log" stunnel4 "$conf"
	LAUNCH_PID=$LAST_PID
}

# ---- checks -----------------------------------------------------------------

TLS_ARGS=()
tls_args() {
	TLS_ARGS=()
	if [ "$SCHEME" = wss ]; then
		TLS_ARGS=(--cafile "$CERT")
	fi
}

# hostport: HOST:PORT, IPv6 in brackets
hostport() {
	case $HOST in
	*:*) echo "[$HOST]:$PORT" ;;
	*) echo "$HOST:$PORT" ;;
	esac
}

# check_page: GET / answers 200 text/html whose body is web/index.html, exactly
# Content-Length bytes and nothing after it (wstest's strict parser fails on any
# stray byte, and on a missing Connection: close).
check_page() {
	tls_args
	local size sum tls=()
	size=$(stat -c %s "$TOP/web/index.html")
	sum=$(sha256sum "$TOP/web/index.html" | cut -c1-16)
	[ "$SCHEME" = wss ] && tls=(--tls "${TLS_ARGS[@]}")
	run wst run --connect "$(hostport)" "${tls[@]}" http GET / --host localhost
	show_logs_on_fail
	assert_success
	assert_line --index 0 'HTTP/1.1 200 OK'
	assert_line --regexp '^Content-Type: text/html'
	assert_line "Content-Length: $size"
	assert_line "BODY <$size bytes sha256:$sum>"
	refute_line --partial 'MALFORMED'
}

# check_error_body: a failed upgrade answers 400 whose body is exactly
# Content-Length bytes, with nothing after it (no log text on the socket).
check_error_body() {
	run wst run --connect "$(hostport)" hs --no-key --host localhost
	show_logs_on_fail
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line --regexp '^Content-Length: [0-9]+$'
	assert_line --regexp '^BODY "400 '
	refute_line --partial 'MALFORMED'
}

# check_ws_exchange: a handshake with a random key (its accept value checked), one
# text message and a close in one write: the 101, the reply, the close frame and
# nothing after it (no log text on the socket).
check_ws_exchange() {
	run wst run --connect "$(hostport)" hs --random-key --host localhost + frame --text raw \
		+ frame --opcode close --code 1000
	show_logs_on_fail
	assert_success
	assert_line --index 0 'HTTP/1.1 101 Switching Protocols'
	assert_line --regexp '^TEXT "raw - ([1-9][0-9]{0,2}|1000)"$'
	assert_equal "${lines[-1]}" 'CLOSE 1000'
	assert_equal "$(grep -c '^\(TEXT\|BINARY\|PING\|PONG\|CLOSE\)' <<<"$output")" 2
}

# check_pipelined [N]: one client, N messages (default 10,000) pipelined.
check_pipelined() {
	local n=${1:-10000}
	tls_args
	run timeout 120 "$PY" "$CLIENTS/load_websockets.py" "${TLS_ARGS[@]}" -n "$n" "$(url)"
	show_logs_on_fail
	assert_success
	assert_output "received $n/$n lost 0"
	# and Node's ws, for plain ws://
	if [ "$SCHEME" = ws ]; then
		run bash -c 'cd "$1" && timeout 90 node "$2" "$3" "$4" 1000' _ "$TOP" "$CLIENTS/node_ws.js" "$(url)" "$n"
		show_logs_on_fail
		assert_success
		assert_line --regexp "^received $n/$n in [0-9]+ ms$"
		assert_line 'close code 1000'
		refute_line --partial 'BAD:'
	fi
}

# check_concurrent [C] [N]: C clients at once (default 100), N messages each (default 1,000).
check_concurrent() {
	local c=${1:-100} n=${2:-1000}
	tls_args
	run timeout 170 "$PY" "$CLIENTS/load_websockets.py" "${TLS_ARGS[@]}" -c "$c" -n "$n" --timeout 30 --total-timeout 160 "$(url)"
	show_logs_on_fail
	assert_success
	assert_output "clients $c/$c received $((c * n))/$((c * n)) lost 0"
}

# check_abrupt_disconnect: while a client is connected one wsfilter process
# runs below the launcher; after the client resets the connection without a
# close frame, none is left (within 5 s).
check_abrupt_disconnect() {
	aborting_client_start
	assert_equal "$(count_wsfilter "$ROOT_PID")" 1
	aborting_client_reset
	wait_no_wsfilter "$ROOT_PID" 5
}

# aborting_client_start: a client (load_websockets.py --abort-after-ready) connects
# to the launcher and holds its connection open until ABORT_READY is removed;
# ABORT_CLIENT is its pid. Returns once it is connected (10 s at most).
aborting_client_start() {
	local i
	tls_args
	ABORT_READY=$BATS_TEST_TMPDIR/ready
	timeout 30 "$PY" "$CLIENTS/load_websockets.py" "${TLS_ARGS[@]}" --abort-after-ready "$ABORT_READY" "$(url)" \
		>"$BATS_TEST_TMPDIR/abort-client.log" 2>&1 3>&- &
	ABORT_CLIENT=$!
	STARTED_PIDS+=("$ABORT_CLIENT")
	for i in $(seq 1 200); do
		[ -e "$ABORT_READY" ] && return 0
		sleep 0.05
	done
	cat "$BATS_TEST_TMPDIR/abort-client.log"
	show_logs
	return 1
}

# aborting_client_reset: the client of aborting_client_start resets its connection
# without a close frame, having held it until then.
aborting_client_reset() {
	rm -f "$ABORT_READY"
	wait "$ABORT_CLIENT"
	grep -qx aborted "$BATS_TEST_TMPDIR/abort-client.log"
}

show_logs_on_fail() {
	[ "$status" -eq 0 ] || { echo "$output"; show_logs; }
	# under systemd-socket-activate the exit status of every wsfilter is in its log
	if [ -e "$BATS_TEST_TMPDIR/ssa.log" ]; then
		assert_children_ended_well "$BATS_TEST_TMPDIR/ssa.log"
	fi
}

# ---- a PROGRAM per connection: wsfilter -- PROGRAM (issue 14) -----------------
#
# The launchers above with `-- PROGRAM` added to the shipped command line, as an
# administrator would write it. Each start_*_program function also sets
#   PROGRAM_LOG    the command that prints wsfilter's log lines (its stderr, or
#                  the syslog of devlog_start under the inetds)
#   PROGRAM_EXITS  how the launcher reports each wsfilter's exit status: ssa,
#                  inetd, xinetd, tcpserver, socat, or journal (systemd.bats sets
#                  it and PROGRAM_LOG for the container)

# launch_program: install the programs next to the copy of wsfilter (launch_bin),
# where the inetds' user nobody can run them:
#   PROG_SUFFIX  examples/suffix.sh, the demo's filter as a shell loop
#   PROG_NOISY   a shell that writes "noisy-suffix.sh: pid N started" to stderr,
#                runs suffix.sh, then writes "noisy-suffix.sh: pid N saw EOF"
# PROGRAM_COMMS: the process names (comm) these programs run under.
launch_program() {
	launch_bin
	PROG_SUFFIX=$LAUNCH_DIR/suffix.sh
	PROG_NOISY=$LAUNCH_DIR/noisy-suffix.sh
	PROGRAM_COMMS=(suffix.sh noisy-suffix.sh)
	install -m 755 "$TOP/examples/suffix.sh" "$PROG_SUFFIX"
	cat >"$PROG_NOISY" <<-EOS
		#!/bin/sh
		echo "noisy-suffix.sh: pid \$\$ started" >&2
		"$PROG_SUFFIX"
		echo "noisy-suffix.sh: pid \$\$ saw EOF" >&2
	EOS
	chmod 755 "$PROG_NOISY"
}

# program_pids PID: the live (not zombie) descendants of PID whose name is one of
# PROGRAM_COMMS, one pid a line.
program_pids() {
	local p comm state name
	for p in $(descendants "$1"); do
		comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
		state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
		[ "$state" != Z ] || continue
		for name in "${PROGRAM_COMMS[@]}"; do
			[ "$comm" = "${name:0:15}" ] && echo "$p"
		done
	done
	return 0
}

# A syslog collector for devlog_start: bind the datagram socket argv[1], writable
# by every user, append each message to argv[2] as one line; stop when the
# parent is gone, or after 15 minutes.
DEVLOG_SINK='
import os, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
parent = os.getppid()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
s.settimeout(0.5)
end = time.monotonic() + 900
with open(out, "ab", buffering=0) as f:
    while time.monotonic() < end and os.getppid() == parent:
        try:
            f.write(s.recv(65536).rstrip(b"\n") + b"\n")
        except socket.timeout:
            pass
'

# devlog_start LOG CMD...: bg_start CMD in a private mount namespace whose /dev/log
# is this test's (test/lib/fake-devlog.sh): every message sent there becomes a line
# of $BATS_TEST_TMPDIR/syslog. The collector is bound before CMD starts and runs
# as CMD's child.
devlog_start() {
	local log=$1
	shift
	mkdir -p "$BATS_TEST_TMPDIR/realdev"
	: >"$BATS_TEST_TMPDIR/syslog"
	# shellcheck disable=SC2016 # the script's own $1..., not ours
	bg_start "$log" "$LIB/fake-devlog.sh" "$BATS_TEST_TMPDIR/realdev" /bin/bash -c '
		"$1" -c "$2" /dev/log "$3" &
		for i in $(seq 1 100); do
			[ -S /dev/log ] && break
			sleep 0.05
		done
		[ -S /dev/log ] || { echo "no syslog collector on /dev/log" >&2; exit 1; }
		shift 3
		exec "$@"' devlog "$PY" "$DEVLOG_SINK" "$BATS_TEST_TMPDIR/syslog" "$@"
	PROGRAM_LOG=(cat "$BATS_TEST_TMPDIR/syslog")
}

# start_ssa_program inetd|fd3 PROGRAM [ARG...]: systemd-socket-activate --accept
# (with --inetd, or the connection as fd 3) running the shipped unit's ExecStart=
# command followed by -- PROGRAM ARG...
start_ssa_program() {
	local how=$1
	shift
	HOST=127.0.0.1 SCHEME=ws
	mapfile -t UNIT_ARGS < <(unit_exec_args)
	[ ${#UNIT_ARGS[@]} -gt 0 ] || return 1
	UNIT_ARGS+=(-- "$@")
	PROGRAM_LOG=(cat "$BATS_TEST_TMPDIR/ssa.log") PROGRAM_EXITS=ssa
	if [ "$how" = inetd ]; then
		start_on_port "$HOST" _ssa_at --inetd && ROOT_PID=$LAUNCH_PID
	else
		start_on_port "$HOST" _ssa_at && ROOT_PID=$LAUNCH_PID
	fi
}

# start_openbsd_inetd_program PROGRAM [ARG...]: inetd -d with the shipped IPv4
# line, its argv followed by -- PROGRAM ARG..., under devlog_start.
start_openbsd_inetd_program() {
	PROGRAM_ARGS=("$@") PROGRAM_EXITS=inetd
	SCHEME=ws HOST=127.0.0.1
	start_inetd_line devlog '^8765[[:space:]]' 8765 '127.0.0.1:$PORT' -- "$@"
}

# start_xinetd_program PROGRAM [ARG...]: xinetd -dontfork with the shipped service
# and server_args = -- PROGRAM ARG..., under devlog_start; the defaults log each
# server's exit (log_on_success = PID EXIT) to xinetd-service.log.
start_xinetd_program() {
	PROGRAM_EXITS=xinetd
	start_xinetd_with devlog 'log_on_success = PID EXIT' \
		"s|^\([[:space:]]*\)# *server_args\([[:space:]]*=\).*|\1server_args\2 -- $*|" || return 1
	grep -q '^[[:space:]]*server_args' "$BATS_TEST_TMPDIR/xinetd.conf" ||
		fail "no server_args line in $BATS_TEST_TMPDIR/xinetd.conf"
}

# start_tcpserver_program PROGRAM [ARG...]: tcpserver -vHRl0 127.0.0.1 PORT
# wsfilter -- PROGRAM ARG... (-v: a status line for each child's end, with its
# wait status).
start_tcpserver_program() {
	HOST=127.0.0.1 SCHEME=ws
	PROGRAM_ARGS=("$@") PROGRAM_EXITS=tcpserver
	PROGRAM_LOG=(cat "$BATS_TEST_TMPDIR/tcpserver.log")
	start_listening "$BATS_TEST_TMPDIR/tcpserver.log" tcpserver -vHRl0 "$HOST" '$PORT' "$WSFILTER" -- "$@"
}

# start_socat_program PROGRAM [ARG...]: the recommended socat form with
# EXEC:'wsfilter -- PROGRAM ARG...' (through exit_status_wrapper, which appends
# each exit status to $BATS_TEST_TMPDIR/status).
start_socat_program() {
	HOST=127.0.0.1 SCHEME=ws
	PROGRAM_ARGS=("$@") PROGRAM_EXITS=socat
	PROGRAM_LOG=(cat "$BATS_TEST_TMPDIR/socat.log")
	SOCAT_WRAPPER=$(exit_status_wrapper "$BATS_TEST_TMPDIR/status")
	start_listening "$BATS_TEST_TMPDIR/socat.log" socat \
		"TCP4-LISTEN:\$PORT,bind=$HOST,reuseaddr,backlog=128,nodelay,fork" "EXEC:$SOCAT_WRAPPER -- $*"
}

# ---- checks with a PROGRAM --------------------------------------------------

# wait_program_log N REGEX: wait up to 5 s until N lines of wsfilter's log
# (PROGRAM_LOG) match the extended REGEX; fail if fewer or more do.
wait_program_log() {
	local i n=0
	for i in $(seq 1 50); do
		n=$("${PROGRAM_LOG[@]}" 2>/dev/null | grep -cE -- "$2" || true)
		[ "$n" -ge "$1" ] && break
		sleep 0.1
	done
	if [ "$n" != "$1" ]; then
		"${PROGRAM_LOG[@]}" 2>/dev/null | tail -n 20
		fail "$n log lines match /$2/, not $1"
	fi
}

# assert_program_exits STATUS N: wait up to 5 s until the launcher has seen N
# wsfilter processes end, then fail unless exactly N did, all with exit status
# STATUS (a death by a signal never matches).
assert_program_exits() {
	local i n=0 src all one
	case $PROGRAM_EXITS in
	ssa)
		assert_children_ended_well "$BATS_TEST_TMPDIR/ssa.log"
		assert_equal "$(grep -c '^Child [0-9]* died with code ' "$BATS_TEST_TMPDIR/ssa.log")" "$2"
		assert_equal "$(grep -c "^Child [0-9]* died with code $1\$" "$BATS_TEST_TMPDIR/ssa.log")" "$2"
		return 0
		;;
	socat)
		wait_status_count "$BATS_TEST_TMPDIR/status" "$1" "$2"
		assert_equal "$(grep -c . "$BATS_TEST_TMPDIR/status")" "$2"
		return 0
		;;
	inetd)
		# inetd -d: "PID reaped, status W", the wait status in hex without 0x (exit S is S * 256)
		src=(cat "$BATS_TEST_TMPDIR/inetd.log") all='^[0-9]+ reaped, status '
		one="^[0-9]+ reaped, status $(printf '%x' $(($1 * 256)))\$"
		;;
	xinetd)
		src=(cat "$BATS_TEST_TMPDIR/xinetd-service.log") all=' EXIT: wsfilter '
		one=" EXIT: wsfilter status=$1 pid=[0-9]+( |\$)"
		;;
	tcpserver)
		# -v: "end PID status W", the wait status in decimal
		src=(cat "$BATS_TEST_TMPDIR/tcpserver.log") all='^tcpserver: end [0-9]+ status '
		one="^tcpserver: end [0-9]+ status $(($1 * 256))\$"
		;;
	journal)
		# the container's systemd (lib/nspawn) at log level debug, which names every
		# exit, a successful one too; only what came after JOURNAL_CURSOR
		src=(in_container journalctl --no-pager -o cat -u 'wsfilter@*' --after-cursor "$JOURNAL_CURSOR")
		all='^wsfilter@[^ ]*: Main process exited, '
		one="^wsfilter@[^ ]*: Main process exited, code=exited, status=$1/"
		;;
	*) fail "PROGRAM_EXITS=$PROGRAM_EXITS" ;;
	esac
	for i in $(seq 1 50); do
		n=$("${src[@]}" 2>/dev/null | grep -cE -- "$all" || true)
		[ "$n" -ge "$2" ] && break
		sleep 0.1
	done
	"${src[@]}" 2>/dev/null | grep -E -- "$all" || true
	assert_equal "$n" "$2"
	assert_equal "$("${src[@]}" 2>/dev/null | grep -cE -- "$one" || true)" "$2"
}

# check_program_pipelined N: one client (Python websockets) pipelines N messages
# through a PROGRAM that answers like the built-in filter: every reply comes back
# in order with its " - N"; wsfilter logs N messages each way and exits 0.
check_program_pipelined() {
	local n=$1
	run timeout 120 "$PY" "$CLIENTS/load_websockets.py" -n "$n" --timeout 30 "$(url)"
	show_logs_on_fail
	assert_success
	assert_output "received $n/$n lost 0"
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ websocket [0-9.]+s, in $n msg [0-9]+ B, out $n msg [0-9]+ B, close 1000 by client, program exited 0, exit 0$"
	assert_program_exits 0 1
}

# check_program_stderr: through PROG_NOISY, one message and a close: the client
# gets exactly the 101, the reply, the close frame and EOF (the strict parser
# fails on any stray byte); both of the program's stderr lines are in wsfilter's
# log, prefixed by the peer, and the connection ended with exit 0.
check_program_stderr() {
	run wst script --timeout 10 --connect "$(hostport)" hs head text:hello frame close:1000 frame eof
	show_logs_on_fail
	assert_success
	assert_line --index 0 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_equal "$(sed -n '/^ACCEPT /,$p' <<<"$output" | sed 's/ - [0-9]*$/ - N/')" \
		$'ACCEPT ok\nTEXT hello - N\nCLOSE 1000\nEOF'
	assert_line --regexp '^TEXT hello - ([1-9][0-9]{0,2}|1000)$'
	refute_output --partial 'noisy-suffix'
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ program: noisy-suffix\.sh: pid [0-9]+ started$"
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ program: noisy-suffix\.sh: pid [0-9]+ saw EOF$"
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ websocket .*, in 1 msg 5 B, out 1 msg [0-9]+ B, close 1000 by client, program exited 0, exit 0$"
	assert_program_exits 0 1
}

# check_program_abrupt_disconnect NPROG: while a client is connected, one wsfilter
# and NPROG processes of the program (PROGRAM_COMMS) run below the launcher; after
# the client resets the connection without a close frame, none of them is left
# (within 5 s) and wsfilter exits 4.
check_program_abrupt_disconnect() {
	local pids
	aborting_client_start
	assert_equal "$(count_wsfilter "$ROOT_PID")" 1
	mapfile -t pids < <(program_pids "$ROOT_PID")
	[ ${#pids[@]} = 0 ] || ps -o pid,ppid,pgid,args -p "$(IFS=,; echo "${pids[*]}")" || true
	assert_equal "${#pids[@]}" "$1"
	aborting_client_reset
	wait_no_wsfilter "$ROOT_PID" 5
	wait_gone 50 0.1 "${pids[@]}" || fail "program processes still running: $(program_pids "$ROOT_PID" | tr '\n' ' ')"
	assert_equal "$(program_pids "$ROOT_PID")" ''
	wait_program_log 1 "${LOGP}127\.0\.0\.1:[0-9]+ websocket .*\(client left without a close\), program exited 0, exit 4$"
	assert_program_exits 4 1
}

# ---- wsfilter accepting by itself (acceptor mode) ---------------------------
#
# A launcher that passes the listening socket (systemd-socket-activate without
# --accept, inetd `wait`) starts one wsfilter parent that accepts and forks one
# child per connection. The parent's and the children's log lines land in
# ACCEPTOR_LOG, one a line; acceptor_parent tells which pid is the parent.

# start_acceptor [WSFILTER-ARGS...]: systemd-socket-activate -l 127.0.0.1:PORT
# without --accept: wsfilter gets the listening socket as fd 3 with
# LISTEN_FDS=1. systemd-socket-activate execs it in its own place on the first
# connection, so ROOT_PID is the wsfilter parent from then on.
start_acceptor() {
	HOST=127.0.0.1 SCHEME=ws
	ACCEPTOR_ARGS=("$@")
	ACCEPTOR_LOG=$BATS_TEST_TMPDIR/acceptor.log
	start_listening "$ACCEPTOR_LOG" systemd-socket-activate -l "$HOST:\$PORT" "$WSFILTER" "$@"
}

# start_inetd_wait [WSFILTER-ARGS...]: openbsd-inetd -d with the shipped
# `wait` line (commented out there), bound to 127.0.0.1 on a free port, its
# argv followed by WSFILTER-ARGS (inetd passes the listening socket as
# fds 0, 1 and 2 and watches it again only once wsfilter has exited), under
# devlog_start: wsfilter's log lines are the syslog messages it collects.
start_inetd_wait() {
	HOST=127.0.0.1 SCHEME=ws
	ACCEPTOR_ARGS=("$@")
	ACCEPTOR_LOG=$BATS_TEST_TMPDIR/acceptor.log
	SYSLOG_FILE=$BATS_TEST_TMPDIR/syslog
	start_inetd_line devlog '^#8766[[:space:]]+stream[[:space:]]+tcp[[:space:]]+wait[[:space:]]' 8766 '127.0.0.1:$PORT' "$@"
}

# acceptor_syslog: ACCEPTOR_LOG from the syslog messages, without their <PRI>.
acceptor_syslog() {
	sed -E 's/^<[0-9]{1,3}>//' "$SYSLOG_FILE" >"$ACCEPTOR_LOG"
}

# refresh_log: re-read the log: under inetd it is built from the datagrams;
# where ACCEPTOR_JOURNAL names a command (systemd), that command prints it.
refresh_log() {
	if [ -n "${SYSLOG_FILE:-}" ]; then
		acceptor_syslog
	elif [ -n "${ACCEPTOR_JOURNAL:-}" ]; then
		"$ACCEPTOR_JOURNAL" >"$ACCEPTOR_LOG"
	fi
}

# acceptor_parents: the pids that logged "accepting on", in order, one a line.
acceptor_parents() {
	refresh_log
	sed -nE 's/^wsfilter\[([0-9]+)\]: accepting on .*/\1/p' "$ACCEPTOR_LOG"
}

# acceptor_parent: the pid of the (last) parent; waits up to 5 s for its line.
acceptor_parent() {
	local i p
	for i in $(seq 1 50); do
		p=$(acceptor_parents | tail -n 1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.1
	done
	echo "no 'accepting on' line in $ACCEPTOR_LOG" >&2
	return 1
}

# parent_lines PARENT: the parent's own log lines, without the prefix.
parent_lines() {
	refresh_log
	sed -n "s/^wsfilter\[$1\]: //p" "$ACCEPTOR_LOG"
}

# child_ends PARENT: the children's final log lines (peer, websocket or http,
# ..., exit N): every line of another pid than PARENT that ends with "exit N".
child_ends() {
	refresh_log
	grep -E '^wsfilter\[[0-9]+\]: .*, exit [0-9]+$' "$ACCEPTOR_LOG" | grep -v "^wsfilter\[$1\]: " || true
}

# wait_child_ends PARENT N [SECONDS]: wait up to SECONDS (10) until N children
# have logged their final line.
wait_child_ends() {
	local i
	for i in $(seq 1 $((${3:-10} * 10))); do
		[ "$(child_ends "$1" | wc -l)" -ge "$2" ] && return 0
		sleep 0.1
	done
	echo "only $(child_ends "$1" | wc -l) of $2 children logged their end" >&2
	return 1
}

# assert_children_ended PARENT N REGEX: exactly N children logged their end,
# every one with an exit status matching REGEX (e.g. '0' or '[34]'), and the
# parent logged no child killed by a signal.
assert_children_ended() {
	wait_child_ends "$1" "$2" || { tail -n 20 "$ACCEPTOR_LOG"; return 1; }
	local ends bad
	ends=$(child_ends "$1")
	assert_equal "$(wc -l <<<"$ends")" "$2"
	bad=$(grep -vE ", exit ($3)\$" <<<"$ends" || true)
	[ -z "$bad" ] || fail "children ended otherwise than with exit $3: $(head -n 3 <<<"$bad")"
	refute_killed "$1"
}

# refute_killed PARENT: the parent logged no connection killed by a signal
# ("PEER connection PID killed by SIGNAME"), and killed none at its stop
# timeout.
refute_killed() {
	local k
	k=$(parent_lines "$1" | grep -E '(^| )connection [0-9]+ killed by |^stop timeout: ' || true)
	[ -z "$k" ] || fail "children died by a signal: $k"
}

# hold_clients N PREFIX [URL]: N clients (load_websockets --abort-after-ready)
# that each send one message, check its reply and then hold their connection
# open until PREFIX.I is removed (30 s at most), then reset it. Waits up to
# 20 s until all N hold. Their pids are in HOLD_PIDS.
hold_clients() {
	local n=$1 prefix=$2 u=${3:-$(url)} i k
	HOLD_PIDS=()
	for k in $(seq 1 "$n"); do
		timeout 70 "$PY" "$CLIENTS/load_websockets.py" --timeout 30 --abort-after-ready "$prefix.$k" "$u" \
			>"$prefix.$k.log" 2>&1 3>&- &
		HOLD_PIDS+=($!)
		STARTED_PIDS+=($!)
	done
	for i in $(seq 1 200); do
		[ "$(held "$prefix" "$n")" = "$n" ] && return 0
		sleep 0.1
	done
	echo "only $(held "$prefix" "$n") of $n clients hold a connection:" >&2
	tail -n 3 "$prefix".*.log >&2
	return 1
}

# held PREFIX N: how many of the N clients of hold_clients PREFIX hold their
# connection now.
held() {
	local k c=0
	for k in $(seq 1 "$2"); do
		[ -e "$1.$k" ] && c=$((c + 1))
	done
	echo "$c"
}

# start_source_relay SRC: a socat on 127.0.0.1:RELAY_PORT that relays each
# connection to HOST:PORT from the source address SRC (another loopback
# address), for clients that cannot choose theirs. PORT and LAUNCH_PID keep
# the launcher's values.
start_source_relay() {
	local port=$PORT launch=$LAUNCH_PID
	RELAY_SRC=$1 RELAY_TARGET=$PORT
	start_on_port 127.0.0.1 _relay_at || return 1
	RELAY_PORT=$PORT PORT=$port LAUNCH_PID=$launch
}

_relay_at() {
	bg_start "$BATS_TEST_TMPDIR/relay.log" socat "TCP4-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork" \
		"TCP4:$HOST:$RELAY_TARGET,bind=$RELAY_SRC"
	LAUNCH_PID=$LAST_PID
}

# hold_serving N: N clients held on the started acceptor (hold_clients N
# $BATS_TEST_TMPDIR/hold); PARENT is its parent, KIDS the processes serving
# them (serving), checked to be N.
hold_serving() {
	hold_clients "$1" "$BATS_TEST_TMPDIR/hold"
	PARENT=$(acceptor_parent)
	mapfile -t KIDS < <(serving "$ROOT_PID")
	assert_equal "${#KIDS[@]}" "$1"
}

# stop_acceptor PARENT: SIGTERM to the parent, which must log "stopped" and
# exit 0 within 30 s (its --stop-timeout is 10 s): seen by `wait` when it is
# ROOT_PID (systemd-socket-activate execed it in its place), else in inetd's
# "PID reaped, status 0" line.
stop_acceptor() {
	local p=$1 rc=0 i inetd_log=$BATS_TEST_TMPDIR/inetd.log
	kill -TERM "$p"
	wait_gone 300 0.1 "$p" || fail "the parent $p still runs 30 s after SIGTERM"
	if [ "$p" = "$ROOT_PID" ]; then
		wait "$p" || rc=$?
		[ "$rc" = 0 ] || fail "the parent exited $rc after SIGTERM"
	else
		for i in $(seq 1 50); do
			grep -qx "$p reaped, status 0" "$inetd_log" && break
			sleep 0.1
		done
		grep -qx "$p reaped, status 0" "$inetd_log" ||
			fail "inetd did not reap $p with status 0: $(grep "^$p reaped" "$inetd_log")"
	fi
	parent_lines "$p" | grep -qx stopped || fail "the parent did not log 'stopped'"
}

# script_bg LOG STEP...: one scripted connection to the launcher in the
# background (wstest.py script --connect, every step bounded by 60 s), its
# output line by line in LOG; its pid is added to BG_PIDS.
BG_PIDS=()
script_bg() {
	local log=$1
	shift
	PYTHONUNBUFFERED=1 timeout 150 "$PY" "$LIB/wstest.py" script --connect "$(hostport)" --timeout 60 "$@" \
		>"$log" 2>&1 3>&- &
	BG_PIDS+=($!)
	STARTED_PIDS+=($!)
}

# wait_files_match N REGEX FILE...: wait up to 60 s (the machine may be
# shared) until N of the FILEs have a line matching REGEX. (Name the files: a
# glob may miss the ones a background client has not created yet.)
wait_files_match() {
	local n=$1 re=$2 i c
	shift 2
	for i in $(seq 1 600); do
		c=$(grep -lE -- "$re" "$@" 2>/dev/null | wc -l)
		[ "$c" -ge "$n" ] && return 0
		sleep 0.1
	done
	fail "only $c of $n clients got to '$re'"
}

# wait_parent_line PARENT REGEX [SECONDS]: wait up to SECONDS (5) until the
# parent logged a line matching REGEX.
wait_parent_line() {
	local i
	for i in $(seq 1 $((${3:-5} * 10))); do
		parent_lines "$1" | grep -qE -- "$2" && return 0
		sleep 0.1
	done
	parent_lines "$1"
	fail "the parent did not log '$2'"
}

# release PREFIX N: let the N clients of hold_clients PREFIX reset their
# connections, and check that each held and then aborted.
release() {
	local k p
	for k in $(seq 1 "$2"); do
		rm -f "$1.$k"
	done
	for p in "${HOLD_PIDS[@]}"; do
		wait "$p" || fail "a holding client failed: $(cat "$1".*.log)"
	done
	for k in $(seq 1 "$2"); do
		grep -qx aborted "$1.$k.log" || fail "client $k did not hold: $(cat "$1.$k.log")"
	done
}

# busy_clients_start N: N clients (script_bg, transcripts in $BATS_TEST_TMPDIR/c.1
# ... c.N) each send three messages, read one reply and then read nothing for 2 s,
# so that the other replies wait for them, then wait for a close 1001; returns once
# each has its first reply.
busy_clients_start() {
	local k logs
	for k in $(seq 1 "$1"); do
		script_bg "$BATS_TEST_TMPDIR/c.$k" hs head text:one text:two text:three frame sleep:2 wait:30 close:1001 eof
	done
	mapfile -t logs < <(seq -f "$BATS_TEST_TMPDIR/c.%g" 1 "$1")
	wait_files_match "$1" '^TEXT one - [0-9]+$' "${logs[@]}"
}

# busy_clients_closed N: once the server was stopped, each client of
# busy_clients_start N ended well, with its replies in order (the last ones may
# have been read after the stop, or not at all), then close 1001, then EOF.
busy_clients_closed() {
	local k got all=0
	for k in "${BG_PIDS[@]}"; do
		wait "$k" || fail "a client failed: $(tail -n 3 "$BATS_TEST_TMPDIR"/c.*)"
	done
	for k in $(seq 1 "$1"); do
		got=$(grep -E '^(TEXT|CLOSE|EOF|EXTRA)' "$BATS_TEST_TMPDIR/c.$k" |
			sed -E 's/ - [0-9]+$//; s/^(CLOSE [0-9]+).*/\1/' | paste -sd,)
		[[ $got =~ ^TEXT\ one,(TEXT\ two,(TEXT\ three,)?)?CLOSE\ 1001,EOF$ ]] || fail "client $k got: $got"
		[[ $got == *three* ]] && all=$((all + 1))
	done
	echo "# $all of $1 clients had all three replies before the close" >&3
}

# sigsys_start_a: connection A of check_sigsys_child, a plain HTTP request sent in
# two parts 5 s apart (script_bg, its transcript in $BATS_TEST_TMPDIR/a), so that its
# process runs while another one dies; SIGSYS_A is its client's pid.
sigsys_start_a() {
	script_bg "$BATS_TEST_TMPDIR/a" 'send:GET /healthz HTTP/1.1\r\n' sleep:5 \
		'send:Host: 127.0.0.1\r\nConnection: close\r\n\r\n' head body eof
	SIGSYS_A=${BG_PIDS[-1]}
}

# check_sigsys_child PARENT ROOT: the acceptor is the forbidden-call test build,
# PARENT its parent (whose children descend from ROOT), and A (sigsys_start_a) is
# under way in the one child. Connection B, a WebSocket, makes its child open a
# file after the handshake: the child is killed by SIGSYS (no close reaches B) and
# the parent logs it; A is served to its end all the same, and so is a new
# connection (the page). The children's lines: A's health check and the page,
# both exit 0.
check_sigsys_child() {
	local p=$1 root=$2 a=$BATS_TEST_TMPDIR/a i
	for i in $(seq 1 100); do
		[ "$(count_wsfilter "$root")" = 1 ] && break
		sleep 0.05
	done
	assert_equal "$(count_wsfilter "$root")" 1
	run wst run --connect "$(hostport)" hs --random-key --host localhost
	echo "B: $output"
	refute_output --partial CLOSE
	wait_parent_line "$p" '^127\.0\.0\.1:[0-9]+ connection [0-9]+ killed by SIGSYS$'
	kill -0 "$SIGSYS_A" || fail "A ended before the crash was logged (a slow machine?): $(cat "$a")"
	wait "$SIGSYS_A" || fail "A failed: $(cat "$a")"
	run cat "$a"
	assert_line 'STATUS HTTP/1.1 200 OK'
	assert_line 'BODY 2 ok'
	assert_line 'EOF'
	check_page
	assert_equal "$(parent_lines "$p" | grep -cE ' connection [0-9]+ killed by ')" 1
	wait_child_ends "$p" 2
	run child_ends "$p"
	assert_equal "${#lines[@]}" 2
	assert_line --index 0 --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 200 health check .*, exit 0$"
	assert_line --index 1 --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 200 page .*, exit 0$"
}

# check_sixth_waits PARENT ROOT: with the five clients of hold_clients 5
# PREFIX=$BATS_TEST_TMPDIR/hold connected to a parent at --max-connections 5
# (whose children descend from ROOT), a sixth client gets no 101 for 2 s
# while the parent says it is at the limit; once one of the five leaves, the
# sixth is served. Then every client resets its connection: each of the six
# children ends with exit 4 (left without a close).
check_sixth_waits() {
	local p=$1 root=$2 T=$BATS_TEST_TMPDIR sixth i
	assert_equal "$(count_wsfilter "$root")" 5
	timeout 70 "$PY" "$CLIENTS/load_websockets.py" --timeout 30 --abort-after-ready "$T/sixth" "$(url)" \
		>"$T/sixth.log" 2>&1 3>&- &
	sixth=$!
	STARTED_PIDS+=("$sixth")
	wait_parent_line "$p" '^at --max-connections 5: new connections wait$'
	# the sixth is connected (the kernel's backlog) but gets no 101 meanwhile
	sleep 2
	[ ! -e "$T/sixth" ] || fail "a sixth connection was served at --max-connections 5"
	kill -0 "$sixth"
	assert_equal "$(count_wsfilter "$root")" 5
	# one of the five leaves: the sixth is served
	rm -f "$T/hold.1"
	for i in $(seq 1 100); do
		[ -e "$T/sixth" ] && break
		sleep 0.1
	done
	[ -e "$T/sixth" ] || fail "the sixth connection was not served after one of five closed: $(cat "$T/sixth.log")"
	assert_equal "$(count_wsfilter "$root")" 5
	rm -f "$T/sixth"
	wait "$sixth"
	grep -qx aborted "$T/sixth.log" || fail "the sixth did not hold: $(cat "$T/sixth.log")"
	release "$T/hold" 5
	assert_children_ended "$p" 6 4
}
