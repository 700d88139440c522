"""The bench scripts' raw figures, read and summed up for their reports
(test/bench/report.py, acceptor_report.py, haproxy.sh).

A figures file has one measurement a line, four tab-separated columns: what was
measured (a workload, "seq", "conc", "mem", ...), the server, the round, then
wsload's key=value line with the script's additions (shell-quoted values).
"""
import shlex
import statistics


def read_figures(path):
    """(what, server, round, fields) for each well-formed line of path; fields has
    the round too."""
    out = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            what, server, rnd, rest = parts
            fields = {}
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                fields[k] = v
            fields["round"] = rnd
            out.append((what, server, rnd, fields))
    return out


def by_what_and_server(path):
    """{(what, server): [fields, ...]} in the file's order."""
    runs = {}
    for what, server, _, fields in read_figures(path):
        runs.setdefault((what, server), []).append(fields)
    return runs


def num(x):
    """A figure for a table: thousands separated from 100 up, else 1 or 2 decimals."""
    if x is None:
        return "-"
    if abs(x) < 0.005:
        x = 0.0
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def stat(vals):
    """(median, min, max, count) of vals, None when there is none."""
    return (statistics.median(vals), min(vals), max(vals), len(vals)) if vals else None


def cell(m, fmt=num, none="-"):
    """A stat() as a table cell: the median, (min–max) when there is more than one."""
    if not m:
        return none
    med = fmt(m[0])
    return med if m[3] == 1 else f"{med} ({fmt(m[1])}–{fmt(m[2])})"


def values(runs, f, ok_only=True):
    """f(fields) for each run (only those with status=ok unless ok_only is False)
    where f finds what it needs."""
    out = []
    for fields in runs:
        if ok_only and fields.get("status") != "ok":
            continue
        try:
            out.append(f(fields))
        except (KeyError, ValueError, ZeroDivisionError):
            pass
    return out


WORDS = {"stalled": "stalled", "hung": "hung", "nostart": "did not start", "timeout": "timed out"}


def status(runs, stalled="stalled", brief=False):
    """How the runs went: "not run", "ok N/N", or the first one that did not go well,
    "**WORD** in round R (WHY; L replies missing); ok K/N" (WORD for status=stalled:
    stalled); brief: "**WORD** in round R" alone."""
    if not runs:
        return "not run"
    bad = [f for f in runs if f.get("status") != "ok"]
    if not bad:
        return f"ok {len(runs)}/{len(runs)}"
    b = bad[0]
    word = dict(WORDS, stalled=stalled).get(b.get("status"), "failed")
    head = f"**{word}** in round {b.get('round', '?')}"
    if brief:
        return head
    why = [b["why"]] if b.get("why") else []
    if b.get("lost", "0") != "0":
        why.append(f"{b['lost']} replies missing")
    ok = len(runs) - len(bad)
    return head + (f" ({'; '.join(why)})" if why else "") + (f"; ok {ok}/{len(runs)}" if ok else "")
