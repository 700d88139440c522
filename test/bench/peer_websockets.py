"""Benchmark peer: an asyncio WebSocket server on Debian's python3-websockets.

Every message comes back with " - N" appended (N uniform in 1..1000), the same
design as the demo wsfilter replaces.  Usage: peer_websockets.py PORT [HOST]
"""
import asyncio
import random
import signal
import sys

import websockets


async def reply(websocket, path=None):
    try:
        async for message in websocket:
            n = random.randint(1, 1000)
            if isinstance(message, bytes):
                await websocket.send(message + b" - %d" % n)
            else:
                await websocket.send(f"{message} - {n}")
    except websockets.ConnectionClosed:
        pass


async def main():
    port = int(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # No size limit (the benchmark sends 1 MiB messages) and no compression
    # (the load client does not offer it).
    async with websockets.serve(reply, host, port, max_size=None,
                                compression=None):
        await stop


if __name__ == "__main__":
    asyncio.run(main())
