#!/usr/bin/python3
"""Load client on Python websockets (a real client) for the launcher and systemd tests.

    load_websockets.py [options] URL

Each client sends its messages pipelined (it never waits for a reply before
sending the next message) while a reader checks every reply in order: reply k
must be message k followed by " - N" with N in 1..--random-max. Prints one
summary line, e.g. "received 10000/10000 lost 0" or, with --clients,
"clients 100/100 received 100000/100000 lost 0", and exits 0 only when every
reply arrived and matched.

--barrier: every client opens its connection first and sends nothing until
all clients have tried to connect, so connections refused by a launcher's
limit are refused while the others are still open.

--abort-after-ready FILE: send one message, check its reply, create FILE, wait
(bounded) until FILE is removed, then reset the TCP connection without a close
frame. The test uses this to look at the server process while the connection
is open and after the client has vanished.
"""

import argparse
import asyncio
import os
import re
import socket
import ssl
import struct
import sys
import time

import websockets

SUFFIX = re.compile(r" - ([0-9]+)")


class Mismatch(Exception):
    pass


def make_ssl(args):
    if not args.url.startswith("wss://"):
        return None
    if args.cafile:
        ctx = ssl.create_default_context(cafile=args.cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_reply(sent, reply, random_max):
    if not isinstance(reply, str):
        raise Mismatch("binary reply to a text message")
    if not reply.startswith(sent):
        raise Mismatch("reply %r does not start with %r" % (reply[:60], sent[:60]))
    m = SUFFIX.fullmatch(reply[len(sent):])
    if m is None:
        raise Mismatch("reply %r lacks the ' - N' suffix" % reply[-40:])
    n = int(m.group(1))
    if not 1 <= n <= random_max:
        raise Mismatch("suffix %d outside 1..%d" % (n, random_max))


def message(client, i, size):
    base = "c%d m%d " % (client, i)
    if len(base) < size:
        base += "x" * (size - len(base))
    return base


class Barrier:
    """Set once every client has tried to connect (with or without success)."""

    def __init__(self, parties):
        self.left = parties
        self.event = asyncio.Event()

    def arrive(self):
        self.left -= 1
        if self.left <= 0:
            self.event.set()


async def one_client(args, client, ctx, barrier):
    """Return the number of replies that arrived and matched, in order."""
    received = 0
    connect = websockets.connect(
        args.url,
        ssl=ctx,
        open_timeout=args.timeout,
        close_timeout=args.timeout,
        ping_interval=None,
        max_size=None,
        max_queue=None,
        compression=None,
    )
    try:
        ws = await connect
    finally:
        barrier.arrive()
    if args.barrier:
        await asyncio.wait_for(barrier.event.wait(), args.timeout)
    async def send_all():
        for i in range(args.messages):
            await ws.send(message(client, i, args.size))

    sender = asyncio.ensure_future(send_all())
    try:
        for i in range(args.messages):
            reply = await ws.recv()
            check_reply(message(client, i, args.size), reply, args.random_max)
            received += 1
        await sender
    finally:
        sender.cancel()
        await ws.close()
    return received


async def abort_after_ready(args, ctx):
    ws = await websockets.connect(
        args.url, ssl=ctx, open_timeout=args.timeout, ping_interval=None, compression=None
    )
    await ws.send("before abort")
    check_reply("before abort", await ws.recv(), args.random_max)
    with open(args.abort_after_ready, "w") as f:
        f.write("ready\n")
    deadline = time.monotonic() + args.timeout
    while os.path.exists(args.abort_after_ready):
        if time.monotonic() > deadline:
            raise TimeoutError("ready file was not removed in time")
        await asyncio.sleep(0.05)
    # SO_LINGER with a zero timeout turns close() into a TCP reset: the client
    # vanishes without a close frame and without a FIN.
    sock = ws.transport.get_extra_info("socket")
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    ws.transport.abort()
    print("aborted")
    return True


async def run(args):
    ctx = make_ssl(args)
    if args.abort_after_ready:
        return await asyncio.wait_for(abort_after_ready(args, ctx), args.timeout * 2)

    barrier = Barrier(args.clients)

    async def guarded(c):
        try:
            return await one_client(args, c, ctx, barrier)
        except Exception as e:  # report every failed client, keep the others running
            print("client %d: %s: %s" % (c, type(e).__name__, e), file=sys.stderr)
            return -1

    results = await asyncio.wait_for(
        asyncio.gather(*(guarded(c) for c in range(args.clients))), args.total_timeout
    )
    expected = args.messages * args.clients
    got = sum(r for r in results if r > 0)
    ok = sum(1 for r in results if r == args.messages)
    if args.clients == 1:
        print("received %d/%d lost %d" % (got, expected, expected - got))
    else:
        print(
            "clients %d/%d received %d/%d lost %d"
            % (ok, args.clients, got, expected, expected - got)
        )
    return ok == args.clients


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("-n", "--messages", type=int, default=100)
    p.add_argument("-c", "--clients", type=int, default=1)
    p.add_argument("--size", type=int, default=32, help="bytes per message")
    p.add_argument("--random-max", type=int, default=1000)
    p.add_argument("--cafile", help="trust this certificate for wss:// (else no verification)")
    p.add_argument("--timeout", type=float, default=10, help="per-connection step timeout")
    p.add_argument("--total-timeout", type=float, default=120)
    p.add_argument("--barrier", action="store_true", help="connect all clients before sending")
    p.add_argument("--abort-after-ready", metavar="FILE")
    args = p.parse_args()
    try:
        ok = asyncio.run(run(args))
    except Exception as e:
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
