#!/usr/bin/python3
"""WebSocket test tool for wsfilter's protocol tests (python3 standard library only).

Subcommands (each writes raw bytes to stdout or reads them from stdin):

  hs [options]              a WebSocket handshake request (RFC 6455 example key by default)
  http METHOD PATH [opts]   a plain HTTP/1.1 request (Host and Connection: close)
  accept KEY                the Sec-WebSocket-Accept value for KEY
  frame [options]           one client frame, masked unless --unmasked
  many --count N [options]  N small masked data frames, one message each
  raw HEX                   these bytes
  A + B + ...               any of the five above, one after the other
                            (e.g. "hs + frame --text hi + frame --opcode close --code 1000")
  decode [--messages]       read a server's output and describe it, one line per frame
  run [options] [CONVERSATION] -- ARGS
                            run $WSFILTER ARGS, write a conversation to it in chosen
                            chunkings, print the decoded answer and "EXIT n"
                            (CONVERSATION: generators joined by +, as above, with
                            "wait REGEX", "sleep S" or "then" between writes, e.g.
                            "hs + frame --fin 0 --text a + wait ^PONG + frame --opcode cont";
                            without one, --send FILE steps or stdin)
  stream [options] -- ARGS  stream one huge message through $WSFILTER without holding
                            it in memory; check the reply; report wsfilter's peak RSS
  flood [options] -- ARGS   send pings or messages without reading the answers;
                            report where wsfilter stopped reading and its peak RSS

Output of decode/run: the HTTP status line and the headers (names in their usual
spelling), "BODY ..." for a plain HTTP answer, then one line per frame
("TEXT fin=1 "abc"", "CONT fin=0 ...", "PING "x"", "PONG "x"", "CLOSE 1000",
"CLOSE" for an empty close payload; reasons with --reasons) or one line per whole data
message ("TEXT "abc - 12"") with control frames where they arrived: decode shows
frames unless --messages, run shows messages unless --frames (a server may cut its
answer into frames as it likes). Anything a server must not send is reported on a
line starting with "MALFORMED:"; decode and run exit 1 when there is one (run also on
a TIMEOUT of a wait step, a kill, or chunkings that disagree). Payloads longer than
--max-show bytes are shown as <pattern N> (the N first bytes equal the --size
pattern) followed by the rest, or as <N bytes sha256:...>; --hex shows payloads in hex.

run ends our side of the connection after the last step (EOF), or with --hold when
wsfilter has ended its side, or with --linger when wsfilter has exited. Its default
chunking is $WS_CHUNKINGS (e.g. all,random:3) or "all".
"""

import argparse
import base64
import os
import re
import struct
import sys


def load_heavy():
    """Modules only run/stream/flood need; the frame builders start faster without them."""
    global array, fcntl, random, select, socket, subprocess, termios, threading, time
    import array
    import fcntl
    import random
    import select
    import socket
    import subprocess
    import termios
    import threading
    import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

OPCODES = {"cont": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10}
OPNAMES = {0: "CONT", 1: "TEXT", 2: "BINARY", 8: "CLOSE", 9: "PING", 10: "PONG"}

# --size payloads repeat this 64-byte alphabet; it contains no space, so a " - N"
# suffix after such a payload is easy to tell apart.
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
PERIOD = len(ALPHABET)


def pattern(n, offset=0):
    """n bytes of the repeating alphabet, starting at stream position offset."""
    start = offset % PERIOD
    reps = (start + n) // PERIOD + 1
    return (ALPHABET * reps)[start:start + n]


_BIG_PATTERN = None


def big_pattern():
    global _BIG_PATTERN
    if _BIG_PATTERN is None:
        _BIG_PATTERN = pattern((1 << 20) + PERIOD)
    return _BIG_PATTERN


def pattern_prefix_len(data):
    """How many leading bytes of data equal pattern(len(data))."""
    pat = big_pattern()
    step = 1 << 20
    mv = memoryview(data)
    pos = 0
    while pos < len(data):
        n = min(step, len(data) - pos)
        if mv[pos:pos + n] == pat[:n]:  # pos is a multiple of 1 MiB, itself a multiple of PERIOD
            pos += n
            continue
        lo, hi = 0, n  # first mismatch inside this piece: binary search on equal prefixes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mv[pos:pos + mid] == pat[:mid]:
                lo = mid
            else:
                hi = mid - 1
        return pos + lo
    return pos


def apply_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def accept_for(key):
    import hashlib
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def quote(data):
    """Show bytes as a double-quoted string: UTF-8 text as is (control characters,
    quotes and backslashes escaped), other bytes as \\xNN."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        s = None
    out = []
    if s is not None:
        for ch in s:
            o = ord(ch)
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\r":
                out.append("\\r")
            elif ch == "\t":
                out.append("\\t")
            elif o < 0x20 or o == 0x7F:
                out.append("\\x%02x" % o)
            elif 0x80 <= o < 0xA0 or o in (0x2028, 0x2029, 0xFEFF) or 0xE000 <= o <= 0xF8FF or o >= 0xF0000:
                out.append("\\u{%x}" % o)
            else:
                out.append(ch)
    else:
        esc = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
        for b in data:
            if b == 0x22 or b == 0x5C:
                out.append("\\" + chr(b))
            elif b in esc:
                out.append(esc[b])
            elif 0x20 <= b < 0x7F:
                out.append(chr(b))
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
    import hashlib
    return "<%d bytes sha256:%s>" % (len(data), hashlib.sha256(data).hexdigest()[:16])


CANONICAL = {
    "sec-websocket-accept": "Sec-WebSocket-Accept",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "sec-websocket-extensions": "Sec-WebSocket-Extensions",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-key": "Sec-WebSocket-Key",
    "www-authenticate": "WWW-Authenticate",
    "x-content-type-options": "X-Content-Type-Options",
    "content-security-policy": "Content-Security-Policy",
}


def canonical(name):
    low = name.lower()
    if low in CANONICAL:
        return CANONICAL[low]
    return "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


VALID_CLOSE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


class Decoder:
    """Incremental parser of what a WebSocket server writes: HTTP head, then either a
    Content-Length body or server frames. lines holds the description so far."""

    def __init__(self, messages=False, max_show=120, no_body=False, reasons=False, as_hex=False):
        self.as_hex = as_hex
        self.messages = messages
        self.max_show = max_show
        self.no_body = no_body
        self.reasons = reasons
        self.buf = bytearray()
        self.lines = []
        self.state = "head"
        self.body_len = 0
        self.closed = False
        self.msg_op = None
        self.msg = bytearray()
        self.after_close_reported = False
        self.malformed = 0

    def bad(self, text):
        self.malformed += 1
        self.lines.append("MALFORMED: " + text)

    def feed(self, data):
        self.buf += data
        while True:
            if self.state == "head":
                if not self.parse_head():
                    return
            elif self.state == "body":
                if len(self.buf) < self.body_len:
                    return
                body = bytes(self.buf[:self.body_len])
                del self.buf[:self.body_len]
                self.lines.append("BODY " + render(body, self.max_show))
                self.state = "after-body"
            elif self.state == "after-body":
                if self.buf:
                    self.bad("%d bytes after the end of the HTTP answer" % len(self.buf))
                    self.buf.clear()
                    self.state = "garbage"
                return
            elif self.state == "frames":
                if not self.parse_frame():
                    return
            else:
                self.buf.clear()
                return

    def finish(self):
        """End of the server's output."""
        if self.state == "head" and self.buf:
            self.bad("output ends inside the HTTP head: %s" % quote(bytes(self.buf[:200])))
        elif self.state == "body":
            self.bad("output ends after %d of %d body bytes" % (len(self.buf), self.body_len))
        elif self.state == "frames" and self.buf:
            self.bad("output ends inside a frame (%d bytes left over)" % len(self.buf))
        self.buf.clear()
        return self.lines

    def parse_head(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self.bad("no end of HTTP head in 64 KiB")
                self.state = "garbage"
                return True
            return False
        head = bytes(self.buf[:end])
        del self.buf[:end + 4]
        try:
            text = head.decode("latin-1")
        except Exception:  # latin-1 decodes anything; kept for clarity
            text = ""
        lines = text.split("\r\n")
        status = lines[0]
        self.lines.append(status)
        m = re.fullmatch(r"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*", status)
        if not m:
            self.bad("bad status line")
        code = int(m.group(1)) if m else 0
        headers = {}
        for line in lines[1:]:
            if "\n" in line or "\r" in line:
                self.bad("bare CR or LF in the HTTP head")
            hm = re.fullmatch(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*", line)
            if not hm:
                self.bad("bad header line %s" % quote(line.encode("latin-1")))
                continue
            name, value = canonical(hm.group(1)), hm.group(2)
            self.lines.append("%s: %s" % (name, value))
            headers.setdefault(name.lower(), []).append(value)
        self.headers = headers
        self.status = code
        if code == 101:
            self.state = "frames"
            return True
        if [v.lower() for v in headers.get("connection", [])] != ["close"]:
            self.bad("HTTP answer without Connection: close")
        cl = headers.get("content-length", [])
        if len(cl) != 1 or not re.fullmatch(r"[0-9]+", cl[0]):
            self.bad("HTTP answer without one valid Content-Length")
            self.state = "garbage"
            return True
        if self.no_body or code == 204 or code == 304 or code < 200:
            self.state = "after-body"
        else:
            self.body_len = int(cl[0])
            self.state = "body"
        return True

    def parse_frame(self):
        b = self.buf
        if len(b) < 2:
            return False
        b0, b1 = b[0], b[1]
        fin, rsv, op = b0 >> 7, (b0 >> 4) & 7, b0 & 15
        masked, n = b1 >> 7, b1 & 127
        pos = 2
        if n == 126:
            if len(b) < 4:
                return False
            n = struct.unpack_from("!H", b, 2)[0]
            pos = 4
            if n < 126:
                self.bad("16-bit length %d should use the 7-bit form" % n)
        elif n == 127:
            if len(b) < 10:
                return False
            n = struct.unpack_from("!Q", b, 2)[0]
            pos = 10
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
        del b[:pos + n]
        if masked:
            self.bad("server frame is masked")
            payload = apply_mask(payload, key)
        if rsv:
            self.bad("RSV bits %d set" % rsv)
        self.frame(fin, op, payload)
        return True

    def frame(self, fin, op, payload):
        if self.closed:
            if not self.after_close_reported:
                self.bad("frame after the close frame")
                self.after_close_reported = True
        name = OPNAMES.get(op)
        if name is None:
            self.bad("reserved opcode %d" % op)
            self.lines.append("OPCODE%d fin=%d %s" % (op, fin, render(payload, self.max_show, self.as_hex)))
            return
        if op >= 8:
            if not fin:
                self.bad("fragmented control frame")
            if len(payload) > 125:
                self.bad("control frame payload of %d bytes" % len(payload))
            if op == 8:
                self.close_frame(payload)
            else:
                self.lines.append("%s %s" % (name, render(payload, self.max_show, self.as_hex)))
            return
        if op == 0 and self.msg_op is None:
            self.bad("continuation frame without a message in progress")
        if op != 0 and self.msg_op is not None:
            self.bad("new data frame while a message is in progress")
            self.msg_op = None
            self.msg = bytearray()
        if op != 0:
            self.msg_op = op
        if not self.messages:
            self.lines.append("%s fin=%d %s" % (name, fin, render(payload, self.max_show, self.as_hex)))
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
                self.lines.append("%s %s" % (OPNAMES[self.msg_op], render(whole, self.max_show, self.as_hex)))
            self.msg_op = None
            self.msg = bytearray()

    def close_frame(self, payload):
        if self.msg_op is not None and self.messages:
            self.lines.append("(unfinished %s message of %d bytes)" % (OPNAMES[self.msg_op], len(self.msg)))
        self.closed = True
        if len(payload) == 0:
            self.lines.append("CLOSE")
            return
        if len(payload) == 1:
            self.bad("close payload of 1 byte")
            self.lines.append("CLOSE %s" % quote(payload))
            return
        code = struct.unpack("!H", payload[:2])[0]
        reason = payload[2:]
        if code not in VALID_CLOSE:
            self.bad("close code %d may not be sent" % code)
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            self.bad("close reason is not UTF-8")
        if self.reasons:
            self.lines.append("CLOSE %d %s" % (code, quote(reason)))
        else:
            self.lines.append("CLOSE %d" % code)


# ---------------------------------------------------------------- requests

def build_handshake(a):
    if a.request_line is not None:
        lines = [a.request_line]
    else:
        lines = ["%s %s %s" % (a.method, a.path, a.http)]
    std = []
    if not a.no_host:
        std.append(("Host", a.host))
    if not a.no_upgrade:
        std.append(("Upgrade", a.upgrade))
    if not a.no_connection:
        std.append(("Connection", a.connection))
    if not a.no_key:
        key = a.key
        if a.random_key:
            key = base64.b64encode(os.urandom(16)).decode()
        std.append(("Sec-WebSocket-Key", key))
    if not a.no_version:
        std.append(("Sec-WebSocket-Version", a.version))
    if a.origin is not None:
        std.append(("Origin", a.origin))
    for p in a.protocol:
        std.append(("Sec-WebSocket-Protocol", p))
    if a.extensions is not None:
        std.append(("Sec-WebSocket-Extensions", a.extensions))
    for name, value in std:
        if a.header_case == "lower":
            name = name.lower()
        elif a.header_case == "upper":
            name = name.upper()
        lines.append("%s: %s" % (name, value))
    for h in a.header:
        lines.append(h)
    if a.pad:
        lines.append("X-Pad: " + "p" * a.pad)
    data = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    if not a.no_end:
        data += b"\r\n"
    return data


def gen_http(a):
    lines = ["%s %s HTTP/1.1" % (a.method, a.path), "Host: %s" % a.host]
    lines += a.header
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def cmd_accept(a):
    print(accept_for(a.key))


def parse_opcode(s):
    if s in OPCODES:
        return OPCODES[s]
    n = int(s, 0)
    if not 0 <= n <= 15:
        raise argparse.ArgumentTypeError("opcode out of range")
    return n


def build_frame(opcode, payload, fin=1, rsv=0, masked=True, mask=None, lenform=None, claim=None):
    b0 = (fin << 7) | (rsv << 4) | opcode
    n = len(payload) if claim is None else claim
    form = lenform
    if form is None:
        form = 7 if n <= 125 else 16 if n <= 65535 else 64
    mbit = 0x80 if masked else 0
    if form == 7:
        if n > 125:
            raise SystemExit("ws.py: length %d does not fit the 7-bit form" % n)
        head = struct.pack("!BB", b0, mbit | n)
    elif form == 16:
        if n > 65535:
            raise SystemExit("ws.py: length %d does not fit the 16-bit form" % n)
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    key = mask if mask is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def gen_frame(a):
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
    lenform = 7 if a.len7 else 16 if a.len16 else 64 if a.len64 else None
    mask = bytes.fromhex(a.mask) if a.mask else None
    if mask is not None and len(mask) != 4:
        raise SystemExit("ws.py: --mask takes 4 bytes in hex")
    return build_frame(a.opcode, payload, a.fin, a.rsv, not a.unmasked, mask, lenform, a.claim_len)


def gen_many(a):
    out = bytearray()
    for i in range(a.first, a.first + a.count):
        out += build_frame(a.opcode, (a.template % i).encode("utf-8"))
    return bytes(out)


GENERATORS = {"hs": build_handshake, "http": gen_http, "frame": gen_frame, "many": gen_many,
              "raw": lambda a: bytes.fromhex(a.hex)}


def cmd_decode(a):
    d = Decoder(messages=a.messages, max_show=a.max_show, no_body=a.no_body, reasons=a.reasons,
                as_hex=a.hex)
    while True:
        chunk = sys.stdin.buffer.read1(1 << 20)
        if not chunk:
            break
        d.feed(chunk)
    for line in d.finish():
        print(line)
    return 1 if d.malformed else 0


# ---------------------------------------------------------------- run

def wsfilter_binary():
    path = os.environ.get("WSFILTER")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(os.path.dirname(here), "wsfilter")
    return path


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
    """One run of wsfilter: our end of a socketpair (or two pipes), a thread that
    collects everything wsfilter writes, and helpers to write and wait."""

    def __init__(self, args, use_pipes, log):
        self.use_pipes = use_pipes
        self.out = bytearray()
        self.cond = threading.Condition()
        self.eof = False
        stderr = subprocess.DEVNULL
        if log:
            self.log_file = open(log, "ab")
            stderr = self.log_file
        if use_pipes:
            in_r, self.wfd = os.pipe()
            self.rfd, out_w = os.pipe()
            self.proc = subprocess.Popen([wsfilter_binary()] + args, stdin=in_r, stdout=out_w,
                                         stderr=stderr, close_fds=True)
            os.close(in_r)
            os.close(out_w)
        else:
            ours, theirs = socket.socketpair()
            self.sock = ours
            self.proc = subprocess.Popen([wsfilter_binary()] + args, stdin=theirs.fileno(),
                                         stdout=theirs.fileno(), stderr=stderr, close_fds=True)
            theirs.close()
            self.wfd = ours.fileno()
            self.rfd = os.dup(ours.fileno())
        os.set_blocking(self.wfd, False)
        self.sync = True
        self.write_dead = False
        self.input_ended = False
        self.notes = []
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
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.out += data
                self.cond.notify_all()

    def unread(self):
        buf = array.array("i", [0])
        req = termios.FIONREAD if self.use_pipes else termios.TIOCOUTQ
        try:
            fcntl.ioctl(self.wfd, req, buf)
        except OSError:
            return 0
        return buf[0]

    def write(self, data, stall_after):
        """Write all of data; False if wsfilter went away or stopped reading."""
        mv = memoryview(data)
        last = time.monotonic()
        while mv:
            if self.write_dead:
                return False
            try:
                n = os.write(self.wfd, mv)
                mv = mv[n:]
                last = time.monotonic()
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

    def drain(self, limit):
        """Wait until wsfilter has read everything written so far, so that the next
        write reaches it as a separate read."""
        if not self.sync:
            return
        deadline = time.monotonic() + limit
        spins = 0
        while self.unread() > 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.sync = False  # it no longer reads; stop waiting for it
                return
            spins += 1
            time.sleep(0 if spins < 20 else 0.0005)

    def end_input(self):
        if self.input_ended:
            return
        self.input_ended = True
        if self.use_pipes:
            try:
                os.close(self.wfd)
            except OSError:
                pass
        else:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def snapshot(self):
        with self.cond:
            return bytes(self.out)


def decode_all(data, a, final):
    d = Decoder(messages=not a.frames, max_show=a.max_show, no_body=a.no_body, reasons=a.reasons,
                as_hex=a.hex)
    d.feed(data)
    if final:
        d.finish()
    return d


def run_once(a, steps, how, seed):
    rng = random.Random(seed)
    conv = Conversation(a.args, a.pipes, a.log)
    timeouts = []
    for kind, val in steps:
        if kind == "send":
            for piece in chunks_of(val, how, rng):
                if not conv.write(piece, a.stall_after):
                    break
                conv.drain(1.0)
        elif kind == "sleep":
            time.sleep(val)
        elif kind == "wait":
            rx = re.compile(val)
            deadline = time.monotonic() + a.wait_timeout
            found = False
            while True:
                with conv.cond:
                    data = bytes(conv.out)
                    eof = conv.eof
                d = decode_all(data, a, False)
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
    killed = False
    try:
        rc = conv.proc.wait(timeout=max(0.1, a.timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        conv.proc.kill()
        rc = conv.proc.wait()
        killed = True
    conv.end_input()
    conv.reader.join(5)
    d = decode_all(conv.snapshot(), a, True)
    lines = list(d.lines) + timeouts + conv.notes
    if killed:
        lines.append("EXIT killed: still running after %gs" % a.timeout)
    elif rc < 0:
        lines.append("EXIT signal %d" % -rc)
    else:
        lines.append("EXIT %d" % rc)
    if a.log:
        conv.log_file.close()
    failed = d.malformed > 0 or bool(timeouts) or killed
    return lines, failed


def cmd_run(a):
    steps = []
    for kind, val in a.steps or []:
        if kind == "send" and isinstance(val, str):
            with open(val, "rb") as f:
                steps.append(("send", f.read()))
        elif kind == "send-hex":
            steps.append(("send", bytes.fromhex(val)))
        else:
            steps.append((kind, val))
    if not any(k == "send" for k, _ in steps):
        steps.insert(0, ("send", sys.stdin.buffer.read()))
    if a.no_body is False:
        first = next(v for k, v in steps if k == "send")
        a.no_body = first.startswith(b"HEAD ")
    hows = a.chunkings.split(",")
    results = []
    any_failed = False
    for i, how in enumerate(hows):
        seed = a.seed + i
        if how.startswith("random:"):
            seed = int(how.split(":", 1)[1])
        lines, failed = run_once(a, steps, how, seed)
        any_failed |= failed
        results.append((how, lines))
    def same(lines):
        # the random suffix numbers may differ between runs, and so may how much of a
        # message that is failed half-way was streamed out before the close
        return [re.sub(r'^((?:TEXT|BINARY|CONT)\b.* - )[0-9]+("?)$', r"\1#\2", x)
                for x in lines if not x.startswith("(unfinished ")]

    first = results[0][1]
    if all(same(lines) == same(first) for _, lines in results):
        for line in first:
            print(line)
        return 1 if any_failed else 0
    print("MISMATCH: the chunkings %s give different answers" % a.chunkings)
    for how, lines in results:
        print("--- chunking %s" % how)
        for line in lines:
            print(line)
    return 1


# ---------------------------------------------------------------- stream / flood

def spawn_on_socketpair(args):
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([wsfilter_binary()] + args, stdin=theirs.fileno(), stdout=theirs.fileno(),
                            stderr=subprocess.DEVNULL, close_fds=True)
    theirs.close()
    return ours, proc


def vm_hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class FrameReader:
    """Reads server frames from a blocking socket, payloads in pieces."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data

    def take(self, n):
        self.fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def head(self):
        """The HTTP head, up to the blank line."""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        end = self.buf.index(b"\r\n\r\n")
        h = bytes(self.buf[:end])
        del self.buf[:end + 4]
        return h.decode("latin-1")

    def frame_header(self):
        b0, b1 = self.take(2)
        n = b1 & 127
        if n == 126:
            n = struct.unpack("!H", self.take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.take(8))[0]
        if b1 & 0x80:
            raise ValueError("server frame is masked")
        if b0 & 0x70:
            raise ValueError("server frame has RSV bits")
        return b0 >> 7, b0 & 15, n

    def pieces(self, n):
        """Yield the next n payload bytes in pieces without keeping them."""
        while n > 0:
            if not self.buf:
                data = self.sock.recv(min(n, 1 << 20))
                if not data:
                    raise EOFError
                self.buf += data
            k = min(n, len(self.buf))
            piece = bytes(self.buf[:k])
            del self.buf[:k]
            n -= k
            yield piece


def cmd_stream(a):
    """Send a.size pattern bytes as one message (one frame, or frames of a.frame_size)
    while reading the answer; check the answer is the same bytes plus the suffix."""
    if a.frame_size and ((1 << 20) % a.frame_size or a.frame_size % PERIOD):
        raise SystemExit("ws.py: --frame-size must be a power of two from 64 to 1 MiB")
    sock, proc = spawn_on_socketpair(a.args)
    sock.settimeout(max(a.timeout, 10.0))  # a stalled wsfilter fails the check, not hangs it
    start = time.monotonic()
    key = os.urandom(4)
    chunk = apply_mask(big_pattern()[:1 << 20], key)
    opcode = OPCODES[a.opcode]
    errors = []

    def send_message():
        try:
            sock.sendall(build_handshake(hs_defaults()))
            left = a.size
            if not a.frame_size:
                sock.sendall(build_frame(opcode, b"", mask=key, claim=a.size))
                while left > 0:
                    n = min(left, len(chunk))
                    sock.sendall(chunk[:n])
                    left -= n
            else:
                first = True
                while left > 0:
                    n = min(left, a.frame_size)
                    op = opcode if first else 0
                    sock.sendall(build_frame(op, b"", fin=int(left == n), mask=key, claim=n))
                    sock.sendall(chunk[:n])
                    left -= n
                    first = False
        except OSError as e:
            errors.append("send failed: %s" % e)

    sender = threading.Thread(target=send_message, daemon=True)
    sender.start()
    reader = FrameReader(sock)
    pat = big_pattern()
    got = 0
    suffix = bytearray()
    frames = 0
    kind = None
    ok = True
    try:
        status = reader.head().split("\r\n")[0]
        print(status)
        if " 101 " not in status + " ":
            raise EOFError
        while True:
            fin, op, n = reader.frame_header()
            frames += 1
            if op >= 8:
                payload = reader.take(n)
                print("%s during the message" % OPNAMES.get(op, "OPCODE%d" % op))
                if op == 8:
                    break
                continue
            if kind is None:
                kind = op
            for piece in reader.pieces(n):
                if got < a.size:
                    k = min(len(piece), a.size - got)
                    at = got % PERIOD
                    if k <= (1 << 20):
                        same = piece[:k] == pat[at:at + k]
                    else:
                        same = piece[:k] == pattern(k, got)
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
        hwm = vm_hwm_kb(proc.pid)
        print("VmHWM %d kB" % hwm)
        sock.sendall(build_frame(8, struct.pack("!H", 1000)))
        fin, op, n = reader.frame_header()
        payload = reader.take(n)
        print("CLOSE %d" % struct.unpack("!H", payload[:2])[0] if n >= 2 else "CLOSE")
        end_after_server(sock)
    except (EOFError, ValueError, OSError) as e:
        errors.append("stream broken: %s" % (e or "EOF from wsfilter"))
    sender.join(30)
    try:
        rc = proc.wait(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed"
    print("elapsed %.1fs" % (time.monotonic() - start))
    for e in errors:
        print("ERROR: " + e)
    print("EXIT %s" % rc)
    return 1 if errors else 0


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


def hs_defaults():
    return hs_parser().parse_args([])


def cmd_flood(a):
    """Write frames without reading anything until wsfilter stops reading (or a.bytes
    are sent); then read everything back and count the answers."""
    sock, proc = spawn_on_socketpair(a.args)
    sock.settimeout(max(a.timeout, 10.0))
    reader = FrameReader(sock)
    errors = []
    sock.sendall(build_handshake(hs_defaults()))
    print(reader.head().split("\r\n")[0])
    if a.kind == "ping":
        frame = build_frame(9, pattern(a.frame_size), mask=b"\x01\x02\x03\x04")
        answer_op = 10
    else:
        frame = build_frame(2, pattern(a.frame_size), mask=b"\x01\x02\x03\x04")
        answer_op = 2
    block = frame * max(1, (256 * 1024) // len(frame))
    sock.setblocking(False)
    sent = 0
    last = time.monotonic()
    while sent < a.bytes:
        off = sent % len(block)
        try:
            n = sock.send(block[off:off + (a.bytes - sent)])
            sent += n
            last = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last > a.stall:
                break
            select.select([], [sock], [], 0.05)
    stalled = sent < a.bytes
    hwm = vm_hwm_kb(proc.pid)
    print("sent %d of %d bytes, %s" % (sent, a.bytes, "then wsfilter stopped reading" if stalled else "all"))
    print("VmHWM %d kB" % hwm)
    # finish the frame cut in the middle, then close
    rest = (len(frame) - sent % len(frame)) % len(frame)
    whole = (sent + rest) // len(frame)
    tail = frame[len(frame) - rest:] + build_frame(8, struct.pack("!H", 1000))
    sock.settimeout(max(a.timeout, 10.0))
    sender = threading.Thread(target=send_quietly, args=(sock, tail), daemon=True)
    sender.start()
    answers = 0
    close = None
    try:
        while True:
            fin, op, n = reader.frame_header()
            for _ in reader.pieces(n):
                pass
            if op == 8:
                close = n
                break
            if fin and (op == answer_op or (op == 0 and answer_op == 2)):
                answers += 1
    except (EOFError, ValueError, OSError) as e:
        errors.append("answer stream broken after %d answers: %s" % (answers, e or "EOF"))
    print("answers %d/%d" % (answers, whole))
    print("close received" if close is not None else "no close received")
    sender.join(10)
    end_after_server(sock)
    try:
        rc = proc.wait(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "killed"
    for e in errors:
        print("ERROR: " + e)
    print("EXIT %s" % rc)
    return 1 if errors else 0


# ---------------------------------------------------------------- arguments

def hs_parser(p=None):
    p = p or argparse.ArgumentParser(prog="ws.py hs")
    p.add_argument("--key", default=RFC_KEY, help="Sec-WebSocket-Key value (default: RFC 6455's example)")
    p.add_argument("--random-key", action="store_true")
    p.add_argument("--no-key", action="store_true")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--http", default="HTTP/1.1", help="protocol version token of the request line")
    p.add_argument("--request-line", help="the whole request line, as is")
    p.add_argument("--host", default="localhost")
    p.add_argument("--no-host", action="store_true")
    p.add_argument("--upgrade", default="websocket")
    p.add_argument("--no-upgrade", action="store_true")
    p.add_argument("--connection", default="Upgrade")
    p.add_argument("--no-connection", action="store_true")
    p.add_argument("--version", default="13", help="Sec-WebSocket-Version value")
    p.add_argument("--no-version", action="store_true")
    p.add_argument("--origin")
    p.add_argument("--protocol", action="append", default=[], help="a Sec-WebSocket-Protocol line (repeatable)")
    p.add_argument("--extensions", help="Sec-WebSocket-Extensions value")
    p.add_argument("--header", action="append", default=[], help="an extra 'Name: value' line (repeatable)")
    p.add_argument("--header-case", choices=("lower", "upper"), help="spelling of the standard header names")
    p.add_argument("--pad", type=int, default=0, help="add an X-Pad header with this many bytes of value")
    p.add_argument("--no-end", action="store_true", help="leave out the blank line that ends the head")
    return p


class StepAction(argparse.Action):
    """Keeps --send/--send-hex/--wait-for/--sleep in command-line order."""

    def __call__(self, parser, ns, value, option=None):
        steps = getattr(ns, "steps", None) or []
        kind = {"--send": "send", "--send-hex": "send-hex", "--wait-for": "wait", "--sleep": "sleep"}[option]
        steps.append((kind, float(value) if kind == "sleep" else value))
        ns.steps = steps


GEN_WORDS = ("hs", "http", "frame", "many", "raw")


def split_plus(words):
    groups, cur = [], []
    for word in words:
        if word == "+":
            groups.append(cur)
            cur = []
        else:
            cur.append(word)
    groups.append(cur)
    return groups


def generate(top, group):
    if not group or group[0] not in GEN_WORDS:
        raise SystemExit("ws.py: %r is not one of %s" % (" ".join(group), ", ".join(GEN_WORDS)))
    ns = top.parse_args(group)
    return GENERATORS[ns.cmd](ns)


def conversation(top, words):
    """Steps of an inline conversation: generator groups joined by + make one write;
    'wait REGEX', 'sleep S' and 'then' end a write."""
    steps, cur = [], bytearray()

    def flush():
        if cur:
            steps.append(("send", bytes(cur)))
            cur.clear()

    for g in split_plus(words):
        if g and g[0] == "wait" and len(g) == 2:
            flush()
            steps.append(("wait", g[1]))
        elif g and g[0] == "sleep" and len(g) == 2:
            flush()
            steps.append(("sleep", float(g[1])))
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
        out = bytearray()
        for g in split_plus(argv):
            out += generate(top, g)
        sys.stdout.buffer.write(out)
        return 0
    conv = []
    if argv and argv[0] == "run":
        for i, word in enumerate(argv):
            if word in GEN_WORDS:
                argv, conv = argv[:i], argv[i:]
                break
    a = top.parse_args(argv)
    a.args = args
    if a.cmd == "run":
        a.steps = (getattr(a, "steps", None) or []) + conversation(top, conv)
    fn = {"accept": cmd_accept, "decode": cmd_decode, "run": cmd_run, "stream": cmd_stream,
          "flood": cmd_flood}[a.cmd]
    if a.cmd in ("run", "stream", "flood"):
        load_heavy()
    return fn(a) or 0


def build_parser():
    top = argparse.ArgumentParser(prog="ws.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="cmd", required=True, prog="ws.py")

    hs_parser(sub.add_parser("hs", help="print a handshake request"))

    p = sub.add_parser("http", help="print a plain HTTP request")
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("--host", default="localhost")
    p.add_argument("--header", action="append", default=[])

    p = sub.add_parser("raw", help="print these bytes")
    p.add_argument("hex", help="the bytes in hex")

    p = sub.add_parser("accept", help="print the Sec-WebSocket-Accept value for a key")
    p.add_argument("key")

    p = sub.add_parser("frame", help="print one client frame")
    p.add_argument("--opcode", type=parse_opcode, default=1, help="text|binary|cont|close|ping|pong|0..15")
    p.add_argument("--fin", type=int, choices=(0, 1), default=1)
    p.add_argument("--rsv", type=int, choices=range(8), default=0, help="RSV bits: 4=RSV1 2=RSV2 1=RSV3")
    p.add_argument("--unmasked", action="store_true")
    p.add_argument("--mask", help="4-byte masking key in hex (default: random)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--len7", action="store_true")
    g.add_argument("--len16", action="store_true")
    g.add_argument("--len64", action="store_true")
    p.add_argument("--claim-len", type=lambda s: int(s, 0), help="length written in the header, whatever the payload")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hex")
    g.add_argument("--text")
    g.add_argument("--size", type=int, help="this many bytes of the test pattern")
    p.add_argument("--offset", type=int, default=0, help="with --size: start at this pattern position")
    p.add_argument("--code", type=int, help="close code to put before the payload")
    p.add_argument("--reason", default="", help="with --code: close reason text")

    p = sub.add_parser("many", help="print N data frames, one message each")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--opcode", type=parse_opcode, default=1)
    p.add_argument("--template", default="msg %d")

    def common(p):
        p.add_argument("--messages", action="store_true", help="one line per whole data message")
        p.add_argument("--max-show", type=int, default=120)
        p.add_argument("--no-body", action="store_true", help="answer to a HEAD request: no body")
        p.add_argument("--reasons", action="store_true", help="show close reasons")
        p.add_argument("--hex", action="store_true", help="show data and ping/pong payloads in hex")

    p = sub.add_parser("decode", help="describe a server's output read from stdin")
    common(p)

    p = sub.add_parser("run", help="run $WSFILTER -- ARGS on a conversation")
    p.add_argument("--frames", action="store_true", help="one line per frame (default: per message)")
    p.add_argument("--max-show", type=int, default=120)
    p.add_argument("--no-body", action="store_true", default=False)
    p.add_argument("--reasons", action="store_true")
    p.add_argument("--hex", action="store_true", help="show data and ping/pong payloads in hex")
    p.add_argument("--send", action=StepAction, help="write this file's bytes (repeatable, in order)")
    p.add_argument("--send-hex", action=StepAction)
    p.add_argument("--wait-for", action=StepAction, metavar="REGEX",
                   help="wait until a decoded line matches (else a TIMEOUT line)")
    p.add_argument("--sleep", action=StepAction, metavar="S")
    p.add_argument("--wait-timeout", type=float, default=3.0)
    p.add_argument("--chunkings", default=os.environ.get("WS_CHUNKINGS") or "all",
                   help="comma list of all|byte|random|random:SEED|N; answers must agree "
                        "(default: $WS_CHUNKINGS or all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hold", action="store_true",
                   help="after the last step keep our side open until wsfilter's side ends")
    p.add_argument("--linger", action="store_true",
                   help="after the last step keep our side open until wsfilter exits")
    p.add_argument("--timeout", type=float, default=10.0, help="kill wsfilter after this long")
    p.add_argument("--stall-after", type=float, default=2.0)
    p.add_argument("--pipes", action="store_true", help="two pipes instead of one socketpair")
    p.add_argument("--log", metavar="FILE", help="save wsfilter's stderr here")

    p = sub.add_parser("stream", help="stream one big message through $WSFILTER")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--frame-size", type=int, default=0, help="fragment size (default: one frame)")
    p.add_argument("--opcode", choices=("text", "binary"), default="binary")
    p.add_argument("--timeout", type=float, default=10.0)

    p = sub.add_parser("flood", help="write without reading; see wsfilter stop reading")
    p.add_argument("--kind", choices=("ping", "message"), default="ping")
    p.add_argument("--bytes", type=int, default=50_000_000)
    p.add_argument("--frame-size", type=int, default=125)
    p.add_argument("--stall", type=float, default=1.0, help="seconds without progress that count as stopped")
    p.add_argument("--timeout", type=float, default=10.0)

    return top


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
