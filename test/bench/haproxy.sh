#!/bin/bash
# wsfilter through HAProxy (the shipped haproxy/wsfilter.cfg) on this one
# machine: to 1 host and to 3 hosts (each a systemd-socket-activate --accept
# listener on 127.0.0.1), against wsfilter reached directly, and HAProxy's own
# memory per 1,000 open connections, plain and TLS. The point is the
# proxy's overhead: every "host" shares the same cores as HAProxy and the
# client, so three hosts do not add capacity here.
#
# Called by run.sh (after its own workloads; ONLY=haproxy runs just this).
# Environment from run.sh: WSFILTER, BIN (wsload), LOGDIR, QUICK, RUNS.
# Writes raw figures to $LOGDIR/haproxy.tsv and the markdown section to
# $LOGDIR/haproxy.md.
set -u

: "${WSFILTER:?}" "${BIN:?}" "${LOGDIR:?}"
. "$(dirname "$0")/../lib/bench.sh"
SHIPPED=$TOP/haproxy/wsfilter.cfg
RUNS=${RUNS:-1}
if [ -n "${QUICK:-}" ]; then
	N_BURST=20000 N_CONN=100 C_CONC=50 N_CONC=100 C_MEM=200 RUN_TIMEOUT=30
else
	N_BURST=100000 N_CONN=300 C_CONC=100 N_CONC=1000 C_MEM=1000 RUN_TIMEOUT=90
fi
TSV=$LOGDIR/haproxy.tsv
MD=$LOGDIR/haproxy.md
D=$LOGDIR/haproxy
rm -rf "$D"
mkdir -p "$D"
: >"$TSV"

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

start() {	# LOG CMD...: in its own process group
	local logf=$1
	shift
	setsid "$@" </dev/null >>"$logf" 2>&1 &
	LAST=$!
	PIDS+=("$LAST")
}

# ---- the hosts: three listeners, as wsfilter.socket would be on three machines
HOSTPORT=()
for i in 1 2 3; do
	HOSTPORT[$i]=$(pick_port)
	start "$D/host$i.log" systemd-socket-activate -l "127.0.0.1:${HOSTPORT[$i]}" --accept --inetd \
		"$WSFILTER" --trust-proxy
	wait_port "${HOSTPORT[$i]}" 127.0.0.1 10 || { log "bench: host $i did not start"; exit 1; }
done

# ---- a certificate for the TLS figure
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$D/key.pem" -out "$D/cert.pem" -days 1 -subj /CN=127.0.0.1 \
	-addext "subjectAltName=IP:127.0.0.1" 2>/dev/null || exit 1
cat "$D/cert.pem" "$D/key.pem" >"$D/haproxy.pem"

# ---- two HAProxy instances from the shipped file: NAME HOSTS
# Replaced: the bind lines (a plain one for wsload, which has no TLS, and a
# TLS one), the runtime API socket, the log target (a file), the stats port,
# the server lines, and the hosts' maxconn (250 in the file, so that the
# memory figure can hold 1,000 connections on three hosts).
declare -A HPLAIN HTLS HPID
haproxy_start() {
	local name=$1 hosts=$2 plain tls stats cfg=$D/$1.cfg i srv=()
	plain=$(pick_port) tls=$(pick_port) stats=$(pick_port)
	for i in 1 2 3; do
		if [ "$i" -le "$hosts" ]; then
			srv+=(-e "s|server host$i 10\.0\.0\.1$i:8765|server host$i 127.0.0.1:${HOSTPORT[$i]}|")
		else
			srv+=(-e "/server host$i /d")
		fi
	done
	sed -e "s|^\([[:space:]]*\)bind :443 ssl crt [^ ]*|\1bind 127.0.0.1:$plain\n\1bind 127.0.0.1:$tls ssl crt $D/haproxy.pem|" \
		-e "s|stats socket /run/haproxy/admin.sock|stats socket $D/$name.sock|" \
		-e "s|^\([[:space:]]*log\) /dev/log |\1 stderr format short |" \
		-e "s|bind 127.0.0.1:8404|bind 127.0.0.1:$stats|" \
		-e "s|maxconn 250|maxconn 2000|" \
		"${srv[@]}" "$SHIPPED" >"$cfg" || return 1
	haproxy -c -q -f "$cfg" || { log "bench: $cfg is not valid"; return 1; }
	start "$D/$name.log" haproxy -db -f "$cfg"
	HPID[$name]=$LAST HPLAIN[$name]=$plain HTLS[$name]=$tls
	wait_port "$plain" 127.0.0.1 10 || { log "bench: $name did not start"; return 1; }
	for _ in $(seq 1 100); do	# every host UP
		[ "$(echo 'show stat' | socat -t 2 stdio "UNIX-CONNECT:$D/$name.sock" 2>/dev/null |
			awk -F, '$1 == "wsfilter" && $2 ~ /^host/ && $18 == "UP"' | wc -l)" = "$hosts" ] && return 0
		sleep 0.1
	done
	log "bench: $name: hosts not up"
	return 1
}
haproxy_start haproxy-1 1 || exit 1
haproxy_start haproxy-3 3 || exit 1

port_of() {
	case $1 in
	direct) echo "${HOSTPORT[1]}" ;;
	*) echo "${HPLAIN[$1]}" ;;
	esac
}

# ---- rates: interleaved rounds
TARGETS="direct haproxy-1 haproxy-3"
wl_args() {
	case $1 in
	burst) echo "-n $N_BURST -s 17" ;;
	conn) echo "--connections $N_CONN -s 17" ;;
	conc) echo "-c $C_CONC -n $N_CONC -s 17 -w 1" ;;
	esac
}
for r in $(seq 1 "$RUNS"); do
	for w in burst conn conc; do
		for t in $(rotate "$r" $TARGETS); do
			out=$(timeout -k 2 "$RUN_TIMEOUT" "$BIN/wsload" $(wl_args "$w") --stall 3 \
				--timeout $((RUN_TIMEOUT - 5)) 127.0.0.1 "$(port_of "$t")" 2>>"$D/wsload.log")
			[ -n "$out" ] || out="status=failed"
			printf '%s\t%s\t%s\t%s\n' "$w" "$t" "$r" "$out" >>"$TSV"
			log "  haproxy bench $w $t #$r: $out"
		done
	done
done

# ---- HAProxy's memory with C_MEM connections open: a fresh HAProxy to the 3
# hosts for each kind, so that neither figure finds pools grown by the runs
# before it
pss() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
settle() {	# until no wsfilter runs under any host (10 s)
	local p busy
	for _ in $(seq 1 100); do
		busy=
		for p in "${PIDS[@]:0:3}"; do [ -n "$(pgrep -P "$p")" ] && busy=1; done
		[ -z "$busy" ] && return
		sleep 0.1
	done
}
mem_run() {	# KIND (plain|tls)
	local kind=$1 name=haproxy-mem-$1 ready=$D/ready.$1 before after hpid cpid rc
	haproxy_start "$name" 3 || return
	hpid=${HPID[$name]}
	sleep 1	# idle, once the first checks are done
	rm -f "$ready"
	before=$(pss "$hpid")
	if [ "$kind" = plain ]; then
		timeout -k 2 120 "$BIN/wsload" -c "$C_MEM" -n 1 -s 17 -w 1 --stall 10 --timeout 100 \
			--ready "$ready" --hold 100 127.0.0.1 "${HPLAIN[$name]}" >"$D/mem-$kind.out" 2>>"$D/wsload.log" &
	else
		(cd "$TOP" && NODE_EXTRA_CA_CERTS=$D/cert.pem exec timeout -k 2 120 node "$HERE/hold_wss.mjs" \
			"wss://127.0.0.1:${HTLS[$name]}/" "$C_MEM" "$ready") >"$D/mem-$kind.out" 2>&1 &
	fi
	cpid=$!
	for _ in $(seq 1 1000); do
		[ -s "$ready" ] && break
		kill -0 "$cpid" 2>/dev/null || break
		sleep 0.1
	done
	if [ -s "$ready" ]; then
		sleep 0.5
		after=$(pss "$hpid")
		kill -USR1 "$(cat "$ready")" 2>/dev/null
	fi
	wait "$cpid"
	rc=$?
	if [ -z "${after:-}" ] || [ "$rc" != 0 ]; then
		log "bench: memory ($kind) failed: $(tail -n 2 "$D/mem-$kind.out")"
		printf 'mem\t%s\t1\tstatus=failed\n' "$kind" >>"$TSV"
		return
	fi
	printf 'mem\t%s\t1\tstatus=ok conns=%s pss_before_kib=%s pss_open_kib=%s\n' \
		"$kind" "$C_MEM" "$before" "$after" >>"$TSV"
	log "  haproxy bench memory $kind: PSS $before KiB idle, $after KiB with $C_MEM open"
	kill -TERM "$hpid"
	settle
}
mem_run plain
mem_run tls
cleanup

# ---- the section
"$PY" - "$TOP/test/lib" "$TSV" "$RUNS" "$N_BURST" "$N_CONN" "$C_CONC" "$N_CONC" "$C_MEM" >"$MD" <<'EOF'
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
from bench_figures import by_what_and_server, cell as fig_cell, stat, values
tsv, runs, n_burst, n_conn, c_conc, n_conc, c_mem = sys.argv[2:]
rows = by_what_and_server(tsv)

def med(w, t, k):
    return stat(values(rows.get((w, t), []), lambda f: float(f[k])))

def cell(m):
    return fig_cell(m, lambda x: f"{x:,.0f}", "failed")

print("## Through HAProxy")
print()
print(f"wsload (plain ws://) to wsfilter directly and through HAProxy running the shipped")
print(f"haproxy/wsfilter.cfg, to 1 host and to 3 hosts, all on this machine; medians over {runs}")
print("interleaved round(s), (min–max) when more than one; ratio = through HAProxy / direct.")
print()
print("| Workload | direct | HAProxy, 1 host | ratio | HAProxy, 3 hosts | ratio |")
print("|---|---:|---:|---:|---:|---:|")
for w, label, k in (("burst", f"{n_burst} x 17 B pipelined, 1 connection (msg/s)", "msgs_s"),
                    ("conn", f"{n_conn} sequential connections (conn/s)", "conn_s"),
                    ("conc", f"{c_conc} connections x {n_conc} msgs, one at a time each (msg/s)", "msgs_s")):
    d, h1, h3 = (med(w, t, k) for t in ("direct", "haproxy-1", "haproxy-3"))
    r = lambda a: f"{a[0] / d[0]:.2f}" if a and d else "-"
    print(f"| {label} | {cell(d)} | {cell(h1)} | {r(h1)} | {cell(h3)} | {r(h3)} |")
print()
for kind, what in (("plain", "ws:// (wsload)"), ("tls", "wss:// (Node ws clients)")):
    rs = [f for f in rows.get(("mem", kind), []) if f.get("status") == "ok"]
    if not rs:
        print(f"- HAProxy PSS with {c_mem} {what} connections open: failed")
        continue
    f = rs[0]
    b, a, n = int(f["pss_before_kib"]), int(f["pss_open_kib"]), int(f["conns"])
    print(f"- HAProxy PSS with {n} {what} connections open through it: {a / 1024:.1f} MiB "
          f"({b / 1024:.1f} MiB idle), **{(a - b) / n * 1000 / 1024:.1f} MiB per 1,000 connections**")
EOF
cat "$MD"
