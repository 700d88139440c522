"""Harness for the hostile-client tests: runs wsfilter on one end of a
socketpair (or an accepted loopback TCP socket), measures it, and speaks
just enough RFC 6455 client framing to misbehave on purpose.

Python standard library only.
"""

import base64
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIME_BIN = "/usr/bin/time"
CLK_TCK = os.sysconf("SC_CLK_TCK")

OP_CONT, OP_TEXT, OP_BINARY = 0, 1, 2
OP_CLOSE, OP_PING, OP_PONG = 8, 9, 10


class Fail(Exception):
    """A check failed; the message says what was expected and what was seen."""


def check(cond, what):
    if not cond:
        raise Fail(what)


def wsfilter_path():
    return os.environ.get("WSFILTER") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "wsfilter")


def sanitizer_build(path):
    """True for an AddressSanitizer build: its memory use is far larger."""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# Bounds, scaled for sanitizer builds (shadow memory, slower code).
ASAN = sanitizer_build(wsfilter_path())
RSS_LIMIT_KB = 96 * 1024 if ASAN else 8 * 1024
RSS_GROWTH_KB = 16 * 1024 if ASAN else 1024
CPU_SCALE = 8.0 if ASAN else 1.0


# ---- framing ---------------------------------------------------------------

def xor_mask(data, key):
    """RFC 6455 5.3 masking, done on big integers so megabytes stay fast."""
    n = len(data)
    if n == 0:
        return b""
    reps = (key * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(reps, "little")).to_bytes(n, "little")


def frame(opcode, payload=b"", fin=True, key=None, length=None, rsv=0):
    """One client frame.  length overrides the length field (a lie about
    the payload that follows); key None draws a random mask key."""
    if key is None:
        key = os.urandom(4)
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + key + xor_mask(payload, key)


def close_frame(code=1000, reason=b""):
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


def handshake_request(path="/", extra=b""):
    key = base64.b64encode(os.urandom(16))
    req = (b"GET " + path.encode() + b" HTTP/1.1\r\n"
           b"Host: 127.0.0.1\r\n"
           b"Upgrade: websocket\r\n"
           b"Connection: Upgrade\r\n"
           b"Sec-WebSocket-Key: " + key + b"\r\n"
           b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return req, accept


class Reader:
    """Reads server frames (unmasked) and HTTP heads from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        self.total = 0

    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data
        self.total += len(data)
        return True

    def avail(self):
        return len(self.buf) - self.pos

    def http_head(self, timeout=5.0):
        """The status line and headers up to the blank line, or None."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\r\n\r\n", self.pos)
            if i >= 0:
                head = bytes(self.buf[self.pos:i])
                self.pos = i + 4
                return head.decode("latin-1")
            if not self._fill(deadline):
                return None

    def rest(self, timeout=2.0):
        """Everything until EOF (or the timeout)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data = bytes(self.buf[self.pos:])
        self.pos = len(self.buf)
        return data

    def frame(self, timeout=5.0):
        """(fin, opcode, payload), or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            b, p = self.buf, self.pos
            avail = len(b) - p
            if avail >= 2:
                n = b[p + 1] & 0x7F
                h = 2
                if n == 126:
                    h = 4
                    if avail >= 4:
                        n = (b[p + 2] << 8) | b[p + 3]
                elif n == 127:
                    h = 10
                    if avail >= 10:
                        n = struct.unpack_from("!Q", b, p + 2)[0]
                if b[p + 1] & 0x80:
                    raise Fail("the server sent a masked frame")
                if avail >= h and avail >= h + n:
                    fin = bool(b[p] & 0x80)
                    op = b[p] & 0x0F
                    payload = bytes(b[p + h:p + h + n])
                    self.pos = p + h + n
                    return fin, op, payload
            if not self._fill(deadline):
                return None

    def exact(self, n, timeout=5.0):
        """The next n raw bytes, or fewer at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while self.avail() < n and self._fill(deadline):
            pass
        k = min(n, self.avail())
        data = bytes(self.buf[self.pos:self.pos + k])
        self.pos += k
        return data

    def message(self, timeout=5.0):
        """A whole data message as (opcode, payload), or a control frame
        as (opcode, payload); None at EOF or timeout."""
        parts = []
        first = None
        while True:
            f = self.frame(timeout)
            if f is None:
                return None
            fin, op, payload = f
            if op >= OP_CLOSE:
                if parts:
                    raise Fail("control frame %d inside a fragmented message" % op)
                return op, payload
            if first is None:
                if op == OP_CONT:
                    raise Fail("continuation frame without a message")
                first = op
            elif op != OP_CONT:
                raise Fail("new data frame opcode %d inside a fragmented message" % op)
            parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def until_close(self, timeout=5.0):
        """Skip data frames up to the close frame; returns (code, reason,
        skipped frames) or None if no close came."""
        skipped = 0
        deadline = time.monotonic() + timeout
        while True:
            f = self.frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None
            if f[1] == OP_CLOSE:
                p = f[2]
                code = struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None
                return code, p[2:], skipped
            skipped += 1


def split_suffix(payload):
    """(message, number) for a default-mode reply "message - N"."""
    m = re.match(rb"(?s)(.*) - ([0-9]+)\Z", payload)
    if not m:
        raise Fail("reply without the ' - N' suffix: %r" % payload[-40:])
    return m.group(1), int(m.group(2))


# ---- the process under test -----------------------------------------------

class Server:
    """wsfilter on one end of a socketpair (or loopback TCP), wrapped in
    /usr/bin/time for its peak RSS and CPU, sampled through /proc."""

    last_log = ""  # stderr of the last one cleaned up, for failure reports

    def __init__(self, args=(), tcp=False, client_sndbuf=None, client_rcvbuf=None):
        self.args = list(args)
        self.tmp = tempfile.mkdtemp(prefix="hostile.")
        self.timefile = os.path.join(self.tmp, "time")
        self.errfile = os.path.join(self.tmp, "stderr")
        if tcp:
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if client_sndbuf:
                cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, client_sndbuf)
            if client_rcvbuf:
                cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
            cli.connect(lst.getsockname())
            srv, _ = lst.accept()
            lst.close()
        else:
            cli, srv = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            if client_sndbuf:
                cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, client_sndbuf)
            if client_rcvbuf:
                cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
        self.sock = cli
        self.reader = Reader(cli)
        argv = [wsfilter_path(), "--log=stderr"] + self.args
        if ASAN:
            argv.insert(1, "--no-sandbox")
        self.timed = os.access(TIME_BIN, os.X_OK)
        if self.timed:
            argv = [TIME_BIN, "-f", "%e %U %S %M", "-o", self.timefile] + argv
        self.err = open(self.errfile, "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=srv, stdout=srv, stderr=self.err,
                                     start_new_session=True, close_fds=True)
        srv.close()
        self.pid = self._find_pid()
        self.hwm_kb = 0
        self.cpu_s = 0.0
        self.end = None
        self.rc = None
        self.measure = {}

    def _find_pid(self):
        if not self.timed:
            return self.proc.pid
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        for _ in range(500):
            try:
                with open(path) as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                return None
            if self.proc.poll() is not None:
                return None
            time.sleep(0.002)
        return None

    def sample(self):
        """Current (VmRSS, VmHWM) in KiB and CPU seconds, while it runs;
        None once it has exited."""
        if self.pid is None:
            return None
        try:
            with open("/proc/%d/status" % self.pid) as f:
                st = f.read()
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        m1 = re.search(r"VmRSS:\s+(\d+)", st)
        m2 = re.search(r"VmHWM:\s+(\d+)", st)
        if not m1 or not m2:
            return None
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss, hwm = int(m1.group(1)), int(m2.group(1))
        self.hwm_kb = max(self.hwm_kb, hwm)
        self.cpu_s = max(self.cpu_s, cpu)
        return rss, hwm, cpu

    def read_chars(self):
        """Bytes wsfilter has read(2) so far, from /proc/PID/io."""
        try:
            with open("/proc/%d/io" % self.pid) as f:
                return int(re.search(r"rchar:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError, TypeError):
            return None

    def wait(self, timeout):
        """Exit status within timeout seconds (Fail otherwise); fills in
        elapsed time, peak RSS and CPU time."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            state = self.sample()
            self.kill()
            raise Fail("wsfilter did not exit within %.1f s (then RSS, HWM KiB, CPU s: %s)"
                       % (timeout, state))
        self.end = time.monotonic()
        self.rc = self.proc.returncode
        if self.timed:
            with open(self.timefile) as f:
                last = f.read().strip().splitlines()[-1].split()
            self.measure = {"elapsed": float(last[0]), "cpu": float(last[1]) + float(last[2]),
                            "maxrss_kb": int(last[3])}
            self.hwm_kb = max(self.hwm_kb, self.measure["maxrss_kb"])
            self.cpu_s = max(self.cpu_s, self.measure["cpu"])
        return self.rc

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.errfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_line(self):
        lines = [l for l in self.log().splitlines() if re.match(r"wsfilter(\[\d+\])?: ", l)]
        return lines[-1] if lines else ""

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def cleanup(self):
        self.kill()
        try:
            self.sock.close()
        except OSError:
            pass
        self.err.close()
        Server.last_log = self.log()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- client side ---------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def upgrade(self, timeout=5.0):
        req, accept = handshake_request()
        self.send(req)
        head = self.reader.http_head(timeout)
        check(head is not None, "no handshake answer")
        check(head.startswith("HTTP/1.1 101 "), "handshake answer %r" % head.split("\r\n")[0])
        check(("Sec-WebSocket-Accept: " + accept.decode()) in head,
              "wrong Sec-WebSocket-Accept in %r" % head)

    def expect_exit(self, code, within, log_re=None):
        rc = self.wait(within)
        check(rc == code, "exit status %s, expected %d; log: %s" % (rc, code, self.log_line()))
        if log_re:
            check(re.search(log_re, self.log_line()),
                  "log line %r does not match /%s/" % (self.log_line(), log_re))
        return rc

    def bounds(self, rss_kb=None, cpu_s=None):
        rss_kb = rss_kb or RSS_LIMIT_KB
        check(self.hwm_kb and self.hwm_kb < rss_kb,
              "peak RSS %d KiB, limit %d KiB" % (self.hwm_kb, rss_kb))
        if cpu_s is not None:
            check(self.cpu_s < cpu_s * CPU_SCALE,
                  "CPU %.2f s, limit %.2f s" % (self.cpu_s, cpu_s * CPU_SCALE))

    def report(self, name, **extra):
        parts = ["measure %s:" % name]
        if self.end is not None:
            parts.append("wall %.2fs" % (self.end - self.t0))
        parts.append("cpu %.2fs" % self.cpu_s)
        parts.append("peak_rss %d KiB" % self.hwm_kb)
        for k, v in extra.items():
            parts.append("%s %s" % (k, v))
        print(" ".join(parts), flush=True)
        out = os.environ.get("HOSTILE_MEASURE")
        if out:
            with open(out, "a") as f:
                f.write(" ".join(parts) + "\n")


class Sampler(threading.Thread):
    """Samples wsfilter's RSS every few ms while it runs."""

    def __init__(self, server, every=0.02):
        super().__init__(daemon=True)
        self.server = server
        self.every = every
        self.samples = []  # (t, rss, hwm)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            s = self.server.sample()
            if s is not None:
                self.samples.append((time.monotonic(), s[0], s[1]))
            self.stopped.wait(self.every)

    def stop(self):
        self.stopped.set()
        self.join(2)

    def rss_range(self, t_from=0.0):
        r = [s[1] for s in self.samples if s[0] >= t_from]
        return (min(r), max(r)) if r else (0, 0)


class Writer(threading.Thread):
    """Sends chunks from a generator in its own thread, so the client
    itself never deadlocks; counts the bytes that got out."""

    def __init__(self, sock, chunks, pause=0.0):
        super().__init__(daemon=True)
        self.sock = sock
        self.chunks = chunks
        self.pause = pause
        self.sent = 0
        self.error = None
        self.done = threading.Event()
        self.halt = threading.Event()

    def run(self):
        try:
            for c in self.chunks:
                if self.halt.is_set():
                    break
                self.sock.sendall(c)
                self.sent += len(c)
                if self.pause:
                    time.sleep(self.pause)
        except OSError as e:
            self.error = e
        finally:
            self.done.set()

    def stalled(self, quiet=0.5, limit=10.0):
        """Wait until no byte got out for `quiet` seconds (True) or the
        writer finished (False)."""
        deadline = time.monotonic() + limit
        last, since = self.sent, time.monotonic()
        while time.monotonic() < deadline:
            if self.done.wait(0.05):
                return False
            if self.sent != last:
                last, since = self.sent, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return True
        return False
