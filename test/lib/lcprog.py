#!/usr/bin/python3
"""lcprog: the PROGRAM of the lifecycle suite (lifecycle.py).

    lcprog.py STATE LINES SIZE RATE END

Writes its process group to STATE/pgid, the request's variables it was given to
STATE/env (JSON), and "lcprog start" to stderr (then STATE/said), then LINES
lines of SIZE bytes each (line i is "%07d " then a pattern, then "\\n"), all at once
(RATE 0) or RATE lines a second; STATE/count says how many lines are written so far.
Then it ends as END says:

  exit0, exit3   exit with that status
  killed         SIGKILL to itself
  cat            copy stdin to stdout until EOF, then exit 0
  ignore         ignore SIGTERM and stdin's EOF: sleep (SIGKILL ends it)
  closeout       close stdout and stderr, then read stdin until EOF, exit 0
  bghold         start a background job (sleep) that keeps stdout open, exit 0
  bgfree         start a background job with stdin, stdout, stderr on /dev/null, then cat
  bgexit         the same background job, then exit 0
  flood          write lines until stdout fails (no count: what it wrote is unknown)
Every wait is bounded: nothing of it lasts past 120 s.
"""

import os
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
LETTERS = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 4


ENV_SEEN = ("REQUEST_URI", "QUERY_STRING", "PATH_INFO", "REMOTE_ADDR", "HTTP_HOST", "HTTP_X_CASE",
            "HTTP_PROXY", "HTTP_X_FORWARDED_FOR", "HTTP_FOO", "SCRIPT_NAME", "REMOTE_USER")


def line(i, size):
    """Line i of SIZE bytes, its newline included."""
    head = b"%07d " % i
    body = bytearray()
    k = i % 64
    while len(head) + len(body) < size - 1:
        body += LETTERS[k:k + 64]
    return (head + bytes(body))[:size - 1] + b"\n"


def put(state, name, value):
    tmp = os.path.join(state, name + ".tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % value)
    os.rename(tmp, os.path.join(state, name))


def write_all(data):
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def copy_stdin(state, limit):
    """Copies stdin to stdout; the state's "echoed" is the bytes written so far."""
    deadline = time.monotonic() + limit
    echoed = 0
    while time.monotonic() < deadline:
        data = os.read(0, 65536)
        if not data:
            return
        write_all(data)
        echoed += len(data)
        put(state, "echoed", echoed)


def main():
    state, lines, size, rate, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    put(state, "pgid", os.getpgrp())
    import json
    with open(os.path.join(state, "env.tmp"), "w") as f:
        json.dump({k: os.environ.get(k) for k in ENV_SEEN}, f)
    os.rename(os.path.join(state, "env.tmp"), os.path.join(state, "env"))
    os.write(2, b"lcprog start\n")
    put(state, "said", 1)
    if end == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if rate:
        for i in range(lines):
            write_all(line(i, size))
            put(state, "count", i + 1)
            time.sleep(1.0 / rate)
    else:
        batch = bytearray()
        for i in range(lines):
            batch += line(i, size)
            if len(batch) >= 65536:
                write_all(batch)
                batch.clear()
        write_all(batch)
    put(state, "count", lines)
    if end == "exit0":
        sys.exit(0)
    if end == "exit3":
        sys.exit(3)
    if end == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if end == "cat":
        copy_stdin(state, 120)
        sys.exit(0)
    if end == "ignore":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(1)
        sys.exit(0)
    if end == "closeout":
        os.close(1)
        os.close(2)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and os.read(0, 65536):
            pass
        sys.exit(0)
    if end == "bghold":
        subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL)
        sys.exit(0)
    if end in ("bgfree", "bgexit"):
        subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        if end == "bgfree":
            copy_stdin(state, 120)
        sys.exit(0)
    if end == "flood":
        os.unlink(os.path.join(state, "count"))  # what it wrote is not known
        deadline = time.monotonic() + 120
        i = lines
        while time.monotonic() < deadline:
            write_all(b"".join(line(i + k, size) for k in range(16)))
            i += 16
        sys.exit(0)
    sys.exit("lcprog: unknown end %r" % end)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(0)
