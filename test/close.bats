#!/usr/bin/env bats
# The closing handshake (RFC 6455 sections 5.5.1, 7.4) and wsfilter's exit status.

load lib/common

@test "a client close 1000 gets a close 1000, then wsfilter ends the connection and exits 0" {
	# --hold: we keep our side open until wsfilter ends its side (RFC 6455 7.1.1: the
	# server closes the TCP connection first), as a browser would
	answer --expect 0 --hold hs + $(close_frame)
	assert_success
	assert_line --index 4 'CLOSE 1000'
	assert_equal "${#lines[@]}" 6
	assert_line --index 5 'EXIT 0'
}

@test "a client close with a reason gets its code back" {
	answer --expect 0 --hold hs + frame --opcode close --code 1000 --reason 'bye now'
	assert_success
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "a client close with a 123-byte reason (the most that fits) is accepted" {
	answer --expect 0 --hold hs + frame --opcode close --code 1001 --reason "$(printf 'r%.0s' $(seq 123))"
	assert_success
	assert_line 'CLOSE 1001'
	assert_line 'EXIT 0'
}

@test "an empty close payload gets an empty close back and exit 0" {
	answer --expect 0 --hold hs + frame --opcode close
	assert_success
	assert_line --index 4 'CLOSE'
	assert_equal "${#lines[@]}" 6
	assert_line --index 5 'EXIT 0'
}

@test "the close codes 1000-1003, 1007-1011, 3000 and 4999 are echoed" {
	for code in 1000 1001 1002 1003 1007 1008 1009 1010 1011 3000 4999; do
		answer --expect 0 --expect 0 --hold hs + frame --opcode close --code $code
		assert_success
		assert_line "CLOSE $code"
		assert_line 'EXIT 0'
	done
}

@test "the close codes 0, 999, 1004, 1005, 1006, 1015, 1016, 2999 and 5000 fail with 1002" {
	for code in 0 999 1004 1005 1006 1015 1016 2999 5000 65535; do
		answer --expect 3 --expect 3 hs + frame --opcode close --code $code
		assert_success
		assert_line 'CLOSE 1002'
		assert_line 'EXIT 3'
	done
}

@test "a close payload of 1 byte fails with 1002" {
	answer --expect 3 hs + frame --opcode close --hex 03
	assert_success
	assert_line 'CLOSE 1002'
	assert_line 'EXIT 3'
}

@test "a close reason that is not UTF-8 fails with 1007" {
	answer --expect 3 hs + frame --opcode close --hex 03e8ff
	assert_success
	assert_line 'CLOSE 1007'
	assert_line 'EXIT 3'
}

@test "a close reason with a truncated UTF-8 sequence fails with 1007" {
	answer --expect 3 hs + frame --opcode close --hex 03e86f6be282
	assert_success
	assert_line 'CLOSE 1007'
	assert_line 'EXIT 3'
}

@test "a close reason with valid multi-byte UTF-8 is accepted" {
	answer --expect 0 --hold hs + frame --opcode close --code 1000 --reason 'au revoir, ça va €'
	assert_success
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "nothing is answered after a close, even frames in the same write" {
	answer --expect 0 hs + frame --text before + frame --opcode close --code 1000 + frame --text after \
		+ frame --opcode ping --text p -- --random-max 1
	assert_success # wstest also flags any byte after the server's close as MALFORMED
	assert_line --index 4 'TEXT "before - 1"'
	assert_line --index 5 'CLOSE 1000'
	refute_line --partial 'after'
	refute_line --regexp '^PONG'
	assert_line 'EXIT 0'
}

@test "a close in the middle of a fragmented message is answered and ends cleanly" {
	answer --expect 0 --hold hs + frame --fin 0 --text 'half a mess' + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'CLOSE 1000'
	refute_line --regexp '^TEXT'
	assert_line 'EXIT 0'
}

@test "after failing the connection wsfilter sends nothing more" {
	answer --expect 3 hs + frame --text x --rsv 4 + frame --text y + frame --opcode ping --text p
	assert_success
	assert_line --index 4 'CLOSE 1002'
	assert_equal "${#lines[@]}" 6
	assert_line --index 5 'EXIT 3'
}

@test "a protocol error ends with exit 3 even when the client answers the close" {
	answer --expect 3 --hold hs + frame --text x --unmasked + wait '^CLOSE' + frame --opcode close --code 1002
	assert_success
	assert_line 'CLOSE 1002'
	assert_line 'EXIT 3'
}

@test "a client that never answers the server's close is dropped after --close-timeout" {
	# answer runs wsfilter with --close-timeout 1; ELAPSED is the time from the
	# arrival of the close frame to wsfilter's exit
	answer --expect 3 --linger --timeout 6 --time-from '^CLOSE 1002' hs + frame --text x --rsv 4
	assert_success
	assert_line 'CLOSE 1002'
	assert_line 'EXIT 3'
	within 0.9 3.0 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
}

@test "--close-timeout 3 is timed from the close frame too" {
	run wst run --expect 3 --linger --timeout 10 --time-from '^CLOSE 1002' hs + frame --text x --rsv 4 -- --close-timeout 3
	assert_success
	assert_line 'CLOSE 1002'
	within 2.9 5.0 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
}

@test "EOF in the middle of the handshake exits 4 without an answer" {
	answer --expect 4 hs --no-end
	assert_success
	assert_equal "${#lines[@]}" 1
	assert_line --index 0 'EXIT 4'
}

@test "EOF right after the handshake exits 4" {
	answer --expect 4 hs
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'EXIT 4'
}

@test "EOF in the middle of a frame header exits 4" {
	answer --expect 4 hs + raw 81
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'EXIT 4'
}

@test "EOF in the middle of a 64-bit length exits 4" {
	answer --expect 4 hs + raw 82ff0000
	assert_success
	refute_line --regexp '^(BINARY|CLOSE)'
	assert_line 'EXIT 4'
}

@test "EOF in the middle of a payload exits 4" {
	answer --expect 4 hs + frame --text 'Hello' --claim-len 10
	assert_success
	refute_line --regexp '^(TEXT|CLOSE)'
	assert_line 'EXIT 4'
}

@test "EOF in the middle of a fragmented message exits 4" {
	answer --expect 4 hs + frame --fin 0 --text 'Hello'
	assert_success
	refute_line --regexp '^(TEXT|CLOSE)'
	assert_line 'EXIT 4'
}

@test "EOF after messages without a close exits 4 after answering them" {
	answer --expect 4 hs + frame --text one + frame --text two -- --random-max 1
	assert_success
	assert_line 'TEXT "one - 1"'
	assert_line 'TEXT "two - 1"'
	assert_line 'EXIT 4'
}

@test "a clean close after messages exits 0" {
	answer --expect 0 hs + frame --text one + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'TEXT "one - 1"'
	assert_line 'EXIT 0'
}

@test "a plain HTTP page served exits 0" {
	answer --expect 0 http GET /healthz
	assert_success
	assert_line 'EXIT 0'
}

@test "SIGTERM makes wsfilter close with 1001 and exit 0" {
	# a client that completes the handshake, then answers the server's close
	run wst script --expect 0 hs head signal:TERM frame close:1001 eof exit-within:3 -- --close-timeout 2
	assert_success
	assert_line 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line --regexp '^CLOSE 1001( |$)'
	assert_line 'EOF'
	assert_line 'EXITED 0'
	assert_line 'EXIT 0'
}

@test "the close codes 1012, 1013 and 1014 are echoed" {
	for code in 1012 1013 1014; do
		answer --expect 0 --hold hs + frame --opcode close --code $code
		assert_success
		assert_line --index 4 "CLOSE $code"
		assert_line 'EXIT 0'
	done
}
