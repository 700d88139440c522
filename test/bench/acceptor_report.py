"""The acceptor-mode section of the benchmark report, from acceptor.sh's figures.

Usage: acceptor_report.py TSV RUNS CONC_RUNS N_SEQ N_MSG HOLD NOFILE
                          LOAD_START LOAD_END SECONDS ACCEPTOR

Each line of TSV: "seq" or "conc", the server, the round, then wsload's
key=value line with acceptor.sh's additions (server_cpu_s; for conc the
idle_* and peak_* memory figures of treemem.py, d_* nstat deltas, backlog,
nofile, held_s).  Medians over the rounds that finished, (min–max) when
more than one.  Nothing here passes or fails: goals are set beside figures.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from bench_figures import cell, num as fnum, read_figures, stat, status, values  # noqa: E402

NAMES = {
    "acc-dyn": "wsfilter Accept=no",
    "acc-nospare": "wsfilter Accept=no, --spares 0",
    "acc-static": "wsfilter Accept=no, static",
    "fork-ceiling": "fork ceiling: lineecho --fork (lines)",
    "inetd-dyn": "wsfilter Accept=yes",
    "inetd-static": "wsfilter Accept=yes, static",
    "exec-ceiling": "exec ceiling: static lineecho, Accept=yes (lines)",
    "exec-dyn-ceiling": "exec ceiling, dynamic: lineecho, Accept=yes (lines)",
    "acc-prog": "wsfilter Accept=no -- lineecho",
    "prog-ceiling": "program ceiling: lineecho --fork --run lineecho (lines)",
    "node-ws": "Node ws",
    "python-websockets": "Python websockets",
    "websocketd": "websocketd (lineecho)",
}
ORDER = list(NAMES)
# what each server's sequential rate is held against, and the goal: first
# the goal set for it, then the ceiling of its own kind (the same linking,
# the same processes per connection) where that is another
AGAINST = {
    "acc-dyn": [("fork-ceiling", 0.9)],
    "acc-nospare": [("fork-ceiling", 0.9)],
    "acc-static": [("fork-ceiling", 0.9)],
    "inetd-dyn": [("exec-ceiling", 0.9), ("exec-dyn-ceiling", 0.9)],
    "inetd-static": [("exec-ceiling", 0.9)],
    "acc-prog": [("websocketd", 1.0), ("prog-ceiling", 0.9)],
    "prog-ceiling": [("websocketd", None)],
}
MB = 1e6 / 1024		# KiB in a MB (10^6 bytes)
GOAL_RATE = 2.0		# Accept=no's connection rate / Node's
GOAL_PSS_MB = 300	# whole-server peak PSS at 10,000 connections


def parse(path):
    """{"seq" or "conc": [(server, fields), ...]}"""
    rows = {}
    for kind, s, _, kv in read_figures(path):
        rows.setdefault(kind, []).append((s, kv))
    return rows


def fint(x):
    return f"{x:,.0f}" if x == int(x) else fnum(x)


def held(kv, c):
    """The connections held open: C less those that failed (before the hold)."""
    return c - int(kv.get("failed", 0) or 0)


def main():
    (tsv, runs_n, conc_runs, n_seq, n_msg, hold, nofile, load0, load1, secs,
     acceptor) = sys.argv[1:12]
    rows = parse(tsv)
    p = print
    seq = {}
    for s, kv in rows.get("seq", []):
        seq.setdefault(s, []).append(kv)
    conc = {}
    for s, kv in rows.get("conc", []):
        conc.setdefault((int(kv.get("conns", 0) or 0), s), []).append(kv)

    p("## Acceptor mode")
    p()
    p("`wsfilter` given a listening socket on fd 3 (systemd `Accept=no`, here")
    p("`systemd-socket-activate -l 127.0.0.1:PORT wsfilter --max-connections 20000`, without")
    p("`--accept`) accepts and forks per connection itself (**Accept=no**); against the")
    p("launcher forking and executing wsfilter per connection (**Accept=yes**:")
    p("`systemd-socket-activate -l 127.0.0.1:PORT --accept --inetd wsfilter`), each also with")
    p("a statically linked wsfilter (`cc -static`), and Node ws, Python websockets and")
    p("websocketd running `lineecho`. wsfilter runs with its defaults otherwise (sandbox on,")
    p("pings every 20 s, one log line per connection to a file).")
    if acceptor != "1":
        p()
        p("**This wsfilter has no acceptor mode** (`--max-connections` is not an option):")
        p("the Accept=no rows are left out.")
    p()
    p(f"- Open-files limit in force (`ulimit -n`, raised to the hard limit): {nofile}")
    p(f"- Load average at the start: {load0}; at the end: {load1} (2 cores); {secs} s in all")
    p()

    # ---- 1. sequential connections
    if seq:
        node = stat(values(seq.get("node-ws", []), lambda kv: float(kv["conn_s"])))
        p(f"### {n_seq} sequential connections")
        p()
        p(f"Each connection: handshake, one 17-byte message and its reply, close 1000 (`wsload")
        p(f"--connections {n_seq}`), one after the other; for the ceilings the same in plain")
        p("lines (`wsload --raw`: a greeting line, one line and its reply, close). Medians over")
        p(f"{runs_n} interleaved round(s), (min–max) when more than one. *Against*: the median")
        p("rate divided by that of the server it is held against: the fork ceiling for Accept=no,")
        p("the exec ceiling for Accept=yes (and the dynamically linked one, as wsfilter is),")
        p("websocketd (running the same lineecho) and the program ceiling (a minimal relay that")
        p("forks, then forks and executes lineecho, as `wsfilter -- lineecho` does) for")
        p("`wsfilter -- lineecho`. Server CPU: the server's process and its reaped children, per")
        p("connection (10 ms resolution over the run). Faults: minor page faults per connection,")
        p("of the connections' processes (the server's reaped children: for Accept=yes the")
        p("exec'd program, for websocketd lineecho) and of the server's own process.")
        p()
        p("| Server | conn/s | against | / Node ws | p50 µs | p99 µs | server CPU ms per connection "
          "| faults: children | faults: server | Status |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")

        def rate_of(s):
            return stat(values(seq.get(s, []), lambda kv: float(kv["conn_s"])))
        for s in ORDER:
            rs = seq.get(s)
            if not rs:
                continue
            rate = rate_of(s)
            ratio = f"{rate[0] / node[0]:.2f}" if rate and node else "-"
            against = ", ".join(f"{rate[0] / rate_of(o)[0]:.2f}x {o}"
                                for o, _ in AGAINST.get(s, []) if rate and rate_of(o)) or "-"
            cpu = stat(values(rs, lambda kv: float(kv["server_cpu_s"]) * 1000 / float(kv["conns"])))
            kids = stat(values(rs, lambda kv: float(kv["child_faults"]) / float(kv["conns"])))
            root = stat(values(rs, lambda kv: float(kv["root_faults"]) / float(kv["conns"])))
            p(f"| {NAMES[s]} | {cell(rate)} | {against} | {ratio} | "
              f"{cell(stat(values(rs, lambda kv: float(kv['p50_us']))))} | "
              f"{cell(stat(values(rs, lambda kv: float(kv['p99_us']))))} | {cell(cpu)} | "
              f"{cell(kids)} | {cell(root)} | {status(rs)} |")
        p()
        acc = rate_of("acc-dyn")
        if acc and node:
            r = acc[0] / node[0]
            p(f"- Goal, Accept=no at least {GOAL_RATE:g}x Node ws: {r:.2f}x, "
              f"**{'met' if r >= GOAL_RATE else 'missed'}**.")
        for s in ORDER:
            for other, goal in AGAINST.get(s, []):
                if goal is None or not rate_of(s) or not rate_of(other):
                    continue
                r = rate_of(s)[0] / rate_of(other)[0]
                p(f"- Goal, {NAMES[s]} at least {goal:g}x {NAMES[other]}: {r:.2f}x, "
                  f"**{'met' if r >= goal else 'missed'}**.")
        p()

    # ---- 2. connections at once
    sizes = sorted({c for c, _ in conc})
    if sizes:
        p(f"### Connections at once, {n_msg} round trips each, then held {hold} s")
        p()
        p(f"`wsload -c C -n {n_msg} -s 17 -w 1`: C connections opened at once, the messages")
        p(f"once every one is open, each connection one at a time, every reply checked; then all")
        p(f"held open {hold} s (wsload still reading) and closed with 1000. A fresh server for")
        p(f"each run; medians over {conc_runs} interleaved round(s) that completed, (min–max) when")
        p("more than one. *wsfilter log*: the connection lines the run added to wsfilter's log,")
        p("and of them those that ended with no request within the handshake timeout (10 s).")
        p("*Until the last round trip*: from the first connect to the last reply")
        p("(wsload's open_s + elapsed_s). *Peak PSS*: the largest sum of Pss over the server's")
        p("process tree (/proc/PID/smaps_rollup), sampled every ~0.5 s while held (one pass over")
        p("10,000 processes takes seconds). *Per connection*: (peak - idle) / the connections")
        p("held (C less the failed ones). *Overflows*:")
        p("the delta of `nstat` TcpExtListenOverflows over the run (SYNs or ACKs dropped at a")
        p("full accept queue; those connections retry). *Backlog*: the listening socket's, from")
        p("`ss -ltn`.")
        p()
        p("| C | Server | completed | replies lost | connections failed | wsfilter log: lines, no request | "
          "until the last round trip s | peak PSS MiB | PSS per connection KiB | processes | overflows | "
          "backlog | Status |")
        p("|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for c in sizes:
            for s in ORDER:
                rs = conc.get((c, s))
                if not rs:
                    continue
                done = [kv for kv in rs if kv.get("status") == "ok"]
                allrs = [kv for kv in rs if "lost" in kv]
                comp = f"{len(done)}/{len(rs)} runs"
                lost = cell(stat(values(allrs, lambda kv: float(kv["lost"]), False)), fint)
                failed = cell(stat(values(allrs, lambda kv: float(kv["failed"]), False)), fint)
                until = cell(stat(values(rs, lambda kv: float(kv["open_s"]) + float(kv["elapsed_s"]))))
                have_peak = [kv for kv in rs if "peak_pss" in kv]
                peak = cell(stat(values(have_peak, lambda kv: float(kv["peak_pss"]) / 1024, False)))
                per = cell(stat(values(have_peak, lambda kv: (float(kv["peak_pss"]) - float(kv["idle_pss"])) / held(kv, c), False)))
                procs = cell(stat(values(have_peak, lambda kv: float(kv["peak_procs"]), False)), fint)
                ovf = cell(stat(values(rs, lambda kv: float(kv["d_TcpExtListenOverflows"]), False)), fint)
                bl = "/".join(sorted({kv.get("backlog", "?") for kv in rs}))
                with_log = [kv for kv in rs if "log_lines" in kv]
                logc = "-"
                if with_log:
                    logc = (cell(stat(values(with_log, lambda kv: float(kv["log_lines"]), False)), fint) + ", " +
                            cell(stat(values(with_log, lambda kv: float(kv["log_noreq"]), False)), fint))
                p(f"| {c:,} | {NAMES[s]} | {comp} | {lost} | {failed} | {logc} | {until} | {peak} | {per} | "
                  f"{procs} | {ovf} | {bl} | {status(rs)} |")
        p()
        # goals at the largest size
        c = max(sizes)
        acc, node = conc.get((c, "acc-dyn"), []), conc.get((c, "node-ws"), [])
        if acc:
            ok = [kv for kv in acc if kv.get("status") == "ok"]
            lost = max([int(kv.get("lost", 0)) for kv in acc] + [0])
            peak = stat(values(acc, lambda kv: float(kv["peak_pss"]) / MB, False))
            t_acc = stat(values(acc, lambda kv: float(kv["open_s"]) + float(kv["elapsed_s"])))
            t_node = stat(values(node, lambda kv: float(kv["open_s"]) + float(kv["elapsed_s"])))
            p(f"Goals at {c:,} connections, for wsfilter Accept=no (dynamic):")
            p()
            p(f"- all {c:,} complete in every round: {len(ok)}/{len(acc)} rounds, "
              f"**{'met' if len(ok) == len(acc) else 'missed'}**")
            p(f"- 0 replies lost: at most {lost} lost in a round, **{'met' if lost == 0 else 'missed'}**")
            if peak:
                p(f"- whole-server peak PSS at most {GOAL_PSS_MB} MB: median {peak[0]:.0f} MB "
                  f"({peak[0] * MB / 1024:.0f} MiB), **{'met' if peak[2] <= GOAL_PSS_MB else 'missed'}**"
                  + ("" if peak[3] == 1 else f" (largest round {peak[2]:.0f} MB)"))
            npk = stat(values(node, lambda kv: float(kv["peak_pss"]) / MB, False))
            if npk:
                p(f"  (Node ws: {npk[0]:.0f} MB)")
            if t_acc and t_node:
                p(f"- until the last round trip below Node ws's: {t_acc[0]:.1f} s against "
                  f"{t_node[0]:.1f} s, **{'met' if t_acc[0] < t_node[0] else 'missed'}**")
            p()

        # ---- 3. where the memory goes
        p("### Where the memory goes")
        p()
        p("Per connection, KiB, medians over the rounds: the server tree's PSS split into")
        p("anonymous and file-backed pages (the binary, libc), its page tables (VmPTE from")
        p("/proc/PID/status summed over the tree; kernel memory no PSS counts), and four")
        p("system-wide figures, the held sample minus the idle one, divided by C: kernel stacks")
        p("and page tables (/proc/meminfo KernelStack, PageTables), unreclaimable slab")
        p("(SUnreclaim: sockets, task structures, ...) and TCP socket buffers (/proc/net/sockstat")
        p("TCP mem), and VmallocUsed with, from /proc/vmallocinfo, its kernel stacks (vmalloc'd:")
        p("the same memory as KernelStack, not more) and BPF programs (seccomp filters). The")
        p("system-wide ones include the client's sockets (wsload, one process) and whatever else")
        p("ran on the machine meanwhile. Divided by the connections held.")
        p()
        p("| C | Server | PSS | of it anon | of it file | VmPTE | KernelStack Δ | PageTables Δ | SUnreclaim Δ | VmallocUsed Δ | of it stacks | of it BPF | TCP mem Δ | TCP mem held, MiB |")
        p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in sizes:
            for s in ORDER:
                rs = [kv for kv in conc.get((c, s), []) if "peak_pss" in kv]
                if not rs:
                    continue

                def per(key):
                    return cell(stat(values(rs, lambda kv: (float(kv["peak_" + key]) - float(kv["idle_" + key])) / held(kv, c), False)))
                tcp_held = cell(stat(values(rs, lambda kv: float(kv["peak_tcp_mem"]) / 1024, False)))
                p(f"| {c:,} | {NAMES[s]} | {per('pss')} | {per('pss_anon')} | {per('pss_file')} | "
                  f"{per('pte')} | {per('kstack')} | {per('pagetables')} | {per('sunreclaim')} | "
                  f"{per('vmalloc')} | {per('vm_stack') if 'peak_vm_stack' in rs[0] else '-'} | "
                  f"{per('vm_bpf') if 'peak_vm_bpf' in rs[0] else '-'} | {per('tcp_mem')} | {tcp_held} |")
        p()
        kinds = ("exe", "bss", "heap", "stack", "libc", "ld", "anon", "other")
        maprows = []
        for c in sizes:
            for s in ORDER:
                rs = [kv for kv in conc.get((c, s), []) if "map_pte" in kv]
                if rs:
                    maprows.append((c, s, rs))
        if maprows:
            p("One connection's process (the first one below the server's, while held), its Pss")
            p("by mapping, KiB, medians over the rounds: the binary's file pages (exe), the")
            p("unnamed mapping after them (bss: static buffers and variables), heap, stack, libc's")
            p("and the dynamic loader's mappings, other unnamed mappings (mmap), and its VmPTE.")
            p()
            p("| C | Server | " + " | ".join(kinds) + " | Pss | VmPTE |")
            p("|---:|---|" + "---:|" * (len(kinds) + 2))
            for c, s, rs in maprows:
                cells = [cell(stat(values(rs, lambda kv, k=k: float(kv["map_" + k]), False)), fint)
                         for k in kinds]
                tot = cell(stat(values(rs, lambda kv: sum(float(kv["map_" + k]) for k in kinds), False)), fint)
                pte = cell(stat(values(rs, lambda kv: float(kv["map_pte"]), False)), fint)
                p(f"| {c:,} | {NAMES[s]} | " + " | ".join(cells) + f" | {tot} | {pte} |")
            p()

        # ---- static against dynamic
        lines = []
        for c in sizes:
            for mode, dyn, sta in (("Accept=no", "acc-dyn", "acc-static"),
                                   ("Accept=yes", "inetd-dyn", "inetd-static")):
                a = [kv for kv in conc.get((c, dyn), []) if "peak_pss" in kv]
                b = [kv for kv in conc.get((c, sta), []) if "peak_pss" in kv]
                if not a or not b:
                    continue
                fa = stat(values(a, lambda kv: (float(kv["peak_pss"]) - float(kv["idle_pss"])) / held(kv, c), False))
                fb = stat(values(b, lambda kv: (float(kv["peak_pss"]) - float(kv["idle_pss"])) / held(kv, c), False))
                ta = stat(values(a, lambda kv: (float(kv["peak_pte"]) - float(kv["idle_pte"])) / held(kv, c), False))
                tb = stat(values(b, lambda kv: (float(kv["peak_pte"]) - float(kv["idle_pte"])) / held(kv, c), False))
                if not (fa and fb and ta and tb) or fa[0] == 0:
                    continue
                lines.append(f"- {c:,} connections, {mode}: PSS per connection {fa[0]:.1f} KiB dynamic, "
                             f"{fb[0]:.1f} KiB static ({fb[0] / fa[0]:.2f}x); page tables "
                             f"{ta[0]:.1f} against {tb[0]:.1f} KiB")
        for mode, dyn, sta in (("Accept=no", "acc-dyn", "acc-static"),
                               ("Accept=yes", "inetd-dyn", "inetd-static")):
            a = stat(values(seq.get(dyn, []), lambda kv: float(kv["conn_s"])))
            b = stat(values(seq.get(sta, []), lambda kv: float(kv["conn_s"])))
            if a and b:
                lines.append(f"- sequential connections, {mode}: {a[0]:,.0f} conn/s dynamic, "
                             f"{b[0]:,.0f} static ({b[0] / a[0]:.2f}x)")
        if lines:
            p("### Static against dynamic")
            p()
            for line in lines:
                p(line)
            p()


if __name__ == "__main__":
    main()
