#!/usr/bin/python3
"""Raw HTTP/1.1 request for wsfilter's launcher tests.

    httpget.py [--tls] [--cafile F] HOST PORT REQUEST

REQUEST is a request line and headers with "\\r\\n" written as "|", e.g.
"GET / HTTP/1.1|Host: x". The script sends it, reads every byte until the
server closes the connection (bounded by --timeout) and prints:

    status 200
    content-type text/html; charset=utf-8
    content-length 1234
    body 1234
    extra 0

"body" counts the bytes after the head up to Content-Length, "extra" the bytes
that came after that. Under inetd and xinetd the client socket is also the
server's stderr, so "extra 0" shows that nothing but protocol bytes reached
the client.
"""

import argparse
import socket
import ssl
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("request")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--dump", action="store_true", help="also print the head")
    a = p.parse_args()

    req = a.request.replace("|", "\r\n") + "\r\n\r\n"
    sock = socket.create_connection((a.host, a.port), a.timeout)
    if a.tls:
        if a.cafile:
            ctx = ssl.create_default_context(cafile=a.cafile)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=a.host)
    sock.sendall(req.encode("latin-1"))

    data = b""
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError) as e:
            # A TLS peer that closes without close_notify, or a reset after
            # the answer: the bytes already read are what the client got.
            print("note %s" % type(e).__name__, file=sys.stderr)
            break
        except socket.timeout:
            print("error: connection still open after %gs" % a.timeout, file=sys.stderr)
            sys.exit(2)
        if not chunk:
            break
        data += chunk
    sock.close()

    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        print("error: no complete head in %r" % data[:200], file=sys.stderr)
        sys.exit(1)
    lines = head.decode("latin-1").split("\r\n")
    if a.dump:
        for line in lines:
            print("> " + line)
    status = lines[0].split(" ")[1] if " " in lines[0] else "?"
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields.get("content-length", "-1"))
    body = rest[: max(length, 0)]
    print("status %s" % status)
    print("content-type %s" % fields.get("content-type", "-"))
    print("content-length %d" % length)
    print("connection %s" % fields.get("connection", "-"))
    print("body %d" % len(body))
    print("extra %d" % (len(rest) - len(body)))
    if len(rest) > len(body):
        print("extra bytes: %r" % rest[len(body):][:300])


if __name__ == "__main__":
    main()
