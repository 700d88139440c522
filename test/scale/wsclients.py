#!/usr/bin/python3
"""Many WebSocket clients at once, each from its own source address, with
Debian's python3-websockets, for test/scale.bats.

Every client sends text messages "message I" and checks that the replies come
back in order as "message I - K" with K in 1..1000 (wsfilter's filter). Each
client uses its own local address, so a host's log line (which names the
client through X-Forwarded-For) says which client it was.

  wsclients.py connect URI SOURCES N [--header NAME:VALUE]
      one connection per source, one after the other: N pipelined messages,
      every reply checked, close 1000.
  wsclients.py hold URI SOURCES --ready FILE --stop FILE [--interval MS]
      all sources connect at once; FILE --ready gets one line per client
      ("SOURCE LOCALPORT") once all are open. Each then sends a message every
      MS ms (default 20) without waiting for the replies, until --stop FILE
      exists: then it stops sending, waits for the replies still due, and
      closes with 1000.

SOURCES is a comma-separated list of local IPv4 addresses. Each client prints
one line when it ends, at once:

  client SOURCE result ok|closed|dropped|failed code CODE sent S received R bad B

ok: every reply came back and the close 1000 handshake completed; closed: the
server sent a close frame first (CODE is its code); dropped: the connection
ended without a close frame (CODE 1006); failed: anything else (a wrong reply,
a failed handshake, a timeout). Exit status 0 when every client is ok.
--max-seconds bounds the whole run (default 120); --cafile trusts a test CA.
"""
import argparse
import asyncio
import os
import re
import ssl
import sys

import websockets

REPLY = re.compile(r"message (\d+) - (\d+)")
TOP = 1000


class Client:
    def __init__(self, source):
        self.source = source
        self.sent = 0
        self.received = 0
        self.bad = 0
        self.result = "failed"
        self.code = 0
        self.port = 0
        self.why = ""

    def check(self, reply):
        m = REPLY.fullmatch(reply) if isinstance(reply, str) else None
        if m and int(m.group(1)) == self.received + self.bad and 1 <= int(m.group(2)) <= TOP:
            self.received += 1
        else:
            self.bad += 1
            if not self.why:
                self.why = "reply %d is %r" % (self.received + self.bad - 1, reply[:60])

    def report(self):
        line = "client %s result %s code %d sent %d received %d bad %d" % (
            self.source, self.result, self.code, self.sent, self.received, self.bad)
        if self.why:
            line += " why " + self.why.replace("\n", " ")
        print(line, flush=True)


def ended(c, exc):
    """Record how the connection ended from a ConnectionClosed exception."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        c.result, c.code = "closed", rcvd.code
    else:
        c.result, c.code = "dropped", 1006


def connect(args, source):
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    kw = {}
    if args.uri.startswith("wss:"):
        ctx = ssl.create_default_context(cafile=args.cafile)
        kw["ssl"] = ctx
    return websockets.connect(args.uri, local_addr=(source, 0), extra_headers=headers,
                              open_timeout=10, close_timeout=5, max_size=None,
                              ping_interval=None, **kw)


async def one_burst(args, c):
    try:
        async with connect(args, c.source) as ws:
            async def send_all():
                for i in range(args.n):
                    await ws.send("message %d" % i)
                    c.sent += 1
            sender = asyncio.create_task(send_all())
            while c.received + c.bad < args.n:
                c.check(await asyncio.wait_for(ws.recv(), 20))
            await sender
            await ws.close(1000)
            c.code = ws.close_code
            c.result = "ok" if c.code == 1000 and c.bad == 0 and c.received == args.n else "failed"
    except websockets.ConnectionClosed as e:
        ended(c, e)
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        c.result, c.why = "failed", "%s: %s" % (type(e).__name__, e)
    c.report()


async def one_hold(args, c, opened, start):
    try:
        async with connect(args, c.source) as ws:
            c.port = ws.local_address[1]
            opened.set_result(c)
            await start.wait()

            async def send_loop():
                try:
                    while not stop_requested(args):
                        await ws.send("message %d" % c.sent)
                        c.sent += 1
                        await asyncio.sleep(args.interval / 1000)
                except websockets.ConnectionClosed:
                    pass
            sender = asyncio.create_task(send_loop())
            try:
                while not (sender.done() and c.received + c.bad >= c.sent):
                    try:
                        reply = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    c.check(reply)
            finally:
                sender.cancel()
            await ws.close(1000)
            c.code = ws.close_code
            c.result = "ok" if c.code == 1000 and c.bad == 0 and c.received == c.sent else "failed"
    except websockets.ConnectionClosed as e:
        ended(c, e)
    except Exception as e:  # noqa: BLE001
        c.result, c.why = "failed", "%s: %s" % (type(e).__name__, e)
    if not opened.done():
        opened.set_result(c)
    c.report()


def stop_requested(args):
    try:
        with open(args.stop):
            return True
    except OSError:
        return False


async def run(args):
    clients = [Client(s) for s in args.sources.split(",") if s]
    if args.mode == "connect":
        for c in clients:
            await one_burst(args, c)
    else:
        start = asyncio.Event()
        opened = [asyncio.get_running_loop().create_future() for _ in clients]
        tasks = [asyncio.create_task(one_hold(args, c, f, start)) for c, f in zip(clients, opened)]
        await asyncio.gather(*opened)
        with open(args.ready + ".tmp", "w") as f:
            for c in clients:
                f.write("%s %d\n" % (c.source, c.port))
        os.rename(args.ready + ".tmp", args.ready)
        start.set()
        await asyncio.gather(*tasks)
    return clients


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["connect", "hold"])
    p.add_argument("uri")
    p.add_argument("sources")
    p.add_argument("n", type=int, nargs="?", default=10)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--ready")
    p.add_argument("--stop")
    p.add_argument("--interval", type=float, default=20)
    p.add_argument("--cafile")
    p.add_argument("--max-seconds", type=float, default=120)
    args = p.parse_args()
    if args.mode == "hold" and not (args.ready and args.stop):
        p.error("hold needs --ready and --stop")
    try:
        clients = asyncio.run(asyncio.wait_for(run(args), args.max_seconds))
    except asyncio.TimeoutError:
        print("timed out after %g s" % args.max_seconds, flush=True)
        return 1
    return 0 if all(c.result == "ok" for c in clients) else 1


if __name__ == "__main__":
    sys.exit(main())
