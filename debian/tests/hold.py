#!/usr/bin/python3
"""hold.py URI READY: open a WebSocket to URI, check one reply, create the file
READY, then wait (60 s at most) for the server to close the connection.
Prints "close CODE" and exits 0 when the server closed it with 1001 (going
away), 1 otherwise."""
import asyncio
import sys

import websockets


async def main(uri, ready):
    async with websockets.connect(uri, open_timeout=10, close_timeout=5) as ws:
        await ws.send("held")
        reply = await asyncio.wait_for(ws.recv(), 10)
        if not reply.startswith("held - "):
            print("unexpected reply %r" % reply[:80])
            return 1
        open(ready, "w").close()
        try:
            await asyncio.wait_for(ws.wait_closed(), 60)
        except asyncio.TimeoutError:
            print("still open after 60 s")
            return 1
    print("close %s" % ws.close_code)
    return 0 if ws.close_code == 1001 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
