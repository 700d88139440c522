#!/usr/bin/env python3
"""Writes the seed corpus for the fuzzers: valid and invalid conversations.

Each file is one whole client stream; the libFuzzer target reads a leading
option byte first, so its copies get one (see fuzz_core.c)."""
import os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
os.makedirs(out, exist_ok=True)
MASK = b"\x37\xfa\x21\x3d"

def frame(op, payload=b"", fin=True, rsv=0, masked=True, form=None):
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    m = 0x80 if masked else 0
    if form == 16 or (form is None and 126 <= n < 65536):
        h = bytes([b0, m | 126]) + struct.pack(">H", n)
    elif form == 64 or (form is None and n >= 65536):
        h = bytes([b0, m | 127]) + struct.pack(">Q", n)
    else:
        h = bytes([b0, m | n])
    if not masked:
        return h + payload
    return h + MASK + bytes(c ^ MASK[i % 4] for i, c in enumerate(payload))

HS = (b"GET /chat HTTP/1.1\r\nHost: localhost:8765\r\nUpgrade: websocket\r\n"
      b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      b"Origin: http://a.example\r\nSec-WebSocket-Protocol: x, chat\r\n"
      b"Sec-WebSocket-Version: 13\r\n\r\n")
close = frame(8, struct.pack(">H", 1000) + b"bye")
seeds = {
    "hello": HS + frame(1, b"Hello there") + close,
    "binary": HS + frame(2, bytes(range(256))) + close,
    "fragments": HS + frame(1, b"Hel", fin=False) + frame(9, b"ping") + frame(0, b"lo", fin=False) + frame(0, b"!") + close,
    "utf8": HS + frame(1, "héllo €𝄞".encode()) + close,
    "utf8-split": HS + frame(1, "€".encode()[:1], fin=False) + frame(0, "€".encode()[1:]) + close,
    "bad-utf8": HS + frame(1, b"\xed\xa0\x80") + close,
    "len16": HS + frame(2, b"x" * 300) + close,
    "len64": HS + frame(2, b"y" * 70000) + close,
    "nonminimal": HS + frame(1, b"abc", form=16) + close,
    "unmasked": HS + frame(1, b"abc", masked=False),
    "rsv": HS + frame(1, b"abc", rsv=4),
    "opcode3": HS + frame(3, b""),
    "cont-alone": HS + frame(0, b"abc"),
    "close-bad": HS + frame(8, struct.pack(">H", 1005)),
    "close-1byte": HS + frame(8, b"\x03"),
    "pong": HS + frame(10, b"x") + frame(1, b"") + close,
    "empty-close": HS + frame(8),
    "page": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "healthz": b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "version8": HS.replace(b"Version: 13", b"Version: 8"),
    "post": HS.replace(b"GET", b"POST"),
    "badkey": HS.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short=="),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
