#!/usr/bin/python3
"""Hostile clients against wsfilter, one scenario per name (hostile.bats):

    hostile_cases.py NAME

Each scenario runs wsfilter ($WSFILTER, else ../../wsfilter) through test/lib/wstest.py
on a socketpair or an accepted loopback TCP socket, misbehaves, and checks the answer,
the exit status (a kill by a signal always fails), the time to exit, the peak RSS and
CPU time (wait4, and /proc while it runs) and the log line; it prints "measure NAME:
..." lines and exits 0, or prints "FAIL: ..." and exits 1.
"""

import os
import re
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wstest import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,  # noqa: E402
                    Fail, Reader, Wsfilter, build_frame, check, handshake, sanitizer_build,
                    split_suffix, xor_mask)
import wstest  # noqa: E402

# Bounds, scaled for sanitizer builds (shadow memory, slower code).
ASAN = sanitizer_build()
RSS_LIMIT_KB = 96 * 1024 if ASAN else 8 * 1024
RSS_GROWTH_KB = 16 * 1024 if ASAN else 1024
CPU_SCALE = 8.0 if ASAN else 1.0


def frame(opcode, payload=b"", fin=True, key=None, length=None, rsv=0):
    """One masked client frame; length overrides the length field (a lie about the
    payload that follows); key None draws a random mask key."""
    return build_frame(opcode, payload, fin=fin, rsv=rsv, mask=key, claim=length)


def close_frame(code=1000, reason=b""):
    return frame(OP_CLOSE, struct.pack("!H", code) + reason)


def handshake_request(path="/", extra=b""):
    return handshake(path, extra=extra)


class Server(Wsfilter):
    """wsfilter with --log=stderr, our end wrapped in a Reader."""

    last_log = ""  # stderr of the last one cleaned up, for failure reports

    def __init__(self, args=(), tcp=False, client_sndbuf=None, client_rcvbuf=None):
        super().__init__(["--log=stderr"] + list(args), "tcp" if tcp else "socketpair",
                         sndbuf=client_sndbuf, rcvbuf=client_rcvbuf, timed=True)
        self.reader = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def upgrade(self, timeout=5.0):
        self.reader.upgrade(self.send)

    def expect_exit(self, code, within, log_re=None):
        rc = self.expect(code, within)
        if log_re:
            check(re.search(log_re, self.log_line()),
                  "log line %r does not match /%s/" % (self.log_line(), log_re))
        return rc

    def bounds(self, rss_kb=None, cpu_s=None):
        rss_kb = rss_kb or RSS_LIMIT_KB
        check(self.hwm_kb and self.hwm_kb < rss_kb, "peak RSS %d KiB, limit %d KiB" % (self.hwm_kb, rss_kb))
        if cpu_s is not None:
            check(self.cpu_s < cpu_s * CPU_SCALE, "CPU %.2f s, limit %.2f s" % (self.cpu_s, cpu_s * CPU_SCALE))

    def report(self, name, **extra):
        parts = ["measure %s:" % name]
        if self.end is not None:
            parts.append("wall %.2fs" % (self.end - self.t0))
        parts += ["cpu %.2fs" % self.cpu_s, "peak_rss %d KiB" % self.hwm_kb]
        parts += ["%s %s" % kv for kv in extra.items()]
        print(" ".join(parts), flush=True)
        out = os.environ.get("HOSTILE_MEASURE")
        if out:
            with open(out, "a") as f:
                f.write(" ".join(parts) + "\n")

    def cleanup(self):
        self.close()
        Server.last_log = getattr(self, "last_log", "")


class Sampler(threading.Thread):
    """Samples wsfilter's RSS every few ms while it runs."""

    def __init__(self, server, every=0.02):
        super().__init__(daemon=True)
        self.server, self.every, self.samples = server, every, []  # (t, rss, hwm)
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            s = self.server.sample()
            if s is not None:
                self.samples.append((time.monotonic(), s[0], s[1]))
            self.stopped.wait(self.every)

    def stop(self):
        self.stopped.set()
        if self.is_alive():
            self.join(2)

    def rss_range(self, t_from=0.0):
        r = [s[1] for s in self.samples if s[0] >= t_from]
        return (min(r), max(r)) if r else (0, 0)


class Writer(threading.Thread):
    """Sends chunks from a generator in its own thread, so the client itself never
    deadlocks; counts the bytes that got out."""

    def __init__(self, sock, chunks, pause=0.0):
        super().__init__(daemon=True)
        self.sock, self.chunks, self.pause, self.sent, self.error = sock, chunks, pause, 0, None
        self.done, self.halt = threading.Event(), threading.Event()

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
        """Wait until no byte got out for `quiet` seconds (True) or the writer finished
        (False)."""
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


CASES = {}


def case(fn):
    CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def run_server(args=(), **kw):
    return Server(args, **kw)


def expect_close(s, code, timeout=2.0, what=""):
    got = s.reader.until_close(timeout)
    check(got is not None, "no close frame %s(expected %d)" % (what, code))
    check(got[0] == code, "close code %s %s(expected %d), reason %r" % (got[0], what, code, got[1]))
    return got


def finish_close(s):
    """Answer the server's close and end our side of TCP, as a client does
    once the server has closed (RFC 6455 7.1.1)."""
    try:
        s.send(close_frame(1000))
        s.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def fails_on(s, data, code, what, log_re, timeout=1.0, cpu_s=0.5):
    """Send data: the server fails the connection with close code within timeout
    (what: said of data when it does not), the client answers the close, wsfilter
    exits 3 within max(3, timeout) s with a log line log_re matches, in cpu_s of CPU
    at most.
    Returns (seconds from the send to the close, data frames before it)."""
    t = time.monotonic()
    s.send(data)
    _, _, skipped = expect_close(s, code, timeout, what)
    dt = time.monotonic() - t
    finish_close(s)
    s.expect_exit(3, max(3.0, timeout), log_re)
    if cpu_s is not None:
        s.bounds(cpu_s=cpu_s)
    return dt, skipped


def client_close(s, code=1000):
    """The close handshake started by the client: send close, get the echo,
    then end our side of TCP once the server has."""
    s.send(close_frame(code))
    expect_close(s, code, 2.0)
    s.sock.shutdown(socket.SHUT_WR)


# ---- slowloris -------------------------------------------------------------

@case
def slowloris(_):
    s = run_server(["--handshake-timeout", "2"])
    try:
        req, _ = handshake_request(extra=b"X-Filler: " + b"a" * 200 + b"\r\n")
        stop = threading.Event()
        sent = [0]

        def dribble():
            for b in req[:-2]:  # never the final blank line
                if stop.wait(0.2):
                    return
                try:
                    s.send(bytes([b]))
                    sent[0] += 1
                except OSError:
                    return

        t = threading.Thread(target=dribble, daemon=True)
        t.start()
        head = s.reader.http_head(6.0)
        t_answer = time.monotonic() - s.t0
        stop.set()
        check(head is not None, "no answer to a dribbled request head")
        check(head.startswith("HTTP/1.1 408 "), "answer %r, expected 408" % head.split("\r\n")[0])
        check(1.8 <= t_answer <= 4.0, "408 after %.2f s, expected about 2 s" % t_answer)
        s.sock.shutdown(socket.SHUT_WR)
        s.expect_exit(5, 2.0, r"http 408 .*exit 5")
        t.join(1)
        s.bounds(cpu_s=0.5)
        s.report("slowloris", answer_after="%.2fs" % t_answer, bytes_dribbled=sent[0])
    finally:
        s.cleanup()


# ---- header flood ----------------------------------------------------------

def flood_chunks(total):
    yield b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    line = b"X-Flood: " + b"f" * 1014 + b"\r\n"  # 1 KiB a line
    chunk = line * 4
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


@case
def header_flood(_):
    """1 MiB of headers as fast as possible: 431 when the head passes
    8 KiB, long before the client is through."""
    total = 1 << 20
    s = run_server(["--close-timeout", "1"], client_sndbuf=16384)
    try:
        w = Writer(s.sock, flood_chunks(total))
        w.start()
        head = s.reader.http_head(5.0)
        sent_at_answer = w.sent
        check(head is not None, "no answer to 1 MiB of headers")
        check(head.startswith("HTTP/1.1 431 "), "answer %r, expected 431" % head.split("\r\n")[0])
        # the reader sees the answer a scheduling delay after it was sent, while
        # the writer goes on into wsfilter's discard allowance (256 KiB): half
        # of the flood still shows that wsfilter did not wait for all of it
        check(sent_at_answer < total // 2,
              "the 431 came only after the client had sent %d bytes" % sent_at_answer)
        s.expect_exit(3, 2.0, r"http 431 .*exit 3")
        w.done.wait(3)
        check(w.done.is_set(), "the client is still blocked after wsfilter exited")
        check(w.error is not None,
              "wsfilter read all %d bytes of the flood before it closed" % w.sent)
        s.bounds(cpu_s=0.5)
        s.report("header-flood", client_sent_at_431=sent_at_answer, client_sent=w.sent)
    finally:
        s.cleanup()


@case
def header_flood_endless(_):
    """A flood that never stops after the 431: wsfilter discards it for
    the close timeout at most, then exits."""
    s = run_server(["--close-timeout", "1"], client_sndbuf=65536)
    try:
        w = Writer(s.sock, flood_chunks(1 << 40))
        w.start()
        head = s.reader.http_head(5.0)
        t = time.monotonic()
        check(head is not None and head.startswith("HTTP/1.1 431 "), "answer %r, expected 431" % (head,))
        s.expect_exit(3, 3.0, r"http 431 .*exit 3")
        dt = s.end - t
        check(not w.done.is_set() or w.error is not None, "the flood ended by itself")
        check(dt < 2.5, "wsfilter exited %.2f s after the 431 (close timeout 1 s)" % dt)
        w.halt.set()
        s.bounds(cpu_s=2.0)
        s.report("header-flood-endless", exit_after_431="%.2fs" % dt, client_sent=w.sent)
    finally:
        s.cleanup()


@case
def header_flood_tcp(_):
    """Over TCP, wsfilter stops reading the flood at some point and closes
    with input unread, which sends a reset: the 431 must still reach a
    client that only reads it later."""
    s = run_server(["--close-timeout", "1"], tcp=True)
    try:
        w = Writer(s.sock, flood_chunks(1 << 40))
        w.start()
        s.expect_exit(3, 3.0, r"http 431 .*exit 3")
        time.sleep(0.2)
        head = s.reader.http_head(2.0)
        check(head is not None, "no 431 over TCP (lost to the reset or the close)")
        check(head.startswith("HTTP/1.1 431 "), "answer %r, expected 431" % head.split("\r\n")[0])
        w.halt.set()
        s.bounds(cpu_s=2.0)
        s.report("header-flood-tcp", client_sent=w.sent, client_error=type(w.error).__name__)
    finally:
        s.cleanup()


def leave_after_failure(upgrade, data, answer_re, log_re):
    """The client sends more than wsfilter's 64 KiB input buffer in one go,
    gets the error answer, and leaves: wsfilter notices the EOF at once
    instead of sitting out the close timeout."""
    s = run_server(["--close-timeout", "3"])
    try:
        if upgrade:
            s.upgrade()
        w = Writer(s.sock, [data])
        w.start()
        if upgrade:
            got = s.reader.until_close(2.0)
            answer = "close %s" % (got[0] if got else None)
        else:
            head = s.reader.http_head(2.0)
            answer = head.split("\r\n")[0] if head else "nothing"
        check(re.search(answer_re, answer), "answer %r, expected /%s/" % (answer, answer_re))
        w.halt.set()
        t = time.monotonic()
        s.sock.shutdown(socket.SHUT_RDWR)
        s.sock.close()
        s.expect_exit(3, 4.0, log_re)
        dt = s.end - t
        check(dt < 2.0, "wsfilter exited %.2f s after the client left (close timeout 3 s): "
              "it stopped watching the connection" % dt)
        return s, dt
    except Exception:
        s.cleanup()
        raise


@case
def leave_after_431_big_head(_):
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n"
    s, dt = leave_after_failure(False, data, r"^HTTP/1\.1 431 ", r"http 431 .*exit 3")
    s.report("leave-after-431-big-head", exit_after_client_left="%.2fs" % dt)
    s.cleanup()


@case
def leave_after_1002_big_frame(_):
    data = frame(OP_TEXT, b"x" * 100000, rsv=4)
    s, dt = leave_after_failure(True, data, r"^close 1002$", r"close 1002 by server .*exit 3")
    s.report("leave-after-1002-big-frame", exit_after_client_left="%.2fs" % dt)
    s.cleanup()


# ---- giant frame lengths ---------------------------------------------------

@case
def frame_2p63m1_streams(_):
    s = run_server()
    try:
        s.upgrade()
        key = b"\x11\x22\x33\x44"
        data = bytes(range(256)) * 16  # 4 KiB
        head = frame(OP_BINARY, b"", key=key, length=(1 << 63) - 1)
        s.send(head)
        got = bytearray()
        for i in range(4):
            s.send(xor_mask(data, key))  # the key period is 4, each 4 KiB starts aligned
            time.sleep(0.02)
        deadline = time.monotonic() + 3
        while len(got) < 4 * len(data) and time.monotonic() < deadline:
            f = s.reader.frame(max(0.0, deadline - time.monotonic()))
            check(f is not None, "streaming stopped after %d bytes" % len(got))
            fin, op, payload = f
            check(not fin, "a final frame inside a 2^63-1 byte message")
            check(op in (OP_BINARY, OP_CONT) and (op == OP_BINARY) == (not got),
                  "opcode %d at offset %d" % (op, len(got)))
            got += payload
        check(bytes(got) == data * 4, "streamed %d bytes, not the 16 KiB sent" % len(got))
        samp = s.sample()
        t_close = time.monotonic()
        s.sock.close()
        s.expect_exit(4, 2.0, r"client left without a close, mid-payload.*exit 4")
        s.bounds(cpu_s=0.5)
        s.report("frame-2^63-1", streamed=len(got), exit_after_close="%.3fs" % (s.end - t_close),
                 rss_while_streaming="%d KiB" % (samp[0] if samp else -1))
    finally:
        s.cleanup()


@case
def frame_2p63m1_max_message(_):
    s = run_server(["--max-message", "1000000"])
    try:
        s.upgrade()
        dt, _ = fails_on(s, frame(OP_BINARY, b"", length=(1 << 63) - 1), 1009,
                         "for a 2^63-1 byte frame header ", r"close 1009 by server .*exit 3")
        s.report("frame-2^63-1-max-message", close_after="%.3fs" % dt)
    finally:
        s.cleanup()


@case
def frame_2p63(_):
    s = run_server()
    try:
        s.upgrade()
        fails_on(s, frame(OP_BINARY, b"", length=1 << 63), 1002,
                 "for a 64-bit length with the top bit set ", r"close 1002 by server .*exit 3")
        s.report("frame-2^63")
    finally:
        s.cleanup()


# ---- endless fragments -----------------------------------------------------

@case
def endless_fragments(_):
    n = 100000
    s = run_server()
    samp = Sampler(s)
    try:
        s.upgrade()
        samp.start()

        one = frame(OP_CONT, b"b", fin=False)  # same mask key each time: fine
        empty = frame(OP_CONT, b"", fin=False)

        def chunks():
            yield frame(OP_TEXT, b"a", fin=False)
            for i in range(n // 1000):
                yield one * 1000
                yield empty * 1000
            yield frame(OP_CONT, b"z", fin=True)

        w = Writer(s.sock, chunks())
        w.start()
        got = 0
        frames = 0
        t_mid = None
        deadline = time.monotonic() + 30
        while True:
            f = s.reader.frame(max(0.0, deadline - time.monotonic()))
            check(f is not None, "stream ended after %d bytes in %d frames" % (got, frames))
            fin, op, payload = f
            check(op == (OP_TEXT if frames == 0 else OP_CONT), "opcode %d in frame %d" % (op, frames))
            frames += 1
            if fin:
                body, num = split_suffix(payload)
                got += len(body)
                break
            got += len(payload)
            if t_mid is None and got > n // 2:
                t_mid = time.monotonic()
        check(got == n + 2, "reply carried %d bytes, expected %d" % (got, n + 2))
        lo, hi = samp.rss_range(t_mid or 0)
        samp.stop()
        check(hi - lo <= RSS_GROWTH_KB, "RSS grew from %d to %d KiB during the second half" % (lo, hi))
        client_close(s)
        s.expect_exit(0, 3.0, r"in 1 msg .*close 1000 by client.*exit 0")
        s.bounds(cpu_s=3.0)
        s.report("endless-fragments", fragments=2 * n + 2, reply_frames=frames,
                 rss_second_half="%d..%d KiB" % (lo, hi))
    finally:
        samp.stop()
        s.cleanup()


def ping_sync(s, tag, timeout=2.0):
    """Send a ping and skip replies up to its pong: everything sent before
    has been processed.  Returns the data frames skipped, or raises Fail
    with the close code if a close came first."""
    s.send(frame(OP_PING, tag))
    skipped = []
    deadline = time.monotonic() + timeout
    while True:
        f = s.reader.frame(max(0.0, deadline - time.monotonic()))
        check(f is not None, "no pong for ping %r" % tag)
        if f[1] == OP_PONG and f[2] == tag:
            return skipped
        if f[1] == OP_CLOSE:
            code = struct.unpack("!H", f[2][:2])[0] if len(f[2]) >= 2 else None
            raise Fail("close %s (%r) before pong %r" % (code, f[2][2:], tag))
        skipped.append(f)


@case
def endless_fragments_max_message(_):
    limit = 10000
    s = run_server(["--max-message", str(limit)])
    try:
        s.upgrade()
        s.send(frame(OP_TEXT, b"a", fin=False) +
               b"".join(frame(OP_CONT, b"b", fin=False) for _ in range(limit - 1)))
        echoed = sum(len(f[2]) for f in ping_sync(s, b"at-limit"))
        check(echoed == limit, "echoed %d bytes at the limit, expected %d" % (echoed, limit))
        dt, skipped = fails_on(s, frame(OP_CONT, b"c", fin=False), 1009, "one byte over --max-message ",
                               r"close 1009 by server \(message over --max-message\).*exit 3")
        check(skipped == 0, "%d data frames after crossing the limit" % skipped)
        s.report("endless-fragments-max-message", close_after_crossing="%.3fs" % dt)
    finally:
        s.cleanup()


# ---- a big message trickled ------------------------------------------------

@case
def big_message_trickled(_):
    size = 64 << 20
    piece = 16384
    s = run_server()
    samp = Sampler(s)
    try:
        s.upgrade()
        samp.start()
        key = os.urandom(4)
        block = os.urandom(piece)
        masked = xor_mask(block, key)  # 16 KiB pieces keep the key phase aligned

        def chunks():
            yield frame(OP_BINARY, b"", key=key, length=size)
            for i in range(size // piece):
                yield masked
                if i % 64 == 63:
                    time.sleep(0.01)  # a trickle: 64 pauses, a few seconds in all

        w = Writer(s.sock, chunks())
        t0 = time.monotonic()
        w.start()
        got = 0
        frames = 0
        bad = None
        t_mid = None
        deadline = time.monotonic() + 40
        while True:
            f = s.reader.frame(max(0.0, deadline - time.monotonic()))
            check(f is not None, "reply ended after %d bytes" % got)
            fin, op, payload = f
            frames += 1
            if fin:
                body, num = split_suffix(payload)
            else:
                body = payload
            # every byte compared against the block sent at its offset
            off = got % piece
            mv = memoryview(body)
            i = 0
            while i < len(body) and bad is None:
                k = min(piece - off, len(body) - i)
                if mv[i:i + k] != block[off:off + k]:
                    bad = got + i
                i += k
                off = 0
            got += len(body)
            if t_mid is None and got >= size // 4:
                t_mid = time.monotonic()
            if fin:
                break
        dt = time.monotonic() - t0
        check(bad is None, "reply differs from the message at byte %d" % (bad or 0))
        check(got == size, "reply carried %d bytes, expected %d" % (got, size))
        check(1 <= num <= 1000, "suffix number %d" % num)
        lo, hi = samp.rss_range(t_mid or 0)
        samp.stop()
        check(hi - lo <= RSS_GROWTH_KB, "RSS grew from %d to %d KiB while streaming" % (lo, hi))
        client_close(s)
        s.expect_exit(0, 3.0, r"in 1 msg %d B, out 1 msg .*exit 0" % size)
        s.bounds(cpu_s=4.0)
        s.report("64MiB-trickled", seconds="%.2f" % dt, reply_frames=frames,
                 rss_after_first_quarter="%d..%d KiB" % (lo, hi))
    finally:
        samp.stop()
        s.cleanup()


@case
def big_message_max_message(_):
    limit = 1000000
    piece = 65536
    s = run_server(["--max-message", str(limit)])
    try:
        s.upgrade()
        data = os.urandom(piece)
        below = limit // piece  # 15 pieces: 983,040 bytes
        w = Writer(s.sock, [frame(OP_BINARY if i == 0 else OP_CONT, data, fin=False)
                            for i in range(below)], pause=0.005)
        w.start()
        echoed = 0
        while echoed < below * piece:
            f = s.reader.frame(3.0)
            check(f is not None and f[1] in (OP_BINARY, OP_CONT),
                  "echo stopped at %d bytes below the limit: %r" % (echoed, f and f[:2]))
            echoed += len(f[2])
        w.join(3)
        echoed += sum(len(f[2]) for f in ping_sync(s, b"below"))
        check(echoed == below * piece, "echoed %d bytes below the limit, expected %d" % (echoed, below * piece))
        dt, skipped = fails_on(s, frame(OP_CONT, data, fin=False), 1009,
                               "when the message crosses --max-message ", r"close 1009 by server .*exit 3")
        s.report("big-message-max-message", sent_before_crossing=below * piece,
                 close_after_crossing="%.3fs" % dt, frames_after_crossing=skipped)
    finally:
        s.cleanup()


# ---- floods while the client does not read ---------------------------------

@case
def ping_flood(_):
    total = 50 * 1000 * 1000
    per = 125
    count = total // (per + 6)
    s = run_server(client_rcvbuf=65536)
    samp = Sampler(s)
    try:
        s.upgrade()
        samp.start()
        pad = b"p" * (per - 8)
        key = b"\x5a\xa5\x0f\xf0"
        k8 = int.from_bytes(key * 2, "big")
        head = bytes([0x80 | OP_PING, 0x80 | per]) + key
        masked_pad = xor_mask(pad, key)  # pad starts at payload offset 8

        def ping(i):
            return head + (i ^ k8).to_bytes(8, "big") + masked_pad

        def pong(i):
            return bytes([0x80 | OP_PONG, per]) + struct.pack("!Q", i) + pad

        batch = 500

        def chunks():
            for base in range(0, count, batch):
                yield b"".join(ping(i) for i in range(base, min(count, base + batch)))

        w = Writer(s.sock, chunks())
        w.start()
        stalled = w.stalled(quiet=0.5, limit=15)
        check(stalled, "the pinging client was never blocked (sent %d of %d bytes)" % (w.sent, total))
        sent_at_stall = w.sent
        s1 = s.sample()
        time.sleep(0.5)
        s2 = s.sample()
        check(s1 and s2, "wsfilter is gone while the client was not reading")
        check(w.sent < 8 << 20, "the client got %d bytes out while not reading" % w.sent)
        check(s2[0] - s1[0] <= RSS_GROWTH_KB / 4, "RSS grew from %d to %d KiB while blocked" % (s1[0], s2[0]))
        check(sent_at_stall < 8 << 20, "%d bytes accepted before wsfilter stopped reading" % sent_at_stall)
        # now read everything: every pong, in order, byte for byte
        t0 = time.monotonic()
        r = s.reader
        for base in range(0, count, batch):
            want = b"".join(pong(i) for i in range(base, min(count, base + batch)))
            got = r.exact(len(want), 10.0)
            if len(got) < len(want) and got == want[:len(got)]:
                raise Fail("pongs stop at pong %d of %d (%s; client sent %d bytes, writer %s; "
                           "wsfilter %s, rss/hwm/cpu %s, read %s bytes; log %r)"
                           % (base + len(got) // (per + 2), count,
                              "EOF" if r.eof else "nothing for 10 s", w.sent,
                              "done %r" % (w.error,) if w.done.is_set() else "blocked",
                              wstest.describe_status(s.wait(0)),
                              s.sample(), s.read_chars(), s.log_line()))
            if got != want:
                at = next((j for j in range(len(got)) if got[j] != want[j]), len(got))
                raise Fail("pongs differ from the pings at pong %d (byte %d of %d): %r"
                           % (base + at // (per + 2), at, len(want), got[at - at % (per + 2):][:16]))
        dt = time.monotonic() - t0
        w.done.wait(5)
        check(w.done.is_set() and w.error is None, "writer: %r" % (w.error,))
        samp.stop()
        client_close(s)
        s.expect_exit(0, 3.0, r"close 1000 by client.*exit 0")
        s.bounds(cpu_s=8.0)
        s.report("ping-flood", pings=count, bytes=w.sent, accepted_before_block=sent_at_stall,
                 rss_while_blocked="%d->%d KiB" % (s1[0], s2[0]), drain_seconds="%.2f" % dt)
    finally:
        samp.stop()
        s.cleanup()


@case
def many_messages_unread(_):
    n = 100000
    s = run_server(["--echo"])
    samp = Sampler(s)
    try:
        s.upgrade()
        samp.start()

        def chunks():
            for base in range(0, n, 1000):
                yield b"".join(frame(OP_TEXT, b"message %d" % i) for i in range(base, base + 1000))

        w = Writer(s.sock, chunks())
        w.start()
        stalled = w.stalled(quiet=0.5, limit=20)
        check(stalled, "the client was never blocked: wsfilter read all %d bytes while nobody read "
              "its replies" % w.sent)
        sent_at_stall = w.sent
        rss_blocked = s.sample()
        r = s.reader
        t0 = time.monotonic()
        deadline = t0 + 40
        for i in range(n):
            m = r.message(max(0.0, deadline - time.monotonic()))
            check(m is not None, "reply %d of %d never came (deadlock?)" % (i, n))
            check(m == (OP_TEXT, b"message %d" % i), "reply %d is %r" % (i, m))
        dt = time.monotonic() - t0
        w.done.wait(5)
        check(w.done.is_set() and w.error is None, "writer: %r" % (w.error,))
        samp.stop()
        client_close(s)
        s.expect_exit(0, 3.0, r"in %d msg .*out %d msg .*exit 0" % (n, n))
        s.bounds(cpu_s=8.0)
        s.report("100k-messages-unread", writer_blocked=stalled, accepted_before_block=sent_at_stall,
                 rss_while_blocked="%d KiB" % (rss_blocked[0] if rss_blocked else -1),
                 drain_seconds="%.2f" % dt)
    finally:
        samp.stop()
        s.cleanup()


# ---- disconnects -----------------------------------------------------------

def disconnect(name, partial, log_re, upgrade=True, show_log=False):
    """Scenario NAME: after the handshake (or without it) the client sends partial and
    leaves; wsfilter exits 4 within 1 s with a log line that log_re matches (reported
    too with show_log)."""
    s = run_server()
    try:
        if upgrade:
            s.upgrade()
        s.send(partial)
        time.sleep(0.1)
        t = time.monotonic()
        s.sock.close()
        s.expect_exit(4, 1.0, log_re)
        s.bounds(cpu_s=0.5)
        extra = {"log": repr(s.log_line())} if show_log else {}
        s.report(name, exit_after_close="%.3fs" % (s.end - t), **extra)
    finally:
        s.cleanup()


@case
def disconnect_mid_handshake(name):
    req, _ = handshake_request()
    disconnect(name, req[:40], r"client left during the handshake.*exit 4", upgrade=False)


@case
def disconnect_mid_header(name):
    disconnect(name, frame(OP_TEXT, b"x" * 300)[:3], r"client left without a close, mid-frame.*exit 4")


@case
def disconnect_mid_payload(name):
    disconnect(name, frame(OP_TEXT, b"x" * 300)[:100], r"client left without a close, mid-payload.*exit 4")


@case
def disconnect_mid_close(name):
    # a close frame whose 2-byte code has only arrived half
    disconnect(name, close_frame(1000)[:7], r"client left without a close.*exit 4", show_log=True)


# ---- UTF-8 split across frames ---------------------------------------------

VALID = [b"\xc3\xa9", b"\xdf\xbf", b"\xe2\x82\xac", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xef\xbf\xbf",
         b"\xf0\x9f\x98\x80", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf"]


def invalid_sequences():
    """(label, bytes) with the bad byte at each position of 2-, 3- and
    4-byte sequences, and the range errors of RFC 3629."""
    out = []
    for seq in (b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80"):
        n = len(seq)
        for pos in range(n):
            subs = [b"\x80", b"\xff"] if pos == 0 else [b"A", b"\xc3", b"\xff"]
            for sub in subs:
                out.append(("%d-byte, byte %d = %s" % (n, pos + 1, sub.hex()), seq[:pos] + sub + seq[pos + 1:]))
    out += [("overlong 2-byte", b"\xc1\xbf"), ("overlong 3-byte", b"\xe0\x9f\xbf"),
            ("surrogate", b"\xed\xa0\x80"), ("overlong 4-byte", b"\xf0\x8f\xbf\xbf"),
            ("above U+10FFFF", b"\xf4\x90\x80\x80"), ("lead F5", b"\xf5\x80\x80\x80")]
    return out


def splits(data):
    """Fragmentations of data: two parts at every split point, and one
    fragment per byte."""
    out = [[data[:k], data[k:]] for k in range(1, len(data))]
    out.append([data[i:i + 1] for i in range(len(data))])
    return out


def fragments(parts, fin_last=True):
    fs = []
    for i, p in enumerate(parts):
        fs.append(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=fin_last and i == len(parts) - 1))
    return b"".join(fs)


@case
def utf8_invalid_split(_):
    cases = []
    for label, bad in invalid_sequences():
        for parts in splits(b"ab" + bad + b"cd"):
            cases.append((label, parts))
    # a message that ends inside a sequence: 1..n-1 bytes of each length
    for seq in (b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80"):
        for k in range(1, len(seq)):
            for parts in splits(b"ab" + seq[:k]):
                cases.append(("truncated %d of %d" % (k, len(seq)), parts))
    worst = [0, 0.0]
    failures = []
    lock = threading.Lock()

    def one(label, parts):
        s = run_server()
        try:
            s.upgrade()
            fails_on(s, fragments(parts), 1007, "",
                     r"close 1007 by server \(invalid UTF-8 in a text message\).*exit 3", timeout=5.0)
            with lock:
                worst[0] = max(worst[0], s.hwm_kb)
                worst[1] = max(worst[1], s.cpu_s)
        except Exception as e:  # noqa: BLE001 - reported with the case
            with lock:
                failures.append("%s split as %r: %s: %s" % (label, parts, type(e).__name__, e))
        finally:
            s.cleanup()

    todo = list(cases)

    def worker():
        while True:
            with lock:
                if not todo or len(failures) > 5:
                    return
                label, parts = todo.pop()
            one(label, parts)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not failures, "; ".join(failures))
    print("measure utf8-invalid-split: cases %d worst_peak_rss %d KiB worst_cpu %.2fs"
          % (len(cases), worst[0], worst[1]))


@case
def utf8_invalid_fails_fast(_):
    """The bad byte in a non-final fragment fails the connection without
    waiting for the rest of the message."""
    s = run_server()
    try:
        s.upgrade()
        fails_on(s, frame(OP_TEXT, b"ok \xe2\x82", fin=False) + frame(OP_CONT, b"A", fin=False), 1007,
                 "for a bad byte in a non-final fragment ", r"close 1007 .*exit 3", cpu_s=None)
        s.report("utf8-fails-fast")
    finally:
        s.cleanup()


@case
def utf8_valid_split(_):
    s = run_server(["--echo"])
    try:
        s.upgrade()
        msgs = []
        for seq in VALID:
            for parts in splits(b"ab" + seq + b"cd"):
                msgs.append(parts)
            for parts in splits(seq):
                msgs.append(parts)
        for parts in msgs:
            s.send(fragments(parts))
        for parts in msgs:
            m = s.reader.message(2.0)
            check(m is not None, "no reply to %r" % parts)
            check(m == (OP_TEXT, b"".join(parts)), "reply %r to %r" % (m, parts))
        client_close(s)
        s.expect_exit(0, 3.0, r"in %d msg .*exit 0" % len(msgs))
        s.bounds(cpu_s=0.5)
        s.report("utf8-valid-split", messages=len(msgs))
    finally:
        s.cleanup()


# ---- idle and keepalive ----------------------------------------------------

@case
def idle_timeout(_):
    s = run_server(["--idle-timeout", "1"])
    try:
        s.upgrade()
        t = time.monotonic()
        code, reason, _ = expect_close(s, 1001, 3.0, "from an idle connection ")
        dt = time.monotonic() - t
        check(0.9 <= dt <= 3.0, "closed after %.2f s idle, expected about 1 s" % dt)
        finish_close(s)
        s.expect_exit(5, 3.0, r"close 1001 by server \(idle for 1 s\).*exit 5")
        s.bounds(cpu_s=0.3)
        s.report("idle-timeout", close_after="%.2fs" % dt, reason=repr(reason))
    finally:
        s.cleanup()


def answer_pings(s, seconds):
    """Answer every ping for `seconds`; returns the pings seen, raises Fail
    on a close."""
    pings = 0
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return pings
        f = s.reader.frame(left)
        if f is None:
            check(not s.reader.eof, "connection closed after %d pings" % pings)
            continue
        check(f[1] != OP_CLOSE, "close frame %r after %d pings" % (f[2], pings))
        if f[1] == OP_PING:
            check(f[2] == b"wsfilter", "ping payload %r" % f[2])
            pings += 1
            s.send(frame(OP_PONG, f[2]))


@case
def keepalive_answered(_):
    s = run_server(["--ping-interval", "1"])
    try:
        s.upgrade()
        pings = answer_pings(s, 3.5)
        check(pings >= 2, "only %d pings in 3.5 s with --ping-interval 1" % pings)
        check(s.wait(0) is None, "wsfilter exited: %s" % wstest.describe_status(s.rc))
        client_close(s)
        s.expect_exit(0, 3.0, r"close 1000 by client.*exit 0")
        s.bounds(cpu_s=0.3)
        s.report("keepalive-answered", pings_in_3_5s=pings)
    finally:
        s.cleanup()


@case
def keepalive_unanswered(_):
    s = run_server(["--ping-interval", "1", "--ping-timeout", "1"])
    try:
        s.upgrade()
        t = time.monotonic()
        pings = 0
        while True:
            f = s.reader.frame(max(0.0, t + 4.0 - time.monotonic()))
            check(f is not None, "no close frame when pings go unanswered (expected 1011)")
            if f[1] != OP_PING:
                break
            pings += 1
        dt = time.monotonic() - t
        check(f[1] == OP_CLOSE, "a frame of opcode %d among the pings" % f[1])
        code = struct.unpack("!H", f[2][:2])[0] if len(f[2]) >= 2 else None
        check(code == 1011, "close code %s when pings go unanswered (expected 1011)" % code)
        check(pings >= 1, "close 1011 without a ping before it")
        check(1.5 <= dt <= 4.5, "closed %.2f s after the handshake, expected about 2 s" % dt)
        finish_close(s)
        s.expect_exit(5, 3.0, r"close 1011 by server \(no pong within 1 s\).*exit 5")
        s.report("keepalive-unanswered", close_after="%.2fs" % dt, pings=pings)
    finally:
        s.cleanup()


@case
def idle_with_answered_pings(_):
    """--idle-timeout counts any byte from the client (README): pongs to
    the keepalive pings keep the connection open."""
    s = run_server(["--idle-timeout", "2", "--ping-interval", "1"])
    try:
        s.upgrade()
        pings = answer_pings(s, 3.5)
        check(pings >= 2, "only %d pings in 3.5 s" % pings)
        client_close(s)
        s.expect_exit(0, 3.0, r"exit 0")
        s.report("idle-with-answered-pings", pings_in_3_5s=pings)
    finally:
        s.cleanup()


def run_idle_nonreader(extra):
    """A client that sends until wsfilter stops reading and never reads a
    byte: wsfilter's input goes quiet, so --idle-timeout 2 ends it."""
    s = run_server(["--echo", "--idle-timeout", "2", "--close-timeout", "1"] + extra)
    try:
        s.upgrade()
        msg = frame(OP_BINARY, b"x" * 1000)
        w = Writer(s.sock, (msg * 100 for _ in range(1000)))
        w.start()
        check(w.stalled(quiet=0.5, limit=10), "the client was never blocked (sent %d bytes)" % w.sent)
        t = time.monotonic()
        try:
            s.expect_exit(5, 6.0, r"idle for 2 s\).*exit 5")
        except Fail as e:
            raise Fail("%s; the client blocked after %d bytes" % (e, w.sent))
        finally:
            w.halt.set()
        dt = s.end - t
        s.bounds(cpu_s=0.5)
        return s, dt, w.sent
    except Exception:
        s.cleanup()
        raise


@case
def idle_nonreader(_):
    s, dt, sent = run_idle_nonreader([])
    s.report("idle-nonreader", exit_after_client_blocked="%.2fs" % dt, client_sent=sent)
    s.cleanup()


@case
def idle_nonreader_with_pings(_):
    # --send-timeout 10: the send timeout would otherwise be the ping timeout
    # (1 s) and end this client first; here the idle timeout is under test
    s, dt, sent = run_idle_nonreader(["--ping-interval", "1", "--send-timeout", "10"])
    s.report("idle-nonreader-with-pings", exit_after_client_blocked="%.2fs" % dt, client_sent=sent)
    s.cleanup()


# ---- nothing lost at the close ---------------------------------------------

def nothing_lost(shut_wr, tcp):
    n = 1000
    s = run_server(tcp=tcp)
    try:
        s.upgrade()
        s.send(b"".join(frame(OP_TEXT, b"m%d" % i) for i in range(n)) + close_frame(1000, b"bye"))
        if shut_wr:
            s.sock.shutdown(socket.SHUT_WR)
        for i in range(n):
            m = s.reader.message(3.0)
            check(m is not None, "reply %d of %d missing (connection ended)" % (i, n))
            check(m[0] == OP_TEXT, "frame opcode %d where reply %d was due" % (m[0], i))
            body, _ = split_suffix(m[1])
            check(body == b"m%d" % i, "reply %d is %r" % (i, m[1]))
        f = s.reader.frame(2.0)
        check(f is not None and f[1] == OP_CLOSE, "no close frame after the replies: %r" % (f,))
        check(f[2][:2] == struct.pack("!H", 1000), "close payload %r" % f[2])
        rest = s.reader.rest(2.0)
        check(rest == b"" and s.reader.eof, "after the close: %r, eof %s" % (rest[:40], s.reader.eof))
        if not shut_wr:
            s.sock.shutdown(socket.SHUT_WR)
        s.expect_exit(0, 3.0, r"in %d msg .*out %d msg .*close 1000 by client.*exit 0" % (n, n))
        s.bounds(cpu_s=0.5)
        return s
    except Exception:
        s.cleanup()
        raise


@case
def nothing_lost_one_write(_):
    s = nothing_lost(False, False)
    s.report("nothing-lost-one-write")
    s.cleanup()


@case
def nothing_lost_half_close(_):
    s = nothing_lost(True, False)
    s.report("nothing-lost-half-close")
    s.cleanup()


@case
def nothing_lost_half_close_tcp(_):
    s = nothing_lost(True, True)
    s.report("nothing-lost-half-close-tcp")
    s.cleanup()


# ---- a reset while wsfilter writes ----------------------------------------

@case
def reset_during_reply(_):
    """A client resets the TCP connection (SO_LINGER 0) while wsfilter is in the middle
    of writing the echo of a 256 MiB message it does not read: wsfilter notices and exits 4."""
    size = 256 << 20
    s = run_server(["--echo"], tcp=True, client_rcvbuf=65536)
    try:
        s.upgrade()
        key = os.urandom(4)
        block = xor_mask(os.urandom(65536), key)  # 64 KiB pieces keep the key phase aligned
        s.send(frame(OP_BINARY, b"", key=key, length=size))
        s.sock.setblocking(False)
        sent, off, quiet_since, deadline = 0, 0, None, time.monotonic() + 20
        while time.monotonic() < deadline and sent < size:  # until wsfilter stops reading for 0.5 s
            try:
                n = s.sock.send(block[off:])
                sent, off = sent + n, (off + n) % len(block)
                quiet_since = None
            except BlockingIOError:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 0.5:
                    break
                time.sleep(0.01)
        check(s.wait(0) is None, "wsfilter is gone before the reset: %s" % wstest.describe_status(s.rc))
        check(sent < size, "wsfilter read the whole 256 MiB message while nobody read its echo")
        t = time.monotonic()
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sock.close()
        s.expect_exit(4, 3.0, r"\(client reset the connection\), exit 4$")
        dt = s.end - t
        s.bounds(cpu_s=1.0)
        s.report("reset-during-reply", client_sent=sent, exit_after_reset="%.3fs" % dt)
    finally:
        s.cleanup()


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: cases.py {%s}" % ",".join(sorted(CASES)), file=sys.stderr)
        return 2
    try:
        CASES[sys.argv[1]](sys.argv[1])
    except Fail as e:
        print("FAIL: %s" % e)
        tail = Server.last_log.splitlines()[-12:]
        if tail:
            print("wsfilter's stderr ended with:\n  " + "\n  ".join(tail))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
