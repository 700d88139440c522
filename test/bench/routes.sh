#!/bin/bash
# What routes (--dir) and the admission check (--check) cost: the connection
# rate with --check and with --dir, against the same program without them.
# wsfilter in acceptor mode (given the listening
# socket: `systemd-socket-activate -l 127.0.0.1:PORT wsfilter ...`, without
# --accept), on loopback, every figure from this run:
#
#   prog          wsfilter -- D/echo                  (D/echo: #!/bin/sh, exec cat)
#   dir           wsfilter --dir D                    (the client asks for /echo)
#   check         wsfilter --check D/ok -- D/echo     (D/ok: #!/bin/sh, exit 0)
#   dir+check     wsfilter --dir D --check D/ok
#   filter        wsfilter --echo                     (the built-in filter)
#   filter+check  wsfilter --echo --check D/ok
#
# Sequential connections (wsload --connections: handshake, one 17-byte
# message and its reply, close 1000), every client asking for /echo, the
# servers interleaved across rounds; medians, each with the ratio to its
# baseline (prog for the program rows, filter for the filter rows) and the
# server tree's CPU per connection. No figure is a pass or a fail.
#
# Called by run.sh (ONLY=routes runs just this); alone:
#   bash test/bench/routes.sh          (QUICK=1 for under ~40 s)
# Environment: WSFILTER, BIN (wsload), LOGDIR, QUICK, RUNS (rounds), N_SEQ
# (connections per round and server), ROUTE_SERVERS (subset).
# Writes raw figures to $LOGDIR/routes.tsv, the markdown section to
# $LOGDIR/routes.md (and stdout), logs to $LOGDIR/routes/.
. "$(dirname "$0")/../lib/bench.sh"
if [ -n "$QUICK" ]; then
	RUNS=${RUNS:-2} N_SEQ=${N_SEQ:-50} SEQ_TIMEOUT=30
else
	RUNS=${RUNS:-5} N_SEQ=${N_SEQ:-300} SEQ_TIMEOUT=90
fi
TSV=$LOGDIR/routes.tsv
MD=$LOGDIR/routes.md
D=$LOGDIR/routes
LOGS=$D
rm -rf "$D"
mkdir -p "$D/bin" "$D/d"
: >"$TSV"

# ---- the programs: D/echo (the route and the program), D/ok (the check)
P=$D/d
printf '#!/bin/sh\nexec cat\n' >"$P/echo"
printf '#!/bin/sh\nexit 0\n' >"$P/ok"
chmod 755 "$P/echo" "$P/ok"

# ---- the servers
ALL_SERVERS="prog dir check dir+check filter filter+check"
ROUTE_SERVERS=${ROUTE_SERVERS:-$ALL_SERVERS}
server_cmd() {	# NAME PORT: wsfilter in acceptor mode and its arguments
	echo "systemd-socket-activate -l 127.0.0.1:$2 $WSFILTER $(server_args "$1")"
}
server_args() {	# NAME: wsfilter's arguments
	case $1 in
	prog)         echo "-- $P/echo" ;;
	dir)          echo "--dir $P" ;;
	check)        echo "--check $P/ok -- $P/echo" ;;
	dir+check)    echo "--dir $P --check $P/ok" ;;
	filter)       echo "--echo" ;;
	filter+check) echo "--echo --check $P/ok" ;;
	esac
}
# every client asks for /echo: the route --dir needs, the same request for all
WSLOAD_ARGS="-s 17 --echo --path /echo"

# ---- build and checks
build_tools
need_commands systemd-socket-activate timeout ss
[ -x "$WSFILTER" ] || { log "bench: $WSFILTER not built (make)"; exit 1; }
cp "$WSFILTER" "$D/bin/wsfilter" || exit 1	# a rebuild must not swap it mid-run
WSFILTER=$D/bin/wsfilter
if ! "$WSFILTER" --dir "$P" --check "$P/ok" -V >/dev/null 2>&1; then
	log "bench: $WSFILTER has no --dir or no --check: no routes figures"
	exit 1
fi

# ---- processes (pick_port, wait_port, cpu_ticks, wait_children_gone, rotate,
# launch, warm_up, stop_server, stop_all and seq_rounds are lib/bench.sh's)
start_server() {	# NAME: in its own session, one connection served; PID and PORT set
	launch "$1"
	server_up "$1" && warm_up "$1" $WSLOAD_ARGS || { stop_server "$1"; return 1; }
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# the connection lines a run added to wsfilter's log: every one, and those
# ending "exit 0" (each connection served and its program, if any, exited 0)
log_outcomes() {	# SERVER LINES-BEFORE
	tail -n +"$(($2 + 1))" "$D/$1.log" | awk '
		/^wsfilter\[[0-9]+\]: .* exit [0-9]+$/ { n++; if (/ exit 0$/) ok++ }
		END { printf "log_lines=%d log_ok=%d", n, ok }'
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

# ---- sequential connections: every server up at once, interleaved rounds
seq_one() {	# SERVER ROUND
	local s=$1 r=$2 lines0 before after out rc
	lines0=$(wc -l <"$D/$s.log")
	before=$(cpu_ticks "${PID[$s]}")
	out=$(timeout -k 2 "$SEQ_TIMEOUT" "$BIN/wsload" --connections "$N_SEQ" $WSLOAD_ARGS --stall 5 \
		--timeout $((SEQ_TIMEOUT - 5)) 127.0.0.1 "${PORT[$s]}" 2>>"$D/wsload.log")
	rc=$?
	# every connection's process reaped (2 s), so that its CPU is in
	wait_children_gone "${PID[$s]}"
	after=$(cpu_ticks "${PID[$s]}")
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		out="$out status=hung why=\"killed by timeout(1) after ${SEQ_TIMEOUT}s\""
	elif [ -z "$out" ]; then
		out="status=failed why=\"wsload exit $rc\""
	fi
	out="$out server_cpu_s=$(cpu_seconds $((after - before))) $(log_outcomes "$s" "$lines0")"
	out="$out load1=$(cut -d' ' -f1 /proc/loadavg)"
	printf 'seq\t%s\t%s\t%s\n' "$s" "$r" "$out" >>"$TSV"
	log "  routes seq $s #$r: $out"
}
log "bench: routes: $N_SEQ sequential connections, $RUNS round(s): $ROUTE_SERVERS"
seq_rounds $ROUTE_SERVERS

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
SECS=$(( $(date +%s) - T0 ))
log "bench: routes: done in $SECS s"

# ---- the section
"$PY" - "$TOP/test/lib" "$TSV" "$RUNS" "$N_SEQ" "$LOAD_START" "$LOAD_END" "$SECS" "$(nproc)" >"$MD" <<'EOF'
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, sys.argv[1])
from bench_figures import by_what_and_server, cell, num, stat, status, values
tsv, runs, n_seq, load0, load1, secs, ncpu = sys.argv[2:]
rows = by_what_and_server(tsv)

SERVERS = [  # name, wsfilter's arguments, baseline
    ("prog", "-- D/echo", "prog"),
    ("dir", "--dir D (client asks for /echo)", "prog"),
    ("check", "--check D/ok -- D/echo", "prog"),
    ("dir+check", "--dir D --check D/ok", "prog"),
    ("filter", "--echo", "filter"),
    ("filter+check", "--echo --check D/ok", "filter"),
]


def rate(f):  # conn/s to more digits than wsload's conn_s (an integer)
    return float(f["conns"]) / float(f["elapsed_s"])


def cpu_ms(f):  # the server tree's CPU per connection, ms
    return float(f["server_cpu_s"]) * 1000 / float(f["conns"])


def per_round(s, base):
    """s's rate / the baseline's in the same round, for each round both finished"""
    b = {f["round"]: rate(f) for f in rows.get(("seq", base), []) if f.get("status") == "ok"}
    return [rate(f) / b[f["round"]] for f in rows.get(("seq", s), [])
            if f.get("status") == "ok" and f["round"] in b]


def ratio(x):
    return f"{x:.2f}"


def diff(a, b, fmt=num):
    return f"{'+' if a[0] - b[0] >= 0 else '−'}{fmt(abs(a[0] - b[0]))}" if a and b else "-"


p = print
p("## Routes and admission")
p()
p("What `--dir` and `--check` cost a connection: wsfilter in acceptor mode (given the")
p("listening socket, `systemd-socket-activate -l 127.0.0.1:PORT wsfilter ARGS`, without")
p("`--accept`), `D/echo` being `#!/bin/sh` + `exec cat` and `D/ok` `#!/bin/sh` + `exit 0`.")
p(f"Each connection: handshake to `/echo`, one 17-byte message and its reply, close 1000")
p(f"(`wsload --connections {n_seq} -s 17 --echo --path /echo`), one after the other; every")
p(f"server up at once, {runs} interleaved round(s), medians, (min–max) when more than one.")
p("*/ baseline*: the median rate over the baseline's (`prog` for the program rows, `filter`")
p("for the built-in filter's); *per round*: each round's rate over the baseline's in that")
p("round. *p50, p99*: one connection's whole time, connect to close. *Server CPU*: wsfilter's")
p("process and its reaped children (the connections, their programs and checks), per")
p("connection (10 ms resolution over the run). wsfilter runs with its defaults otherwise")
p("(sandbox on, one log line per connection to a file).")
p()
p(f"- Load average at the start: {load0}; at the end: {load1} ({ncpu} cores); {secs} s in all")
p()
p("| Server | wsfilter arguments | conn/s | / baseline | per round | p50 ms | p50 over baseline, ms "
  "| p99 ms | server CPU ms per connection | CPU over baseline, ms | Status |")
p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for s, args, base in SERVERS:
    rs = rows.get(("seq", s))
    if not rs:
        continue
    bs = rows.get(("seq", base), [])
    rt, brt = stat(values(rs, rate)), stat(values(bs, rate))
    p50 = stat(values(rs, lambda f: float(f["p50_us"]) / 1000))
    bp50 = stat(values(bs, lambda f: float(f["p50_us"]) / 1000))
    p99 = stat(values(rs, lambda f: float(f["p99_us"]) / 1000))
    cpu, bcpu = stat(values(rs, cpu_ms)), stat(values(bs, cpu_ms))
    if s == base:
        rel = rnd = dp50 = dcpu = "(baseline)"
    else:
        rel = ratio(rt[0] / brt[0]) if rt and brt else "-"
        rnd = cell(stat(per_round(s, base)), ratio)
        dp50, dcpu = diff(p50, bp50), diff(cpu, bcpu)
    p(f"| {s} | `{args}` | {cell(rt)} | {rel} | {rnd} | {cell(p50)} | {dp50} | {cell(p99)} | "
      f"{cell(cpu)} | {dcpu} | {status(rs)} |")
p()
# every connection's log line must end "exit 0": else say which did not
odd = []
for s, _, _ in SERVERS:
    for f in rows.get(("seq", s), []):
        if f.get("status") == "ok" and f.get("log_ok") != f.get("conns"):
            odd.append(f"{s} round {f['round']}: {f.get('log_ok')} of {f.get('conns')}")
if odd:
    p("wsfilter's log lines ending `exit 0` short of the connections: " + "; ".join(odd) + ".")
    p()
loads = [float(f["load1"]) for rs in rows.values() for f in rs if "load1" in f]
if loads and max(loads) > float(ncpu):
    p(f"The 1-minute load average reached {max(loads):.2f} on {ncpu} cores while measuring: "
      "other work shared the machine, the figures are noisy (see the per-round spread).")
    p()
EOF
cat "$MD"
