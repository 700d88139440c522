#!/usr/bin/python3
"""lifecycle: randomized cases of `wsfilter -- PROGRAM`, each a program behaviour x a
client behaviour x an event, launched on one accepted TCP socket or in acceptor mode
(LISTEN_FDS), with invariants checked on every case.

    lifecycle.py [--seed N] [--cases N] [--minutes M] [--jobs J]
    lifecycle.py --case 'mode=launched bin=0 lines=400 size=1000 ...'

The program is lcprog.py (see there). The client reads fast, slowly (about 60 KB/s),
pauses, stops reading, half-closes, sends its close, or resets, at a chosen time
after the 101; a reading client that has had nothing for QUIET seconds sends its close,
as a finished client does. The event is none, SIGTERM to wsfilter (or to the
acceptor's parent), the acceptor's stop timeout, SIGKILL to the connection process, or
SIGKILL to the acceptor's parent (its connections end as on SIGTERM).

Invariants, each case:
  data      every message is a whole line (or, --binary, the bytes) the program wrote,
            in order; the last may be cut only when the program was killed mid-line.
            A client that reads on and neither closes nor resets gets everything the
            program wrote before its stdout ended.
  ending    the exit status, the close code the client saw and the log line's reason
            agree, and the ending is one this case can have; a death by a signal fails.
  group     nothing of the program's process group runs 2 s after the connection
            process is gone.
  cpu       the connection process's CPU stays near zero while it waits.
  bounded   the connection process ends within BOUND seconds.
  log       one summary line per connection, the program's stderr line (once the
            program has written it), nothing else.
  acceptor  the parent keeps no descriptor and no zombie, and exits 0 on SIGTERM;
            killed, it leaves its connection to end as on SIGTERM, bounded. Its
            --spares (0, 1 or 2: processes forked ahead) are there at the start, one
            of them takes the connection, and they are there again at the end.
  spares    nothing of a spare (a spare, its program's waiting child) outlives the
            parent by 2 s, however the parent ended.

Prints the seed first; any failure prints its case, which --case replays. The last
line is "N passed, M failed".
"""

import argparse
import concurrent.futures
import os
import random
import re
import shutil
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lcprog  # noqa: E402
import wstest as W  # noqa: E402

PY = "/usr/bin/python3"
QUIET = 1.5          # a reading client with nothing for this long sends its close
BOUND = 30.0         # seconds a connection may take in all
CLK_TCK = os.sysconf("SC_CLK_TCK")

ENDS = ["exit0", "exit3", "killed", "cat", "ignore", "closeout", "bghold", "bgfree", "bgexit", "flood"]
CLIENTS = ["fast", "slow", "pause", "close", "halfclose", "rst", "stop"]
SHAPES = [(0, 10), (5, 20), (50, 200), (400, 1000), (2000, 100), (30, 70000)]


# ---------------------------------------------------------------- cases

def draw(rng):
    """One random case, as a dict of short values (see spec())."""
    c = {}
    c["mode"] = rng.choice(["launched"] * 3 + ["acceptor"] * 2)
    c["bin"] = int(rng.random() < 0.25)
    c["lines"], c["size"] = rng.choice(SHAPES)
    c["rate"] = 0 if rng.random() < 0.7 else 50
    if c["rate"]:
        c["lines"] = min(c["lines"], 30)
    c["end"] = rng.choice(ENDS)
    c["msgs"] = rng.choice([0, 3])
    c["client"] = rng.choice(["fast"] * 3 + ["slow", "pause", "pause", "close", "close", "halfclose",
                                               "rst", "stop"])
    c["at"] = rng.choice([0.0, 0.3, 1.0])
    c["pause"] = rng.choice([1.5, 3.0])
    events = ["none"] * 5 + ["sigterm"] * 4
    if c["mode"] == "acceptor":
        events += ["accstop", "killconn", "killparent"]
    c["event"] = rng.choice(events)
    c["et"] = rng.choice([0.1, 0.5, 1.0, 2.0])
    if c["event"] == "accstop" and rng.random() < 0.5:
        c["end"] = "ignore"
    if c["client"] == "slow" and c["lines"] * c["size"] > 400000:
        c["lines"] = 400000 // c["size"]  # 7 s at 60 KB/s
    if c["end"] == "flood":
        c["size"] = max(c["size"], 1000)  # fewer, larger messages for the client to check
    c["req"] = rng.choice(["plain"] * 8 + ["long"] * 2 + ["hostile"] * 2 + ["starved"])
    if c["req"] == "starved":
        c["mode"] = "launched"  # the open-files limit of a launched wsfilter
    elif rng.random() < 0.05:
        c["event"] = "sigexec"
    c["route"] = rng.choice(["none"] * 4 + ["dir", "check", "dircheck"])
    c["spares"] = rng.choice([0, 1, 1, 2])
    return c


FIELDS = ["mode", "bin", "lines", "size", "rate", "end", "msgs", "client", "at", "pause", "event", "et", "req",
          "route", "spares"]
# the request: plain; a long legal target (a head near 8 KiB, the target three times
# in the variables); hostile headers (Proxy, a name with '_'); starved: wsfilter under an
# open-files limit that leaves no room for the program's pipes (503).  The event sigexec
# stops the child that is to exec the program, then sends SIGTERM while the request
# waits for that exec (503).  The route: the program as PROGRAM (none), or found by
# --dir (dir) as DIR/lc, or admitted by a --check that names the user (check), or both.
# spares: the acceptor's --spares (processes forked ahead of their connection), or
# empty: its default (none, as a program runs).
LONG_PATH = "/lc/" + "p" * 2500
LONG_QUERY = "q=" + "v" * 4000


def spec(c):
    return " ".join("%s=%s" % (k, "" if c[k] is None else c[k]) for k in FIELDS)


def parse_spec(text):
    c = dict(kv.split("=", 1) for kv in text.split())
    c.setdefault("req", "plain")
    c.setdefault("route", "none")
    c.setdefault("spares", "")  # wsfilter's default: none with a program
    c.setdefault("want", "")  # a named test's one ending (signal, prog0, ...), else any it can have
    for k in ("bin", "lines", "size", "msgs"):
        c[k] = int(c[k])
    c["spares"] = int(c["spares"]) if c["spares"] != "" else None
    for k in ("rate", "at", "pause", "et"):
        c[k] = float(c[k])
    missing = [k for k in FIELDS if k not in c]
    if missing:
        raise SystemExit("--case lacks %s" % ", ".join(missing))
    return c


# ---------------------------------------------------------------- processes

def supports(opt):
    out = subprocess.run([W.wsfilter_path(), "--help"], capture_output=True, text=True).stdout
    return opt in out


def wsfilter_args(c, state, grace):
    a = ["--close-timeout", "1", "--send-timeout", "5", "--ping-interval", "0",
         "--stop-timeout", "1" if c["event"] == "accstop" else "6"]
    if grace:
        a += ["--grace", "1"]
    if c["bin"]:
        a.append("--binary")
    if c["mode"] == "acceptor" and c["spares"] is not None:
        a += ["--spares", str(c["spares"])]
    rate = ("%g" % c["rate"])
    prog = [PY, os.path.join(HERE, "lcprog.py"), state, str(c["lines"]), str(c["size"]), rate, c["end"]]
    top = os.path.dirname(state)
    if "check" in c["route"]:
        a += ["--check", script(os.path.join(top, "check"), "echo 'Remote-User: lc'")]
    if "dir" in c["route"]:
        os.mkdir(os.path.join(top, "dir"))
        script(os.path.join(top, "dir", "lc"), "exec " + " ".join(shlex.quote(w) for w in prog))
        return a + ["--dir", os.path.join(top, "dir")]
    return a + ["--"] + prog


def script(path, body):
    """An executable shell script at path; returns path."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n%s\n" % body)
    os.chmod(path, 0o755)
    return path


def proc_stat(pid):
    """(state, pgrp, cpu seconds) of pid, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[2]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def group_alive(pgid):
    """Pids of live (not zombie) processes in process group pgid."""
    alive = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[1] == pgid and st[0] != "Z":
                alive.append(int(d))
    return alive


def track_spares(parent, conn_pid, tree):
    """Adds the parent's spares but conn_pid, and their children (a program's
    waiting child), to tree."""
    for k in children(parent):
        if k != conn_pid and is_spare(k):
            tree.add(k)
            tree.update(descendants(k))


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for k in children(todo.pop()):
            out.append(k)
            todo.append(k)
    return out


def running(pid):
    st = proc_stat(pid)
    return bool(st) and st[0] != "Z"


def is_spare(pid):
    """Whether pid is an acceptor's spare: it holds an end of a Unix SEQPACKET pair,
    which a process serving a connection never does."""
    try:
        inos = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue  # closed meanwhile (a new spare closes the others' pairs)
            if link.startswith("socket:["):
                inos.add(link[8:-1])
        with open("/proc/%d/net/unix" % pid) as f:
            next(f)
            return any(w[4] == "0005" and w[6] in inos for w in (line.split() for line in f))
    except (OSError, StopIteration, IndexError):
        return False


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


class Sampler(threading.Thread):
    """Reads a process's CPU time every 50 ms until it is gone (or a zombie)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.cpu, self.stop = pid, 0.0, False

    def run(self):
        while not self.stop:
            st = proc_stat(self.pid)
            if not st or st[0] == "Z":
                return
            self.cpu = max(self.cpu, st[2])
            time.sleep(0.05)


# ---------------------------------------------------------------- the client

class PacedReader(W.Reader):
    """A Reader whose reads can be slowed (bytes a second) or stopped."""

    def __init__(self, sock):
        super().__init__(sock)
        self.rate = 0
        self.hold_until = 0.0

    def _fill(self, deadline):
        now = time.monotonic()
        if now < self.hold_until:
            time.sleep(max(0.0, min(self.hold_until, deadline) - now))
            if time.monotonic() < self.hold_until:
                return False
        if not self.rate:
            return super()._fill(deadline)
        if self.eof or deadline <= time.monotonic():
            return False
        import select
        r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            return False
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.total += len(data)
        time.sleep(len(data) / self.rate)
        return True


def client_msgs(c):
    return [(b"c%06d " % i) + lcprog.LETTERS[i:i + 30] for i in range(c["msgs"])]


def run_client(c, sock, leftover, t101, obs, events_done):
    """Plays the client's part; fills obs: msgs (opcode, payload), close (code or None),
    sent_close (before the server's), eof, malformed.  leftover: bytes read with the
    101 that belong to the frames."""
    rd = PacedReader(sock)
    rd.buf += leftover
    behaviour = c["client"]
    acted = False
    last_data = time.monotonic()
    deadline = t101 + BOUND
    if behaviour == "slow":
        rd.rate = 60000
    # a client is done after LIMIT: it closes (or, stopped, goes) whatever comes
    limit = 3.0 if c["end"] == "flood" else 10.0
    parts, first = [], None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if not acted and now >= t101 + c["at"]:
            acted = True
            if behaviour == "pause":
                rd.hold_until = now + c["pause"]
            elif behaviour == "close" and obs["close"] is None:
                sock.sendall(W.close_frame(1000))
                obs["sent_close"] = True
            elif behaviour == "halfclose":
                sock.shutdown(socket.SHUT_WR)
            elif behaviour == "rst":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                obs["reset"] = True
                return
            elif behaviour == "stop":
                # reads nothing more; waits for the server to end, then goes
                while time.monotonic() < t101 + limit and not events_done.is_set():
                    time.sleep(0.05)
                obs["stopped"] = True
                return
        f = rd.frame(0.05)
        done = (f is None and time.monotonic() - last_data >= QUIET and time.monotonic() >= rd.hold_until) \
            or time.monotonic() >= t101 + limit
        if (done and obs["close"] is None and not obs["sent_close"] and
                behaviour in ("fast", "slow", "pause") and acted):
            sock.sendall(W.close_frame(1000))
            obs["sent_close"] = True
            obs["quiet_close"] = True
        if f is None:
            if rd.eof:
                obs["eof"] = True
                return
            continue
        last_data = time.monotonic()
        fin, op, payload = f
        if op == W.OP_CLOSE:
            if parts:
                obs["cut"] = True
            obs["close"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            obs["reason"] = payload[2:].decode("utf-8", "replace")
            if not obs["sent_close"]:
                try:
                    sock.sendall(W.close_frame(obs["close"] if obs["close"] != 1005 else 1000))
                except OSError:
                    pass
            rest = rd.rest(5.0)
            if rest:
                obs["malformed"].append("%d bytes after the close frame" % len(rest))
            obs["eof"] = rd.eof
            return
        if op in (W.OP_PING, W.OP_PONG):
            continue
        if first is None:
            if op == W.OP_CONT:
                obs["malformed"].append("continuation without a message")
            first = op
        elif op != W.OP_CONT:
            obs["malformed"].append("new message inside a fragmented one")
        parts.append(payload)
        if fin:
            obs["msgs"].append((first, b"".join(parts)))
            parts, first = [], None
    obs["timeout"] = True


# ---------------------------------------------------------------- one case

def state_number(state, name):
    """A number the program put in its state directory, or None."""
    try:
        with open(os.path.join(state, name)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def lines_written(state):
    """The lines the program says it wrote (None when it cannot know) and the
    bytes of the client's messages it echoed after them."""
    return state_number(state, "count"), state_number(state, "echoed") or 0


def check_data(c, obs, written, must_be_complete, killed):
    """Failures of the data invariant."""
    fails = []
    count, echoed = written
    echo = c["end"] in ("cat", "bgfree")
    msgs = obs["msgs"]
    want_op = W.OP_BINARY if c["bin"] else W.OP_TEXT
    for op, _ in msgs:
        if op != want_op:
            fails.append("data: a message with opcode %d, expected %d" % (op, want_op))
            return fails
    cm = client_msgs(c)
    if c["bin"]:
        got = b"".join(p for _, p in msgs)
        # the stream is the lines in order: as many as could be here (a program
        # killed mid-line leaves part of the next one)
        n = len(got) // c["size"] + 2
        want = b"".join(lcprog.line(i, c["size"])
                        for i in range(n if c["end"] == "flood" else min(n, c["lines"])))
        if echo:
            want = b"".join(lcprog.line(i, c["size"]) for i in range(c["lines"])) + b"".join(cm)
        if not want.startswith(got):
            k = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
            fails.append("data: the bytes differ from what the program wrote at offset %d of %d" % (k, len(got)))
        elif must_be_complete and count is not None:
            need = count * c["size"] + echoed
            if len(got) < need:
                fails.append("data: %d of the %d bytes the program wrote arrived" % (len(got), need))
        return fails
    want = [lcprog.line(i, c["size"])[:-1] for i in range(c["lines"])]
    if echo:
        want += cm
    for i, (_, p) in enumerate(msgs):
        if c["end"] == "flood" and i >= len(want):
            exp = lcprog.line(i, c["size"])[:-1]
        elif i < len(want):
            exp = want[i]
        else:
            fails.append("data: message %d is more than the program wrote: %r" % (i, p[:40]))
            break
        if p != exp:
            last = i == len(msgs) - 1
            if last and killed and exp.startswith(p):
                break  # cut by the program's own death
            fails.append("data: message %d is %d bytes %r..., expected %d bytes %r..." %
                         (i, len(p), p[:24], len(exp), exp[:24]))
            break
    if must_be_complete and count is not None and not fails:
        # the client's messages the program echoed whole (each with its newline)
        whole, total = 0, 0
        for m in cm:
            total += len(m) + 1
            if total > echoed:
                break
            whole += 1
        need = count + whole
        if len(msgs) < need:
            fails.append("data: %d of the %d lines the program wrote arrived" % (len(msgs), need))
    return fails


def refused(c, proc, parent, conn_pid, sock, req, errpath, err, fails):
    """A request that must get 503 and no program: starved of descriptors, or a stop
    signal while it waits for the program's exec (its child stopped)."""
    kid = None
    if c["event"] == "sigexec":
        kid = W.stop_child(conn_pid, time.monotonic() + 5)
        if not kid:
            return fails + ["sigexec: no child to stop"]
    sock.sendall(req)
    if kid:
        time.sleep(0.3)
        os.kill(parent or conn_pid, signal.SIGTERM)
    rd = W.Reader(sock)
    h = rd.http_head(10.0)
    status = h.split("\r\n")[0] if h else None
    if status != "HTTP/1.1 503 Service Unavailable":
        fails.append("refused: answer %r, expected 503" % status)
    t = time.monotonic()
    while running(conn_pid) and time.monotonic() < t + 10:
        time.sleep(0.02)
    rc = None
    try:
        prc = proc.wait(10)
        if parent and prc != 0:
            fails.append("acceptor: the parent exited %d on SIGTERM, expected 0" % prc)
        rc = None if parent else prc
    except subprocess.TimeoutExpired:
        fails.append("bounded: %s still runs 10 s after the answer" % ("the parent" if parent else "wsfilter"))
    expect = (6, "(cannot start the program: Too many open files)") if c["req"] == "starved" \
        else (0, "(server shutting down)")
    if rc is not None and rc != expect[0]:
        fails.append("ending: exit %s, expected %d" % (rc, expect[0]))
    err.close()
    log = open(errpath, "rb").read().decode("utf-8", "replace")
    line = [l for l in log.splitlines() if l.startswith("wsfilter[%d]: " % conn_pid) and SUMMARY.match(l)]
    if len(line) != 1 or ' http 503 "GET ' not in line[0] or not line[0].endswith("%s, exit %d" % (expect[1], expect[0])):
        fails.append("log: expected one line 'http 503 ... %s, exit %d', got %r" % (expect[1], expect[0], line))
    if kid:
        t = time.monotonic()
        while running(kid) and time.monotonic() < t + 2:
            time.sleep(0.02)
        if running(kid):
            fails.append("group: the child that was to exec the program outlives the connection")
            os.kill(kid, signal.SIGKILL)
            os.kill(kid, signal.SIGCONT)
    return fails


def check_env(c, target, state):
    """Failures of the env invariant: the request's variables, complete and its own."""
    import json
    try:
        with open(os.path.join(state, "env")) as f:
            env = json.load(f)
    except (OSError, ValueError):
        return []  # the program never ran
    path, _, query = target.partition("?")
    script_name = ""
    if "dir" in c["route"]:
        script_name, path = "/lc", path[len("/lc"):]
    want = {"REQUEST_URI": target, "QUERY_STRING": query, "PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1", "HTTP_X_CASE": c["req"], "HTTP_PROXY": "http://admin:3128",
            "HTTP_X_FORWARDED_FOR": None, "HTTP_FOO": None, "SCRIPT_NAME": script_name,
            "REMOTE_USER": "lc" if "check" in c["route"] else None}
    return ["env: %s is %r, expected %r" % (k, (env.get(k) or "")[:40] if env.get(k) else env.get(k),
                                             (v or "")[:40] if v else v)
            for k, v in want.items() if env.get(k) != v]


SUMMARY = re.compile(r"^wsfilter\[(\d+)\]: .* (websocket|http \d+|no request) .*, exit (\d+)$")


def run_case(c, grace, keep=False):
    """Runs one case; returns (list of failures, figures dict)."""
    W.lazy()
    tmp = tempfile.mkdtemp(prefix="lifecycle.")
    state = os.path.join(tmp, "state")
    os.mkdir(state)
    errpath = os.path.join(tmp, "log")
    fails, fig = [], {}
    proc = lst = sock = None
    parent = conn_pid = None
    spare_tree = set()
    try:
        args = wsfilter_args(c, state, grace)
        env = dict(os.environ)
        for k in W.PEER_VARS:
            env.pop(k, None)
        # the program must never take these for the request's
        env.update(QUERY_STRING="stale", HTTP_FOO="x", HTTP_PROXY="http://admin:3128")
        err = open(errpath, "wb")
        rcv = 16384 if c["client"] in ("slow", "pause", "stop") else None
        if c["mode"] == "launched":
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            sock = socket.socket()
            if rcv:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcv)
            sock.connect(lst.getsockname())
            theirs, _ = lst.accept()
            lst.close()
            lst = None
            proc = subprocess.Popen([W.wsfilter_path()] + args, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                    stderr=err, env=env, close_fds=True,
                                    preexec_fn=W.preexec_for(nofile=8) if c["req"] == "starved" else None)
            theirs.close()
            conn_pid = proc.pid
        else:
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(8)
            lfd = lst.fileno()

            def pre():
                os.dup2(lfd, 3)

            proc = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"',
                                     W.wsfilter_path()] + args, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=pre,
                                    pass_fds=(3,) if lfd != 3 else ())
            parent = proc.pid
            t = time.monotonic()
            while b"accepting on" not in open(errpath, "rb").read() and time.monotonic() < t + 5:
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
            # its steady state: the spares forked, each with its pair (by
            # default none, as a program runs)
            want = c["spares"] or 0
            while len(children(parent)) < want and time.monotonic() < t + 5:
                time.sleep(0.005)
            spares0 = children(parent)
            if len(spares0) != want:
                fails.append("acceptor: %d spare(s) at the start, not %d" % (len(spares0), want))
                return fails, fig
            # a spare shows before the parent has closed the child's end of
            # its pair: the count once it holds still
            base_fds, t = -2, time.monotonic()
            while fd_count(parent) != base_fds and time.monotonic() < t + 2:
                base_fds = fd_count(parent)
                time.sleep(0.05)
            sock = socket.socket()
            if rcv:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcv)
            sock.connect(lst.getsockname())
            lst.close()
            lst = None
            # the connection's process: a spare that took it, or one forked for it
            t = time.monotonic()
            kids = []
            while not kids and time.monotonic() < t + 5:
                kids = [k for k in spares0 if not is_spare(k)] if spares0 else children(parent)
                time.sleep(0.005)
            if not kids:
                fails.append("acceptor: no connection process appeared (the parent %s, its children %s)" %
                             ("running" if proc.poll() is None else "gone: %s" % proc.returncode,
                              children(parent)))
                fig["log"] = open(errpath, "rb").read().decode("utf-8", "replace")
                return fails, fig
            conn_pid = kids[0]
            track_spares(parent, conn_pid, spare_tree)
        sampler = Sampler(conn_pid)
        sampler.start()

        # the request, with the client's messages right behind it
        if c["req"] == "long":
            target, extra = LONG_PATH + "?" + LONG_QUERY, b"X-Case: long\r\n"
        elif c["req"] == "hostile":
            target = "/lc?x=1"
            extra = b"X-Case: hostile\r\nProxy: http://attacker:8080\r\nX_Forwarded_For: 6.6.6.6\r\n"
        else:
            target, extra = "/lc?x=1", b"X-Case: plain\r\n"
        req, accept = W.handshake(target, extra=extra)
        frames = b"".join(W.build_frame(W.OP_BINARY if c["bin"] else W.OP_TEXT, m) for m in client_msgs(c))
        if c["req"] == "starved" or c["event"] == "sigexec":
            return refused(c, proc, parent, conn_pid, sock, req, errpath, err, fails), fig
        sock.sendall(req + frames)
        head = W.Reader(sock)
        h = head.http_head(10.0)
        if h is None:
            fails.append("handshake: no answer")
            return fails, fig
        status, code, headers, problems = W.parse_head(h.encode("latin-1"), W.request_key(req))
        if code != 101 or problems:
            fails.append("handshake: %r %s" % (status, "; ".join(problems)))
            return fails, fig
        t101 = time.monotonic()
        if c["mode"] == "acceptor":
            track_spares(parent, conn_pid, spare_tree)
        # what the header reader took beyond the head belongs to the frames
        leftover = bytes(head.buf[head.pos:])

        obs = {"msgs": [], "close": None, "reason": "", "sent_close": False, "eof": False, "malformed": [],
               "reset": False, "stopped": False, "timeout": False, "quiet_close": False, "cut": False}
        gone = threading.Event()

        def event():
            time.sleep(max(0.0, t101 + c["et"] - time.monotonic()))
            target = parent if c["mode"] == "acceptor" else conn_pid
            try:
                if c["event"] in ("sigterm", "accstop"):
                    os.kill(target, signal.SIGTERM)
                elif c["event"] == "killconn":
                    os.kill(conn_pid, signal.SIGKILL)
                elif c["event"] == "killparent":
                    os.kill(parent, signal.SIGKILL)
            except ProcessLookupError:
                pass

        if c["event"] != "none":
            threading.Thread(target=event, daemon=True).start()

        def watch():
            try:
                while time.monotonic() < t101 + BOUND:
                    st = proc_stat(conn_pid)
                    if not st or st[0] == "Z":
                        break
                    time.sleep(0.02)
            finally:
                gone.set()

        threading.Thread(target=watch, daemon=True).start()
        run_client(c, sock, leftover, t101, obs, gone)
        sock.close()  # the client is done: a stopped one goes now
        sock = None
        gone.wait(BOUND + 5)
        t_end = time.monotonic()
        sampler.stop = True
        sampler.join(1)
        fig["wall"] = t_end - t101
        fig["cpu"] = sampler.cpu
        fig["msgs"] = len(obs["msgs"])

        # -- the connection process's end
        rc = None
        if c["mode"] == "launched":
            try:
                rc = proc.wait(timeout=max(1.0, t101 + BOUND - time.monotonic()))
            except subprocess.TimeoutExpired:
                fails.append("bounded: wsfilter still runs %.0f s after the 101" % BOUND)
                proc.kill()
                proc.wait()
            if rc is not None and rc < 0:
                fails.append("ending: wsfilter was killed by signal %d" % -rc)
        elif not gone.is_set():
            fails.append("bounded: the connection process still runs %.0f s after the 101" % BOUND)

        # -- group
        written = lines_written(state)
        try:
            with open(os.path.join(state, "pgid")) as f:
                pgid = int(f.read())
        except (OSError, ValueError):
            pgid = None
        if pgid:
            t = time.monotonic()
            alive = group_alive(pgid)
            while alive and time.monotonic() < t + 2:
                time.sleep(0.05)
                alive = group_alive(pgid)
            if alive:
                fails.append("group: %d process(es) of the program's group outlive the connection: %s" %
                             (len(alive), alive))
                for p in alive:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass

        # -- the acceptor's parent
        if c["mode"] == "acceptor" and c["event"] == "killparent":
            prc = proc.wait(timeout=10)
            if prc != -signal.SIGKILL:
                fails.append("acceptor: the parent ended with %d before or instead of its SIGKILL" % prc)
        elif c["mode"] == "acceptor":
            def busy():
                return [k for k in children(parent) if not is_spare(k)]
            # judged on the last look of the wait: a spare that a stop ends
            # afterwards shows as a child without its pair until it is reaped
            t = time.monotonic()
            left = busy()
            while time.monotonic() < t + 2 and (left or fd_count(parent) > base_fds):
                time.sleep(0.02)
                left = busy()
            if left:
                fails.append("acceptor: the parent keeps children that are not spares %s" % left)
            track_spares(parent, conn_pid, spare_tree)
            # a parent told to stop closes its listener: its count is its own business
            stopping = c["event"] in ("sigterm", "accstop")
            if not stopping and proc.poll() is None and fd_count(parent) != base_fds:
                fails.append("acceptor: the parent holds %d descriptors, %d before" % (fd_count(parent), base_fds))
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                prc = proc.wait(timeout=10)
                if prc != 0:
                    fails.append("acceptor: the parent exited %d on SIGTERM, expected 0" % prc)
            except subprocess.TimeoutExpired:
                fails.append("acceptor: the parent still runs 10 s after SIGTERM")
                proc.kill()
                proc.wait()
        if c["mode"] == "acceptor":
            # nothing of a spare outlives the parent, however it ended
            t = time.monotonic()
            while time.monotonic() < t + 2 and [p for p in spare_tree if running(p)]:
                time.sleep(0.02)
            left = [p for p in spare_tree if running(p)]
            if left:
                fails.append("spares: %d process(es) of the spares outlive the parent: %s" % (len(left), left))
        err.close()
        log = open(errpath, "rb").read().decode("utf-8", "replace")
        fig["log"] = log
        fig["said"] = state_number(state, "said") is not None
        fails += judge(c, obs, rc, log, conn_pid, written, fig)
        fails += check_env(c, target, state)
        return fails, fig
    except W.Fail as e:
        fails.append("client: %s" % e)
        return fails, fig
    finally:
        if sock is not None:
            sock.close()
        if lst is not None:
            lst.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in [conn_pid] + sorted(spare_tree):
            try:
                if p:
                    os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        try:
            with open(os.path.join(state, "pgid")) as f:
                os.killpg(int(f.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def judge(c, obs, rc, log, conn_pid, written, fig):
    fails = ["client: %s" % m for m in obs["malformed"]]
    if obs["cut"] and not (c["event"] == "killconn"):
        fails.append("data: the close came inside a fragmented message: its last message never ended")
    if obs["timeout"]:
        fails.append("bounded: the client was still reading %.0f s after the 101" % BOUND)
    lines = [l for l in log.splitlines() if l]
    mine = [l for l in lines if l.startswith("wsfilter[%d]: " % conn_pid)]
    others = [l for l in lines if not W.LOG_RE.match(l)]
    if others:
        fails.append("log: lines that are not wsfilter's: %r" % others[:3])
    summaries = [l for l in mine if SUMMARY.match(l)]
    killed_conn = c["event"] == "killconn" or ("stop timeout: killing" in log)
    # the program's stderr line: there once the program has written it; a
    # program that wsfilter ended while it was starting may not have
    if not any(l.endswith("program: lcprog start") for l in mine) and not killed_conn:
        if fig.get("said"):
            fails.append("log: the program's stderr line is missing")
        elif not any(" program killed by SIG" in l for l in mine):
            fails.append("log: the program's stderr line is missing, and it was not killed")
    if killed_conn:
        if summaries and c["event"] == "killconn":
            pass  # it may have ended before the kill
        if c["event"] == "killconn" and not summaries and "killed by SIGKILL" not in log:
            fails.append("log: no line for the connection killed by SIGKILL")
    elif len(summaries) != 1:
        fails.append("log: %d summary lines for the connection, expected 1" % len(summaries))
    summary = summaries[0] if summaries else ""
    status = int(SUMMARY.match(summary).group(3)) if summary else None
    if rc is not None and status is not None and rc != status:
        fails.append("ending: exit status %d, but the log line says exit %d" % (rc, status))
    if rc is None:
        rc = status

    # which endings the case can have
    end, ev, cl = c["end"], c["event"], c["client"]
    can = set()
    if end in ("exit0", "bghold", "bgexit"):
        can.add("prog0")
    if end in ("exit3", "killed"):
        can.add("progfail")
    if ev in ("sigterm", "accstop", "killparent"):
        can.add("signal")
    if cl == "close" or obs["sent_close"]:
        can.add("client_close")
    if end in ("cat", "bgfree", "closeout", "ignore", "flood"):
        # they end only after their input does: the ending is that input's end,
        # or the stop sequence's kill (1011 killed) once it came
        can.add("progfail_after")
    if cl in ("halfclose", "rst", "stop"):
        can.add("left")  # a stopped client goes after LIMIT
    if cl in ("stop", "pause", "slow"):
        can.add("stall")
    killed_prog = end in ("killed", "flood", "ignore") or ev in ("sigterm", "accstop", "killconn", "killparent") \
        or obs["sent_close"] or cl in ("halfclose", "rst", "stop")

    reason = summary
    seen = None
    if rc is not None and summary:
        if obs["close"] is not None and "by client" in summary:
            seen, ok = "client_close", rc == 0
        elif obs["close"] == 1000:
            seen, ok = "prog0", rc == 0 and "program exited 0" in reason
        elif obs["close"] == 1011:
            seen, ok = "progfail", rc == 6 and ("(program exited" in reason or "(program killed by" in reason)
        elif obs["close"] == 1001:
            seen, ok = "signal", rc == 0 and "(server shutting down)" in reason
        elif obs["close"] is not None:
            seen, ok = "other", False
        elif rc == 4:
            seen, ok = "left", "(client left" in reason or "(client reset" in reason
        elif rc == 5:
            seen, ok = "stall", "(client took no bytes" in reason
        elif rc == 0 and "(server shutting down)" in reason:
            seen, ok = "signal", True
        elif rc == 0 and "program exited 0" in reason:
            seen, ok = "prog0", True
        elif rc == 6:
            seen, ok = "progfail", True
        elif rc == 0 and "by client" in reason:
            seen, ok = "client_close", True
        else:
            seen, ok = "other", False
        if not ok:
            fails.append("ending: close %s, exit %s and the log line disagree: %s" % (obs["close"], rc, summary))
        elif seen == "progfail" and "progfail" not in can and "progfail_after" in can:
            pass
        elif seen not in can:
            fails.append("ending: %s (close %s, exit %s) is not an ending this case can have" %
                         (seen, obs["close"], rc))
        if c.get("want") and seen != c["want"]:
            fails.append("ending: %s (close %s, exit %s), where this case wants %s" %
                         (seen, obs["close"], rc, c["want"]))
    reading = cl in ("fast", "slow", "pause") and not killed_conn and not obs["timeout"]
    complete = reading and seen in ("prog0", "progfail", "signal") and not (
        obs["quiet_close"] and seen == "client_close")
    fails += check_data(c, obs, written, complete, killed_prog)
    if seen and reading and not obs["sent_close"] and rc is not None:
        m = re.search(r"out (\d+) msg", summary)
        if m and int(m.group(1)) != len(obs["msgs"]):
            fails.append("log: says %s messages out, the client got %d" % (m.group(1), len(obs["msgs"])))
    # the work of moving what wsfilter sent (its log line's count: a client
    # that resets sees less of it), at 15 MB/s and 200,000 messages/s,
    # besides what waiting may cost
    moved, sent = sum(len(p) for _, p in obs["msgs"]), len(obs["msgs"])
    m = re.search(r"out (\d+) msgs? (\d+) B", summary or "")
    if m:
        sent, moved = max(sent, int(m.group(1))), max(moved, int(m.group(2)))
    limit = (0.3 + 0.1 * fig.get("wall", 0) + moved / 15e6 + sent / 2e5) * \
        (4 if W.sanitizer_build() else 1)
    if fig.get("cpu", 0) > limit:
        fails.append("cpu: the connection process used %.2f s of CPU in %.1f s (limit %.2f)" %
                     (fig["cpu"], fig["wall"], limit))
    return fails


# ---------------------------------------------------------------- driver

def worker(args):
    c, grace = args
    t = time.monotonic()
    try:
        fails, fig = run_case(c, grace)
    except Exception as e:  # a bug of the suite is a failure too
        fails, fig = ["suite: %r" % e], {}
    fig["took"] = time.monotonic() - t
    return c, fails, fig


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 0) or None)
    ap.add_argument("--cases", type=int, default=None, help="number of cases (default: as many as fit)")
    ap.add_argument("--minutes", type=float, default=None, help="stop starting cases after this long")
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--case", action="append", help="run this case (a spec as printed)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    grace = supports("--grace")
    seed = a.seed or random.randrange(1, 10 ** 9)
    if a.case:
        cases = [parse_spec(s) for s in a.case]
    else:
        rng = random.Random(seed)
        n = a.cases or (10 ** 6 if a.minutes else 200)
        cases = (draw(rng) for _ in range(n))
        print("lifecycle: SEED=%d%s" % (seed, "" if a.cases else " (for %g minutes)" % (a.minutes or 0)))
    sys.stdout.flush()
    t0 = time.monotonic()
    stop_at = t0 + a.minutes * 60 if a.minutes else None
    passed = failed = 0
    by_fail = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=a.jobs) as pool:
        running = set()
        it = iter(cases)
        done_feeding = False
        while True:
            while not done_feeding and len(running) < a.jobs and (stop_at is None or time.monotonic() < stop_at):
                try:
                    running.add(pool.submit(worker, (next(it), grace)))
                except StopIteration:
                    done_feeding = True
            if not running:
                break
            if stop_at is not None and time.monotonic() >= stop_at:
                done_feeding = True
            done, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                c, fails, fig = fut.result()
                if fails:
                    failed += 1
                    print("FAIL %s  (%.1fs, cpu %.2fs)" % (spec(c), fig.get("took", 0), fig.get("cpu", 0)))
                    for f in fails:
                        print("  %s" % f)
                        by_fail.setdefault(f.split(":")[0], 0)
                        by_fail[f.split(":")[0]] += 1
                    for l in fig.get("log", "").splitlines()[-6:]:
                        print("  | %s" % l)
                else:
                    passed += 1
                    if a.verbose:
                        print("ok   %s  (%.1fs, cpu %.2fs)" % (spec(c), fig.get("took", 0), fig.get("cpu", 0)))
                sys.stdout.flush()
    took = time.monotonic() - t0
    print("lifecycle: %d cases in %.0f s (%.0f a minute), seed %d; failures by invariant: %s" %
          (passed + failed, took, (passed + failed) / took * 60, seed,
           ", ".join("%s %d" % kv for kv in sorted(by_fail.items())) or "none"))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
