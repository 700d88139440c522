"""Markdown tables from run.sh's raw figures (results.tsv).

Usage: report.py RESULTS RUNS CONC_CONNS CONC_MSGS SERVERS WORKLOAD...
  SERVERS   space-separated server names, in table order
  WORKLOAD  "name|label|metric" (metric: the wsload field compared)

Each line of RESULTS is: workload, server, round, then wsload's key=value
line with run.sh's additions (server_cpu_s, memory figures).
"""
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from bench_figures import by_what_and_server, cell, num, stat, status, values  # noqa: E402

HANDLERS = {"wsfilter-systemd": "wsfilter", "wsfilter-socat": "wsfilter",
            "wsfilter-acceptor": "wsfilter",
            "ceiling-systemd": "lineecho", "ceiling-socat": "lineecho",
            "websocketd": "lineecho"}
# systemd-socket-activate --accept, socat fork, and wsfilter given the
# listening socket (Accept=no), forking per connection itself
LAUNCHERS = ("systemd", "socat", "acceptor")
# a program per connection (issue 14): wsfilter -- lineecho, its peer
# websocketd running the same lineecho, and the goals asked for
BURSTS = ("burst", "rushbig")
GOAL_PEER, GOAL_BUILTIN = 5.0, 0.8
PEERS = ["python-websockets", "websocketd", "node-ws"]
# the relay floor: socat relaying lines between the socket and lineecho's
# pipes, no WebSocket; compared on the one-at-a-time round trips
FLOOR = "relay-systemd"
ROUND_TRIPS = ("rtt",)


class Table:
    def __init__(self, runs):
        self.runs = runs

    def ok(self, w, s):
        return [r for r in self.runs.get((w, s), []) if r.get("status") == "ok"]

    def stat(self, w, s, field):
        return stat(values(self.runs.get((w, s), []), lambda r: float(r[field])))

    def median(self, w, s, field):
        m = self.stat(w, s, field)
        return m[0] if m else None

    def cell(self, w, s, field):
        return cell(self.stat(w, s, field))

    def status(self, w, s, brief=False):
        # run.sh retries a stalled burst only: a stall is a deadlock of the server
        return status(self.runs.get((w, s), []), "deadlocked", brief)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def program_section(t, servers, workloads):
    """wsfilter -- PROGRAM against websocketd and the built-in filter."""
    p = print
    rows = []
    for name, label, metric in workloads:
        for launcher in LAUNCHERS:
            kind = "bin" if name == "mibbin" else "exec"
            prog = f"wsfilter-{kind}-{launcher}"
            peer = "websocketd-bin" if kind == "bin" else "websocketd"
            if (name, prog) not in t.runs:
                continue
            rows.append((name, label, metric, launcher, prog, peer))
    if not rows:
        return
    p()
    p("## A program per connection")
    p()
    p("`wsfilter -- lineecho` (`wsfilter --binary -- lineecho --echo` for binary messages) under")
    p("the launcher named, against websocketd running the same lineecho (`websocketd --binary`")
    p("for binary) and against the built-in filter (`wsfilter`, no program) under the same")
    p("launcher. Under acceptor, wsfilter is given the listening socket")
    p("(`systemd-socket-activate` without `--accept`) and forks per connection itself: one")
    p("listening process forking the program, as websocketd is.")
    p(f"Goals: at least {GOAL_PEER:g}x websocketd wherever websocketd finishes, and")
    p(f"at least {GOAL_BUILTIN:g}x the built-in filter on the pipelined bursts.")
    p()
    p("| Workload | under | wsfilter -- PROGRAM | built-in | websocketd | / built-in | / websocketd | goal |")
    p("|---|---|---:|---:|---:|---:|---:|---|")
    for name, label, metric, launcher, prog, peer in rows:
        a = t.median(name, prog, metric)
        builtin = f"wsfilter-{launcher}" if name != "mibbin" else None
        b = t.median(name, builtin, metric) if builtin else None
        d = t.median(name, peer, metric)
        peer_status = t.status(name, peer, brief=True)
        if d is None:
            dcell = peer_status
        else:
            dcell = num(d)
            if not peer_status.startswith("ok"):
                dcell += f" ({peer_status} in some rounds)"
        goals = []
        if a is None:
            goals.append(f"wsfilter: {t.status(name, prog, brief=True)}")
        else:
            if d is not None:
                goals.append(f"{'met' if a / d >= GOAL_PEER else 'missed'} {GOAL_PEER:g}x websocketd")
            else:
                goals.append("websocketd did not finish")
            if name in BURSTS and b is not None:
                goals.append(f"{'met' if a / b >= GOAL_BUILTIN else 'missed'} {GOAL_BUILTIN:g}x built-in")
        p(f"| {label} | {launcher} | {num(a)} | {num(b) if builtin else 'n/a'} | {dcell} | "
          f"{ratio(a, b) if builtin else 'n/a'} | {ratio(a, d)} | {'; '.join(goals)} |")
    floor_section(t, rows)


def floor_section(t, rows):
    """The one-at-a-time round trips against the relay floor."""
    p = print
    rows = [r for r in rows if r[0] in ROUND_TRIPS]
    if not rows or not any((name, FLOOR) in t.runs for name, *_ in rows):
        return
    p()
    p(f"Round trips against a relay floor: {FLOOR} is `systemd-socket-activate --accept --inetd")
    p("socat -,nodelay EXEC:lineecho,pipes`, sent plain lines over TCP (wsload --raw). Each round")
    p("trip makes the same hops as through `wsfilter -- lineecho` or websocketd (socket -> relay")
    p("-> pipe -> lineecho -> pipe -> relay -> socket), with no WebSocket framing. A program")
    p("server makes these hops for every message and frames it too, so floor / websocketd is")
    p("about the most any program server can have over websocketd on round trips here. The")
    p("floor is socat's cost for the hops, not the kernel's alone: a relay doing less work per")
    p("hop than socat can come out somewhat above it (/ floor over 1).")
    p()
    p("| Workload | relay floor | websocketd | websocketd / floor | under | wsfilter -- PROGRAM | / floor |")
    p("|---|---:|---:|---:|---|---:|---:|")
    bounds = []
    for name, label, metric, launcher, prog, peer in rows:
        f = t.median(name, FLOOR, metric)
        d = t.median(name, peer, metric)
        a = t.median(name, prog, metric)
        fcell = num(f) if f is not None else t.status(name, FLOOR, brief=True)
        dcell = num(d) if d is not None else t.status(name, peer, brief=True)
        acell = num(a) if a is not None else t.status(name, prog, brief=True)
        p(f"| {label} | {fcell} | {dcell} | {ratio(d, f)} | {launcher} | {acell} | {ratio(a, f)} |")
        if f is not None and d is not None and (label, f, d) not in bounds:
            bounds.append((label, f, d))
    for label, f, d in bounds:
        p()
        p(f"{label}: floor / websocketd = {f / d:.2f}; the {GOAL_PEER:g}x websocketd goal needs "
          f"{GOAL_PEER * d:,.0f} msg/s, {GOAL_PEER * d / f:.2f}x the floor.")


def main():
    results, runs_n, conc_c, conc_n, servers = sys.argv[1:6]
    servers = servers.split()
    workloads = [w.split("|") for w in sys.argv[6:]]
    t = Table(by_what_and_server(results))
    conc_c = int(conc_c)
    p = print

    p("## Results")
    p()
    p(f"Medians over {runs_n} interleaved round(s), (min–max) when more than one. Rates are")
    p("higher-is-better; MB = 10^6 bytes of message payload one way. Round trip p50/p99 in µs")
    p("(for pipelined bursts it is mostly queueing). CPU seconds: wsload's own during the")
    p("transfer; the server side's over the whole connection (launcher and its reaped children,")
    p("10 ms resolution).")
    p()
    p("| Workload | Server | Rate | p50 µs | p99 µs | wsload CPU s | server CPU s | Status |")
    p("|---|---|---:|---:|---:|---:|---:|---|")
    for name, label, metric in workloads:
        for s in servers:
            if (name, s) not in t.runs:	# not a workload this server runs
                continue
            p(f"| {label} | {s} | {t.cell(name, s, metric)} | {t.cell(name, s, 'p50_us')} | "
              f"{t.cell(name, s, 'p99_us')} | {t.cell(name, s, 'cpu_s')} | "
              f"{t.cell(name, s, 'server_cpu_s')} | {t.status(name, s)} |")
    p()
    p("## Ratios")
    p()
    p("wsfilter's median rate divided by the other's (> 1: wsfilter is faster). The ceiling is")
    p("lineecho, a bare line filter, under the same launcher as wsfilter (none under acceptor:")
    p("lineecho does not accept connections).")
    p()
    p("| Workload | wsfilter under | / ceiling | " + " | ".join(f"/ {x}" for x in PEERS) + " |")
    p("|---|---|---:|" + "---:|" * len(PEERS))
    for name, label, metric in workloads:
        for launcher in LAUNCHERS:
            if (name, f"wsfilter-{launcher}") not in t.runs:
                continue
            a = t.median(name, f"wsfilter-{launcher}", metric)
            cells = [ratio(a, t.median(name, f"ceiling-{launcher}", metric))
                     if launcher != "acceptor" else "n/a"]
            cells += [ratio(a, t.median(name, x, metric)) for x in PEERS]
            p(f"| {label} | {launcher} | " + " | ".join(cells) + " |")

    program_section(t, servers, workloads)

    if any(w[0] == "conc" for w in workloads):
        p()
        p(f"## Memory with {conc_c} connections open")
        p()
        p("Read from /proc/PID/smaps_rollup of the listening process and every process below it,")
        p(f"after each connection's {conc_n} messages and before the closes. Per connection =")
        p(f"(with the connections open - idle) / {conc_c}. Handler peak = largest VmHWM of one")
        p("per-connection process (wsfilter or lineecho; under acceptor the listening wsfilter is")
        p("counted with them). RSS counts shared pages (libc, the binary) once per process; PSS")
        p("splits them between the processes sharing them.")
        p()
        p("| Server | processes | PSS total MiB | PSS per connection KiB | RSS per connection KiB | handler peak RSS KiB |")
        p("|---|---:|---:|---:|---:|---:|")
        for s in servers:
            if ("conc", s) not in t.runs:	# not run with 100 connections
                continue
            rs = [r for r in t.ok("conc", s) if "pss_kib" in r]
            if not rs:
                p(f"| {s} | - | - | - | - | - |")
                continue
            med = lambda f: statistics.median(float(r[f]) for r in rs)
            pss_per = statistics.median(
                (float(r["pss_kib"]) - float(r["idle_pss_kib"])) / conc_c for r in rs)
            rss_per = statistics.median(
                (float(r["rss_kib"]) - float(r["idle_rss_kib"])) / conc_c for r in rs)
            peak = num(med("handler_peak_kib")) if s in HANDLERS else "-"
            p(f"| {s} | {med('procs'):.0f} | {med('pss_kib') / 1024:.1f} | {pss_per:.0f} | "
              f"{rss_per:.0f} | {peak} |")


if __name__ == "__main__":
    main()
