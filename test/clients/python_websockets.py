#!/usr/bin/python3
"""Send N text messages through one WebSocket connection with the python3-websockets
client (Debian's), all pipelined, and check every reply in order: "<message> - K" with
K in 1..MAX. Usage: python_websockets.py URI [N] [MAX]. Prints "received R/N in X ms".
"""
import asyncio
import re
import sys
import time

import websockets


async def main(uri, n, top):
    received = 0
    bad = []
    start = time.monotonic()
    async with websockets.connect(uri, max_size=None, open_timeout=10, close_timeout=5) as ws:

        async def send_all():
            for i in range(n):
                await ws.send("message %d" % i)

        sender = asyncio.create_task(send_all())
        for i in range(n):
            reply = await asyncio.wait_for(ws.recv(), 30)
            m = re.fullmatch(r"message (\d+) - (\d+)", reply) if isinstance(reply, str) else None
            if not m or int(m.group(1)) != i or not 1 <= int(m.group(2)) <= top:
                bad.append("reply %d is %r" % (i, reply[:80]))
                if len(bad) >= 5:
                    break
                continue
            received += 1
        await sender
        await ws.close(1000)
        code = ws.close_code
    ms = (time.monotonic() - start) * 1000
    print("received %d/%d in %.0f ms" % (received, n, ms))
    print("close code %s" % code)
    for b in bad:
        print("BAD: " + b)
    return 0 if received == n and not bad and code == 1000 else 1


if __name__ == "__main__":
    uri = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    sys.exit(asyncio.run(main(uri, n, top)))
