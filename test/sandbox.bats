#!/usr/bin/env bats
# wsfilter confines itself with seccomp before it reads the client's first byte.

load common

# hold_open PROGRAM ARGS...: start PROGRAM on a socketpair, send a handshake,
# print the answer's status line (or EOF), /proc/PID/status's Seccomp and
# NoNewPrivs lines while the connection is open, then close cleanly and print
# the exit status.
hold_open() {
	"$PY" - "$@" <<'PY'
import socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen(sys.argv[1:], stdin=b, stdout=b, stderr=subprocess.DEVNULL)
b.close()
a.settimeout(5)
head = b""
try:
    a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    while b"\r\n\r\n" not in head:
        chunk = a.recv(4096)
        if not chunk:
            break
        head += chunk
except OSError:
    pass
print(head.split(b"\r\n")[0].decode() if head else "EOF")
if head:
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith(("Seccomp:", "NoNewPrivs:")):
                print(" ".join(line.split()))
try:
    a.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))
    while a.recv(4096):
        pass
except OSError:
    pass
print("exit", p.wait(timeout=5))
PY
}

@test "the seccomp filter is on while a connection is open" {
	[[ "$WSFILTER" != *asan* ]] || skip "sanitizer builds run without the filter"
	run hold_open "$WSFILTER"
	assert_success
	assert_line "HTTP/1.1 101 Switching Protocols"
	assert_line "Seccomp: 2"
	assert_line "NoNewPrivs: 1"
	assert_line "exit 0"
}

@test "--no-sandbox leaves seccomp off" {
	run hold_open "$WSFILTER" --no-sandbox
	assert_success
	assert_line "Seccomp: 0"
	assert_line "exit 0"
}

@test "a forbidden system call kills wsfilter with SIGSYS and drops the connection" {
	[ -x "$TOP/wsfilter-test-forbidden" ] || skip "make wsfilter-test-forbidden first"
	run hold_open "$TOP/wsfilter-test-forbidden"
	assert_success
	assert_line --index 0 "EOF"
	assert_line "exit -31"
}

@test "--sandbox=required starts where seccomp is available" {
	[[ "$WSFILTER" != *asan* ]] || skip "sanitizer builds run without the filter"
	run bash -c 'printf "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" | "$WSFILTER" --sandbox=required -q'
	assert_success
	assert_output --partial "200 OK"
}
