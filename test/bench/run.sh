#!/bin/bash
# wsfilter benchmark: wsfilter under systemd-socket-activate and socat, the
# same launchers running a bare line filter (the ceiling), and three peers
# (Python websockets, websocketd, Node ws), all on loopback, interleaved.
# A program per connection (issue 14): `wsfilter -- lineecho` under the same
# launchers against websocketd running the same lineecho and against the
# built-in filter; `wsfilter --binary -- lineecho --echo` against
# `websocketd --binary lineecho --echo` on 1 MiB binary messages.
# Acceptor mode: wsfilter, and `wsfilter -- lineecho`, given the listening
# socket by `systemd-socket-activate` without --accept, forking per
# connection itself (one listening process forking the program, as
# websocketd does).  The relay floor: `socat -,nodelay EXEC:lineecho,pipes` per
# connection in plain TCP lines (wsload --raw), the same processes and pipe
# hops per round trip as `wsfilter -- lineecho`, no WebSocket.
#
#   sh test/bench/run.sh            full run (5 rounds), a few minutes
#   QUICK=1 sh test/bench/run.sh    1 round, smaller counts, under a minute
#   ONLY=haproxy sh test/bench/run.sh   only the HAProxy scenario (haproxy.sh)
#   ONLY=acceptor sh test/bench/run.sh  only the acceptor-mode scenario (acceptor.sh)
#   ONLY=routes sh test/bench/run.sh    only --dir and --check's cost (routes.sh)
#   sh test/bench/run.sh --report   the tables again from the last figures
#
# Environment: WSFILTER (binary, default ./wsfilter), RUNS (rounds),
# QUICK, ONLY (space-separated workload names to run), SERVERS (subset of
# server names).  Prints a markdown report on stdout; logs and raw figures go
# to test/bench/bin/run/.
. "$(dirname "$0")/../lib/bench.sh"
BIN=$HERE/bin	# not an inherited BIN
LOGDIR=$BIN/run
LOGS=$LOGDIR
if [ "${1:-}" = --report ] && [ -r "$LOGDIR/config" ]; then
	. "$LOGDIR/config"	# the settings the figures were taken with (QUICK empty or not 0)
fi

# ---- workloads: name, wsload arguments, the figure compared, a label ----
if [ -n "$QUICK" ]; then
	RUNS=${RUNS:-1}
	N_BURST=10000 N_BURST_BIG=20000 N_RTT=500 N_MIB=20 N_CONN=50
	C_CONC=100 N_CONC=100
	STALL=2 RUN_TIMEOUT=20
else
	RUNS=${RUNS:-5}
	N_BURST=10000 N_BURST_BIG=100000 N_RTT=2000 N_MIB=200 N_CONN=300
	C_CONC=100 N_CONC=1000
	STALL=3 RUN_TIMEOUT=60
fi
WORKLOADS=${WORKLOADS:-"burst rushbig rtt mib mibbin conn conc haproxy acceptor"}
[ -n "${ONLY:-}" ] && WORKLOADS=$ONLY
# "haproxy" and "acceptor" are scenarios of their own (test/bench/haproxy.sh,
# test/bench/acceptor.sh), run after the others
WORKLOADS_ASKED=$WORKLOADS
PROXY=
case " $WORKLOADS " in
*" haproxy "*) PROXY=1 WORKLOADS=$(echo " $WORKLOADS " | sed 's/ haproxy / /; s/^ *//; s/ *$//') ;;
esac
ACCEPTOR=
case " $WORKLOADS " in
*" acceptor "*) ACCEPTOR=1 WORKLOADS=$(echo " $WORKLOADS " | sed 's/ acceptor / /; s/^ *//; s/ *$//') ;;
esac
# "routes" (test/bench/routes.sh) too, after acceptor: run unless ONLY leaves it out
ROUTES=
case " ${ONLY:-routes} " in
*" routes "*) ROUTES=1 WORKLOADS=$(echo " $WORKLOADS " | sed 's/ routes / /; s/^ *//; s/ *$//') ;;
esac

workload_args() {
	case $1 in
	burst)   echo "-n $N_BURST -s 17" ;;
	rushbig) echo "-n $N_BURST_BIG -s 17" ;;
	rtt)     echo "-n $N_RTT -s 17 -w 1" ;;
	mib)     echo "-n $N_MIB -s 1048576" ;;
	mibbin)  echo "-n $N_MIB -s 1048576 --binary" ;;
	conn)    echo "--connections $N_CONN -s 17" ;;
	conc)    echo "-c $C_CONC -n $N_CONC -s 17 -w 1" ;;
	esac
}
workload_label() {
	case $1 in
	burst)   echo "$N_BURST x 17 B pipelined (msg/s)" ;;
	rushbig) echo "$N_BURST_BIG x 17 B pipelined (msg/s)" ;;
	rtt)     echo "$N_RTT x 17 B, one at a time (msg/s)" ;;
	mib)     echo "$N_MIB x 1 MiB pipelined (MB/s)" ;;
	mibbin)  echo "$N_MIB x 1 MiB binary pipelined, --binary program (MB/s)" ;;
	conn)    echo "$N_CONN sequential connections (conn/s)" ;;
	conc)    echo "$C_CONC connections x $N_CONC msgs, one at a time each (msg/s)" ;;
	esac
}
# the wsload field the comparison uses (higher is better for all of them)
workload_metric() {
	case $1 in
	mib|mibbin) echo MB_s ;;
	conn) echo conn_s ;;
	*)    echo msgs_s ;;
	esac
}

# ---- servers: name, client mode, command line (PORT substituted) ----
SERVERS=${SERVERS:-"wsfilter-systemd ceiling-systemd wsfilter-socat ceiling-socat wsfilter-acceptor python-websockets websocketd node-ws wsfilter-exec-systemd wsfilter-exec-socat wsfilter-exec-acceptor relay-systemd wsfilter-bin-systemd wsfilter-bin-socat websocketd-bin"}
server_cmd() {
	local port=$2
	local socat_listen="TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,backlog=128,nodelay"

	case $1 in
	wsfilter-systemd)  echo "systemd-socket-activate -l 127.0.0.1:$port --accept --inetd $WSFILTER" ;;
	wsfilter-socat)    echo "socat $socat_listen EXEC:$WSFILTER" ;;
	# acceptor mode: the listening socket on fd 3, wsfilter forks per connection
	wsfilter-acceptor) echo "systemd-socket-activate -l 127.0.0.1:$port $WSFILTER" ;;
	# a program per connection (the EXEC address is one word: eval'd below)
	wsfilter-exec-systemd) echo "systemd-socket-activate -l 127.0.0.1:$port --accept --inetd $WSFILTER -- $BIN/lineecho" ;;
	wsfilter-exec-socat)   echo "socat $socat_listen 'EXEC:$WSFILTER -- $BIN/lineecho'" ;;
	wsfilter-exec-acceptor) echo "systemd-socket-activate -l 127.0.0.1:$port $WSFILTER -- $BIN/lineecho" ;;
	# the relay floor: socket -> socat -> pipe -> lineecho -> pipe -> socat -> socket;
	# TCP_NODELAY on the connection as wsfilter sets it (without it a burst's
	# last reply waits for the client's delayed ACK, 40 ms)
	relay-systemd)     echo "systemd-socket-activate -l 127.0.0.1:$port --accept --inetd socat -,nodelay EXEC:$BIN/lineecho,pipes" ;;
	wsfilter-bin-systemd)  echo "systemd-socket-activate -l 127.0.0.1:$port --accept --inetd $WSFILTER --binary -- $BIN/lineecho --echo" ;;
	wsfilter-bin-socat)    echo "socat $socat_listen 'EXEC:$WSFILTER --binary -- $BIN/lineecho --echo'" ;;
	websocketd-bin)    echo "websocketd --port=$port --address=127.0.0.1 --loglevel=fatal --binary $BIN/lineecho --echo" ;;
	ceiling-systemd)   echo "systemd-socket-activate -l 127.0.0.1:$port --accept --inetd $BIN/lineecho" ;;
	ceiling-socat)     echo "socat $socat_listen EXEC:$BIN/lineecho" ;;
	python-websockets) echo "$PY $HERE/peer_websockets.py $port" ;;
	websocketd)        echo "websocketd --port=$port --address=127.0.0.1 --loglevel=fatal $BIN/lineecho" ;;
	node-ws)           echo "node $HERE/peer_ws.mjs $port" ;;
	esac
}
server_raw() {
	case $1 in ceiling-*|relay-*) return 0 ;; esac
	return 1
}
# systemd-socket-activate without --accept executes the server only when
# the first connection comes: start_servers makes that connection
server_lazy() {
	case $1 in *-acceptor) return 0 ;; esac
	return 1
}
# which servers run which workload: the --binary ones only the binary
# messages (which nothing else runs), the programs not the 100-connection
# memory figure, the relay floor only the 17-byte round trips and bursts
server_runs() {	# WORKLOAD SERVER
	case $2 in
	*-bin|*-bin-*) [ "$1" = mibbin ]; return ;;
	relay-*) case $1 in burst|rushbig|rtt) return 0 ;; esac; return 1 ;;
	esac
	case $1 in
	mibbin) return 1 ;;
	conc) case $2 in wsfilter-exec-*) return 1 ;; esac ;;
	esac
	return 0
}
# the process that does the per-connection work (its peak RSS is reported)
server_handler() {
	case $1 in
	wsfilter-*) echo wsfilter ;;
	ceiling-*|websocketd*) echo lineecho ;;
	*) echo "" ;;
	esac
}

# ---- servers: started, stopped (log, build_tools, cpu_ticks, pick_port, wait_port,
# wait_children_gone, rotate, launch, server_up, warm_up and stop_all are
# lib/bench.sh's) ----
start_servers() {
	local s
	for s in $SERVERS; do
		launch "$s"
	done
	for s in $SERVERS; do
		if ! server_up "$s"; then
			PID[$s]=
		elif server_lazy "$s"; then
			warm_up "$s" -s 17
		fi
	done
}

stop_servers() {
	local s
	# SIGTERM to every group first, so that they end side by side
	for s in $SERVERS; do
		[ -n "${PID[$s]:-}" ] && kill -TERM -- "-${PID[$s]}" 2>/dev/null
	done
	stop_all
}
trap 'stop_servers; exit 130' INT TERM
trap 'stop_servers' EXIT

# memory of a server's process tree, in one pass over /proc (treemem.py):
# "pss_kib rss_kib procs handler_procs handler_peak_kib"
tree_memory() {	# PID HANDLER-COMM
	"$PY" "$HERE/treemem.py" "$1" "$2" | awk '{
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		print v["pss"], v["rss"], v["procs"], v["handlers"], v["handler_peak"] }'
}

# ---- one measurement ----
RESULTS=$LOGDIR/results.tsv
declare -A BROKEN	# "workload server" -> why later rounds are skipped

run_one() {	# WORKLOAD SERVER ROUND
	local w=$1 s=$2 r=$3 args mode="" out rc before after ticks mem="" idle="" ready wpid
	server_runs "$w" "$s" || return
	if [ -z "${PID[$s]:-}" ]; then
		printf '%s\t%s\t%s\tstatus=nostart\n' "$w" "$s" "$r" >>"$RESULTS"
		return
	fi
	if [ -n "${BROKEN[$w $s]:-}" ]; then
		return
	fi
	args=$(workload_args "$w")
	server_raw "$s" && mode="--raw"
	before=$(cpu_ticks "${PID[$s]}")
	if [ "$w" = conc ]; then
		idle=$(tree_memory "${PID[$s]}" "")
		ready=$LOGDIR/ready.$$
		rm -f "$ready"
		timeout -k 2 "$RUN_TIMEOUT" "$BIN/wsload" $mode $args --stall "$STALL" \
			--timeout $((RUN_TIMEOUT - 5)) --ready "$ready" --hold "$RUN_TIMEOUT" \
			127.0.0.1 "${PORT[$s]}" >"$LOGDIR/out.$$" 2>>"$LOGDIR/wsload.log" &
		wpid=$!
		for _ in $(seq 1 $((RUN_TIMEOUT * 10))); do
			[ -s "$ready" ] && break
			kill -0 "$wpid" 2>/dev/null || break
			sleep 0.1
		done
		if [ -s "$ready" ]; then
			mem=$(tree_memory "${PID[$s]}" "$(server_handler "$s")")
			kill -USR1 "$(cat "$ready")" 2>/dev/null
		fi
		wait "$wpid"
		rc=$?
		rm -f "$ready"
		out=$(cat "$LOGDIR/out.$$")
	else
		out=$(timeout -k 2 "$RUN_TIMEOUT" "$BIN/wsload" $mode $args --stall "$STALL" \
			--timeout $((RUN_TIMEOUT - 5)) 127.0.0.1 "${PORT[$s]}" 2>>"$LOGDIR/wsload.log")
		rc=$?
	fi
	wait_children_gone "${PID[$s]}"
	after=$(cpu_ticks "${PID[$s]}")
	ticks=$((after - before))
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		out="status=hung why=\"killed by timeout(1) after ${RUN_TIMEOUT}s\""
	elif [ -z "$out" ]; then
		out="status=failed why=\"wsload exit $rc\""
	fi
	case $out in
	*status=ok*) ;;
	*status=stalled*)
		# the 10,000-message burst is retried: websocketd deadlocks on
		# it only in some rounds, and its rate in the others is the
		# figure a program per connection is held against
		[ "$w" = burst ] || BROKEN[$w $s]=deadlocked ;;
	*) BROKEN[$w $s]=failed ;;
	esac
	out="$out server_cpu_s=$(cpu_seconds "$ticks")"
	if [ -n "$mem" ]; then
		set -- $idle
		local ipss=$1 irss=$2
		set -- $mem
		out="$out pss_kib=$1 rss_kib=$2 procs=$3 handlers=$4 handler_peak_kib=$5 idle_pss_kib=$ipss idle_rss_kib=$irss"
	fi
	printf '%s\t%s\t%s\t%s\n' "$w" "$s" "$r" "$out" >>"$RESULTS"
	log "  $w $s #$r: $out"
}

# ---- report ----
machine() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	local fam virt=""
	fam=$(awk -F': ' '/^cpu family/ { f = $2 } /^model\t/ { m = $2 } END { print "family " f ", model " m }' /proc/cpuinfo)
	grep -qw hypervisor /proc/cpuinfo && virt=", virtual machine"
	echo "- CPU: $cpu ($fam), $(nproc) cores$virt"
	echo "- Kernel: $(uname -sr), $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
	echo "- OS: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
	echo "- Load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- wsfilter: $("$WSFILTER" -V 2>&1 | head -1) ($(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo "no commit")$(git -C "$TOP" diff --quiet HEAD -- wsfilter.c 2>/dev/null || echo ", wsfilter.c changed since")), cc $("$CC" -dumpversion 2>/dev/null) -O2 for wsload/lineecho"
	echo "- Peers: python3-websockets $("$PY" -c 'import websockets; print(websockets.__version__)' 2>/dev/null), node $(node --version 2>/dev/null) with ws $(node -p 'require("'"$TOP"'/test/node_modules/ws/package.json").version' 2>/dev/null), websocketd $(websocketd --version 2>&1 | awk '{ print $2; exit }'), $(socat -V 2>/dev/null | awk '/socat version/ { print "socat " $3; exit }'), systemd-socket-activate $(systemd-socket-activate --version 2>/dev/null | awk 'NR == 1 { print $2 }')"
}

report() {
	local w specs=()
	for w in $WORKLOADS; do
		specs+=("$w|$(workload_label "$w")|$(workload_metric "$w")")
	done
	if [ -n "$WORKLOADS" ]; then
		"$PY" "$HERE/report.py" "$RESULTS" "$RUNS" "$C_CONC" "$N_CONC" "$SERVERS" "${specs[@]}"
		echo
	fi
	if [ -n "$PROXY" ] && [ -s "$LOGDIR/haproxy.md" ]; then
		cat "$LOGDIR/haproxy.md"
		echo
	fi
	if [ -n "$ACCEPTOR" ] && [ -s "$LOGDIR/acceptor.md" ]; then
		cat "$LOGDIR/acceptor.md"
		echo
	fi
	if [ -n "$ROUTES" ] && [ -s "$LOGDIR/routes.md" ]; then
		cat "$LOGDIR/routes.md"
		echo
	fi
	echo "## Machine"
	echo
	machine
}

# ---- main ----
if [ "${1:-}" = --report ]; then	# tables again from the last run's figures
	: "${LOAD_START:=(not recorded)}"
	report
	exit 0
fi
mkdir -p "$LOGDIR"
build_tools
need_commands systemd-socket-activate socat websocketd node timeout ss
[ -x "$WSFILTER" ] || { log "bench: $WSFILTER not built (make)"; exit 1; }
# measure a copy: a rebuild during the run must not swap the binary under it
mkdir -p "$LOGDIR/bin"
cp "$WSFILTER" "$LOGDIR/bin/wsfilter" || exit 1
WSFILTER=$LOGDIR/bin/wsfilter
rm -f "$LOGDIR"/*.log "$RESULTS" "$LOGDIR/haproxy.md" "$LOGDIR/acceptor.md" "$LOGDIR/warmup.out"
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'QUICK=%s\nRUNS=%s\nWORKLOADS="%s"\nSERVERS="%s"\nLOAD_START="%s"\n' \
	"$QUICK" "$RUNS" "$WORKLOADS_ASKED" "$SERVERS" "$LOAD_START" >"$LOGDIR/config"
T0=$(date +%s)
log "bench: ${QUICK:+quick, }$RUNS round(s); logs in $LOGDIR"
STARTED=
for w in $WORKLOADS; do
	log "bench: $(workload_label "$w")"
	for r in $(seq 1 "$RUNS"); do
		# fresh servers for each memory figure (a heap that grew in an
		# earlier run would hide the cost of the connections); the other
		# workloads share one set
		if [ -z "$STARTED" ] || [ "$w" = conc ]; then
			[ -n "$STARTED" ] && stop_servers
			start_servers
			STARTED=1
		fi
		# interleaved, each round starting one server further on
		for s in $(rotate "$r" $SERVERS); do
			run_one "$w" "$s" "$r"
		done
	done
done
stop_servers
if [ -n "$PROXY" ]; then
	if command -v haproxy >/dev/null; then
		log "bench: through HAProxy (test/bench/haproxy.sh)"
		WSFILTER=$WSFILTER BIN=$BIN LOGDIR=$LOGDIR QUICK=$QUICK RUNS=$RUNS \
			bash "$HERE/haproxy.sh" >/dev/null || log "bench: the HAProxy scenario failed"
	else
		log "bench: haproxy is not installed, no HAProxy figures"
	fi
fi
if [ -n "$ACCEPTOR" ]; then
	log "bench: acceptor mode (test/bench/acceptor.sh)"
	WSFILTER=$WSFILTER BIN=$BIN LOGDIR=$LOGDIR QUICK=$QUICK RUNS=$RUNS \
		bash "$HERE/acceptor.sh" >/dev/null || log "bench: the acceptor scenario failed"
fi
rm -f "$LOGDIR/routes.md"	# no stale section in a later --report
if [ -n "$ROUTES" ]; then
	log "bench: routes and admission (test/bench/routes.sh)"
	WSFILTER=$WSFILTER BIN=$BIN LOGDIR=$LOGDIR QUICK=$QUICK RUNS=$RUNS \
		bash "$HERE/routes.sh" >/dev/null || log "bench: the routes scenario failed"
fi
log "bench: done in $(( $(date +%s) - T0 )) s"
report | tee "$BIN/report.md"
