#!/usr/bin/env bats
# Hostile clients: wsfilter answers as RFC 6455 / HTTP say, exits within a
# bounded time, and keeps its CPU time and peak RSS small (8 MiB; more for
# sanitizer builds).  Each test runs one scenario of test/lib/hostile_cases.py
# (lib/common.bash's hostile) against wsfilter on a socketpair or an accepted
# loopback TCP socket, wrapped in /usr/bin/time; the scenario checks the
# answer, the exit status (a kill by a signal always fails), the timings, the
# memory and the log line. HOSTILE_VERBOSE=1 prints the measured figures as TAP
# comments. (The idle timeout and the keepalive pings are in limits.bats.)

load lib/common

setup() {
	[ -x "$WSFILTER" ] || fail "no $WSFILTER (run make)"
}

@test "slowloris: a request head dribbled a byte every 0.2 s gets 408 at the 2 s handshake timeout, exit 5" {
	hostile slowloris
}

@test "header flood: 1 MiB of headers gets 431 at 8 KiB and wsfilter closes before the client is through, exit 3" {
	hostile header-flood
}

@test "header flood that never stops: wsfilter still exits promptly after the 431" {
	hostile header-flood-endless
}

@test "header flood over TCP: the 431 survives the close with unread input for a client that reads late" {
	hostile header-flood-tcp
}

@test "a client that leaves after a 431 for a 100 KB head is noticed at once, not after the close timeout" {
	hostile leave-after-431-big-head
}

@test "a client that leaves after a 1002 for a 100 KB bad frame is noticed at once, not after the close timeout" {
	hostile leave-after-1002-big-frame
}

@test "a frame claiming 2^63-1 bytes streams what arrives; leaving mid-payload exits 4 with small RSS" {
	hostile frame-2p63m1-streams
}

@test "a frame claiming 2^63-1 bytes with --max-message 1000000 gets 1009 at once" {
	hostile frame-2p63m1-max-message
}

@test "a frame length with the top bit set (2^63) gets 1002" {
	hostile frame-2p63
}

@test "a message of 200,000 empty and 1-byte fragments streams back with flat memory" {
	hostile endless-fragments
}

@test "endless fragments with --max-message 10000 get 1009 exactly when byte 10001 arrives" {
	hostile endless-fragments-max-message
}

@test "a 64 MiB message trickled in 16 KiB writes comes back whole with its suffix, memory flat" {
	hostile big-message-trickled
}

@test "a fragmented message gets 1009 as soon as it crosses --max-message 1000000" {
	hostile big-message-max-message
}

@test "ping flood from a client that does not read: wsfilter stops reading, then every pong arrives in order" {
	hostile ping-flood
}

@test "100,000 messages sent before reading: no deadlock, every reply in order, bounded memory" {
	hostile many-messages-unread
}

@test "disconnect mid-handshake: exit 4 within 1 s, logged" {
	hostile disconnect-mid-handshake
}

@test "disconnect mid-frame header: exit 4 within 1 s, logged" {
	hostile disconnect-mid-header
}

@test "disconnect mid-payload: exit 4 within 1 s, logged" {
	hostile disconnect-mid-payload
}

@test "disconnect in the middle of a close frame: exit 4 within 1 s, logged" {
	hostile disconnect-mid-close
}

@test "invalid UTF-8 (bad byte at every position of 2-, 3- and 4-byte sequences, every split across frames) gets 1007" {
	hostile utf8-invalid-split
}

@test "invalid UTF-8 in a non-final fragment gets 1007 without waiting for the rest" {
	hostile utf8-invalid-fails-fast
}

@test "valid UTF-8 sequences split at every point across frames come back intact" {
	hostile utf8-valid-split
}

@test "1000 messages and a close in one write: every reply comes before the server's close" {
	hostile nothing-lost-one-write
}

@test "1000 messages, a close and a half-close (SHUT_WR): every reply comes before the server's close" {
	hostile nothing-lost-half-close
}

@test "the same over TCP: a half-closed client still gets every reply and the close" {
	hostile nothing-lost-half-close-tcp
}

@test "a client that resets the connection while wsfilter writes a large echo: exit 4 at once, no crash" {
	hostile reset-during-reply
}
