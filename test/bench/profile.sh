#!/bin/bash
# Where the time of a program per connection goes (issue 14): system calls
# (strace -c -f), CPU time and context switches (perf stat, software events:
# this VM has no hardware counters) and wsfilter's own instructions
# (valgrind --tool=callgrind, wsfilter only, not the program) for
#   builtin     wsfilter                      (the built-in filter)
#   exec        wsfilter -- lineecho          (a program per connection)
#   websocketd  websocketd lineecho           (perf and strace only)
# on one connection of N pipelined 17-byte messages and one of R messages
# one at a time, each under systemd-socket-activate (websocketd listens by
# itself).  Prints the figures per message; raw output in bin/profile/.
#
#   bash test/bench/profile.sh        N=100000 R=2000
#   N=10000 R=500 bash test/bench/profile.sh
. "$(dirname "$0")/../lib/bench.sh"
own_out profile
N=${N:-100000}
R=${R:-2000}

# TOOL: strace|perf|callgrind; SERVER: builtin|exec|websocketd; ARGS for wsload
run() {
	local tool=$1 server=$2 tag=$3; shift 3
	local p out=$OUT/$tool.$server.$tag wrap=() cmd=() pid
	p=$(pick_port)
	case $tool in
	strace)    wrap=(strace -f -c -o "$out") ;;
	perf)      wrap=(perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -o "$out") ;;
	callgrind) wrap=(valgrind --tool=callgrind --callgrind-out-file="$out" --trace-children=no) ;;
	esac
	case $server in
	builtin)    cmd=("$WSFILTER") ;;
	exec)       cmd=("$WSFILTER" -- "$BIN/lineecho") ;;
	websocketd) cmd=(websocketd --port="$p" --address=127.0.0.1 --loglevel=fatal "$BIN/lineecho") ;;
	esac
	# valgrind needs system calls the sandbox does not allow
	[ "$tool" = callgrind ] && cmd=("${cmd[0]}" --no-sandbox "${cmd[@]:1}")
	if [ "$server" = websocketd ]; then
		setsid "${wrap[@]}" "${cmd[@]}" </dev/null >"$out.log" 2>&1 &
	else
		setsid systemd-socket-activate -l "127.0.0.1:$p" --accept --inetd \
			"${wrap[@]}" "${cmd[@]}" </dev/null >"$out.log" 2>&1 &
	fi
	pid=$!
	wait_port "$p" 127.0.0.1 5 || { echo "profile: $tool $server did not listen" >&2; return; }
	timeout 120 "$BIN/wsload" "$@" --stall 5 127.0.0.1 "$p" >"$out.wsload" 2>&1
	sleep 0.5	# the connection's process writes its summary at exit
	if [ "$server" = websocketd ]; then
		# the traced websocketd itself, so that strace/perf write their summary
		pkill -TERM -P "$pid" 2>/dev/null
	else
		kill -TERM -- "-$pid" 2>/dev/null
	fi
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL -- "-$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

report_strace() {	# FILE MSGS
	awk -v n="$2" '
		$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { c[$NF] = $4; total += $4 }
		END { printf "  syscalls/msg %.3f:", total / n
			for (k in c) if (c[k] / n >= 0.001) printf " %s %.3f", k, c[k] / n; print "" }' "$1"
}
report_perf() {	# FILE MSGS
	awk -F, -v n="$2" '
		$3 == "task-clock" { printf "  CPU µs/msg %.3f (task-clock %.1f ms)", $1 * 1000 / n, $1 }
		$3 == "context-switches" { printf ", context switches/msg %.4f (%d)", $1 / n, $1 }
		$3 == "page-faults" { printf ", page faults %d", $1 }
		END { print "" }' "$1"
}
report_callgrind() {	# FILE MSGS
	local total
	total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
	awk -v t="$total" -v n="$2" 'BEGIN { printf "  wsfilter instructions/msg %.0f; top functions:\n", t / n }'
	callgrind_annotate "$1" 2>/dev/null | awk '/^-+$/ { s++ } s >= 3 && $1 ~ /^[0-9,]+$/ && NR { print "   ", $0; if (++k == 8) exit }'
}

for tag in burst rtt; do
	if [ $tag = burst ]; then
		args=(-n "$N" -s 17) msgs=$N label="$N x 17 B pipelined"
	else
		args=(-n "$R" -s 17 -w 1) msgs=$R label="$R x 17 B, one at a time"
	fi
	for server in builtin exec websocketd; do
		for tool in strace perf callgrind; do
			[ "$tool" = callgrind ] && [ "$server" = websocketd ] && continue
			run "$tool" "$server" "$tag" "${args[@]}"
		done
		echo "$label, $server:"
		echo "  (perf run) $(grep -o 'msgs_s=[0-9]*\|status=[a-z]*' "$OUT/perf.$server.$tag.wsload" | tr '\n' ' ')"
		report_strace "$OUT/strace.$server.$tag" "$msgs"
		report_perf "$OUT/perf.$server.$tag" "$msgs"
		[ "$server" != websocketd ] && report_callgrind "$OUT/callgrind.$server.$tag" "$msgs"
	done
done
