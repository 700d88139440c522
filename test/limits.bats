#!/usr/bin/env bats
# Size limits, flat memory, back-pressure and timers: the idle timeout and the
# keepalive pings (the timer tests run scenarios of test/lib/hostile_cases.py,
# which also bound the time to exit, the CPU time and the peak RSS and check
# the log line).

load lib/common

# hwm_below KB: the "VmHWM N kB" line of $output shows N < KB
hwm_below() {
	local kb
	kb=$(sed -n 's/^VmHWM \([0-9]*\) kB$/\1/p' <<<"$output")
	[ -n "$kb" ] || fail "no VmHWM line"
	[ "$kb" -gt 0 ] && [ "$kb" -lt "$1" ] || fail "peak RSS $kb kB, not under $1 kB"
}

@test "--max-message 1000 lets a 1000-byte message through" {
	answer --expect 0 hs + frame --size 1000 + $(close_frame) -- --max-message 1000 --random-max 1
	assert_success
	assert_line 'TEXT <pattern 1000>" - 1"'
	assert_line 'EXIT 0'
}

@test "--max-message 1000 lets a 1000-byte fragmented message through" {
	answer --expect 0 hs + frame --opcode binary --fin 0 --size 600 + frame --opcode cont --size 400 --offset 600 \
		+ $(close_frame) -- --max-message 1000 --echo
	assert_success
	assert_line 'BINARY <pattern 1000>'
	assert_line 'EXIT 0'
}

@test "--max-message 1000 fails a 1001-byte message with 1009" {
	answer --expect 3 hs + frame --size 1001 -- --max-message 1000
	assert_success
	assert_line 'CLOSE 1009'
	refute_line --regexp '^TEXT'
	assert_line 'EXIT 3'
}

@test "--max-message fails an oversized message with 1009 as soon as its header arrives" {
	# only the header of a 1001-byte frame: the close must come without the payload
	answer --expect 3 hs + frame --size 0 --claim-len 1001 + wait '^CLOSE' + raw 00 -- --max-message 1000
	assert_success # no TIMEOUT line
	assert_line 'CLOSE 1009'
	assert_line 'EXIT 3'
}

@test "--max-message fails a fragmented message with 1009 as soon as the fragment header passes the limit" {
	answer --expect 3 hs + frame --opcode binary --fin 0 --size 600 + frame --opcode cont --size 0 --claim-len 401 \
		+ wait '^CLOSE' + raw 00 -- --max-message 1000
	assert_success
	assert_line 'CLOSE 1009'
	refute_line --regexp '^BINARY'
	assert_line 'EXIT 3'
}

@test "--max-message does not limit a sequence of messages below it" {
	answer --expect 0 hs + frame --size 800 + frame --size 800 + frame --size 800 + $(close_frame) -- --max-message 1000 --echo
	assert_success
	assert_equal "$(grep -c '^TEXT <pattern 800>$' <<<"$output")" 3
	assert_line 'EXIT 0'
}

@test "a 256 MiB message streams through with peak RSS under 8 MiB" {
	skip_if_sanitized "its RSS says nothing about wsfilter's"
	run wst stream --expect 0 --size $((256 << 20)) --timeout 20 -- --random-max 1000
	assert_success
	assert_line --regexp '^received BINARY 26843546[0-9] bytes in [0-9]+ frames, payload ok, suffix " - ([1-9][0-9]{0,2}|1000)"$'
	hwm_below 8192
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "a 64 MiB text message in 64 KiB fragments streams through with peak RSS under 8 MiB" {
	skip_if_sanitized "its RSS says nothing about wsfilter's"
	run wst stream --expect 0 --size $((64 << 20)) --frame-size 65536 --opcode text --timeout 20 -- --random-max 1
	assert_success
	assert_line --regexp '^received TEXT 67108868 bytes in [0-9]+ frames, payload ok, suffix " - 1"$'
	hwm_below 8192
	assert_line 'EXIT 0'
}

@test "a 256 MiB message streams through correctly (also under sanitizers)" {
	run wst stream --expect 0 --size $((256 << 20)) --timeout 60 -- --echo
	assert_success
	assert_line --regexp '^received BINARY 268435456 bytes in [0-9]+ frames, payload ok, suffix ""$'
	assert_line 'EXIT 0'
}

# unread_flood KIND FRAME-SIZE [-- WSFILTER-ARGS]: a client sends 50 MB of KIND frames
# without reading: wsfilter stops reading before 10 MB, with its peak RSS under 8 MiB;
# once the client reads, every frame has its answer, exit 0.
unread_flood() {
	local kind=$1 size=$2
	shift 2
	run wst flood --expect 0 --kind "$kind" --bytes 50000000 --frame-size "$size" --timeout 10 "$@"
	assert_success
	assert_line --regexp '^sent [0-9]+ of 50000000 bytes, then wsfilter stopped reading$'
	sent=$(sed -n 's/^sent \([0-9]*\) of.*/\1/p' <<<"$output")
	[ "$sent" -lt 10000000 ] || fail "wsfilter read $sent bytes without its answers being read"
	hwm_below 8192
	assert_line --regexp '^answers ([0-9]+)/\1$'
	assert_line 'EXIT 0'
}

@test "a client that sends pings without reading makes wsfilter stop reading, memory stays small" {
	skip_if_sanitized "its RSS says nothing about wsfilter's"
	unread_flood ping 125
	# once the client reads again, every ping has its pong, then the close
	assert_line 'close received'
}

@test "a client that sends messages without reading makes wsfilter stop reading, memory stays small" {
	skip_if_sanitized "its RSS says nothing about wsfilter's"
	unread_flood message 65536 -- --echo
}

# ---- the idle timeout -------------------------------------------------------

@test "--idle-timeout 1 closes an idle connection with 1001 (going away) at about 1 s, exit 5, logged" {
	hostile idle-timeout
}

@test "--idle-timeout is reset by every message" {
	answer --expect 0 --hold --timeout 10 hs + frame --text a + sleep 0.6 + frame --text b + sleep 0.6 + frame --text c \
		+ sleep 0.6 + frame --text d + sleep 0.6 + frame --text e + $(close_frame) -- --idle-timeout 2 --random-max 1
	assert_success
	assert_line 'TEXT "e - 1"'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "--idle-timeout 2 with --ping-interval 1: the client's pongs count as input and keep it open" {
	hostile idle-with-answered-pings
}

@test "--idle-timeout 2 ends a client that sends until wsfilter stops reading and never reads, exit 5" {
	hostile idle-nonreader
}

@test "--idle-timeout 2 still ends such a client when --ping-interval 1 has a ping due that cannot be queued" {
	hostile idle-nonreader-with-pings
}

# ---- keepalive pings --------------------------------------------------------

@test "--ping-interval 1 sends pings; a client that answers them is still connected past 3 s, then closes, exit 0" {
	hostile keepalive-answered
}

@test "--ping-interval 1 --ping-timeout 1: a client that never answers gets pings, then close 1011 at about 2 s, exit 5" {
	hostile keepalive-unanswered
}

@test "without --ping-interval no ping is sent" {
	answer --expect 0 --timeout 8 --wait-timeout 1.5 hs + sleep 1.5 + $(close_frame)
	assert_success
	refute_line --regexp '^PING'
	assert_line 'EXIT 0'
}
