#!/bin/bash
# What one connection costs a process-per-connection server: CPU, page
# faults, system calls and the pages its process writes.  For each server,
# given the listening socket by systemd-socket-activate (without --accept
# unless said), on loopback:
#
#   acc          wsfilter (Accept=no: it accepts and forks per connection)
#   acc-static   the same, linked statically (make static)
#   acc-nosb     wsfilter --no-sandbox (not in the default set)
#   acc-before   WSFILTER_BEFORE, acc-other WSFILTER_OTHER: other builds to
#                compare with (not in the default set)
#   fork         lineecho --fork: accept, fork, the line filter, _exit
#                (the fork ceiling)
#   acc-prog     wsfilter -- lineecho (a program per connection)
#   websocketd   websocketd lineecho (listens by itself)
#   inetd        wsfilter under --accept --inetd (fork and exec per connection)
#   inetd-static the same, linked statically
#   inetd-nosb, acc-prog-static, acc-prog-other: wsfilter --no-sandbox
#                under --accept; the static wsfilter and WSFILTER_OTHER
#                -- lineecho (not in the default set)
#   exec         lineecho-static under --accept --inetd (the exec ceiling)
#   exec-dyn     lineecho (linked dynamically, as wsfilter) under --accept
#                --inetd: the exec ceiling of a dynamically linked program
#   prog         lineecho --fork --run lineecho: accept, fork, and the child
#                forks and executes lineecho and relays to it (the program
#                ceiling: the two process creations of `wsfilter -- PROG`)
#   spawn        the same with posix_spawn for the program (not in the
#                default set)
#
#  1. N sequential connections (wsload --connections; --raw for the line
#     servers), R interleaved rounds: conn/s; CPU per connection of the
#     whole tree (the root's utime+stime+cutime+cstime, its reaped children
#     included); minor faults per connection of the children (the root's
#     cminflt) and of the root itself (minflt).  Medians over the rounds.
#  2. The system calls of one connection's process from its fork to its
#     first read of the client (strace -f on the root), and all of them
#     per connection (strace -c -f over 100 connections).
#  3. The pages a connection's process has written, while it holds its
#     connection open (after the handshake and one message): Private_Dirty
#     by mapping from /proc/PID/smaps.
#  4. Where the faults are: perf record -e page-faults -d on the tree over
#     20 connections, each fault by the mapping its address falls in (code
#     faults included: fork copies no page table entries of file mappings,
#     so a child faults in each 64 KiB of code it runs).
#  5. Where the CPU goes: perf record -g on the tree over 300 connections,
#     the samples by process and by what their call chains pass through.
#
#   bash test/bench/conncost.sh                 all of it, N=1000 R=3
#   N=300 R=1 PARTS="1" SERVERS="acc fork" bash test/bench/conncost.sh
# Environment: WSFILTER, WSFILTER_STATIC (default: make static),
# WSFILTER_BEFORE, WSFILTER_OTHER (for acc-before, acc-other), N, R,
# PARTS (of "1 2 3 4 5"), SERVERS.  Prints markdown; raw output in
# bin/conncost/.
. "$(dirname "$0")/../lib/bench.sh"
own_out conncost
LOGS=$OUT
N=${N:-1000}
R=${R:-3}
PARTS=${PARTS:-"1 2 3 4 5"}
SERVERS=${SERVERS:-"acc acc-static fork acc-prog prog websocketd inetd exec exec-dyn"}
need_commands systemd-socket-activate timeout
[ -x "$WSFILTER" ] || { log "conncost: $WSFILTER not built (make)"; exit 1; }
case " $SERVERS " in
*" acc-static "*|*" inetd-static "*|*" acc-prog-static "*)
	if [ -z "${WSFILTER_STATIC:-}" ]; then
		make -s -C "$TOP" static >&2 || exit 1
		WSFILTER_STATIC=$TOP/wsfilter-static
	fi ;;
esac
# measured from copies: a rebuild meanwhile changes nothing
cp "$WSFILTER" "$OUT/wsfilter" && WSFILTER=$OUT/wsfilter || exit 1
if [ -n "${WSFILTER_STATIC:-}" ]; then
	cp "$WSFILTER_STATIC" "$OUT/wsfilter-static" && WSFILTER_STATIC=$OUT/wsfilter-static || exit 1
fi
if [ -n "${WSFILTER_BEFORE:-}" ]; then
	cp "$WSFILTER_BEFORE" "$OUT/wsfilter-before" && WSFILTER_BEFORE=$OUT/wsfilter-before || exit 1
fi
if [ -n "${WSFILTER_OTHER:-}" ]; then
	cp "$WSFILTER_OTHER" "$OUT/wsfilter-other" && WSFILTER_OTHER=$OUT/wsfilter-other || exit 1
fi
HZ=$(getconf CLK_TCK)

server_cmd() { per_conn_cmd "$1" "$2"; }	# NAME PORT: the names are lib/bench.sh's
server_raw() { case $1 in fork|exec|exec-dyn|prog|spawn) echo --raw ;; esac; }

# the server in its own session, one connection served (launch, server_up,
# warm_up, stop_server and stop_all are lib/bench.sh's)
start() {	# NAME
	launch "$1"
	server_up "$1" || return 1
	warm_up "$1" $(server_raw "$1") -s 17 || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# minflt cminflt utime stime cutime cstime of PID
counters() {
	stat_fields "$1" 10 11 14 15 16 17
}

echo "# What one connection costs"
echo
echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)."
echo "wsfilter: $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null)$(git -C "$TOP" diff --quiet HEAD -- wsfilter.c 2>/dev/null || echo ", wsfilter.c changed since")."
echo

# ---- 1. sequential connections
if [[ " $PARTS " == *" 1 "* ]]; then
	for s in $SERVERS; do start "$s"; done
	for r in $(seq 1 "$R"); do
		for s in $(rotate "$r" $SERVERS); do
			[ -n "${PID[$s]:-}" ] || continue
			a=$(counters "${PID[$s]}")
			w=$("$BIN/wsload" $(server_raw "$s") --connections "$N" -s 17 --stall 5 \
				127.0.0.1 "${PORT[$s]}" 2>>"$OUT/wsload.log")
			wait_children_gone "${PID[$s]}"
			sleep 0.2	# websocketd reaps on its own time
			b=$(counters "${PID[$s]}")
			printf '%s\t%s\t%s\t%s\n' "$s" "$a" "$b" "$w" >>"$OUT/seq.tsv"
			log "  $s #$r: $(echo "$w" | grep -o 'conn_s=[0-9]*')"
		done
	done
	for s in $SERVERS; do stop_server "$s"; done
	echo "## $N sequential connections, $R interleaved round(s)"
	echo
	echo "Medians (min-max). CPU: the server's whole tree per connection ($HZ Hz ticks over"
	echo "the round). Faults: minor faults per connection, of the connection's processes"
	echo "(the root's cminflt: for Accept=yes the exec'd process, for websocketd lineecho)"
	echo "and of the root itself."
	echo
	"$PY" - "$OUT/seq.tsv" "$N" "$HZ" <<-'EOF'
		import statistics, sys
		rows, n, hz = {}, int(sys.argv[2]), int(sys.argv[3])
		for line in open(sys.argv[1]):
		    s, a, b, w = line.rstrip("\n").split("\t")
		    a, b = [int(x) for x in a.split()], [int(x) for x in b.split()]
		    kv = dict(x.split("=", 1) for x in w.split() if "=" in x)
		    if kv.get("status") != "ok":
		        rows.setdefault(s, []).append(None)
		        continue
		    d = [y - x for x, y in zip(a, b)]
		    rows.setdefault(s, []).append((float(kv["conn_s"]), sum(d[2:]) * 1000 / hz / n,
		                                   d[1] / n, d[0] / n))
		def cell(v, f):
		    if not v:
		        return "-"
		    m = statistics.median(v)
		    return f.format(m) if len(v) == 1 else f"{f.format(m)} ({f.format(min(v))}-{f.format(max(v))})"
		print("| server | conn/s | CPU ms per connection | child faults | root faults | rounds ok |")
		print("|---|---:|---:|---:|---:|---:|")
		for s, rs in rows.items():
		    ok = [r for r in rs if r]
		    cols = [cell([r[i] for r in ok], f) for i, f in enumerate(("{:.0f}", "{:.2f}", "{:.1f}", "{:.1f}"))]
		    print(f"| {s} | " + " | ".join(cols) + f" | {len(ok)}/{len(rs)} |")
	EOF
	echo
fi

# ---- 2. system calls
traced() {	# NAME CONNECTIONS STRACE-ARG...: strace -f on NAME's root over that many connections
	local s=$1 n=$2 st
	shift 2
	strace -f -qq "$@" -p "${PID[$s]}" 2>>"$OUT/strace.log" &
	st=$!
	sleep 0.5
	"$BIN/wsload" $(server_raw "$s") --connections "$n" -s 17 127.0.0.1 "${PORT[$s]}" >/dev/null
	wait_children_gone "${PID[$s]}"
	sleep 0.3
	kill -INT "$st"
	wait "$st" 2>/dev/null
}
if [[ " $PARTS " == *" 2 "* ]] && command -v strace >/dev/null; then
	echo "## System calls"
	echo
	for s in $SERVERS; do
		case $s in acc|acc-*|fork) ;; *) continue ;; esac
		start "$s" || continue
		traced "$s" 1 -o "$OUT/strace.$s.one"
		traced "$s" 100 -c -o "$OUT/strace.$s.count"
		stop_server "$s"
		"$PY" - "$s" "$OUT/strace.$s.one" "$OUT/strace.$s.count" <<-'EOF'
			import re, sys
			s, one, count = sys.argv[1:4]
			lines = [l.rstrip("\n") for l in open(one)]
			root = int(lines[0].split()[0]) if lines else 0
			# the connection's process: the first pid after the root's
			kids = [int(l.split()[0]) for l in lines if int(l.split()[0]) != root][:1]
			calls = []
			if kids:
			    for l in lines:
			        m = re.match(r"(\d+)\s+(\w+)\(", l)
			        if not m or int(m[1]) != kids[0] or m[2] == "exit_group":
			            continue
			        if m[2] in ("read", "recvfrom"):
			            break
			        calls.append(m[2])
			total = 0
			for l in open(count):
			    f = l.split()
			    if len(f) >= 5 and f[-1] == "total":
			        total = int(f[2]) if len(f) == 5 else int(f[3])
			print(f"- {s}: {len(calls)} before the first read, in its process: {' '.join(calls)}")
			print(f"  ({total / 100:.1f} per connection in all, the root's and the children's, strace -c over 100)")
		EOF
	done
	echo
fi

# ---- 3. the pages a connection's process writes
if [[ " $PARTS " == *" 3 "* ]]; then
	echo "## Pages a connection's process has written, KiB (Private_Dirty while held)"
	echo
	echo "| server | total | by mapping |"
	echo "|---|---:|---|"
	for s in $SERVERS; do
		case $s in acc|acc-*|fork) ;; *) continue ;; esac
		start "$s" || continue
		rm -f "$OUT/ready"
		"$BIN/wsload" $(server_raw "$s") -c 1 -n 1 -s 17 --ready "$OUT/ready" --hold 30 \
			127.0.0.1 "${PORT[$s]}" >/dev/null 2>&1 &
		wl=$!
		for _ in $(seq 1 100); do [ -s "$OUT/ready" ] && break; sleep 0.05; done
		kid=$(busy_children "${PID[$s]}" | head -1)
		if [ -n "$kid" ]; then
			"$PY" - "$s" "/proc/$kid/smaps" <<-'EOF'
				import sys
				s, path = sys.argv[1:3]
				by, name = {}, "?"
				for line in open(path):
				    f = line.split()
				    if "-" in f[0] and len(f) >= 5 and not f[0].endswith(":"):
				        name = (f[5].rsplit("/", 1)[-1] if len(f) > 5 else "anon") + " " + f[1]
				    elif f[0] == "Private_Dirty:" and int(f[1]):
				        by[name] = by.get(name, 0) + int(f[1])
				tot = sum(by.values())
				print(f"| {s} | {tot} | " + ", ".join(f"{k} {v}" for k, v in sorted(by.items(), key=lambda x: -x[1])) + " |")
			EOF
		fi
		kill -USR1 "$(cat "$OUT/ready" 2>/dev/null)" 2>/dev/null
		wait "$wl" 2>/dev/null
		stop_server "$s"
	done
	echo
fi

# ---- 4. where the faults are
if [[ " $PARTS " == *" 4 "* ]] && perf stat -e page-faults true >/dev/null 2>&1; then
	echo "## Page faults by mapping, per connection (perf record -e page-faults, 20 connections)"
	echo
	for s in $SERVERS; do
		case $s in acc|acc-*|fork) ;; *) continue ;; esac
		start "$s" || continue
		cp "/proc/${PID[$s]}/maps" "$OUT/maps.$s"
		perf record -q -e page-faults -c 1 -d -p "${PID[$s]}" --inherit -o "$OUT/perf.$s" \
			-- sleep 3 >/dev/null 2>&1 &
		pr=$!
		sleep 0.5
		"$BIN/wsload" $(server_raw "$s") --connections 20 -s 17 127.0.0.1 "${PORT[$s]}" >/dev/null
		wait "$pr"
		root=${PID[$s]}
		stop_server "$s"
		echo "### $s"
		echo
		perf script -i "$OUT/perf.$s" -F pid,addr,sym >"$OUT/perf.$s.txt" 2>/dev/null
		"$PY" - "$OUT/maps.$s" "$root" "$OUT/perf.$s.txt" 20 <<-'EOF'
				import collections, sys
				regions = []
				for line in open(sys.argv[1]):
				    f = line.split()
				    lo, hi = (int(x, 16) for x in f[0].split("-"))
				    regions.append((lo, hi, (f[5].rsplit("/", 1)[-1] if len(f) > 5 else "anon") + " " + f[1]))
				root = int(sys.argv[2])
				def where(a):
				    return next((n for lo, hi, n in regions if lo <= a < hi), "(after an exec)")
				cnt, kids, per = collections.Counter(), set(), collections.Counter()
				for line in open(sys.argv[3]):
				    f = line.split()
				    if len(f) < 3 or not f[0].isdigit():
				        continue
				    pid, addr, sym = int(f[0]), int(f[1], 16), f[-1]
				    who = "root" if pid == root else "child"
				    if who == "child":
				        kids.add(pid)
				    cnt[(who, where(addr))] += 1
				    per[who] += 1
				n = int(sys.argv[4])
				print(f"{per['child'] / n:.1f} faults per connection in its processes, {per['root'] / n:.1f} in the root's.")
				print()
				print("| process | mapping | faults per connection |")
				print("|---|---|---:|")
				for (who, m), c in sorted(cnt.items(), key=lambda x: (x[0][0], -x[1])):
				    print(f"| {who} | {m} | {c / n:.2f} |")
			EOF
		echo
	done
fi

# ---- 5. where the CPU goes
if [[ " $PARTS " == *" 5 "* ]] && perf stat -e cpu-clock true >/dev/null 2>&1; then
	echo "## Where the CPU goes (perf record -g on the tree, 300 connections)"
	echo
	echo "Samples of the server's tree by process (the server's own, the connections'"
	echo "processes, the programs after their exec) and by what the call chain passes"
	echo "through, in that order of precedence; share of all the tree's samples."
	echo
	for s in $SERVERS; do
		case $s in acc|acc-*|fork) ;; *) continue ;; esac
		start "$s" || continue
		perf record -q -g -F 2000 -p "${PID[$s]}" --inherit -o "$OUT/cpu.$s" -- sleep 600 >/dev/null 2>&1 &
		pr=$!
		sleep 0.5
		"$BIN/wsload" $(server_raw "$s") --connections 300 -s 17 127.0.0.1 "${PORT[$s]}" >/dev/null
		wait_children_gone "${PID[$s]}"
		kill -INT "$pr"; wait "$pr" 2>/dev/null
		root=${PID[$s]}
		stop_server "$s"
		echo "### $s"
		echo
		perf script -i "$OUT/cpu.$s" -F comm,pid,ip,sym >"$OUT/cpu.$s.txt" 2>/dev/null
		"$PY" - "$OUT/cpu.$s.txt" "$root" <<-'EOF'
			import collections, sys
			# (category, any of these in the call chain), first match wins
			cats = [
			    ("fork (copy_process)", ["copy_process", "ret_from_fork"]),
			    ("exit (do_exit, exit_mmap)", ["do_exit", "exit_mmap", "do_group_exit"]),
			    ("execve", ["do_execveat_common", "bprm_execve", "load_elf_binary"]),
			    ("seccomp filter install", ["do_seccomp", "seccomp_set_mode_filter"]),
			    ("page faults", ["exc_page_fault"]),
			    ("reaping (wait4)", ["__do_sys_wait4", "kernel_waitid", "do_wait"]),
			    ("TCP and sockets", ["tcp_", "inet_", "sock_", "__sys_accept4", "__sys_shutdown"]),
			    ("read, write, poll", ["ksys_read", "ksys_write", "do_sys_poll", "__x64_sys_ppoll"]),
			    ("signals", ["arch_do_signal_or_restart", "x64_setup_rt_frame", "rt_sigreturn"]),
			    ("scheduling", ["schedule", "finish_task_switch"]),
			    ("other system calls", ["do_syscall_64"]),
			]
			root = int(sys.argv[2])
			samples = []
			for sample in open(sys.argv[1]).read().split("\n\n"):
			    lines = [l for l in sample.strip().split("\n") if l.strip()]
			    if lines:
			        head = lines[0].split()
			        samples.append((head[0], next((int(x) for x in head if x.isdigit()), -1), lines))
			# a connection's process has the server's name; a program, after its exec, its own
			comm = next((c for c, pid, _ in samples if pid == root), "")
			n, by = 0, collections.Counter()
			for c, pid, lines in samples:
			    who = "server" if pid == root else "connection" if c == comm else "program"
			    chain = " ".join(l.split()[-1] for l in lines[1:])
			    cat = next((c for c, keys in cats if any(k in chain for k in keys)), "user space")
			    by[(who, cat)] += 1
			    n += 1
			print("| process | where | share |")
			print("|---|---|---:|")
			for (who, cat), k in sorted(by.items(), key=lambda x: (x[0][0], -x[1])):
			    if k / n >= 0.005:
			        print(f"| {who} | {cat} | {100 * k / n:.1f}% |")
		EOF
		echo
	done
fi
