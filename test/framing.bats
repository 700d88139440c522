#!/usr/bin/env bats
# Data framing (RFC 6455 section 5): what comes back for each message, and which
# frames fail the connection with 1002. Byte-exact input over a socketpair.

load lib/common

# fails_with_1002 FRAME-OPTIONS...: the handshake then this frame makes wsfilter
# fail the connection with 1002 and exit 3, answering nothing else
fails_with_1002() {
	answer --expect 3 --chunkings all,byte hs + frame "$@" + frame --text after -- --random-max 1
	assert_success
	assert_line 'CLOSE 1002'
	refute_line --regexp '^(TEXT|BINARY|PONG)'
	assert_line 'EXIT 3'
}

@test "a text message comes back as text with ' - N' appended, N in 1..1000" {
	answer --expect 0 hs + frame --text 'Hello there' + $(close_frame)
	assert_success
	assert_line --regexp '^TEXT "Hello there - ([1-9][0-9]{0,2}|1000)"$'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "the text reply is one message with the text opcode and FIN set" {
	answer --expect 0 --frames --chunkings all hs + frame --text abc + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'TEXT fin=1 "abc - 1"'
}

@test "the suffix numbers stay within 1..1000 and vary" {
	answer --expect 0 hs + many --count 300 + $(close_frame)
	assert_success
	nums=$(sed -n 's/^TEXT "msg [0-9]* - \([0-9]*\)"$/\1/p' <<<"$output")
	assert_equal "$(wc -l <<<"$nums")" 300
	run awk '$1 < 1 || $1 > 1000 { bad++ } END { print bad + 0 }' <<<"$nums"
	assert_output 0
	distinct=$(sort -u <<<"$nums" | wc -l)
	[ "$distinct" -gt 100 ] || fail "only $distinct distinct numbers in 300 replies"
}

@test "--random-max 5 draws every number of 1..5 and nothing else" {
	answer --expect 0 hs + many --count 300 + $(close_frame) -- --random-max 5
	assert_success
	run bash -c "sed -n 's/^TEXT \"msg [0-9]* - \\([0-9]*\\)\"\$/\\1/p' | sort -u | tr '\\n' ' '" <<<"$output"
	assert_output '1 2 3 4 5 '
}

@test "a binary message comes back binary with the suffix" {
	answer --expect 0 hs + frame --opcode binary --hex 00ff10 + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'BINARY "\x00\xff\x10 - 1"'
}

@test "--echo returns text and binary messages exactly" {
	answer --expect 0 hs + frame --text 'Hello there' + frame --opcode binary --hex 00ff0a + $(close_frame) -- --echo
	assert_success
	assert_line --index 4 'TEXT "Hello there"'
	assert_line --index 5 'BINARY "\x00\xff\n"'
	assert_line --index 6 'CLOSE 1000'
}

@test "payload lengths 0, 1, 125, 126, 65535, 65536 come back exactly in 7/16/64-bit forms" {
	answer --expect 0 --chunkings all,random:3,1000 hs + frame --opcode binary --size 0 + frame --opcode binary --size 1 \
		+ frame --opcode binary --size 125 + frame --opcode binary --size 126 \
		+ frame --opcode binary --size 65535 + frame --opcode binary --size 65536 \
		+ frame --text '' + frame --text a --len7 + $(close_frame) -- --echo
	assert_success
	assert_equal "$(grep -c '^BINARY' <<<"$output")" 6
	assert_line --index 4 'BINARY ""'
	assert_line --index 5 'BINARY "a"'
	assert_line --index 6 'BINARY <pattern 125>'
	assert_line --index 7 'BINARY <pattern 126>'
	assert_line --index 8 'BINARY <pattern 65535>'
	assert_line --index 9 'BINARY <pattern 65536>'
	assert_line --index 10 'TEXT ""'
	assert_line --index 11 'TEXT "a"'
	assert_line 'EXIT 0'
}

@test "a 5 MiB frame with a 64-bit length comes back exactly" {
	answer --expect 0 --chunkings all,65536 hs + frame --opcode binary --size 5242880 + $(close_frame) -- --echo
	assert_success
	assert_line 'BINARY <pattern 5242880>'
	assert_line 'EXIT 0'
}

@test "a 5 MiB text message gets its suffix at the end" {
	answer --expect 0 --chunkings all,65536 hs + frame --size 5242880 + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'TEXT <pattern 5242880>" - 1"'
}

@test "a 16-bit length used for 125 bytes (not minimal) fails with 1002" {
	fails_with_1002 --size 125 --len16
}

@test "a 16-bit length used for 0 bytes (not minimal) fails with 1002" {
	fails_with_1002 --size 0 --len16
}

@test "a 64-bit length used for 65535 bytes (not minimal) fails with 1002" {
	fails_with_1002 --size 65535 --len64
}

@test "a 64-bit length used for 5 bytes (not minimal) fails with 1002" {
	fails_with_1002 --size 5 --len64
}

@test "a 64-bit length with the top bit set fails with 1002" {
	answer --expect 3 hs + frame --claim-len 0x8000000000000005 --len64 --hex 0102030405 + frame --text after -- --random-max 1
	assert_success
	assert_line 'CLOSE 1002'
	refute_line --partial 'TEXT'
	assert_line 'EXIT 3'
}

@test "an unmasked client frame fails with 1002" {
	fails_with_1002 --text hello --unmasked
}

@test "RSV1 set fails with 1002 (no extension was agreed)" {
	fails_with_1002 --text hello --rsv 4
}

@test "RSV2 set fails with 1002" {
	fails_with_1002 --text hello --rsv 2
}

@test "RSV3 set fails with 1002" {
	fails_with_1002 --text hello --rsv 1
}

@test "RSV bits on a control frame fail with 1002" {
	fails_with_1002 --opcode ping --text x --rsv 4
}

@test "reserved data opcodes 3-7 fail with 1002" {
	for op in 3 4 5 6 7; do
		fails_with_1002 --opcode $op --text x
	done
}

@test "reserved control opcodes 11-15 fail with 1002" {
	for op in 11 12 13 14 15; do
		fails_with_1002 --opcode $op --text x
	done
}

@test "a ping with 126 bytes (control frame over 125) fails with 1002" {
	fails_with_1002 --opcode ping --size 126
}

@test "a close with 126 bytes fails with 1002" {
	fails_with_1002 --opcode close --code 1000 --size 124
}

@test "a ping without FIN (fragmented control frame) fails with 1002" {
	fails_with_1002 --opcode ping --fin 0 --text x
}

@test "a ping gets a pong with the same payload" {
	answer --expect 0 hs + frame --opcode ping --text 'are you there?' + $(close_frame)
	assert_success
	assert_line --index 4 'PONG "are you there?"'
	assert_line 'EXIT 0'
}

@test "a ping with 125 bytes and an empty ping get pongs with the same payloads" {
	answer --expect 0 hs + frame --opcode ping --size 125 + frame --opcode ping + $(close_frame)
	assert_success
	assert_line --index 4 'PONG <pattern 125>'
	assert_line --index 5 'PONG ""'
}

@test "a ping between the fragments of a message is answered at once" {
	answer --expect 0 hs + frame --text 'part one, ' --fin 0 + frame --opcode ping --hex 01ff \
		+ wait '^PONG' + frame --opcode cont --text 'part two' + $(close_frame) -- --random-max 1
	assert_success # no TIMEOUT: the pong came before the message was finished
	assert_line --index 4 'PONG "\x01\xff"'
	assert_line --index 5 'TEXT "part one, part two - 1"'
	assert_line 'EXIT 0'
}

@test "an unsolicited pong is ignored" {
	answer --expect 0 hs + frame --opcode pong --text x + frame --text hi + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 4 'TEXT "hi - 1"'
	assert_line --index 5 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "a continuation frame without a message in progress fails with 1002" {
	fails_with_1002 --opcode cont --text orphan
}

@test "a final continuation after a complete message fails with 1002" {
	answer --expect 3 hs + frame --text done + frame --opcode cont --text extra -- --random-max 1
	assert_success
	assert_line 'TEXT "done - 1"'
	assert_line 'CLOSE 1002'
	assert_line 'EXIT 3'
}

@test "a new text frame while a message is in progress fails with 1002" {
	answer --expect 3 hs + frame --text first --fin 0 + frame --text second -- --random-max 1
	assert_success
	assert_line 'CLOSE 1002'
	refute_line --regexp '^TEXT'
	assert_line 'EXIT 3'
}

@test "a new binary frame while a text message is in progress fails with 1002" {
	answer --expect 3 hs + frame --text first --fin 0 + frame --opcode binary --text second -- --random-max 1
	assert_success
	assert_line 'CLOSE 1002'
	refute_line --regexp '^(TEXT|BINARY)'
	assert_line 'EXIT 3'
}

@test "empty frames and empty messages are legal" {
	answer --expect 0 --chunkings all,byte hs + frame --text '' + frame --opcode binary + frame --fin 0 --text '' \
		+ frame --opcode cont --fin 0 + frame --opcode cont --text '' + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 4 'TEXT " - 1"'
	assert_line --index 5 'BINARY " - 1"'
	assert_line --index 6 'TEXT " - 1"'
	assert_line 'EXIT 0'
}

@test "--echo returns empty messages as empty messages" {
	answer --expect 0 hs + frame --text '' + frame --opcode binary + $(close_frame) -- --echo
	assert_success
	assert_line --index 4 'TEXT ""'
	assert_line --index 5 'BINARY ""'
}

@test "a fragmented message comes back joined with the suffix at the end" {
	answer --expect 0 hs + frame --fin 0 --text 'Hel' + frame --opcode cont --fin 0 --text 'lo th' \
		+ frame --opcode cont --text 'ere' + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 4 'TEXT "Hello there - 1"'
	assert_line --index 5 'CLOSE 1000'
}

@test "a fragmented message sent as frames carries the suffix only in its last frame" {
	answer --expect 0 --frames --chunkings all hs + frame --fin 0 --text 'Hel' + frame --opcode cont --text 'lo' + $(close_frame) -- --random-max 1
	assert_success
	# whatever frames the answer uses, the suffix comes once, at the very end
	run bash -c "grep -E '^(TEXT|CONT) fin=' | sed -E 's/^(TEXT|CONT) fin=[01] \"(.*)\"\$/\\2/' | tr -d '\\n'" <<<"$output"
	assert_output 'Hello - 1'
}

@test "a big fragmented binary message comes back with the joined payload" {
	answer --expect 0 --chunkings all,random:9 hs + frame --opcode binary --fin 0 --size 70000 \
		+ frame --opcode cont --fin 0 --size 1 --offset 70000 \
		+ frame --opcode cont --fin 0 --size 0 \
		+ frame --opcode cont --size 200000 --offset 70001 + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 4 'BINARY <pattern 270001>" - 1"'
	assert_line 'EXIT 0'
}

@test "--echo returns a fragmented message with the joined payload unchanged" {
	answer --expect 0 hs + frame --opcode binary --fin 0 --size 1000 \
		+ frame --opcode cont --size 3000 --offset 1000 + $(close_frame) -- --echo
	assert_success
	assert_line --index 4 'BINARY <pattern 4000>'
}

@test "10,000 messages in one write all come back in order" {
	answer --expect 0 --timeout 30 --chunkings all hs + many --count 10000 + $(close_frame) -- --random-max 1
	assert_success
	diff <(grep '^TEXT' <<<"$output") <(seq 1 10000 | sed 's/.*/TEXT "msg & - 1"/')
	assert_line 'EXIT 0'
}

@test "a conversation gives the same answer in every chunking, one byte at a time included" {
	# the frames of the answer may follow the reads; the messages may not
	answer --expect 0 --chunkings all,byte,random:1,random:2,random:3,2,5 \
		hs + frame --text 'Hello' + frame --opcode ping --text p1 + frame --fin 0 --opcode binary --size 130 \
		+ frame --opcode ping + frame --opcode cont --fin 0 --size 0 --offset 130 \
		+ frame --opcode cont --size 200 --offset 130 + frame --opcode pong --text u \
		+ frame --text '' + $(close_frame) -- --random-max 1
	assert_success
	refute_line --partial MISMATCH
	assert_line --index 4 'TEXT "Hello - 1"'
	assert_line --index 5 'PONG "p1"'
	assert_line --index 6 'PONG ""'
	assert_line --index 7 'BINARY <pattern 330>" - 1"'
	assert_line --index 8 'TEXT " - 1"'
	assert_line --index 9 'CLOSE 1000'
}

@test "a protocol error gives the same answer in every chunking" {
	answer --expect 3 --chunkings all,byte,random:4,3 hs + frame --text ok + frame --text x --rsv 2 -- --random-max 1
	assert_success
	refute_line --partial MISMATCH
	assert_line 'TEXT "ok - 1"'
	assert_line 'CLOSE 1002'
	assert_line 'EXIT 3'
}

@test "the answer is the same on two pipes as on a socket" {
	answer --expect 0 --pipes --chunkings all,byte hs + frame --text 'one' + frame --opcode ping --text p + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 4 'TEXT "one - 1"'
	assert_line --index 5 'PONG "p"'
	assert_line --index 6 'CLOSE 1000'
	assert_line 'EXIT 0'
}
