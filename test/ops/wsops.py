#!/usr/bin/python3
"""Scripted client for wsfilter's operations tests (python3 standard library only).

Starts wsfilter the way a launcher does -- on an accepted loopback TCP socket --
or connects to a launcher's port, then runs a list of steps and prints a
transcript, one line per event, for bats to assert on.

usage: wsops.py [options] STEP... [-- WSFILTER-ARGS...]

options:
  --connect PORT      talk to 127.0.0.1:PORT (a launcher) instead of starting wsfilter
  --stderr WHERE      wsfilter's fd 2: "pipe" (default; printed as LOG lines at the end)
                      or "socket" (the connection itself, as inetd and xinetd do)
  --env NAME=VALUE    set in wsfilter's environment (python escapes such as \\x1b work);
                      REMOTE_*, TCPREMOTE*, SOCAT_PEER* and LISTEN_* are removed first
  --header "N: V"     extra header line for the "hs" and "req" steps (repeatable)
  --pong              answer the server's pings (default: read and ignore them)
  --syslog PATH       bind a unix datagram socket at PATH before starting wsfilter and
                      print what arrives there as SYSLOG lines at the end
  --small-buffers     64 KiB kernel socket buffers on both ends (for the flood step)
  --timeout S         bound of every reading step (default 5)

steps (a step that runs out of time prints "TIMEOUT <step>" and ends the script):
  hs                  send a WebSocket upgrade request for / (RFC 6455 sample key)
  req:METHOD:PATH     send a plain HTTP/1.1 request (Connection: close)
  send:TEXT           send TEXT as is (python escapes: \\r\\n, \\x00 ...)
  head                read the answer's head: "STATUS <status line>", then
                      "H <lower-case name>: <value>" per header; a line that is not
                      a header prints "BADHEAD <line>"; a 101 also checks the accept
                      value ("ACCEPT ok" or "ACCEPT wrong")
  body                read exactly Content-Length bytes: "BODY <n> <text>"
  text:STR            send a masked text message
  unmasked:STR        send an unmasked text frame (a protocol error)
  close:CODE          send a masked close frame with CODE
  trunc               send a frame header announcing 100 bytes, 10 of them, then EOF
  frame               read the next frame other than a ping: "TEXT <s>", "BINARY <s>",
                      "CLOSE <code> [<reason>]", "PONG <s>"; a fragmented message is joined
                      and printed once; server frames that are masked or carry RSV bits,
                      or broken fragmentation, print "BADFRAME ..." first
  wait:S              read frames for S seconds or until a close frame, printing
                      each frame other than pings
  pings               print "PINGS <n>": pings received so far
  open                print "OPEN" if the connection is still up (no EOF, process alive)
  eof                 read until EOF: "EOF" if nothing came, else "EXTRA <n> <text>" then
                      "EOF"; then shut down the client's sending side, as clients do
  sleep:S             sleep S seconds without reading
  signal:NAME         send signal NAME (TERM, INT, HUP) to wsfilter; starts the clock of
                      exit-within
  exit-within:S       wait until S seconds after the last signal (or now): "EXITED <code>"
                      or "RUNNING after <S> s"
  flood:SIZE          send masked SIZE-byte text messages without reading, until the
                      sends stall for 0.3 s: "FLOODED <n> in <s> s" (s: until the stall)
  drain               read until every flooded message came back (answering pings when
                      --pong), printing any other frame but pings: "DRAINED <got>/<sent>"

At the end (when wsfilter was started): "EXIT <code>" (or "EXIT killed" after 5 s),
then the stderr lines as "LOG <line>", then SYSLOG lines.
"""

import base64
import codecs
import hashlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
PEER_VARS = ("REMOTE_ADDR", "REMOTE_PORT", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPREMOTEHOST",
             "TCPREMOTEINFO", "SOCAT_PEERADDR", "SOCAT_PEERPORT", "LISTEN_PID", "LISTEN_FDS",
             "LISTEN_FDNAMES")
NAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}


class Timeout(Exception):
    pass


def unescape(s):
    return codecs.decode(s.encode("latin-1", "backslashreplace"), "unicode_escape")


def show(b):
    return b.decode("utf-8", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def frame(opcode, payload, masked=True):
    head = bytes([0x80 | opcode])
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Client:
    def __init__(self, sock, timeout, pong):
        self.s = sock
        self.buf = b""
        self.timeout = timeout
        self.pong = pong
        self.pings = 0
        self.eof = False
        self.rest = b""
        self.rest_thread = None
        self.deferred = []
        self.hdrs = {}

    def fill(self, deadline):
        """Read more bytes into buf; False on EOF; Timeout past deadline."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        r, _, _ = select.select([self.s], [], [], left)
        if not r:
            raise Timeout()
        try:
            d = self.s.recv(1 << 16)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def need(self, n, deadline):
        while len(self.buf) < n:
            if not self.fill(deadline):
                return False
        return True

    def take(self, n):
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def send(self, data):
        if self.rest_thread and self.rest_thread.is_alive():
            # a frame is still going out from the drain thread: hold this one
            self.deferred.append(data)
            return
        self.rest_thread = None
        data = b"".join(self.deferred) + data
        self.deferred = []
        self.s.setblocking(True)
        self.s.sendall(data)

    def read_head(self, deadline):
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(deadline):
                out("EOF in head after %d bytes: %s" % (len(self.buf), show(self.buf)))
                return None
        i = self.buf.index(b"\r\n\r\n")
        head = self.take(i + 4)[:-4].decode("latin-1")
        lines = head.split("\r\n")
        out("STATUS " + lines[0])
        hdrs = {}
        for ln in lines[1:]:
            name, sep, value = ln.partition(":")
            if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
                out("BADHEAD " + show(ln.encode("latin-1")))
                continue
            hdrs[name.lower()] = value.strip()
            out("H %s: %s" % (name.lower(), value.strip()))
        if lines[0].split(" ")[1:2] == ["101"]:
            out("ACCEPT " + ("ok" if hdrs.get("sec-websocket-accept") == ACCEPT else "wrong"))
        return hdrs

    def read_frame(self, deadline):
        """One server frame as (opcode, payload, problems) or None on EOF."""
        if not self.need(2, deadline):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            hl = 4
        elif n == 127:
            hl = 10
        if b1 & 0x80:
            hl += 4
        if not self.need(hl, deadline):
            return None
        if n == 126:
            n = struct.unpack("!H", self.buf[2:4])[0]
        elif n == 127:
            n = struct.unpack("!Q", self.buf[2:10])[0]
        if not self.need(hl + n, deadline):
            return None
        raw = self.take(hl + n)
        payload = raw[hl:]
        problems = []
        if b1 & 0x80:
            problems.append("masked")
        if b0 & 0x70:
            problems.append("rsv")
        return b0 & 0x0F, payload, problems, bool(b0 & 0x80)

    def next_frame(self, deadline):
        """Next frame that is not a ping (pings counted, answered with --pong);
        the frames of a fragmented data message come back joined as one."""
        msg = None
        while True:
            f = self.read_frame(deadline)
            if f is None:
                return None
            op, payload, problems, fin = f
            if op == 9:
                self.pings += 1
                if self.pong:
                    self.send(frame(10, payload))
                continue
            if op >= 8:
                return op, payload, problems
            if msg is None:
                if op == 0:
                    problems = problems + ["continuation without a start"]
                msg = [op, payload, problems]
            else:
                if op != 0:
                    msg[2] = msg[2] + ["new message inside a fragmented one"]
                msg[1] += payload
                msg[2] = msg[2] + problems
            if fin:
                return tuple(msg)


def describe(f):
    op, payload, problems = f
    if problems:
        out("BADFRAME %s %s" % (NAMES.get(op, op), ",".join(problems)))
    if op == 8:
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            reason = payload[2:]
            out("CLOSE %d%s" % (code, " " + show(reason) if reason else ""))
        else:
            out("CLOSE")
    else:
        out("%s %s" % (NAMES.get(op, "OPCODE%d" % op), show(payload)))


def main(argv):
    opts = {"connect": None, "stderr": "pipe", "env": [], "headers": [], "pong": False,
            "syslog": None, "small": False, "timeout": 5.0}
    steps, wsargs = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            wsargs = argv[i + 1:]
            break
        if a in ("--connect", "--stderr", "--env", "--header", "--syslog", "--timeout"):
            v = argv[i + 1]
            i += 2
            if a == "--env":
                opts["env"].append(v)
            elif a == "--header":
                opts["headers"].append(v)
            elif a == "--timeout":
                opts["timeout"] = float(v)
            else:
                opts[a[2:]] = v
            continue
        if a == "--pong":
            opts["pong"] = True
        elif a == "--small-buffers":
            opts["small"] = True
        elif a.startswith("--"):
            sys.exit("wsops.py: unknown option " + a)
        else:
            steps.append(a)
        i += 1

    syslog_sock = None
    if opts["syslog"]:
        try:
            os.unlink(opts["syslog"])
        except FileNotFoundError:
            pass
        syslog_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        syslog_sock.bind(opts["syslog"])

    proc = None
    if opts["connect"]:
        cs = socket.create_connection(("127.0.0.1", int(opts["connect"])), 5)
    else:
        ls = socket.socket()
        if opts["small"]:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        cs = socket.socket()
        if opts["small"]:
            cs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            cs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        cs.connect(ls.getsockname())
        conn, _ = ls.accept()
        ls.close()
        out("CLIENT 127.0.0.1:%d" % cs.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if k not in PEER_VARS}
        for e in opts["env"]:
            k, _, v = e.partition("=")
            env[k] = unescape(v)
        binary = os.environ.get("WSFILTER") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "wsfilter")
        err = conn.fileno() if opts["stderr"] == "socket" else subprocess.PIPE
        proc = subprocess.Popen([binary] + wsargs, stdin=conn.fileno(), stdout=conn.fileno(),
                                stderr=err, env=env)
        conn.close()
    cs.settimeout(None)
    c = Client(cs, opts["timeout"], opts["pong"])
    mark = time.monotonic()
    flooded = 0

    # a last resort: whatever happens, no run outlives this bound
    signal.signal(signal.SIGALRM, lambda *_: (out("ALARM: wsops.py ran out of time"),
                                              proc and proc.kill(), os._exit(3)))
    signal.alarm(60)
    st = ""
    try:
        for st in steps:
            name, _, arg = st.partition(":")
            deadline = time.monotonic() + c.timeout
            if name == "hs":
                req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n" % KEY)
                for h in opts["headers"]:
                    req += h + "\r\n"
                c.send((req + "\r\n").encode())
            elif name == "req":
                method, _, path = arg.partition(":")
                req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
                for h in opts["headers"]:
                    req += h + "\r\n"
                c.send((req + "\r\n").encode())
            elif name == "send":
                c.send(unescape(arg).encode("latin-1"))
            elif name == "head":
                c.hdrs = c.read_head(deadline)
                if c.hdrs is None:
                    break
            elif name == "body":
                n = int(c.hdrs.get("content-length", "-1"))
                if n < 0:
                    out("BODY no Content-Length")
                    break
                if not c.need(n, deadline):
                    out("EOF in body after %d of %d bytes" % (len(c.buf), n))
                    break
                out("BODY %d %s" % (n, show(c.take(n))))
            elif name == "text":
                c.send(frame(1, arg.encode()))
            elif name == "unmasked":
                c.send(frame(1, arg.encode(), masked=False))
            elif name == "close":
                c.send(frame(8, struct.pack("!H", int(arg))))
            elif name == "trunc":
                key = os.urandom(4)
                c.send(bytes([0x82, 0x80 | 100]) + key + b"0123456789")
                cs.shutdown(socket.SHUT_WR)
            elif name == "frame":
                f = c.next_frame(deadline)
                if f is None:
                    out("EOF instead of a frame" + (" (%d stray bytes)" % len(c.buf) if c.buf else ""))
                    break
                describe(f)
            elif name == "wait":
                end = time.monotonic() + float(arg)
                try:
                    while True:
                        f = c.next_frame(end)
                        if f is None:
                            out("EOF")
                            break
                        describe(f)
                        if f[0] == 8:
                            break
                except Timeout:
                    pass
            elif name == "pings":
                out("PINGS %d" % c.pings)
            elif name == "open":
                r, _, _ = select.select([cs], [], [], 0)
                closed = bool(r) and cs.recv(1, socket.MSG_PEEK) == b""
                alive = proc is None or proc.poll() is None
                out("OPEN" if alive and not closed and not c.eof else
                    "NOT OPEN (eof=%s alive=%s)" % (closed or c.eof, alive))
            elif name == "eof":
                extra = b""
                extra, c.buf = c.buf, b""
                while c.fill(deadline):
                    extra += c.buf
                    c.buf = b""
                if extra:
                    out("EXTRA %d %s" % (len(extra), show(extra)))
                out("EOF")
                # a client closes its side once the server has closed its own
                try:
                    cs.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            elif name == "sleep":
                time.sleep(float(arg))
            elif name == "signal":
                os.kill(proc.pid, getattr(signal, "SIG" + arg))
                mark = time.monotonic()
            elif name == "exit-within":
                try:
                    code = proc.wait(max(0.0, mark + float(arg) - time.monotonic()))
                    out("EXITED %d" % code)
                except subprocess.TimeoutExpired:
                    out("RUNNING after %s s" % arg)
            elif name == "flood":
                msg = frame(1, b"f" * int(arg))
                cs.setblocking(False)
                t0 = time.monotonic()
                pending = b""
                stalled = None
                limit = time.monotonic() + 20
                while time.monotonic() < limit:
                    if not pending:
                        pending = msg
                    try:
                        n = cs.send(pending)
                    except BlockingIOError:
                        n = 0
                    if n:
                        pending = pending[n:]
                        if not pending:
                            flooded += 1
                        stalled = None
                        continue
                    if stalled is None:
                        stalled = time.monotonic()
                    elif time.monotonic() - stalled > 0.3:
                        break
                    select.select([], [cs], [], 0.05)
                cs.setblocking(True)
                if pending and pending != msg:
                    # the frame in flight is finished by drain, while it reads
                    c.rest = pending
                    flooded += 1
                out("FLOODED %d in %.1f s" % (flooded, stalled - t0 if stalled else time.monotonic() - t0))
            elif name == "drain":
                got = 0
                if c.rest:
                    c.rest_thread = threading.Thread(target=cs.sendall, args=(c.rest,), daemon=True)
                    c.rest_thread.start()
                    c.rest = b""
                while got < flooded:
                    f = c.next_frame(time.monotonic() + c.timeout)
                    if f is None:
                        out("EOF")
                        break
                    if f[0] == 1 and f[1].startswith(b"f"):
                        got += 1
                    else:
                        describe(f)
                        if f[0] == 8:
                            break
                out("DRAINED %d/%d" % (got, flooded))
            else:
                sys.exit("wsops.py: unknown step " + st)
    except Timeout:
        out("TIMEOUT " + st)
    except (BrokenPipeError, ConnectionResetError) as e:
        out("SEND FAILED %s: %s" % (st, e.__class__.__name__))

    cs.close()
    if proc:
        try:
            code = proc.wait(5)
            out("EXIT %d" % code)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            out("EXIT killed")
        if proc.stderr:
            for ln in proc.stderr.read().decode("utf-8", "backslashreplace").splitlines():
                out("LOG " + ln)
    if syslog_sock:
        syslog_sock.setblocking(False)
        try:
            while True:
                out("SYSLOG " + show(syslog_sock.recv(65536)))
        except BlockingIOError:
            pass
        syslog_sock.close()
        os.unlink(opts["syslog"])


if __name__ == "__main__":
    main(sys.argv[1:])
