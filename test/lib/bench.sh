# Shared set-up and helpers of the bench scripts (test/bench/*.sh, bash):
#   . "$(dirname "$0")/../lib/bench.sh"
# run by sh, executes the calling script again under bash; then sets -u, HERE
# (test/bench), TOP (the work tree), PY, CC, BIN (where wsload and lineecho are
# built; kept when set), LOGDIR (default: BIN/run), QUICK (empty for 0) and
# WSFILTER (default: the work tree's build), and loads lib/ports.sh (pick_port,
# wait_port).

# sh test/bench/run.sh: the script again, under bash (. keeps its $0 and $@)
if [ -z "${BASH_VERSION:-}" ]; then
	exec bash "$0" "$@"
fi
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
CC=${CC:-cc}
BIN=${BIN:-$HERE/bin}
LOGDIR=${LOGDIR:-$BIN/run}
QUICK=${QUICK:-}
if [ "$QUICK" = 0 ]; then
	QUICK=
fi
WSFILTER=${WSFILTER:-$TOP/wsfilter}
. "$TOP/test/lib/ports.sh"
. "$TOP/test/lib/spares.sh"

log() { printf '%s\n' "$*" >&2; }

# own_out NAME: BIN is test/bench/bin (not an inherited one) and OUT, BIN/NAME,
# an empty directory; the tools built there (build_tools).
own_out() {
	BIN=$HERE/bin
	OUT=$BIN/$1
	mkdir -p "$OUT"
	rm -f "$OUT"/*
	build_tools
}

# build_tools: wsload and lineecho in $BIN, rebuilt when their source is newer;
# and lineecho-static, the exec ceiling (left out, with a message, where there
# is no static libc).
build_tools() {
	local t
	mkdir -p "$BIN"
	for t in wsload lineecho; do
		if [ ! -x "$BIN/$t" ] || [ "$HERE/$t.c" -nt "$BIN/$t" ]; then
			$CC -O2 -Wall -Wextra -o "$BIN/$t" "$HERE/$t.c" || exit 1
		fi
	done
	if [ ! -x "$BIN/lineecho-static" ] || [ "$HERE/lineecho.c" -nt "$BIN/lineecho-static" ]; then
		$CC -O2 -Wall -Wextra -static -o "$BIN/lineecho-static" "$HERE/lineecho.c" ||
			log "bench: no static lineecho (static libc missing?): no exec ceiling"
	fi
}

# need_commands CMD...: exit 1 with a message naming the first one missing.
need_commands() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || { log "bench: $t is missing"; exit 1; }
	done
}

# stat_fields PID N...: the fields N of /proc/PID/stat, numbered as proc(5)
# numbers them (10 minflt, 11 cminflt, 14 to 17 utime stime cutime cstime),
# on one line; 0 for each where PID is gone.
stat_fields() {
	local stat n f out=()
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || stat=
	shift
	# the fields after the command's name (in parentheses, may hold spaces),
	# behind two placeholders for the pid and the name: field N is f[N-1]
	# shellcheck disable=SC2206 # numbers and a state letter, split on purpose
	f=(pid comm ${stat##*) })
	for n; do
		out+=("${f[n - 1]:-0}")
	done
	echo "${out[*]}"
}

# cpu_ticks PID: utime+stime+cutime+cstime of PID (its reaped children included).
cpu_ticks() {
	local u s cu cs
	read -r u s cu cs <<<"$(stat_fields "$1" 14 15 16 17)"
	echo $((u + s + cu + cs))
}

# minor_faults PID: "minflt cminflt" of PID (cminflt: its reaped children's).
minor_faults() {
	stat_fields "$1" 10 11
}

# fault_delta "MINFLT CMINFLT" "MINFLT CMINFLT": the minor faults between two
# minor_faults readings, as "root_faults=N child_faults=N".
fault_delta() {
	set -- $1 $2
	echo "root_faults=$(($3 - $1)) child_faults=$(($4 - $2))"
}

# cpu_seconds TICKS: TICKS of the clock (CLK_TCK) in seconds, two decimals.
cpu_seconds() {
	awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# wait_children_gone PID [SECONDS]: wait up to SECONDS (2) until PID has no child
# left but an acceptor's spares (a launcher has reaped every connection's
# process).
wait_children_gone() {
	# each try 0.05 s apart
	for _ in $(seq 1 $(( ${2:-2} * 20 ))); do
		[ -z "$(busy_children "$1")" ] && return 0
		sleep 0.05
	done
	return 1
}

# rotate ROUND WORD...: the words, starting ROUND-1 further on (interleaved rounds).
rotate() {
	local r=$1
	shift
	for _ in $(seq 1 $(( (r - 1) % $# ))); do
		set -- "$@" "$1"
		shift
	done
	echo "$@"
}

# ---- servers that spend a process on each connection --------------------------

# per_conn_cmd NAME PORT [WSFILTER-OPTION...]: the command line of the server
# NAME on 127.0.0.1:PORT, given its listening socket by systemd-socket-activate
# (but websocketd), with the OPTIONs after wsfilter's name. NAME is a kind:
#   acc         wsfilter accepting and forking per connection itself (Accept=no)
#   acc-prog    the same, running lineecho for each connection
#   inetd       wsfilter under --accept --inetd (a fork and an exec per connection)
#   fork        lineecho --fork: accept, fork, the line filter, _exit (the fork ceiling)
#   exec        lineecho-static under --accept --inetd (the exec ceiling)
#   exec-dyn    lineecho, linked dynamically, under --accept --inetd (the exec
#               ceiling of a dynamically linked program)
#   prog        lineecho --fork --run lineecho: accept, fork, then fork and exec
#               lineecho and relay to it (the program ceiling)
#   spawn       the same with posix_spawn in place of the second fork
#   websocketd  websocketd running lineecho (it listens by itself)
# and for the wsfilter ones a suffix: -static (WSFILTER_STATIC), -before
# (WSFILTER_BEFORE), -other (WSFILTER_OTHER), -nosb (--no-sandbox), -nospare
# (--spares 0).
per_conn_cmd() {
	local name=$1 port=$2 sa="systemd-socket-activate -l 127.0.0.1:$2" w=$WSFILTER
	shift 2
	case $name in
	*-static) w=${WSFILTER_STATIC:?} ;;
	*-before) w=${WSFILTER_BEFORE:?} ;;
	*-other) w=${WSFILTER_OTHER:?} ;;
	*-nosb) set -- "$@" --no-sandbox ;;
	*-nospare) set -- "$@" --spares 0 ;;
	esac
	case $name in
	acc-prog*) echo "$sa $w $* -- $BIN/lineecho" ;;
	acc*) echo "$sa $w $*" ;;
	inetd*) echo "$sa --accept --inetd $w $*" ;;
	fork) echo "$sa $BIN/lineecho --fork" ;;
	exec) echo "$sa --accept --inetd $BIN/lineecho-static" ;;
	exec-dyn) echo "$sa --accept --inetd $BIN/lineecho" ;;
	prog) echo "$sa $BIN/lineecho --fork --run $BIN/lineecho" ;;
	spawn) echo "$sa $BIN/lineecho --fork --spawn $BIN/lineecho" ;;
	websocketd) echo "websocketd --port=$port --address=127.0.0.1 --loglevel=fatal $BIN/lineecho" ;;
	*) log "bench: no server $name"; return 1 ;;
	esac
}

# ---- servers by name, each in its own session --------------------------------
# The calling script defines server_cmd NAME PORT (a command line, eval'd) and
# sets LOGS, the directory of NAME.log (the server's output), warmup.out and
# wsload.log; it may define a stop_server NAME of its own.
declare -A PID PORT	# by name: the session's leader, the port

# launch NAME: server_cmd NAME PORT on a free PORT, from the work tree, in its
# own session; exec'd all the way, so that PID[NAME] is the leader of the
# process group stop_group ends. Does not wait for it to listen.
launch() {
	local port
	port=$(pick_port)
	(cd "$TOP" && eval "exec setsid $(server_cmd "$1" "$port")") </dev/null >>"$LOGS/$1.log" 2>&1 &
	PID[$1]=$!
	PORT[$1]=$port
}

# server_up NAME: wait up to 15 s for NAME to listen; else say so and return 1.
server_up() {
	wait_port "${PORT[$1]}" 127.0.0.1 15 && return 0
	log "bench: $1 did not start listening on ${PORT[$1]}"
	return 1
}

# warm_up NAME WSLOAD-ARG...: one connection to NAME (wsload --connections 1
# WSLOAD-ARG..., 20 s at most), so that the figures are of a server that has
# served one (systemd-socket-activate without --accept executes the server only
# when the first connection comes), and its process reaped; says so and
# returns 1 when it fails.
warm_up() {
	local s=$1
	shift
	if ! timeout -k 2 20 "$BIN/wsload" --connections 1 "$@" --timeout 15 127.0.0.1 "${PORT[$s]}" \
		>>"$LOGS/warmup.out" 2>>"$LOGS/wsload.log"; then
		log "bench: $s: the first connection failed ($(tail -n 1 "$LOGS/warmup.out"))"
		return 1
	fi
	wait_children_gone "${PID[$s]}"
}

# stop_group PID: SIGTERM to the process group PID leads, up to 5 s for PID to
# end, then SIGKILL to the group; PID reaped.
stop_group() {
	kill -TERM -- "-$1" 2>/dev/null
	for _ in $(seq 1 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "-$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# stop_server NAME: stop_group for NAME's session, if it runs.
stop_server() {
	[ -n "${PID[$1]:-}" ] || return 0
	stop_group "${PID[$1]}"
	PID[$1]=
}

# stop_all: stop_server for every server started.
stop_all() {
	local s
	for s in "${!PID[@]}"; do
		stop_server "$s"
	done
}

# seq_rounds SERVER...: every SERVER started at once (start_server NAME, the
# calling script's: 0 once it serves), then RUNS interleaved rounds, each
# starting one server further on, of seq_one SERVER ROUND (the calling
# script's) for each that started, a "seq SERVER ROUND status=nostart" line
# in TSV for the others; then all stopped.
seq_rounds() {
	local s r started=" "
	for s; do
		start_server "$s" && started+="$s "
	done
	for r in $(seq 1 "$RUNS"); do
		for s in $(rotate "$r" "$@"); do
			case $started in
			*" $s "*) seq_one "$s" "$r" ;;
			*) printf 'seq\t%s\t%s\tstatus=nostart\n' "$s" "$r" >>"$TSV" ;;
			esac
		done
	done
	stop_all
}
