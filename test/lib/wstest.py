#!/usr/bin/python3
"""wstest: the byte-level toolkit of wsfilter's tests (python3 standard library only).

Every run of wsfilter started here checks its exit status against the one the test
expects (--expect, required), and a death by a signal always fails the run.

Subcommands (see --help of each):

  hs|http|frame|many|raw ... [+ ...]   print client bytes: a handshake request, a plain
                                       HTTP request, frames (any opcode, flags, length
                                       form, mask), N small messages, hex bytes
  accept KEY                           the Sec-WebSocket-Accept value for KEY
  decode [--key KEY]                   strictly parse a server's output (stdin)
  run --expect N CONVERSATION -- ARGS  run $WSFILTER ARGS on a socketpair, two pipes or
                                       an accepted loopback TCP socket (fds 0/1, or 0/1/2
                                       like inetd), write a conversation in chosen
                                       chunkings, print the decoded answer and "EXIT n"
  run --connect HOST:PORT CONVERSATION the same against a launcher (no exit status)
  stream --expect N --size B -- ARGS   stream one huge message through, peak RSS
  flood --expect N -- ARGS             write without reading; where wsfilter stops
  script --expect N STEP... -- ARGS    a scripted TCP conversation, one event a line
                                       (operations.bats); --connect PORT for a launcher

Output of decode/run: the status line and headers, "BODY ..." for a plain HTTP answer,
then one line per message ("TEXT "abc - 12"") or, with --frames, per frame
("TEXT fin=1 "abc""), control frames where they arrived ("PING "x"", "CLOSE 1000",
"CLOSE" for an empty close payload). Anything a server must not send -- a 101 whose
Sec-WebSocket-Accept is not the one computed from the request's key, a bad header
line, an HTTP answer without Connection: close or a valid Content-Length, a body that
is not Content-Length bytes, a masked frame, RSV bits, bad fragmentation, a control
frame over 125 bytes, an invalid close code, text that is not UTF-8, any byte after the
close frame -- is a "MALFORMED:" line and makes the tool exit 1. So does an exit
status other than --expect ("FAIL: ..."), a kill by a signal, a TIMEOUT of a wait
step, a chunking that could not be delivered as separate reads, and chunkings whose
answers disagree.
"""

import argparse
import base64
import hashlib
import os
import re
import signal
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
OPCODES = {"cont": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}
OPNAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
VALID_CLOSE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
PEER_VARS = ("REMOTE_ADDR", "REMOTE_PORT", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPREMOTEHOST",
             "TCPREMOTEINFO", "SOCAT_PEERADDR", "SOCAT_PEERPORT", "LISTEN_PID", "LISTEN_FDS",
             "LISTEN_FDNAMES")
# a log line of wsfilter: "wsfilter[PID]: ..." (common.bash's LOGP)
LOG_RE = re.compile(r"^wsfilter\[[0-9]+\]: ")


class Fail(Exception):
    """A check failed; the message says what was expected and what was seen."""


def check(cond, what):
    if not cond:
        raise Fail(what)


def lazy():
    """Modules only the runners need; the frame builders start faster without them."""
    global array, fcntl, random, select, socket, subprocess, tempfile, termios, threading, time
    import array
    import fcntl
    import random
    import select
    import socket
    import subprocess
    import tempfile
    import termios
    import threading
    import time


# ---------------------------------------------------------------- bytes

# --size payloads repeat this 64-byte alphabet; it has no space, so a " - N" suffix
# after such a payload is easy to tell apart.
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
PERIOD = len(ALPHABET)


def pattern(n, offset=0):
    start = offset % PERIOD
    return (ALPHABET * ((start + n) // PERIOD + 1))[start:start + n]


_BIG = None


def big_pattern():
    global _BIG
    if _BIG is None:
        _BIG = pattern((1 << 20) + PERIOD)
    return _BIG


def pattern_prefix_len(data):
    """How many leading bytes of data equal pattern(len(data))."""
    pat, step, mv, pos = big_pattern(), 1 << 20, memoryview(data), 0
    while pos < len(data):
        n = min(step, len(data) - pos)
        if mv[pos:pos + n] == pat[:n]:  # pos is a multiple of 1 MiB, itself one of PERIOD
            pos += n
            continue
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mv[pos:pos + mid] == pat[:mid]:
                lo = mid
            else:
                hi = mid - 1
        return pos + lo
    return pos


def xor_mask(data, key):
    """RFC 6455 5.3 masking, on big integers so that megabytes stay fast."""
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def accept_for(key):
    if isinstance(key, str):
        key = key.encode("latin-1")
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def quote(data):
    """Bytes as a double-quoted string: UTF-8 text as is (controls, quotes and
    backslashes escaped), other bytes as \\xNN."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        s = None
    out = []
    esc = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}
    if s is not None:
        for ch in s:
            o = ord(ch)
            if ch in esc:
                out.append(esc[ch])
            elif o < 0x20 or o == 0x7F:
                out.append("\\x%02x" % o)
            elif 0x80 <= o < 0xA0 or o in (0x2028, 0x2029, 0xFEFF) or 0xE000 <= o <= 0xF8FF or o >= 0xF0000:
                out.append("\\u{%x}" % o)
            else:
                out.append(ch)
    else:
        for b in data:
            c = chr(b)
            if c in esc:
                out.append(esc[c])
            elif 0x20 <= b < 0x7F:
                out.append(c)
            else:
                out.append("\\x%02x" % b)
    return '"' + "".join(out) + '"'


def render(data, max_show, as_hex=False):
    if len(data) <= max_show:
        return "hex:" + bytes(data).hex() if as_hex else quote(data)
    p = pattern_prefix_len(data)
    if p >= PERIOD:
        rest = bytes(data[p:])
        return "<pattern %d>" % p + (render(rest, max_show, as_hex) if rest else "")
    return "<%d bytes sha256:%s>" % (len(data), hashlib.sha256(data).hexdigest()[:16])


def build_frame(opcode, payload=b"", fin=1, rsv=0, masked=True, mask=None, lenform=None, claim=None):
    """One client frame; claim writes another length than the payload's, lenform
    (7, 16, 64) forces a length form, mask None draws a random key."""
    b0 = (int(bool(fin)) << 7) | (rsv << 4) | opcode
    n = len(payload) if claim is None else claim
    form = lenform or (7 if n <= 125 else 16 if n <= 65535 else 64)
    mbit = 0x80 if masked else 0
    if form == 7:
        check(n <= 125, "length %d does not fit the 7-bit form" % n)
        head = struct.pack("!BB", b0, mbit | n)
    elif form == 16:
        check(n <= 65535, "length %d does not fit the 16-bit form" % n)
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    key = mask if mask is not None else os.urandom(4)
    return head + key + xor_mask(payload, key)


def close_frame(code=1000, reason=b""):
    return build_frame(OP_CLOSE, struct.pack("!H", code) + reason)


def handshake(path="/", host="127.0.0.1", key=None, extra=b""):
    """A valid upgrade request and the accept value its answer must carry."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, key)).encode()
    return req + extra + b"\r\n", accept_for(key)


def build_hs(a):
    lines = [a.request_line] if a.request_line is not None else ["%s %s %s" % (a.method, a.path, a.http)]
    std = []
    if not a.no_host:
        std.append(("Host", a.host))
    if not a.no_upgrade:
        std.append(("Upgrade", a.upgrade))
    if not a.no_connection:
        std.append(("Connection", a.connection))
    if not a.no_key:
        std.append(("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode() if a.random_key else a.key))
    if not a.no_version:
        std.append(("Sec-WebSocket-Version", a.version))
    if a.origin is not None:
        std.append(("Origin", a.origin))
    for p in a.protocol:
        std.append(("Sec-WebSocket-Protocol", p))
    if a.extensions is not None:
        std.append(("Sec-WebSocket-Extensions", a.extensions))
    for name, value in std:
        name = name.lower() if a.header_case == "lower" else name.upper() if a.header_case == "upper" else name
        lines.append("%s: %s" % (name, value))
    lines += a.header
    if a.pad:
        lines.append("X-Pad: " + "p" * a.pad)
    data = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    return data if a.no_end else data + b"\r\n"


def build_http(a):
    lines = [a.request_line] if a.request_line is not None else ["%s %s HTTP/1.1" % (a.method, a.path)]
    if not a.no_host:
        lines.append("Host: %s" % a.host)
    lines += a.header
    return unescape("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def build_frame_cli(a):
    if a.hex is not None:
        payload = bytes.fromhex(a.hex)
    elif a.text is not None:
        payload = a.text.encode("utf-8")
    elif a.size is not None:
        payload = pattern(a.size, a.offset)
    else:
        payload = b""
    if a.code is not None:
        payload = struct.pack("!H", a.code) + a.reason.encode("utf-8") + payload
    mask = bytes.fromhex(a.mask) if a.mask else None
    check(mask is None or len(mask) == 4, "--mask takes 4 bytes in hex")
    form = 7 if a.len7 else 16 if a.len16 else 64 if a.len64 else None
    return build_frame(a.opcode, payload, a.fin, a.rsv, not a.unmasked, mask, form, a.claim_len)


def build_many(a):
    return b"".join(build_frame(a.opcode, (a.template % i).encode()) for i in range(a.first, a.first + a.count))


GENERATORS = {"hs": build_hs, "http": build_http, "frame": build_frame_cli, "many": build_many,
              "raw": lambda a: bytes.fromhex(a.hex)}


def unescape(s):
    """Python escapes (\\r, \\n, \\x01) in a command-line string."""
    import codecs
    return codecs.decode(s.encode("latin-1", "backslashreplace"), "unicode_escape")


def request_key(data):
    """The Sec-WebSocket-Key of the request at the start of data (None without one)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?im)^sec-websocket-key:[ \t]*([^\r\n]*?)[ \t]*\r?$", head)
    return m.group(1).decode("latin-1") if m else None


# ---------------------------------------------------------------- strict parsing

CANONICAL = {n.lower(): n for n in (
    "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Version", "Sec-WebSocket-Key", "WWW-Authenticate", "X-Content-Type-Options",
    "Content-Security-Policy")}


def canonical(name):
    low = name.lower()
    return CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def parse_head(head, key):
    """(status line, code, [(name, value)], problems) of an HTTP answer head (the bytes
    before the blank line). A 101 must carry the accept value computed from key."""
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    problems, headers = [], []
    m = re.fullmatch(r"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n\x00-\x08\x0a-\x1f\x7f]*", lines[0])
    if not m:
        problems.append("bad status line %s" % quote(lines[0].encode("latin-1")))
    code = int(m.group(1)) if m else 0
    for line in lines[1:]:
        hm = re.fullmatch(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*", line)
        if not hm:
            problems.append("bad header line %s" % quote(line.encode("latin-1")))
            continue
        headers.append((hm.group(1), hm.group(2)))
    get = lambda n: [v for k, v in headers if k.lower() == n]  # noqa: E731
    if code == 101:
        acc = get("sec-websocket-accept")
        if key is None:
            problems.append("a 101 answer to a request without Sec-WebSocket-Key")
        elif acc != [accept_for(key)]:
            problems.append("Sec-WebSocket-Accept %r, expected [%r] for key %r" % (acc, accept_for(key), key))
        if [v.lower() for v in get("upgrade")] != ["websocket"]:
            problems.append("101 without Upgrade: websocket")
        if not any("upgrade" in [t.strip().lower() for t in v.split(",")] for v in get("connection")):
            problems.append("101 without Connection: Upgrade")
    elif code:
        if [v.lower() for v in get("connection")] != ["close"]:
            problems.append("HTTP answer without Connection: close")
        cl = get("content-length")
        if len(cl) != 1 or not re.fullmatch(r"[0-9]+", cl[0]):
            problems.append("HTTP answer without one valid Content-Length")
    return lines[0], code, headers, problems


class Decoder:
    """Incremental strict parser of what a WebSocket server writes: the HTTP head, then
    a Content-Length body or server frames. lines holds the description so far, ends
    the output offset at which each line was complete."""

    def __init__(self, key=None, messages=False, max_show=120, no_body=False, reasons=False, as_hex=False):
        self.key, self.messages, self.max_show, self.no_body = key, messages, max_show, no_body
        self.reasons, self.as_hex = reasons, as_hex
        self.buf = bytearray()
        self.consumed = 0
        self.lines, self.ends = [], []
        self.state = "head"
        self.closed = False
        self.msg_op, self.msg = None, bytearray()
        self.malformed = 0
        self.status = None

    def add(self, line):
        self.lines.append(line)
        self.ends.append(self.consumed)

    def bad(self, text):
        self.malformed += 1
        self.add("MALFORMED: " + text)

    def take(self, n):
        del self.buf[:n]
        self.consumed += n

    def feed(self, data):
        self.buf += data
        while True:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        self.bad("no end of the HTTP head in 64 KiB")
                        self.state = "garbage"
                        continue
                    return
                head = bytes(self.buf[:end])
                self.take(end + 4)
                self.head(head)
            elif self.state == "body":
                if len(self.buf) < self.body_len:
                    return
                body = bytes(self.buf[:self.body_len])
                self.take(self.body_len)
                self.add("BODY " + render(body, self.max_show))
                self.state = "done"
            elif self.state in ("done", "closed"):
                if self.buf:
                    self.bad("%d bytes after the end of the %s: %s" % (
                        len(self.buf), "HTTP answer" if self.state == "done" else "close frame",
                        quote(bytes(self.buf[:60]))))
                    self.take(len(self.buf))
                    self.state = "garbage"
                return
            elif self.state == "frames":
                if not self.frame():
                    return
            else:
                self.take(len(self.buf))
                return

    def finish(self):
        if self.state == "head" and self.buf:
            self.bad("output ends inside the HTTP head: %s" % quote(bytes(self.buf[:200])))
        elif self.state == "body":
            self.bad("output ends after %d of %d body bytes" % (len(self.buf), self.body_len))
        elif self.state == "frames" and self.buf:
            self.bad("output ends inside a frame (%d bytes left over)" % len(self.buf))
        self.buf.clear()
        return self.lines

    def head(self, head):
        status, code, headers, problems = parse_head(head, self.key)
        self.status = code
        self.add(status)
        for name, value in headers:
            self.add("%s: %s" % (canonical(name), value))
        for p in problems:
            self.bad(p)
        if code == 101:
            self.state = "frames"
            return
        cl = [v for k, v in headers if k.lower() == "content-length"]
        if problems or not cl:
            self.state = "garbage"
        elif self.no_body or code in (204, 304) or code < 200:
            self.state = "done"
        else:
            self.body_len = int(cl[0])
            self.state = "body"

    def frame(self):
        b = self.buf
        if len(b) < 2:
            return False
        b0, b1 = b[0], b[1]
        fin, rsv, op, masked, n, pos = b0 >> 7, (b0 >> 4) & 7, b0 & 15, b1 >> 7, b1 & 127, 2
        if n == 126:
            if len(b) < 4:
                return False
            n, pos = struct.unpack_from("!H", b, 2)[0], 4
            if n < 126:
                self.bad("16-bit length %d should use the 7-bit form" % n)
        elif n == 127:
            if len(b) < 10:
                return False
            n, pos = struct.unpack_from("!Q", b, 2)[0], 10
            if n >> 63:
                self.bad("64-bit length with the top bit set")
                self.state = "garbage"
                return True
            if n < 65536:
                self.bad("64-bit length %d should use a shorter form" % n)
        key = None
        if masked:
            if len(b) < pos + 4:
                return False
            key = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return False
        payload = bytes(b[pos:pos + n])
        self.take(pos + n)
        if masked:
            self.bad("server frame is masked")
            payload = xor_mask(payload, key)
        if rsv:
            self.bad("RSV bits %d set" % rsv)
        self.on_frame(fin, op, payload)
        return True

    def on_frame(self, fin, op, payload):
        name = OPNAMES.get(op)
        show = lambda p: render(p, self.max_show, self.as_hex)  # noqa: E731
        if name is None:
            self.bad("reserved opcode %d" % op)
            self.add("OPCODE%d fin=%d %s" % (op, fin, show(payload)))
            return
        if op >= 8:
            if not fin:
                self.bad("fragmented control frame")
            if len(payload) > 125:
                self.bad("control frame payload of %d bytes" % len(payload))
            if op == 8:
                self.on_close(payload)
            else:
                self.add("%s %s" % (name, show(payload)))
            return
        if op == 0 and self.msg_op is None:
            self.bad("continuation frame without a message in progress")
        if op != 0 and self.msg_op is not None:
            self.bad("new data frame while a message is in progress")
            self.msg_op, self.msg = None, bytearray()
        if op != 0:
            self.msg_op = op
        if not self.messages:
            self.add("%s fin=%d %s" % (name, fin, show(payload)))
        if self.msg_op is not None:
            self.msg += payload
        if fin and self.msg_op is not None:
            whole = bytes(self.msg)
            if self.msg_op == 1:
                try:
                    whole.decode("utf-8")
                except UnicodeDecodeError as e:
                    self.bad("text message is not UTF-8 (%s)" % e.reason)
            if self.messages:
                self.add("%s %s" % (OPNAMES[self.msg_op], show(whole)))
            self.msg_op, self.msg = None, bytearray()

    def on_close(self, payload):
        if self.msg_op is not None and self.messages:
            self.add("(unfinished %s message of %d bytes)" % (OPNAMES[self.msg_op], len(self.msg)))
        self.state = "closed"
        if len(payload) == 0:
            self.add("CLOSE")
            return
        if len(payload) == 1:
            self.bad("close payload of 1 byte")
            self.add("CLOSE %s" % quote(payload))
            return
        code, reason = struct.unpack("!H", payload[:2])[0], payload[2:]
        if code not in VALID_CLOSE:
            self.bad("close code %d may not be sent" % code)
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            self.bad("close reason is not UTF-8")
        self.add("CLOSE %d %s" % (code, quote(reason)) if self.reasons else "CLOSE %d" % code)


# ---------------------------------------------------------------- the process under test

def wsfilter_path():
    return os.environ.get("WSFILTER") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "wsfilter")


def sanitizer_build(path=None):
    """wsfilter is a sanitizer build (as common.bash's sanitized tells)."""
    try:
        with open(path or wsfilter_path(), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return any(s in data for s in (b"__asan_init", b"__msan_init", b"__tsan_init"))


def deny_seccomp():
    """preexec_fn: a seccomp filter that lets everything through but makes installing
    another filter fail with EINVAL, so that wsfilter cannot have its sandbox."""
    import ctypes
    import platform
    nrs = {"x86_64": (157, 317), "aarch64": (167, 277)}.get(platform.machine())
    if nrs is None:
        raise OSError("deny_seccomp: unknown architecture %s" % platform.machine())
    prctl_nr, seccomp_nr = nrs
    ld, jeq, ret = 0x20, 0x15, 0x06
    prog = [(ld, 0, 0, 0),                 # A = seccomp_data.nr
            (jeq, 3, 0, seccomp_nr),       # seccomp(2): fail
            (jeq, 0, 3, prctl_nr),         # not prctl(2): allow
            (ld, 0, 0, 16),                # A = args[0] (low half)
            (jeq, 0, 1, 22),               # PR_SET_SECCOMP: fail, else allow
            (ret, 0, 0, 0x00050000 | 22),  # SECCOMP_RET_ERRNO | EINVAL
            (ret, 0, 0, 0x7FFF0000)]       # SECCOMP_RET_ALLOW

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    fprog = Prog(len(prog), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "deny_seccomp: prctl failed")


def preexec_for(no_seccomp=False, nofile=None):
    """preexec_fn for wsfilter: deny_seccomp, and/or RLIMIT_NOFILE (soft and hard) set
    to nofile, so that opening descriptor number nofile or above fails with EMFILE."""
    if not no_seccomp and nofile is None:
        return None

    def preexec():
        if nofile is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if no_seccomp:
            deny_seccomp()
    return preexec


TIME_BIN = "/usr/bin/time"
LIVE = set()  # every Wsfilter not reaped yet: killed when the tool exits


def kill_live(*_):
    for w in list(LIVE):
        w.kill()


def on_term(signum, _frame):
    kill_live()
    os._exit(128 + signum)


class Wsfilter:
    """wsfilter on one end of a socketpair, two pipes, or an accepted loopback TCP
    socket as fds 0/1 ("tcp", "tcp6") or 0/1/2 ("inetd"). Our end is .sock (or
    .rfd/.wfd for pipes); its stderr goes to a file (.log()) unless it is the socket.
    wait() reaps it with wait4: exit status, peak RSS and CPU time."""

    CLK_TCK = os.sysconf("SC_CLK_TCK")

    def __init__(self, args=(), transport="socketpair", env=None, clear_peer_env=False,
                 sndbuf=None, rcvbuf=None, server_buf=None, no_seccomp=False, binary=None, timed=False,
                 rcvbuf_first=None, nofile=None):
        lazy()
        self.args = list(args)
        self.transport = transport
        self.tmp = tempfile.mkdtemp(prefix="wstest.")
        self.errfile = os.path.join(self.tmp, "stderr")
        self.sock = None
        self.rfd = self.wfd = None
        theirs = None
        if transport == "pipes":
            in_r, self.wfd = os.pipe()
            self.rfd, out_w = os.pipe()
            fds = (in_r, out_w)
        elif transport == "socketpair":
            self.sock, theirs = socket.socketpair()
            fds = (theirs.fileno(), theirs.fileno())
        elif transport in ("tcp", "tcp6", "inetd"):
            fam, host = (socket.AF_INET6, "::1") if transport == "tcp6" else (socket.AF_INET, "127.0.0.1")
            lst = socket.socket(fam, socket.SOCK_STREAM)
            if server_buf:  # inherited by the accepted socket: wsfilter's end
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, server_buf)
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, server_buf)
            lst.bind((host, 0))
            lst.listen(1)
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
            if rcvbuf_first:  # before connect: the window announced in the SYN
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_first)
            self.sock.connect(lst.getsockname()[:2])
            theirs, _ = lst.accept()
            lst.close()
            fds = (theirs.fileno(), theirs.fileno())
        else:
            raise Fail("unknown transport %r" % transport)
        if self.sock is not None:
            if sndbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            if rcvbuf and not rcvbuf_first:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        e = dict(os.environ if env is None else env)
        if clear_peer_env:
            for k in PEER_VARS:
                e.pop(k, None)
        self.err = None
        if transport == "inetd":
            stderr = fds[0]
        else:
            self.err = open(self.errfile, "wb")
            stderr = self.err
        argv = [binary or wsfilter_path()] + self.args
        # A child forked from this Python starts with Python's RSS as its peak (wait4's
        # ru_maxrss survives exec): peak figures come from /usr/bin/time, which forks
        # wsfilter from a small process, or from /proc while it runs.
        self.timefile = os.path.join(self.tmp, "time") if timed and os.access(TIME_BIN, os.X_OK) else None
        if self.timefile:
            argv = [TIME_BIN, "-f", "%M %U %S", "-o", self.timefile] + argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=stderr, env=e, close_fds=True,
                                     preexec_fn=preexec_for(no_seccomp, nofile))
        self.pid = self.proc.pid
        if self.timefile:
            self.pid = self.find_child()
        LIVE.add(self)
        if transport == "pipes":
            os.close(fds[0])
            os.close(fds[1])
        else:
            theirs.close()
        self.rc = None
        self.end = None
        self.maxrss_kb = 0
        self.cpu_s = 0.0
        self.hwm_kb = 0

    def find_child(self):
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        for _ in range(1000):
            try:
                with open(path) as f:
                    kids = f.read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                break
            time.sleep(0.002)
        return self.proc.pid  # exited already: figures come from the time file

    # -- figures -----------------------------------------------------------
    def sample(self):
        """(VmRSS KiB, VmHWM KiB, CPU s) while it runs, None once it has exited."""
        if self.rc is not None:
            return None
        try:
            with open("/proc/%d/status" % self.pid) as f:
                st = f.read()
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        m1, m2 = re.search(r"VmRSS:\s+(\d+)", st), re.search(r"VmHWM:\s+(\d+)", st)
        if not m1 or not m2:
            return None
        cpu = (int(fields[11]) + int(fields[12])) / self.CLK_TCK
        self.hwm_kb = max(self.hwm_kb, int(m2.group(1)))
        self.cpu_s = max(self.cpu_s, cpu)
        return int(m1.group(1)), int(m2.group(1)), cpu

    def proc_status(self, *names):
        """Lines of /proc/PID/status starting with these names, whitespace squeezed."""
        with open("/proc/%d/status" % self.pid) as f:
            return [" ".join(l.split()) for l in f if l.startswith(tuple(n + ":" for n in names))]

    def read_chars(self):
        try:
            with open("/proc/%d/io" % self.pid) as f:
                return int(re.search(r"rchar:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            return None

    # -- the end -----------------------------------------------------------
    def wait(self, timeout):
        """The exit status (negative: killed by that signal), or None if still running
        after timeout seconds."""
        if self.rc is not None:
            return self.rc
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.end = time.monotonic()
                self.rc = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.rc
                LIVE.discard(self)
                if self.timefile:
                    self.timed_figures()
                else:
                    self.cpu_s = max(self.cpu_s, ru.ru_utime + ru.ru_stime)
                return self.rc
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def timed_figures(self):
        """wsfilter's status and figures from /usr/bin/time's report."""
        try:
            with open(self.timefile) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            m = re.match(r"Command terminated by signal ([0-9]+)", line)
            if m:
                self.rc = -int(m.group(1))
        fig = [l for l in lines if re.fullmatch(r"[0-9]+ [0-9.]+ [0-9.]+", l)]
        if fig:
            kb, user, system = fig[-1].split()
            self.maxrss_kb = int(kb)
            self.hwm_kb = max(self.hwm_kb, int(kb))
            self.cpu_s = max(self.cpu_s, float(user) + float(system))
        elif self.rc >= 0:
            self.rc = -1000  # no report: time itself failed
        self.proc.returncode = self.rc

    def kill(self):
        if self.rc is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(10)
        LIVE.discard(self)

    def expect(self, code, within):
        """Wait up to within seconds; Fail unless the exit status is code."""
        rc = self.wait(within)
        if rc is None:
            state = self.sample()
            self.kill()
            raise Fail("wsfilter still running after %.1f s (RSS, HWM KiB, CPU s: %s); expected exit %d"
                       % (within, state, code))
        check(rc >= 0, "wsfilter was %s; expected exit %d" % (describe_status(rc), code))
        check(rc == code, "wsfilter exit status %d, expected %d; log: %s" % (rc, code, self.log_line()))
        return rc

    def log(self):
        if self.err is None:
            return ""
        self.err.flush()
        with open(self.errfile, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace")

    def log_line(self):
        lines = [l for l in self.log().splitlines() if LOG_RE.match(l)]
        return lines[-1] if lines else ""

    def close(self):
        self.kill()
        for fd in (self.rfd, self.wfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rfd = self.wfd = None
        if self.sock is not None:
            self.sock.close()
        if self.err is not None:
            self.last_log = self.log()
            self.err.close()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)


def describe_status(rc):
    if rc is None:
        return "still running"
    if rc == -1000:
        return "lost: /usr/bin/time reported nothing"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = "?"
        return "killed by signal %d (%s)" % (-rc, name)
    return "exit %d" % rc


def exit_lines(w, expected, timeout):
    """Reap w; (lines to print, failed): "EXIT n" or a description, "FAIL: ..." when the
    status is not the expected one."""
    rc = w.wait(timeout)
    if rc is None:
        w.kill()
        return ["EXIT killed: still running after %gs" % timeout,
                "FAIL: wsfilter did not exit within %gs (expected exit %d)" % (timeout, expected)], True
    if rc < 0:
        return ["EXIT signal %d" % -rc, "FAIL: wsfilter was %s (expected exit %d)" % (describe_status(rc), expected)], True
    if rc != expected:
        return ["EXIT %d" % rc, "FAIL: wsfilter exit status %d, expected %d" % (rc, expected)], True
    return ["EXIT %d" % rc], False


# ---------------------------------------------------------------- socket helpers

class Reader:
    """Reads HTTP heads and server frames from a blocking socket, with deadlines.
    A masked server frame or RSV bits raise Fail."""

    def __init__(self, sock):
        lazy()
        self.sock, self.buf, self.pos, self.eof, self.total = sock, bytearray(), 0, False, 0

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
        """The head up to the blank line (str), or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\r\n\r\n", self.pos)
            if i >= 0:
                head = bytes(self.buf[self.pos:i])
                self.pos = i + 4
                return head.decode("latin-1")
            if not self._fill(deadline):
                return None

    def exact(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while self.avail() < n and self._fill(deadline):
            pass
        k = min(n, self.avail())
        data = bytes(self.buf[self.pos:self.pos + k])
        self.pos += k
        return data

    def rest(self, timeout=2.0):
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
                n, h = b[p + 1] & 0x7F, 2
                if n == 126:
                    h = 4
                    if avail >= 4:
                        n = (b[p + 2] << 8) | b[p + 3]
                elif n == 127:
                    h = 10
                    if avail >= 10:
                        n = struct.unpack_from("!Q", b, p + 2)[0]
                check(not b[p + 1] & 0x80, "the server sent a masked frame")
                check(not b[p] & 0x70, "the server sent a frame with RSV bits")
                if avail >= h and avail >= h + n:
                    payload = bytes(b[p + h:p + h + n])
                    self.pos = p + h + n
                    return bool(b[p] & 0x80), b[p] & 0x0F, payload
            if not self._fill(deadline):
                return None

    def frame_header(self, timeout=30.0):
        """(fin, opcode, length) of the next frame; EOFError at EOF or timeout."""
        head = self.exact(2, timeout)
        if len(head) < 2:
            raise EOFError
        b0, b1 = head
        check(not b1 & 0x80, "the server sent a masked frame")
        check(not b0 & 0x70, "the server sent a frame with RSV bits")
        n = b1 & 127
        if n == 126:
            n = struct.unpack("!H", self.exact(2, timeout))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.exact(8, timeout))[0]
        return b0 >> 7, b0 & 15, n

    def pieces(self, n, timeout=30.0):
        """The next n payload bytes in pieces, not kept."""
        while n > 0:
            if not self.avail() and not self._fill(time.monotonic() + timeout):
                raise EOFError
            k = min(n, self.avail())
            piece = bytes(self.buf[self.pos:self.pos + k])
            self.pos += k
            n -= k
            yield piece

    def message(self, timeout=5.0):
        """A whole data message or a control frame as (opcode, payload); None at EOF or
        timeout."""
        parts, first = [], None
        while True:
            f = self.frame(timeout)
            if f is None:
                return None
            fin, op, payload = f
            if op >= OP_CLOSE:
                check(not parts, "control frame %d inside a fragmented message" % op)
                return op, payload
            if first is None:
                check(op != OP_CONT, "continuation frame without a message")
                first = op
            else:
                check(op == OP_CONT, "new data frame opcode %d inside a fragmented message" % op)
            parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def until_close(self, timeout=5.0):
        """Skip data frames up to the close frame: (code, reason, skipped) or None."""
        skipped, deadline = 0, time.monotonic() + timeout
        while True:
            f = self.frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return None
            if f[1] == OP_CLOSE:
                p = f[2]
                return (struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None), p[2:], skipped
            skipped += 1

    def upgrade(self, sock_send, path="/"):
        """Send a handshake and check the 101 and its accept value."""
        req, accept = handshake(path)
        sock_send(req)
        head = self.http_head(5.0)
        check(head is not None, "no handshake answer")
        status, code, headers, problems = parse_head(head.encode("latin-1"), request_key(req))
        check(code == 101, "handshake answer %r" % status)
        check(not problems, "bad 101: %s" % "; ".join(problems))


def split_suffix(payload, random_max=1000):
    """(message, N) of a default-mode reply "message - N"; Fail unless 1 <= N <= random_max."""
    m = re.match(rb"(?s)(.*) - ([0-9]+)\Z", payload)
    check(m is not None, "reply without the ' - N' suffix: %r" % payload[-40:])
    n = int(m.group(2))
    check(1 <= n <= random_max, "suffix %d outside 1..%d" % (n, random_max))
    return m.group(1), n


def vm_hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


# ---------------------------------------------------------------- run

def chunks_of(data, how, rng):
    if how == "all" or not data:
        return [data] if data else []
    if how == "byte":
        return [data[i:i + 1] for i in range(len(data))]
    if how.startswith("random"):
        out, pos = [], 0
        while pos < len(data):
            n = rng.choice((1, 1, 2, 3, 4, 5, 7, 9, 13, 31, 64, 127, 500))
            out.append(data[pos:pos + n])
            pos += n
        return out
    n = int(how)
    return [data[i:i + n] for i in range(0, len(data), n)]


class Conversation:
    """One run: wsfilter (Wsfilter), a thread that collects everything it writes (with
    the time each piece came), and writes that reach wsfilter as separate reads."""

    SYNC_LIMIT = 5.0

    def __init__(self, a):
        self.w = Wsfilter(a.args, a.transport, env=spawn_env(a, a.clear_peer_env),
                          no_seccomp=a.no_seccomp, nofile=a.nofile)
        self.pipes = a.transport == "pipes"
        self.can_sync = a.transport in ("pipes", "socketpair")
        if self.pipes:
            self.wfd, self.rfd = self.w.wfd, self.w.rfd
        else:
            self.wfd, self.rfd = self.w.sock.fileno(), os.dup(self.w.sock.fileno())
        os.set_blocking(self.wfd, False)
        self.out = bytearray()
        self.arrivals = []  # (monotonic time, total bytes so far)
        self.cond = threading.Condition()
        self.eof = False
        self.eof_at = None
        self.write_dead = False
        self.input_ended = False
        self.notes = []  # lines that fail the run
        self.reader = threading.Thread(target=self.read_all, daemon=True)
        self.reader.start()

    def read_all(self):
        while True:
            try:
                data = os.read(self.rfd, 1 << 20)
            except BlockingIOError:  # a socket's dup shares our end's O_NONBLOCK
                select.select([self.rfd], [], [], 1.0)
                continue
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.eof, self.eof_at = True, time.monotonic()
                    self.cond.notify_all()
                    return
                self.out += data
                self.arrivals.append((time.monotonic(), len(self.out)))
                self.cond.notify_all()

    def unread(self):
        """Bytes written that wsfilter has not read yet: FIONREAD of the pipe, or the
        send queue of our end of the socketpair (an AF_UNIX skb stays charged to the
        sender until the receiver has read all of it)."""
        buf = array.array("i", [0])
        fcntl.ioctl(self.wfd, termios.FIONREAD if self.pipes else termios.TIOCOUTQ, buf)
        return buf[0]

    def write(self, data, stall_after):
        mv, last = memoryview(data), time.monotonic()
        while mv:
            if self.write_dead:
                return False
            try:
                n = os.write(self.wfd, mv)
                mv, last = mv[n:], time.monotonic()
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                self.write_dead = True
                return False
            if time.monotonic() - last > stall_after:
                self.notes.append("STALLED: wsfilter stopped reading with %d bytes unsent" % len(mv))
                self.write_dead = True
                return False
            select.select([], [self.wfd], [], 0.05)
        return True

    def drain(self):
        """Wait until wsfilter has read every byte written so far, so that the next
        write is a separate read. Once wsfilter has exited or ended its output the
        answer is complete and reads no longer matter; otherwise a wsfilter that does
        not read them within SYNC_LIMIT seconds fails the run (SYNC LOST)."""
        if not self.can_sync or self.write_dead:
            return not self.write_dead
        deadline, spins = time.monotonic() + self.SYNC_LIMIT, 0
        while self.unread() > 0:
            if self.eof or self.w.wait(0) is not None:
                return True
            if time.monotonic() > deadline:
                self.notes.append("SYNC LOST: wsfilter left %d bytes unread for %gs" % (self.unread(), self.SYNC_LIMIT))
                self.write_dead = True
                return False
            spins += 1
            time.sleep(0 if spins < 20 else 0.0005)
        return True

    def end_input(self):
        if self.input_ended:
            return
        self.input_ended = True
        try:
            if self.pipes:
                os.close(self.wfd)
                self.w.wfd = None
            else:
                self.w.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def time_of(self, offset):
        for t, total in self.arrivals:
            if total >= offset:
                return t
        return None


def spawn_env(a, clear_peer=False):
    """os.environ with --env settings; clear_peer: without launcher variables first."""
    env = {k: v for k, v in os.environ.items() if not (clear_peer and k in PEER_VARS)}
    for e in a.env:
        k, _, v = e.partition("=")
        env[k] = unescape(v)
    return env


def run_once(a, steps, how, seed):
    rng = random.Random(seed)
    conv = Conversation(a)
    timeouts = []
    try:
        return _run_once(a, conv, steps, how, rng, timeouts)
    finally:
        conv.w.close()
        try:
            os.close(conv.rfd)
        except OSError:
            pass


def decoder_for(a, key):
    return Decoder(key=key, messages=not a.frames, max_show=a.max_show, no_body=a.no_body,
                   reasons=a.reasons, as_hex=a.hex)


def _run_once(a, conv, steps, how, rng, timeouts):
    for kind, val in steps:
        if kind == "send":
            pieces = chunks_of(val, how, rng)
            for piece in pieces:
                if not conv.write(piece, a.stall_after) or not conv.drain():
                    break
        elif kind == "sleep":
            time.sleep(val)
        elif kind == "wait":
            rx, deadline, found = re.compile(val), time.monotonic() + a.wait_timeout, False
            while True:
                with conv.cond:
                    data, eof = bytes(conv.out), conv.eof
                d = decoder_for(a, a.key)
                d.feed(data)
                if any(rx.search(line) for line in d.lines):
                    found = True
                    break
                left = deadline - time.monotonic()
                if eof or left <= 0:
                    break
                with conv.cond:
                    if len(conv.out) == len(data) and not conv.eof:
                        conv.cond.wait(min(left, 0.2))
            if not found:
                timeouts.append("TIMEOUT: nothing matched /%s/ %s" %
                                (val, "before wsfilter closed" if eof else "in %gs" % a.wait_timeout))
    start = time.monotonic()
    if a.hold and not a.linger:
        # like a client that closes its socket when the server's side ends
        with conv.cond:
            conv.cond.wait_for(lambda: conv.eof, timeout=a.timeout)
    if not a.linger:
        conv.end_input()
    ex, failed = exit_lines(conv.w, a.expect, max(0.1, a.timeout - (time.monotonic() - start)))
    conv.end_input()
    conv.reader.join(5)
    d = decoder_for(a, a.key)
    d.feed(bytes(conv.out))
    d.finish()
    lines = list(d.lines) + timeouts + conv.notes
    if a.time_from:
        rx = re.compile(a.time_from)
        hit = next((i for i, line in enumerate(d.lines) if rx.search(line)), None)
        if hit is None:
            lines.append("TIME: no line matches /%s/" % a.time_from)
            failed = True
        else:
            t = conv.time_of(d.ends[hit])
            lines.append("ELAPSED %.3f" % ((conv.w.end or time.monotonic()) - t))
    if a.show_log:
        lines += ["LOG " + l for l in conv.w.log().splitlines()]
    lines += ex
    return lines, failed or d.malformed > 0 or bool(timeouts) or bool(conv.notes)


def run_connect(a, steps):
    """The conversation against a launcher: every step's bytes in one write, then
    everything until the server closes (bounded by --timeout), strictly decoded."""
    lazy()
    import ssl
    host, _, port = a.connect.rpartition(":")
    host = host.strip("[]")
    sock = socket.create_connection((host, int(port)), a.timeout)
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if not a.cafile:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=host)
    data = b"".join(v for k, v in steps if k == "send")
    check(all(k == "send" for k, _ in steps), "--connect takes no wait or sleep steps")
    sock.sendall(data)
    out, deadline, notes = bytearray(), time.monotonic() + a.timeout, []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError) as e:
            notes.append("NOTE: %s after %d bytes" % (type(e).__name__, len(out)))
            break
        except socket.timeout:
            notes.append("TIMEOUT: the connection is still open after %gs" % a.timeout)
            break
        if not chunk:
            break
        out += chunk
    sock.close()
    d = decoder_for(a, a.key)
    d.feed(bytes(out))
    d.finish()
    for line in d.lines + notes:
        print(line)
    return 1 if d.malformed or any(n.startswith("TIMEOUT") for n in notes) else 0


def cmd_run(a):
    steps = []
    for kind, val in a.steps:
        steps.append(("send", bytes.fromhex(val)) if kind == "send-hex" else
                     ("send", open(val, "rb").read()) if kind == "send" and isinstance(val, str) else (kind, val))
    if not any(k == "send" for k, _ in steps):
        steps.insert(0, ("send", sys.stdin.buffer.read()))
    first = next(v for k, v in steps if k == "send")
    a.key = request_key(first)
    if not a.no_body:
        a.no_body = first.startswith(b"HEAD ")
    if a.connect:
        return run_connect(a, steps)
    if a.expect is None:
        raise SystemExit("wstest run: --expect STATUS is required (the exit status wsfilter must end with)")
    hows = a.chunkings.split(",")
    if a.transport not in ("pipes", "socketpair") and hows != ["all"]:
        raise SystemExit("wstest run: chunkings other than 'all' need --transport socketpair or pipes")
    results, any_failed = [], False
    for i, how in enumerate(hows):
        seed = int(how.split(":", 1)[1]) if how.startswith("random:") else a.seed + i
        lines, failed = run_once(a, steps, how, seed)
        any_failed |= failed
        results.append((how, lines))

    def same(lines):
        # the random suffix numbers may differ between runs, and so may how much of a
        # message failed half-way was streamed out before the close; times differ
        return [re.sub(r'^((?:TEXT|BINARY|CONT)\b.* - )[0-9]+("?)$', r"\1#\2", x) for x in lines
                if not x.startswith(("(unfinished ", "ELAPSED ", "LOG "))]

    first = results[0][1]
    if all(same(lines) == same(first) for _, lines in results):
        print("\n".join(first))
        return 1 if any_failed else 0
    print("MISMATCH: the chunkings %s give different answers" % a.chunkings)
    for how, lines in results:
        print("--- chunking %s" % how)
        print("\n".join(lines))
    return 1


def cmd_decode(a):
    d = Decoder(key=a.key, messages=a.messages, max_show=a.max_show, no_body=a.no_body,
                reasons=a.reasons, as_hex=a.hex)
    while True:
        chunk = sys.stdin.buffer.read1(1 << 20)
        if not chunk:
            break
        d.feed(chunk)
    print("\n".join(d.finish()))
    return 1 if d.malformed else 0


# ---------------------------------------------------------------- stream / flood

def send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass


def end_after_server(sock):
    """Read until wsfilter ends its side of the connection, then close ours."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()


def finish_big(w, a, errors):
    ex, failed = exit_lines(w, a.expect, a.timeout)
    for e in errors:
        print("ERROR: " + e)
    print("\n".join(ex))
    w.close()
    return 1 if errors or failed else 0


def cmd_stream(a):
    """Send a.size pattern bytes as one message (one frame, or frames of a.frame_size)
    while reading the answer; check it is the same bytes plus the suffix."""
    lazy()
    if a.frame_size and ((1 << 20) % a.frame_size or a.frame_size % PERIOD):
        raise SystemExit("wstest stream: --frame-size must be a power of two from 64 to 1 MiB")
    w = Wsfilter(a.args)
    sock = w.sock
    sock.settimeout(max(a.timeout, 10.0))
    start = time.monotonic()
    key = os.urandom(4)
    chunk = xor_mask(big_pattern()[:1 << 20], key)
    opcode = OPCODES[a.opcode]
    errors = []
    req, _ = handshake()

    def send_message():
        try:
            sock.sendall(req)
            left, first = a.size, True
            step = a.frame_size or a.size
            while left > 0 or first:
                n = min(left, step)
                sock.sendall(build_frame(opcode if first else 0, b"", fin=int(left == n), mask=key, claim=n))
                sent = 0
                while sent < n:
                    k = min(n - sent, len(chunk))
                    sock.sendall(chunk[:k])
                    sent += k
                left -= n
                first = False
        except OSError as e:
            errors.append("send failed: %s" % e)

    sender = threading.Thread(target=send_message, daemon=True)
    sender.start()
    reader = Reader(sock)
    pat = big_pattern()
    got, suffix, frames, kind, ok = 0, bytearray(), 0, None, True
    try:
        head = reader.http_head(a.timeout)
        if head is None:
            raise EOFError
        status, code, _, problems = parse_head(head.encode("latin-1"), request_key(req))
        print(status)
        errors += problems
        if code != 101:
            raise EOFError
        while True:
            fin, op, n = reader.frame_header()
            frames += 1
            if op >= 8:
                reader.exact(n)
                print("%s during the message" % OPNAMES.get(op, "OPCODE%d" % op))
                if op == 8:
                    break
                continue
            kind = op if kind is None else kind
            for piece in reader.pieces(n):
                if got < a.size:
                    k = min(len(piece), a.size - got)
                    at = got % PERIOD
                    same = piece[:k] == pat[at:at + k] if k <= (1 << 20) else piece[:k] == pattern(k, got)
                    if not same and ok:
                        errors.append("answer differs from what was sent near byte %d" % got)
                        ok = False
                    got += k
                    suffix += piece[k:]
                else:
                    suffix += piece
                if len(suffix) > 64:
                    errors.append("answer is longer than sent + 64 bytes")
                    raise EOFError
            if fin:
                break
        print("received %s %d bytes in %d frames, %s, suffix %s" % (
            OPNAMES.get(kind, "?"), got + len(suffix), frames,
            "payload ok" if ok and got == a.size else "payload WRONG", quote(bytes(suffix))))
        print("VmHWM %d kB" % vm_hwm_kb(w.pid))
        sock.sendall(build_frame(8, struct.pack("!H", 1000)))
        fin, op, n = reader.frame_header()
        payload = reader.exact(n)
        print("CLOSE %d" % struct.unpack("!H", payload[:2])[0] if n >= 2 else "CLOSE")
        end_after_server(sock)
    except (EOFError, OSError, Fail) as e:
        errors.append("stream broken: %s" % (e or "EOF from wsfilter"))
    sender.join(30)
    print("elapsed %.1fs" % (time.monotonic() - start))
    return finish_big(w, a, errors)


def cmd_flood(a):
    """Write frames without reading until wsfilter stops reading (or a.bytes are sent);
    then read everything back and count the answers."""
    lazy()
    w = Wsfilter(a.args)
    sock = w.sock
    sock.settimeout(max(a.timeout, 10.0))
    reader = Reader(sock)
    errors = []
    req, _ = handshake()
    sock.sendall(req)
    head = reader.http_head(a.timeout) or ""
    status, code, _, problems = parse_head(head.encode("latin-1"), request_key(req))
    print(status)
    errors += problems
    op, answer_op = (9, 10) if a.kind == "ping" else (2, 2)
    frame = build_frame(op, pattern(a.frame_size), mask=b"\x01\x02\x03\x04")
    block = frame * max(1, (256 * 1024) // len(frame))
    sock.setblocking(False)
    sent, last = 0, time.monotonic()
    while sent < a.bytes:
        off = sent % len(block)
        try:
            sent += sock.send(block[off:off + (a.bytes - sent)])
            last = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last > a.stall:
                break
            select.select([], [sock], [], 0.05)
    stalled = sent < a.bytes
    print("sent %d of %d bytes, %s" % (sent, a.bytes, "then wsfilter stopped reading" if stalled else "all"))
    print("VmHWM %d kB" % vm_hwm_kb(w.pid))
    rest = (len(frame) - sent % len(frame)) % len(frame)
    whole = (sent + rest) // len(frame)
    tail = frame[len(frame) - rest:] + build_frame(8, struct.pack("!H", 1000))
    sock.settimeout(max(a.timeout, 10.0))
    sender = threading.Thread(target=send_quietly, args=(sock, tail), daemon=True)
    sender.start()
    answers, close = 0, None
    try:
        while True:
            fin, fop, n = reader.frame_header()
            for _ in reader.pieces(n):
                pass
            if fop == 8:
                close = n
                break
            if fin and (fop == answer_op or (fop == 0 and answer_op == 2)):
                answers += 1
    except (EOFError, OSError, Fail) as e:
        errors.append("answer stream broken after %d answers: %s" % (answers, e or "EOF"))
    print("answers %d/%d" % (answers, whole))
    print("close received" if close is not None else "no close received")
    sender.join(10)
    end_after_server(sock)
    return finish_big(w, a, errors)


# ---------------------------------------------------------------- script

SCRIPT_HELP = """steps (a step that runs out of time prints "TIMEOUT <step>" and fails the script):
  hs                  send a WebSocket upgrade request for / (RFC 6455 sample key)
  req:METHOD:PATH     send a plain HTTP/1.1 request (Host, Connection: close)
  send:TEXT           send TEXT as is (python escapes: \\r\\n, \\x00 ...)
  head                read the answer's head: "STATUS <status line>", then "H <lower-case
                      name>: <value>" per header; strictly checked (a 101's accept value
                      against the key sent: "ACCEPT ok")
  body                read exactly Content-Length bytes: "BODY <n> <text>"
  text:STR            send a masked text message
  unmasked:STR        send an unmasked text frame (a protocol error)
  close:CODE          send a masked close frame with CODE
  trunc               send a frame header announcing 100 bytes, 10 of them, then EOF
  frame               read the next frame other than a ping: "TEXT <s>", "CLOSE <code>
                      [<reason>]", ...; a fragmented message is joined
  wait:S              read frames for S seconds or until a close frame, printing them
  pings               print "PINGS <n>": pings received so far
  alive               print "ALIVE" while wsfilter runs
  procstatus          print the Seccomp and NoNewPrivs lines of wsfilter's /proc/PID/status
  open                print "OPEN" if the connection is still up (no EOF, process alive)
  eof                 read until EOF: "EOF" (after "EXTRA <n> <text>" if bytes came), then
                      shut down our sending side, as clients do
  sleep:S             sleep S seconds without reading
  signal:NAME         send signal NAME (TERM, INT, HUP) to wsfilter; starts the clock of
                      exit-within
  exit-within:S       wait until S seconds after the last signal: "EXITED <code>", or
                      "RUNNING after <S> s" (which fails the script)
  rst                 reset the connection (SO_LINGER 0, close): no close, no FIN
  flood:SIZE          send masked SIZE-byte text messages without reading until the sends
                      stall for 0.3 s: "FLOODED <n> in <s> s"
  drain[:RATE]        read until every flooded message came back: "DRAINED <got>/<sent>"
                      (flood numbers its messages: one out of order is "ORDER: ..." and
                      fails); with RATE, at most RATE bytes/s
  big:SIZE            send a masked text message of SIZE test-pattern bytes (with
                      --max-show, a reply of them is shown as "TEXT <pattern SIZE>")
  shut                end our sending side (shutdown SHUT_WR; with --pipes, close
                      wsfilter's stdin) without reading anything
  ping                read frames until a ping: "PING <payload>" (not answered)
  rate:BYTES          from now on read at most BYTES per second (0: no limit)
  mark                start the clock of exit-within and elapsed (as signal does)
  elapsed             "ELAPSED <s>": seconds from the mark to now, or to wsfilter's
                      exit once exit-within has seen it exit
  cpu                 "CPU <s>": wsfilter's CPU time so far (utime + stime)
  pid                 "PID <n>": wsfilter's process id
  stop-child          SIGSTOP wsfilter's child (with PROGRAM: the one that waits to exec
                      it; waits for it to exist), once it is stopped: "STOPPED <pid>".
                      It is left stopped: the test checks what becomes of it and kills it
  count:S             read frames for S seconds or until a close frame, data messages only
                      counted: "COUNTED <n> messages <b> B", then the close frame if one came
  mem                 "VmHWM <kB>": wsfilter's peak resident memory so far
  textesc:STR         send a masked text message of STR with python escapes (\\n, \\xff)
  bin:SIZE            send a masked binary message of SIZE random bytes (kept for collect)
  collect:BYTES       read data messages until BYTES payload bytes came: "COLLECTED <n> B
                      in <k> messages, <equal|DIFFER at <i>>" against what bin: sent
At the end (when wsfilter was started): "EXIT <code>" (checked against --expect), then
its stderr lines as "LOG <line>", then SYSLOG lines."""


class ScriptClient:
    def __init__(self, sock, pong):
        self.s, self.buf, self.pong, self.pings, self.eof = sock, b"", pong, 0, False
        self.rest, self.rest_thread, self.deferred, self.hdrs = b"", None, [], {}
        self.bad = 0
        self.rate, self.paced, self.max_show = 0, 0.0, 0
        self.sent_bin, self.collected = [], 0

    def out(self, line):
        if line.startswith(("BADHEAD", "BADFRAME", "ACCEPT wrong", "MALFORMED")):
            self.bad += 1
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def fill(self, deadline):
        if self.eof:
            return False
        if self.rate:  # rate:BYTES: pace the reads
            time.sleep(max(0.0, min(self.paced, deadline) - time.monotonic()))
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError()
        r, _, _ = select.select([self.s], [], [], left)
        if not r:
            raise TimeoutError()
        try:
            d = self.s.recv(max(1, min(1 << 16, self.rate // 50)) if self.rate else 1 << 16)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        if self.rate:
            self.paced = max(self.paced, time.monotonic() - 0.05) + len(d) / self.rate
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
            self.deferred.append(data)  # a frame is still going out from drain: hold this one
            return
        self.rest_thread = None
        data, self.deferred = b"".join(self.deferred) + data, []
        self.s.setblocking(True)
        self.s.sendall(data)

    def read_head(self, deadline, key):
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(deadline):
                self.out("EOF in head after %d bytes: %s" % (len(self.buf), show(self.buf)))
                self.bad += 1
                return None
        i = self.buf.index(b"\r\n\r\n")
        head = self.take(i + 4)[:-4]
        status, code, headers, problems = parse_head(head, key)
        self.out("STATUS " + status)
        hdrs = {}
        for name, value in headers:
            hdrs[name.lower()] = value
            self.out("H %s: %s" % (name.lower(), value))
        for p in problems:
            self.out("MALFORMED: " + p)
        if code == 101 and key is not None:
            self.out("ACCEPT " + ("ok" if hdrs.get("sec-websocket-accept") == accept_for(key) else "wrong"))
        return hdrs

    def read_frame(self, deadline):
        if not self.need(2, deadline):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, hl = b1 & 0x7F, 2
        hl = 4 if n == 126 else 10 if n == 127 else 2
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
        payload = self.take(hl + n)[hl:]
        problems = (["masked"] if b1 & 0x80 else []) + (["rsv"] if b0 & 0x70 else [])
        return b0 & 0x0F, payload, problems, bool(b0 & 0x80)

    def next_frame(self, deadline):
        """Next frame that is not a ping (counted, answered with --pong); a fragmented
        data message comes back joined."""
        msg = None
        while True:
            f = self.read_frame(deadline)
            if f is None:
                return None
            op, payload, problems, fin = f
            if op == 9:
                self.pings += 1
                if self.pong:
                    self.send(build_frame(10, payload))
                continue
            if op >= 8:
                return op, payload, problems + ([] if fin else ["fragmented control frame"])
            if msg is None:
                msg = [op, payload, problems + (["continuation without a start"] if op == 0 else [])]
            else:
                msg[1] += payload
                msg[2] = msg[2] + problems + (["new message inside a fragmented one"] if op != 0 else [])
            if fin:
                return tuple(msg)

    def describe(self, f):
        op, payload, problems = f
        if op == 1:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                problems = problems + ["text not UTF-8"]
        if problems:
            self.out("BADFRAME %s %s" % (OPNAMES.get(op, op), ",".join(problems)))
        if op == 8:
            if len(payload) >= 2:
                code, reason = struct.unpack("!H", payload[:2])[0], payload[2:]
                self.out("CLOSE %d%s" % (code, " " + show(reason) if reason else ""))
            else:
                self.out("CLOSE")
        elif self.max_show and len(payload) > self.max_show:
            self.out("%s %s" % (OPNAMES.get(op, "OPCODE%d" % op), render(payload, self.max_show)))
        else:
            self.out("%s %s" % (OPNAMES.get(op, "OPCODE%d" % op), show(payload)))


class PipeEnds:
    """Our ends of wsfilter's stdin and stdout pipes (script --pipes), with the socket
    calls the script steps make: recv, sendall, shutdown (closes wsfilter's stdin)."""

    def __init__(self, w):
        self.w = w

    def fileno(self):
        return self.w.rfd

    def recv(self, n, flags=0):
        check(not flags, "--pipes: no recv flags (the open step needs a socket)")
        return os.read(self.w.rfd, n)

    def sendall(self, data):
        mv = memoryview(data)
        while mv:
            mv = mv[os.write(self.w.wfd, mv):]

    def setblocking(self, flag):
        check(flag, "--pipes: flood needs a socket")

    def shutdown(self, how):
        if self.w.wfd is not None:
            os.close(self.w.wfd)
            self.w.wfd = None

    def close(self):
        self.shutdown(None)
        if self.w.rfd is not None:
            os.close(self.w.rfd)
            self.w.rfd = None


def stop_child(pid, deadline):
    """SIGSTOP the first child of pid (waiting until deadline for it to exist) and wait
    until it is stopped; its pid, or None."""
    path = "/proc/%d/task/%d/children" % (pid, pid)
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                kids = f.read().split()
        except OSError:
            return None  # pid is gone
        if kids:
            kid = int(kids[0])
            try:
                os.kill(kid, signal.SIGSTOP)
            except ProcessLookupError:
                return None
            while time.monotonic() < deadline:
                try:
                    with open("/proc/%d/stat" % kid) as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    return None
                if state in ("T", "t"):
                    return kid
                time.sleep(0.002)
            return None
        time.sleep(0.002)
    return None


def show(b):
    return b.decode("utf-8", "backslashreplace").replace("\r", "\\r").replace("\n", "\\n")


def cmd_script(a):
    lazy()
    if a.connect is None and a.expect is None:
        raise SystemExit("wstest script: --expect STATUS is required (the exit status wsfilter must end with)")
    syslog_sock = None
    if a.syslog:
        try:
            os.unlink(a.syslog)
        except FileNotFoundError:
            pass
        syslog_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        syslog_sock.bind(a.syslog)
    w = None
    if a.connect:
        host, _, port = a.connect.rpartition(":")
        cs = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), 5)
    else:
        buf = 65536 if a.small_buffers else None
        transport = "inetd" if a.stderr == "socket" else ("tcp6" if a.ipv6 else "tcp")
        if a.pipes:
            transport = "pipes"
        w = Wsfilter(a.args, transport, env=spawn_env(a, True), sndbuf=buf, rcvbuf=buf,
                     server_buf=buf, rcvbuf_first=a.rcvbuf, nofile=a.nofile)
        if a.pipes:
            cs = PipeEnds(w)
            print("CLIENT pipes")
        else:
            cs = w.sock
            name = cs.getsockname()
            print(("CLIENT [%s]:%d" if a.ipv6 else "CLIENT %s:%d") % name[:2])
    c = ScriptClient(cs, a.pong)
    c.max_show = a.max_show
    mark, flooded, key, failed = time.monotonic(), 0, None, False
    st = ""
    try:
        for st in a.steps:
            name, _, arg = st.partition(":")
            deadline = time.monotonic() + a.timeout
            if name == "hs":
                key = RFC_KEY
                req = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % key)
                c.send(("".join([req] + [h + "\r\n" for h in a.header]) + "\r\n").encode())
            elif name == "req":
                method, _, path = arg.partition(":")
                req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
                c.send(("".join([req] + [h + "\r\n" for h in a.header]) + "\r\n").encode())
            elif name == "send":
                data = unescape(arg).encode("latin-1")
                key = request_key(data) if key is None else key
                c.send(data)
            elif name == "head":
                c.hdrs = c.read_head(deadline, key)
                if c.hdrs is None:
                    break
            elif name == "body":
                n = int(c.hdrs.get("content-length", "-1"))
                if n < 0 or not c.need(n, deadline):
                    c.out("MALFORMED: no body of Content-Length %d bytes (got %d)" % (n, len(c.buf)))
                    break
                c.out("BODY %d %s" % (n, show(c.take(n))))
            elif name == "text":
                c.send(build_frame(1, arg.encode()))
            elif name == "unmasked":
                c.send(build_frame(1, arg.encode(), masked=False))
            elif name == "close":
                c.send(close_frame(int(arg)))
            elif name == "trunc":
                c.send(bytes([0x82, 0x80 | 100]) + os.urandom(4) + b"0123456789")
                cs.shutdown(socket.SHUT_WR)
            elif name == "frame":
                f = c.next_frame(deadline)
                if f is None:
                    c.out("EOF instead of a frame" + (" (%d stray bytes)" % len(c.buf) if c.buf else ""))
                    failed = True
                    break
                c.describe(f)
            elif name == "wait":
                end = time.monotonic() + float(arg)
                try:
                    while True:
                        f = c.next_frame(end)
                        if f is None:
                            c.out("EOF")
                            break
                        c.describe(f)
                        if f[0] == 8:
                            break
                except TimeoutError:
                    pass
            elif name == "pings":
                c.out("PINGS %d" % c.pings)
            elif name == "alive":
                rc = w.wait(0)
                c.out("ALIVE" if rc is None else "GONE: %s" % describe_status(rc))
            elif name == "procstatus":
                for line in w.proc_status("Seccomp", "NoNewPrivs"):
                    c.out(line)
            elif name == "open":
                r, _, _ = select.select([cs], [], [], 0)
                closed = bool(r) and cs.recv(1, socket.MSG_PEEK) == b""
                alive = w is None or w.wait(0) is None
                c.out("OPEN" if alive and not closed and not c.eof else
                      "NOT OPEN (eof=%s alive=%s)" % (closed or c.eof, alive))
            elif name == "eof":
                extra, c.buf = c.buf, b""
                while c.fill(deadline):
                    extra, c.buf = extra + c.buf, b""
                if extra:
                    c.out("EXTRA %d %s" % (len(extra), show(extra)))
                c.out("EOF")
                try:
                    cs.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            elif name == "sleep":
                time.sleep(float(arg))
            elif name == "signal":
                os.kill(w.pid, getattr(signal, "SIG" + arg))
                mark = time.monotonic()
            elif name == "exit-within":
                rc = w.wait(max(0.0, mark + float(arg) - time.monotonic()))
                if rc is None:
                    c.out("RUNNING after %s s" % arg)
                    failed = True
                else:
                    c.out("EXITED %d" % rc if rc >= 0 else "EXITED %s" % describe_status(rc))
            elif name == "rst":
                cs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                cs.close()
                c.out("RESET")
                break
            elif name == "flood":
                size = int(arg)
                cs.setblocking(False)
                t0, pending, stalled, limit = time.monotonic(), b"", None, time.monotonic() + 20
                while time.monotonic() < limit:
                    # message i starts with "f%09d" % i (drain checks the order)
                    pending = pending or build_frame(1, (b"f%09d" % flooded + b"f" * size)[:size])
                    try:
                        n = cs.send(pending)
                    except BlockingIOError:
                        n = 0
                    if n:
                        pending = pending[n:]
                        flooded += 0 if pending else 1
                        stalled = None
                        continue
                    if stalled is None:
                        stalled = time.monotonic()
                    elif time.monotonic() - stalled > 0.3:
                        break
                    select.select([], [cs], [], 0.05)
                cs.setblocking(True)
                if pending and len(pending) < len(build_frame(1, b"f" * size)):
                    c.rest = pending  # the frame in flight is finished by drain, while it reads
                    flooded += 1
                c.out("FLOODED %d in %.1f s" % (flooded, (stalled or time.monotonic()) - t0))
            elif name == "drain":
                got = 0
                c.rate = int(arg or 0)
                if c.rest:
                    c.rest_thread = threading.Thread(target=cs.sendall, args=(c.rest,), daemon=True)
                    c.rest_thread.start()
                    c.rest = b""
                while got < flooded:
                    f = c.next_frame(time.monotonic() + a.timeout)
                    if f is None:
                        c.out("EOF")
                        break
                    if f[0] == 1 and f[1].startswith(b"f"):
                        if len(f[1]) >= 10 and f[1][1:10].isdigit() and int(f[1][1:10]) != got:
                            c.out("ORDER: reply %d is message %d" % (got, int(f[1][1:10])))
                            failed = True
                        got += 1
                    else:
                        c.describe(f)
                        if f[0] == 8:
                            break
                    if c.deferred and not c.rest_thread.is_alive():
                        c.send(b"")  # pongs held back while the rest of the flood went out
                c.rate = 0
                c.out("DRAINED %d/%d" % (got, flooded))
            elif name == "big":
                c.send(build_frame(1, pattern(int(arg))))
            elif name == "shut":
                try:
                    cs.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            elif name == "ping":
                while True:
                    f = c.read_frame(deadline)
                    if f is None:
                        c.out("EOF instead of a ping")
                        failed = True
                        break
                    if f[0] == 9:
                        c.pings += 1
                        c.out("PING " + show(f[1]))
                        break
                    c.describe(f[:3])
            elif name == "rate":
                c.rate, c.paced = int(arg), 0.0
            elif name == "mark":
                mark = time.monotonic()
            elif name == "elapsed":
                end = w.end if w is not None and w.rc is not None else time.monotonic()
                c.out("ELAPSED %.2f" % (end - mark))
            elif name == "cpu":
                state = w.sample()
                c.out("CPU %.2f" % (state[2] if state else w.cpu_s))
            elif name == "pid":
                c.out("PID %d" % w.pid)
            elif name == "stop-child":
                kid = stop_child(w.pid, deadline)
                if kid is None:
                    c.out("NO CHILD of wsfilter stopped in %gs" % a.timeout)
                    failed = True
                    break
                c.out("STOPPED %d" % kid)
            elif name == "count":
                end, msgs, size = time.monotonic() + float(arg), 0, 0
                closing = None
                try:
                    while True:
                        f = c.next_frame(end)
                        if f is None or f[0] >= 8 or f[2]:
                            closing = f
                            break
                        if f[0] == 1:
                            try:
                                f[1].decode("utf-8")
                            except UnicodeDecodeError:
                                closing = f
                                break
                        msgs, size = msgs + 1, size + len(f[1])
                except TimeoutError:
                    pass
                c.out("COUNTED %d messages %d B" % (msgs, size))
                if closing is not None:
                    c.describe(closing)
                elif c.eof:
                    c.out("EOF")
            elif name == "mem":
                c.out("VmHWM %d" % vm_hwm_kb(w.pid))
            elif name == "textesc":
                c.send(build_frame(1, unescape(arg).encode("latin-1")))
            elif name == "bin":
                data = os.urandom(int(arg))
                c.sent_bin.append(data)
                c.send(build_frame(2, data))
            elif name == "collect":
                want, got, msgs = int(arg), [], 0
                while sum(map(len, got)) < want:
                    f = c.next_frame(deadline)
                    if f is None or f[0] not in (1, 2):
                        c.out("EOF" if f is None else "UNEXPECTED %s" % OPNAMES.get(f[0], f[0]))
                        failed = True
                        break
                    got.append(f[1])
                    msgs += 1
                got, sent = b"".join(got), b"".join(c.sent_bin)
                same = got == sent[c.collected:c.collected + len(got)]
                at = 0 if same else next((i for i in range(len(got)) if i + c.collected >= len(sent)
                                          or got[i] != sent[c.collected + i]), len(got))
                c.collected += len(got)
                c.out("COLLECTED %d B in %d messages, %s" % (len(got), msgs, "equal" if same else "DIFFER at %d" % at))
                failed |= not same
            else:
                raise SystemExit("wstest script: unknown step " + st)
    except TimeoutError:
        c.out("TIMEOUT " + st)
        failed = True
    except (BrokenPipeError, ConnectionResetError) as e:
        c.out("SEND FAILED %s: %s" % (st, e.__class__.__name__))
    try:
        cs.close()
    except OSError:
        pass
    if w is not None:
        ex, bad_exit = exit_lines(w, a.expect, 5)
        ex_line, fails = ex[0], ex[1:]
        c.out(ex_line)
        for ln in w.log().splitlines():
            c.out("LOG " + ln)
        for f in fails:
            c.out(f)
        failed |= bad_exit
        w.close()
    if syslog_sock:
        syslog_sock.setblocking(False)
        try:
            while True:
                c.out("SYSLOG " + show(syslog_sock.recv(65536)))
        except BlockingIOError:
            pass
        syslog_sock.close()
        os.unlink(a.syslog)
    return 1 if failed or c.bad else 0


# ---------------------------------------------------------------- arguments

def hs_parser(p):
    p.add_argument("--key", default=RFC_KEY, help="Sec-WebSocket-Key value (default: RFC 6455's example)")
    p.add_argument("--random-key", action="store_true")
    p.add_argument("--no-key", action="store_true")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--http", default="HTTP/1.1", help="protocol token of the request line")
    p.add_argument("--request-line", help="the whole request line, as is")
    # the standard header fields: --NAME VALUE, or --no-NAME to leave the field out
    for name, default, what in (("host", "localhost", "Host"), ("upgrade", "websocket", "Upgrade"),
                                ("connection", "Upgrade", "Connection"),
                                ("version", "13", "Sec-WebSocket-Version")):
        p.add_argument("--" + name, default=default, help="%s value (default: %s)" % (what, default))
        p.add_argument("--no-" + name, action="store_true", help="no %s field" % what)
    p.add_argument("--origin")
    p.add_argument("--protocol", action="append", default=[], help="a Sec-WebSocket-Protocol line")
    p.add_argument("--extensions", help="Sec-WebSocket-Extensions value")
    p.add_argument("--header", action="append", default=[], help="an extra header line, as is")
    p.add_argument("--header-case", choices=("lower", "upper"))
    p.add_argument("--pad", type=int, default=0, help="an X-Pad header with this many bytes of value")
    p.add_argument("--no-end", action="store_true", help="leave out the blank line that ends the head")
    return p


def parse_opcode(s):
    if s in OPCODES:
        return OPCODES[s]
    n = int(s, 0)
    if not 0 <= n <= 15:
        raise argparse.ArgumentTypeError("opcode out of range")
    return n


class StepAction(argparse.Action):
    """Keeps --send/--send-hex/--wait-for/--sleep in command-line order."""

    def __call__(self, parser, ns, value, option=None):
        kind = {"--send": "send", "--send-hex": "send-hex", "--wait-for": "wait", "--sleep": "sleep"}[option]
        ns.steps = (getattr(ns, "steps", None) or []) + [(kind, float(value) if kind == "sleep" else value)]


def spawn_options(p):
    p.add_argument("--expect", type=int, choices=range(0, 7), metavar="STATUS",
                   help="the exit status wsfilter must end with (required when it is started)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in wsfilter's environment (python escapes work)")
    p.add_argument("--timeout", type=float, default=10.0, help="kill wsfilter after this long")


def build_parser():
    top = argparse.ArgumentParser(prog="wstest.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="cmd", required=True)
    hs_parser(sub.add_parser("hs", help="a handshake request"))

    p = sub.add_parser("http", help="a plain HTTP request (with Host)")
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("--host", default="localhost")
    p.add_argument("--no-host", action="store_true")
    p.add_argument("--request-line")
    p.add_argument("--header", action="append", default=[], help="an extra header line (python escapes work)")

    p = sub.add_parser("raw", help="these bytes")
    p.add_argument("hex")
    p = sub.add_parser("accept", help="the Sec-WebSocket-Accept value for a key")
    p.add_argument("key")

    p = sub.add_parser("frame", help="one client frame")
    p.add_argument("--opcode", type=parse_opcode, default=1, help="text|binary|cont|close|ping|pong|0..15")
    p.add_argument("--fin", type=int, choices=(0, 1), default=1)
    p.add_argument("--rsv", type=int, choices=range(8), default=0, help="4=RSV1 2=RSV2 1=RSV3")
    p.add_argument("--unmasked", action="store_true")
    p.add_argument("--mask", help="4-byte masking key in hex (default: random)")
    g = p.add_mutually_exclusive_group()
    for f in ("--len7", "--len16", "--len64"):
        g.add_argument(f, action="store_true")
    p.add_argument("--claim-len", type=lambda s: int(s, 0), help="length written in the header")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hex")
    g.add_argument("--text")
    g.add_argument("--size", type=int, help="this many bytes of the test pattern")
    p.add_argument("--offset", type=int, default=0, help="with --size: start at this pattern position")
    p.add_argument("--code", type=int, help="close code before the payload")
    p.add_argument("--reason", default="", help="with --code: close reason")

    p = sub.add_parser("many", help="N data frames, one message each")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--opcode", type=parse_opcode, default=1)
    p.add_argument("--template", default="msg %d")

    def show_options(p):
        p.add_argument("--max-show", type=int, default=120)
        p.add_argument("--no-body", action="store_true", help="the answer to a HEAD: no body")
        p.add_argument("--reasons", action="store_true", help="show close reasons")
        p.add_argument("--hex", action="store_true", help="show payloads in hex")

    p = sub.add_parser("decode", help="strictly describe a server's output read from stdin")
    show_options(p)
    p.add_argument("--messages", action="store_true")
    p.add_argument("--key", default=RFC_KEY, help="the request's Sec-WebSocket-Key, for the 101 check")

    p = sub.add_parser("run", help="run $WSFILTER -- ARGS on a conversation")
    spawn_options(p)
    show_options(p)
    p.add_argument("--frames", action="store_true", help="one line per frame (default: per message)")
    p.add_argument("--transport", default="socketpair", choices=("socketpair", "pipes", "tcp", "tcp6", "inetd"))
    p.add_argument("--pipes", dest="transport", action="store_const", const="pipes")
    p.add_argument("--clear-peer-env", action="store_true", help="no launcher variables in the environment")
    p.add_argument("--no-seccomp", action="store_true",
                   help="run wsfilter where installing a seccomp filter fails (EINVAL)")
    p.add_argument("--nofile", type=int, metavar="N",
                   help="run wsfilter with RLIMIT_NOFILE N (soft and hard): no descriptor >= N")
    p.add_argument("--connect", metavar="HOST:PORT", help="talk to a launcher instead of starting wsfilter")
    p.add_argument("--tls", action="store_true", help="with --connect: TLS")
    p.add_argument("--cafile", help="with --tls: trust this certificate (else no verification)")
    for s in ("--send", "--send-hex", "--wait-for", "--sleep"):
        p.add_argument(s, action=StepAction)
    p.add_argument("--wait-timeout", type=float, default=3.0)
    p.add_argument("--chunkings", default=os.environ.get("WS_CHUNKINGS") or "all",
                   help="comma list of all|byte|random|random:SEED|N; answers must agree")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hold", action="store_true", help="keep our side open until wsfilter's side ends")
    p.add_argument("--linger", action="store_true", help="keep our side open until wsfilter exits")
    p.add_argument("--stall-after", type=float, default=2.0)
    p.add_argument("--time-from", metavar="REGEX", help='print "ELAPSED s": exit time minus the arrival '
                   "of the first line matching REGEX")
    p.add_argument("--show-log", action="store_true", help='print wsfilter\'s stderr as "LOG" lines')

    p = sub.add_parser("stream", help="stream one big message through $WSFILTER")
    spawn_options(p)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--frame-size", type=int, default=0)
    p.add_argument("--opcode", choices=("text", "binary"), default="binary")

    p = sub.add_parser("flood", help="write without reading; see wsfilter stop reading")
    spawn_options(p)
    p.add_argument("--kind", choices=("ping", "message"), default="ping")
    p.add_argument("--bytes", type=int, default=50_000_000)
    p.add_argument("--frame-size", type=int, default=125)
    p.add_argument("--stall", type=float, default=1.0)

    p = sub.add_parser("script", help="a scripted TCP conversation", epilog=SCRIPT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    spawn_options(p)
    p.add_argument("--connect", metavar="HOST:PORT")
    p.add_argument("--stderr", choices=("pipe", "socket"), default="pipe",
                   help='wsfilter\'s fd 2: a file (printed as LOG lines) or the socket (inetd)')
    p.add_argument("--ipv6", action="store_true", help="the connection over ::1")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--pong", action="store_true", help="answer the server's pings")
    p.add_argument("--syslog", metavar="PATH", help="collect datagrams sent to this unix socket")
    p.add_argument("--small-buffers", action="store_true", help="64 KiB kernel socket buffers")
    p.add_argument("--rcvbuf", type=int, metavar="BYTES",
                   help="the client's SO_RCVBUF, set before connect (the window it announces; "
                   "wins over --small-buffers)")
    p.add_argument("--pipes", action="store_true", help="wsfilter's stdin and stdout are two pipes")
    p.add_argument("--nofile", type=int, metavar="N",
                   help="run wsfilter with RLIMIT_NOFILE N (soft and hard): no descriptor >= N")
    p.add_argument("--max-show", type=int, default=0, metavar="N",
                   help="show frames over N bytes in short (<pattern N>, or size and hash)")
    p.add_argument("steps", nargs="*")
    return top


GEN_WORDS = tuple(GENERATORS)


def split_plus(words):
    groups, cur = [], []
    for w in words:
        if w == "+":
            groups.append(cur)
            cur = []
        else:
            cur.append(w)
    return groups + [cur]


def generate(top, group):
    if not group or group[0] not in GEN_WORDS:
        raise SystemExit("wstest: %r is not one of %s" % (" ".join(group), ", ".join(GEN_WORDS)))
    ns = top.parse_args(group)
    return GENERATORS[ns.cmd](ns)


def conversation(top, words):
    """Generator groups joined by + make one write; 'wait REGEX', 'sleep S' and 'then'
    end a write."""
    steps, cur = [], bytearray()

    def flush():
        if cur:
            steps.append(("send", bytes(cur)))
            cur.clear()

    for g in split_plus(words):
        if len(g) == 2 and g[0] in ("wait", "sleep"):
            flush()
            steps.append((g[0], float(g[1]) if g[0] == "sleep" else g[1]))
        elif g == ["then"]:
            flush()
        else:
            cur += generate(top, g)
    flush()
    return steps


def main(argv):
    args = []
    if "--" in argv:
        i = argv.index("--")
        argv, args = argv[:i], argv[i + 1:]
    top = build_parser()
    if argv and argv[0] in GEN_WORDS:
        sys.stdout.buffer.write(b"".join(generate(top, g) for g in split_plus(argv)))
        return 0
    conv = []
    if argv and argv[0] == "run":
        for i, word in enumerate(argv):
            if word in GEN_WORDS:
                argv, conv = argv[:i], argv[i:]
                break
    a = top.parse_args(argv)
    a.args = args
    if a.cmd == "accept":
        print(accept_for(a.key))
        return 0
    if a.cmd == "decode":
        return cmd_decode(a)
    if a.cmd != "script" and a.expect is None and not getattr(a, "connect", None):
        raise SystemExit("wstest %s: --expect STATUS is required (the exit status wsfilter must end with)" % a.cmd)
    lazy()
    import atexit
    atexit.register(kill_live)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_term)
    if a.cmd == "run":
        a.steps = (getattr(a, "steps", None) or []) + conversation(top, conv)
    try:
        return {"run": cmd_run, "stream": cmd_stream, "flood": cmd_flood, "script": cmd_script}[a.cmd](a) or 0
    except Fail as e:
        print("FAIL: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
