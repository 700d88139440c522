#!/bin/bash
# wsfilter's acceptor mode (issue 15): wsfilter given a listening socket on
# fd 3 (systemd Accept=no; here `systemd-socket-activate -l ADDR:PORT
# wsfilter`, without --accept) accepts and forks per connection itself.
# Measured against the launcher path (Accept=yes: `systemd-socket-activate
# --accept --inetd wsfilter`, a fork and exec per connection), the same two
# with a statically linked wsfilter, and Node ws, Python websockets and
# websocketd, all on loopback, interleaved, every figure from this run:
#
#  1. sequential connections (handshake, one message, close; wsload
#     --connections), conn/s and the ratio to Node ws, server CPU and minor
#     page faults per connection; beside the ceilings, in plain lines
#     (wsload --raw): the fork ceiling, `lineecho --fork` given the
#     listening socket as wsfilter is (it accepts, forks, filters lines,
#     _exits), for Accept=no; the exec ceiling, a static lineecho under
#     --accept, for Accept=yes, and the same with lineecho linked
#     dynamically, as wsfilter is; Accept=no at --spares 0 too (each fork at
#     its connection, none ahead); and `wsfilter -- lineecho` in acceptor mode
#     beside websocketd running the same lineecho and the program ceiling,
#     `lineecho --fork --run lineecho` (accept, fork, then fork and exec
#     lineecho and relay to it: the processes wsfilter makes, no more);
#  2. C connections at once (1,000, and 10,000 in the full run), each doing
#     10 round trips one at a time, then held open HOLD s: whether all
#     completed, replies lost, the time until the last round trip, the
#     server's whole process tree's peak PSS while held, PSS per connection,
#     listen-queue overflows (nstat TcpExtListenOverflows), the listen
#     backlog and the open-files limit;
#  3. where the rest of the memory goes: page tables (VmPTE summed over the
#     tree), and system-wide deltas between the idle server and the held
#     connections of kernel stacks, page tables, unreclaimable slab and TCP
#     socket buffers (/proc/meminfo, /proc/net/sockstat).
# No figure is a pass or a fail: the goals are printed beside the figures.
#
# Called by run.sh (ONLY=acceptor runs just this); alone:
#   bash test/bench/acceptor.sh        (QUICK=1 for about a minute: 1,000 at once, not 10,000)
# Environment: WSFILTER, WSFILTER_STATIC (default: built from wsfilter.c
# with -static), BIN (wsload, lineecho), LOGDIR, QUICK, RUNS (rounds of the
# connection rate), CONC_RUNS (rounds of the held connections), CONC_SIZES
# (e.g. "1000 10000"), HOLD (seconds held), ACC_SERVERS (subset).
# Writes raw figures to $LOGDIR/acceptor.tsv, the markdown section to
# $LOGDIR/acceptor.md (and stdout), logs to $LOGDIR/acceptor/.
. "$(dirname "$0")/../lib/bench.sh"
if [ -n "$QUICK" ]; then
	RUNS=${RUNS:-1} CONC_RUNS=${CONC_RUNS:-1}
	N_SEQ=50 CONC_SIZES=${CONC_SIZES:-1000} HOLD=${HOLD:-2}
else
	RUNS=${RUNS:-5} CONC_RUNS=${CONC_RUNS:-3}
	N_SEQ=300 CONC_SIZES=${CONC_SIZES:-"1000 10000"} HOLD=${HOLD:-10}
fi
N_MSG=10		# round trips per held connection
MAXCONN=20000		# --max-connections for Accept=no
TSV=$LOGDIR/acceptor.tsv
MD=$LOGDIR/acceptor.md
D=$LOGDIR/acceptor
LOGS=$D
mkdir -p "$D/bin" "$D/build"
rm -f "$D"/*.log "$D"/*.out
: >"$TSV"

# ---- the servers
ALL_SERVERS="acc-dyn acc-nospare acc-static fork-ceiling inetd-dyn inetd-static exec-ceiling exec-dyn-ceiling acc-prog prog-ceiling node-ws python-websockets websocketd"
ACC_SERVERS=${ACC_SERVERS:-$ALL_SERVERS}
CONC_SERVERS="acc-dyn acc-nospare acc-static inetd-dyn inetd-static node-ws"
server_cmd() {	# NAME PORT: lib/bench.sh's per_conn_cmd, but the peers
	local kind=${1%-dyn}
	case $1 in
	node-ws) echo "node $HERE/peer_ws.mjs $2" ;;
	python-websockets) echo "$PY $HERE/peer_websockets.py $2" ;;
	acc-*) per_conn_cmd "$kind" "$2" --max-connections "$MAXCONN" ;;
	*) per_conn_cmd "${kind%-ceiling}" "$2" ;;
	esac
}
server_raw() {	# wsload's mode: plain lines for the ceilings
	case $1 in *-ceiling) echo --raw ;; esac
}
server_handler() {	# the per-connection process's comm
	case $1 in
	*-static) echo wsfilter-static ;;
	acc-*|inetd-*) echo wsfilter ;;
	websocketd) echo lineecho ;;
	*) echo "" ;;
	esac
}

# ---- build and checks
build_tools
need_commands systemd-socket-activate websocketd node nstat ss timeout
[ -x "$WSFILTER" ] || { log "bench: $WSFILTER not built (make)"; exit 1; }
# a statically linked wsfilter: the Makefile's `make static` where there is
# one, else the same compiler flags as the Makefile's wsfilter plus -static;
# measured from a copy, as the dynamic one
if [ -z "${WSFILTER_STATIC:-}" ]; then
	if grep -q '^static:' "$TOP/Makefile" 2>/dev/null; then
		make -s -C "$TOP" static >&2 || { log "bench: make static failed"; exit 1; }
		WSFILTER_STATIC=$TOP/wsfilter-static
	else
		make -s -C "$TOP" web_index.h >&2 || exit 1
		WSFILTER_STATIC=$D/build/wsfilter-static
		$CC -std=c11 -DVERSION=\"$(sed -n 's/^VERSION = //p' "$TOP/Makefile")\" -D_FORTIFY_SOURCE=2 \
			-O2 -g -static -o "$WSFILTER_STATIC" "$TOP/wsfilter.c" || { log "bench: static build failed"; exit 1; }
	fi
fi
cp "$WSFILTER" "$D/bin/wsfilter" && cp "$WSFILTER_STATIC" "$D/bin/wsfilter-static" || exit 1
WSFILTER=$D/bin/wsfilter
WSFILTER_STATIC=$D/bin/wsfilter-static
# acceptor mode is there when --max-connections is an option
ACCEPTOR=1
if ! "$WSFILTER" --max-connections "$MAXCONN" -V >/dev/null 2>&1; then
	ACCEPTOR=
	log "bench: $WSFILTER has no acceptor mode (--max-connections is not an option): Accept=no is left out"
	ACC_SERVERS=$(echo " $ACC_SERVERS " | sed 's/ acc-dyn / /; s/ acc-nospare / /; s/ acc-static / /; s/ acc-prog / /')
	CONC_SERVERS=$(echo " $CONC_SERVERS " | sed 's/ acc-dyn / /; s/ acc-nospare / /; s/ acc-static / /')
fi
CONC_SERVERS=$(for s in $CONC_SERVERS; do case " $ACC_SERVERS " in *" $s "*) echo "$s" ;; esac; done | xargs)

# the exec ceiling is a static lineecho: none where there is no static libc
if [ ! -x "$BIN/lineecho-static" ]; then
	ACC_SERVERS=$(echo " $ACC_SERVERS " | sed 's/ exec-ceiling / /')
fi

# the open-files limit: as high as the hard limit allows (the client holds
# every connection, Node ws too)
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=$(cat /proc/sys/fs/nr_open)
ulimit -n "$HARD" 2>/dev/null || log "bench: could not raise the open-files limit to $HARD"
NOFILE=$(ulimit -n)
log "bench: acceptor: open-files limit $NOFILE (hard $(ulimit -Hn))"

# ---- processes (pick_port, wait_port, cpu_ticks, wait_children_gone, rotate,
# launch, warm_up, stop_all and seq_rounds are lib/bench.sh's)
backlog() {	# PORT: the listening socket's backlog (ss Send-Q)
	ss -Hltn "sport = :$1" 2>/dev/null | awk 'NR == 1 { print $3 }'
}
treemem() { "$PY" "$HERE/treemem.py" "$@"; }

start_server() {	# NAME: in its own session, one connection served; PID and PORT set
	launch "$1"
	server_up "$1" && warm_up "$1" $(server_raw "$1") -s 17 || { stop_server "$1"; return 1; }
}
# TERM to the session and to the tree's every process (Accept=no's children
# included, wherever they moved), up to 15 s for all of them, then KILL
stop_server() {	# NAME
	local s=$1 root=${PID[$1]:-} pids p left
	[ -n "$root" ] || return 0
	pids=$(treemem --pids "$root")
	kill -TERM -- "-$root" 2>/dev/null
	kill -TERM "$root" 2>/dev/null
	for _ in $(seq 1 150); do
		left=
		for p in $pids; do kill -0 "$p" 2>/dev/null && { left=1; break; }; done
		[ -z "$left" ] && break
		sleep 0.1
	done
	if [ -n "$left" ]; then
		log "bench: $s still running 15 s after SIGTERM: SIGKILL"
		kill -KILL -- "-$root" 2>/dev/null
		for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	fi
	wait "$root" 2>/dev/null
	PID[$s]=
}
WPID=
cleanup() {
	[ -n "$WPID" ] && kill -KILL "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
	WPID=
	stop_all
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

nstat_counts() {	# the kernel's counters (absolute, history untouched)
	nstat -asz TcpExtListenOverflows TcpExtListenDrops TcpRetransSegs TcpExtTCPSynRetrans \
		TcpOutRsts TcpExtTCPTimeouts 2>/dev/null |
		awk '!/^#/ { printf "%s=%s ", $1, $2 }'
}
delta() {	# BEFORE AFTER: "key=after-before" for each counter
	"$PY" -c '
import sys
b = dict(x.split("=") for x in sys.argv[1].split())
a = dict(x.split("=") for x in sys.argv[2].split())
print(" ".join(f"d_{k}={int(a[k]) - int(b.get(k, 0))}" for k in a))' "$1" "$2"
}

# wsfilter's connection lines a run added to its log: log_lines (every
# connection's line), log_ok (exit 0), log_noreq (no request within the
# handshake timeout), log_killed (a connection process killed by a signal,
# from the acceptor's own line)
log_outcomes() {	# SERVER LINES-BEFORE
	case $1 in acc-*|inetd-*) ;; *) return ;; esac
	tail -n +"$(($2 + 1))" "$D/$1.log" | awk '
		/^wsfilter\[[0-9]+\]: .* exit [0-9]+$/ { n++; if (/ exit 0$/) ok++ }
		/no request within/ { nr++ }
		/^wsfilter\[[0-9]+\]: connection [0-9]+ killed by/ { k++ }
		END { printf "log_lines=%d log_ok=%d log_noreq=%d log_killed=%d", n, ok, nr, k }'
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

# ---- 1. sequential connections: every server up at once, interleaved rounds
SEQ_TIMEOUT=$([ -n "$QUICK" ] && echo 30 || echo 90)
seq_one() {	# SERVER ROUND
	local s=$1 r=$2 before after faults0 faults1 out rc
	before=$(cpu_ticks "${PID[$s]}")
	faults0=$(minor_faults "${PID[$s]}")
	out=$(timeout -k 2 "$SEQ_TIMEOUT" "$BIN/wsload" $(server_raw "$s") --connections "$N_SEQ" \
		-s 17 --stall 5 --timeout $((SEQ_TIMEOUT - 5)) 127.0.0.1 "${PORT[$s]}" 2>>"$D/wsload.log")
	rc=$?
	# the launchers' children reaped (2 s), so that their CPU is in
	wait_children_gone "${PID[$s]}"
	after=$(cpu_ticks "${PID[$s]}")
	faults1=$(minor_faults "${PID[$s]}")
	[ -n "$out" ] || out="status=failed why=\"wsload exit $rc\""
	out="$out server_cpu_s=$(cpu_seconds $((after - before))) $(fault_delta "$faults0" "$faults1")"
	printf 'seq\t%s\t%s\t%s\n' "$s" "$r" "$out" >>"$TSV"
	log "  acceptor seq $s #$r: $out"
}
log "bench: acceptor: $N_SEQ sequential connections, $RUNS round(s): $ACC_SERVERS"
seq_rounds $ACC_SERVERS

# ---- 2. and 3. C connections at once, held: a fresh server for each run
run_conc() {	# SERVER C ROUND
	local s=$1 c=$2 r=$3 handler idle ns0 ns1 ready=$D/ready.$$ out rc peak="" smp
	local pk t_ready tmo bl stall held="" p maps=""
	handler=$(server_handler "$s")
	# the time it may take: a connection whose SYN overflows the listen
	# queue sends it again 1, 3, 7, 15, 31 and 63 s after the first and
	# gives up at 127 s (tcp_syn_retries 6): the stall limit must be longer
	# than the last gap (64 s), so that the kernel, not wsload, decides
	tmo=$(( c / 50 + 200 ))
	stall=70
	if ! start_server "$s"; then
		printf 'conc\t%s\t%s\tconns=%s status=nostart\n' "$s" "$r" "$c" >>"$TSV"
		return
	fi
	bl=$(backlog "${PORT[$s]}")
	sleep 1
	wait_children_gone "${PID[$s]}" 5	# the first connection's process gone
	idle=$(treemem "${PID[$s]}" "$handler")
	ns0=$(nstat_counts)
	lines0=$(wc -l <"$D/$s.log")
	rm -f "$ready"
	timeout -k 2 $((tmo + HOLD + 60)) "$BIN/wsload" -c "$c" -n "$N_MSG" -s 17 -w 1 --stall "$stall" \
		--timeout "$tmo" --ready "$ready" --hold $((HOLD + 60)) 127.0.0.1 "${PORT[$s]}" \
		>"$D/conc.out" 2>>"$D/wsload.log" &
	WPID=$!
	for _ in $(seq 1 $(( (tmo + 10) * 10 ))); do
		[ -s "$ready" ] && break
		kill -0 "$WPID" 2>/dev/null || break
		sleep 0.1
	done
	if [ -s "$ready" ]; then
		# held: sample the tree until HOLD s have passed, keep the peak
		t_ready=$(date +%s.%N)
		pk=0
		while :; do
			smp=$(treemem "${PID[$s]}" "$handler")
			p=$(echo "$smp" | sed -n 's/.*\bpss=\([0-9]*\).*/\1/p')
			if [ "${p:-0}" -gt "$pk" ]; then pk=$p; peak=$smp; fi
			awk -v a="$t_ready" -v b="$(date +%s.%N)" -v h="$HOLD" 'BEGIN { exit !(b - a >= h) }' && break
			sleep 0.5
		done
		held=$(awk -v a="$t_ready" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
		# one connection's process, by mapping (the per-process servers)
		[ -n "$handler" ] && maps=$(treemem --maps "${PID[$s]}" "$handler")
		kill -USR1 "$(cat "$ready")" 2>/dev/null	# wsload's own pid
	fi
	wait "$WPID"
	rc=$?
	WPID=
	# each connection's process writes its log line once the client has
	# gone, after wsload counts it done: up to 30 s for all of them to end
	wait_children_gone "${PID[$s]}" 30
	ns1=$(nstat_counts)
	out=$(cat "$D/conc.out")
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		out="$out status=hung why=\"killed by timeout(1)\""
	elif [ -z "$out" ]; then
		out="status=failed why=\"wsload exit $rc\""
	fi
	out="conns=$c $out backlog=${bl:-?} nofile=$NOFILE $(delta "$ns0" "$ns1") $(log_outcomes "$s" "$lines0")"
	[ -n "$idle" ] && out="$out $(echo "$idle" | sed 's/\([a-z_]*\)=/idle_\1=/g')"
	[ -n "$peak" ] && out="$out held_s=$held $(echo "$peak" | sed 's/\([a-z_]*\)=/peak_\1=/g') $maps"
	printf 'conc\t%s\t%s\t%s\n' "$s" "$r" "$out" >>"$TSV"
	log "  acceptor conc $c $s #$r: $out"
	stop_server "$s"
}
for c in $CONC_SIZES; do
	if [ "$NOFILE" -lt $((c + 64)) ]; then
		log "bench: $c connections need $((c + 64)) open files, the limit is $NOFILE: left out"
		CONC_SIZES=$(echo " $CONC_SIZES " | sed "s/ $c / /")
	fi
done
# QUICK: above 1,000 connections only Accept=no (dynamic), the figure the
# goals are about
conc_servers() {	# SIZE
	if [ -n "$QUICK" ] && [ "$1" -gt 1000 ]; then
		case " $CONC_SERVERS " in *" acc-dyn "*) echo acc-dyn ;; esac
	else
		echo "$CONC_SERVERS"
	fi
}
for c in $CONC_SIZES; do
	log "bench: acceptor: $c connections at once, $CONC_RUNS round(s), held $HOLD s: $(conc_servers "$c")"
done
for r in $(seq 1 "$CONC_RUNS"); do
	for c in $CONC_SIZES; do
		set -- $(conc_servers "$c")
		[ $# -gt 0 ] || continue
		for s in $(rotate "$r" "$@"); do
			run_conc "$s" "$c" "$r"
		done
	done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
log "bench: acceptor: done in $(( $(date +%s) - T0 )) s"
"$PY" "$HERE/acceptor_report.py" "$TSV" "$RUNS" "$CONC_RUNS" "$N_SEQ" "$N_MSG" "$HOLD" \
	"$NOFILE" "$LOAD_START" "$LOAD_END" "$(( $(date +%s) - T0 ))" "$ACCEPTOR" >"$MD"
cat "$MD"
