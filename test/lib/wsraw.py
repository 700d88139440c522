#!/usr/bin/python3
"""Byte-exact WebSocket exchange for wsfilter's launcher tests.

    wsraw.py HOST PORT

Opens a WebSocket by hand, sends one masked text frame "raw" and a close
frame with code 1000, reads every byte until the server closes the TCP
connection, and parses them strictly: the 101 head, then whole frames. Prints

    status 101
    frames text close
    close-code 1000
    extra 0

"extra" counts bytes after the server's close frame. Under inetd and xinetd
the connection is also the server's stderr, so "extra 0" shows that the log
line did not reach the client.
"""

import base64
import os
import socket
import struct
import sys
import time

OPCODES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


def frame(opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((host, port), 10)
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n" % key
        ).encode()
        + frame(1, b"raw")
        + frame(8, struct.pack("!H", 1000))
    )
    data = b""
    deadline = time.monotonic() + 10
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            print("error: connection still open after 10 s", file=sys.stderr)
            sys.exit(2)
        if not chunk:
            break
        data += chunk
    sock.close()

    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        print("error: no complete head in %r" % data[:200], file=sys.stderr)
        sys.exit(1)
    print("status %s" % head.split(b" ")[1].decode())
    names = []
    code = None
    pos = 0
    while pos + 2 <= len(rest):
        b0, b1 = rest[pos], rest[pos + 1]
        n = b1 & 0x7F
        hlen = 2
        if n == 126:
            n = struct.unpack("!H", rest[pos + 2 : pos + 4])[0]
            hlen = 4
        elif n == 127:
            n = struct.unpack("!Q", rest[pos + 2 : pos + 10])[0]
            hlen = 10
        if b1 & 0x80 or pos + hlen + n > len(rest):
            break
        payload = rest[pos + hlen : pos + hlen + n]
        names.append(OPCODES.get(b0 & 0x0F, "op%d" % (b0 & 0x0F)))
        pos += hlen + n
        if b0 & 0x0F == 8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            break
    print("frames %s" % " ".join(names))
    print("close-code %s" % code)
    print("extra %d" % (len(rest) - pos))
    if len(rest) > pos:
        print("extra bytes: %r" % rest[pos:][:300])


if __name__ == "__main__":
    main()
