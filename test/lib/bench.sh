# Shared set-up and helpers of the bench scripts (test/bench/*.sh, bash):
#   . "$(dirname "$0")/../lib/bench.sh"
# sets HERE (test/bench), TOP (the work tree), PY, CC, BIN (where wsload and
# lineecho are built; kept when set) and WSFILTER (default: the work tree's
# build), and loads lib/ports.sh (pick_port, wait_port).

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
CC=${CC:-cc}
BIN=${BIN:-$HERE/bin}
WSFILTER=${WSFILTER:-$TOP/wsfilter}
. "$TOP/test/lib/ports.sh"

log() { printf '%s\n' "$*" >&2; }

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

# cpu_ticks PID: utime+stime+cutime+cstime of PID (its reaped children included).
cpu_ticks() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	stat=${stat##*) }
	set -- $stat
	echo $(( ${12} + ${13} + ${14} + ${15} ))
}

# minor_faults PID: "minflt cminflt" of PID (cminflt: its reaped children's).
minor_faults() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return; }
	stat=${stat##*) }
	set -- $stat
	echo "$8 $9"
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
# left (a launcher has reaped every connection's process).
wait_children_gone() {
	# each try 0.05 s apart
	for _ in $(seq 1 $(( ${2:-2} * 20 ))); do
		[ -z "$(pgrep -P "$1" 2>/dev/null)" ] && return 0
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
