#!/usr/bin/python3
"""hold.py URI READY [GO]: open a WebSocket to URI, check one reply, create
the file READY, then wait (60 s at most) for the server to close the
connection.  Prints "close CODE" and exits 0 when the server closed it with
1001 (going away), 1 otherwise.

With GO: wait for the file GO instead (60 s at most), then send one more
message, check its reply and close with 1000: prints "replied again, close
1000".  A close by the server meanwhile prints "close CODE", as without GO.
Exits 0 for either of those two ends (a close 1001 for the second), the caller
telling which it expected; 1 otherwise."""
import asyncio
import os
import sys

import websockets


async def exchange(ws, text):
    await ws.send(text)
    reply = await asyncio.wait_for(ws.recv(), 10)
    if not reply.startswith(text + " - "):
        print("unexpected reply %r" % reply[:80])
        return False
    return True


async def go_or_closed(ws, go):
    """True once GO exists (the connection still open), False if closed first."""
    closed = asyncio.ensure_future(ws.wait_closed())
    try:
        for _ in range(600):
            if closed.done():
                return False
            if os.path.exists(go):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        closed.cancel()


async def main(uri, ready, go=None):
    async with websockets.connect(uri, open_timeout=10, close_timeout=5) as ws:
        if not await exchange(ws, "held"):
            return 1
        open(ready, "w").close()
        if go is not None:
            if await go_or_closed(ws, go):
                if not await exchange(ws, "again"):
                    return 1
                await ws.close(1000)
                print("replied again, close %s" % ws.close_code)
                return 0 if ws.close_code == 1000 else 1
        else:
            try:
                await asyncio.wait_for(ws.wait_closed(), 60)
            except asyncio.TimeoutError:
                print("still open after 60 s")
                return 1
    print("close %s" % ws.close_code)
    return 0 if ws.close_code == 1001 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
