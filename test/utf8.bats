#!/usr/bin/env bats
# UTF-8 in text messages (RFC 6455 sections 5.6 and 8.1): valid text passes however
# it is split; invalid text fails the connection with 1007 as soon as the bad byte
# arrives.

load lib/common

# fails_with_1007 HEX: a text message "hi" + HEX fails the connection with 1007
fails_with_1007() {
	run wst run --expect 3 --timeout 8 hs + frame --hex "6869$1" + frame --text after -- --close-timeout 1 --random-max 1
	assert_success
	assert_line 'CLOSE 1007'
	refute_line --regexp '^TEXT'
	assert_line 'EXIT 3'
}

# fails_at_once HEX: a non-final fragment "hi" + HEX brings the 1007 close before
# anything more is sent (wstest prints a TIMEOUT line and fails otherwise)
fails_at_once() {
	run wst run --expect 3 --timeout 8 hs + frame --fin 0 --hex "6869$1" + wait '^CLOSE' + frame --opcode cont --text end \
		-- --close-timeout 1
	assert_success
	assert_line 'CLOSE 1007'
	assert_line 'EXIT 3'
}

@test "2-, 3- and 4-byte characters pass" {
	run wst run --expect 0 hs + frame --text 'é€𝄞 ü ह 😀' + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'TEXT "é€𝄞 ü ह 😀 - 1"'
	assert_line 'EXIT 0'
}

@test "the first and last code points of each sequence length pass" {
	# U+0000 U+007F U+0080 U+07FF U+0800 U+D7FF U+E000 U+FFFD U+FFFF U+10000 U+10FFFF
	hex=007fc280dfbfe0a080ed9fbfee8080efbfbdefbfbff0908080f48fbfbf
	run wst run --expect 0 --hex hs + frame --hex $hex + $(close_frame) -- --echo
	assert_success
	assert_line "TEXT hex:$hex"
	assert_line 'EXIT 0'
}

@test "multi-byte characters split across frames at every byte pass" {
	hex=61c3a9e282acf09d849e7a # a é € 𝄞 z
	args=(hs)
	for i in $(seq 1 10); do
		args+=(+ frame --fin 0 --hex "${hex:0:$((2 * i))}" + frame --opcode cont --hex "${hex:$((2 * i))}")
	done
	args+=(+ frame --fin 0 --hex 61c3 + frame --opcode cont --fin 0 --hex a9e2 + frame --opcode cont --fin 0 --hex 82
		+ frame --opcode cont --fin 0 --hex acf0 + frame --opcode cont --fin 0 + frame --opcode cont --fin 0 --hex 9d84
		+ frame --opcode cont --hex 9e7a)
	run wst run --expect 0 --chunkings all,byte,random:1,random:2 "${args[@]}" + $(close_frame) -- --random-max 1
	assert_success
	assert_equal "$(grep -c '^TEXT "aé€𝄞z - 1"$' <<<"$output")" 11
	assert_line 'EXIT 0'
}

@test "valid text split across writes in the middle of characters passes" {
	run wst run --expect 0 --chunkings byte,random:5,3 hs + frame --text '€€€𝄞𝄞𝄞ééé' + frame --fin 0 --text 'ü' + frame --opcode cont --text '😀' + $(close_frame) -- --random-max 1
	assert_success
	assert_line 'TEXT "€€€𝄞𝄞𝄞ééé - 1"'
	assert_line 'TEXT "ü😀 - 1"'
}

@test "the overlong 2-byte encodings C0 80 and C1 BF fail with 1007" {
	fails_with_1007 c080
	fails_with_1007 c1bf
}

@test "the overlong 3-byte encodings E0 80 80 and E0 9F BF fail with 1007" {
	fails_with_1007 e08080
	fails_with_1007 e09fbf
}

@test "the overlong 4-byte encodings F0 80 80 80 and F0 8F BF BF fail with 1007" {
	fails_with_1007 f0808080
	fails_with_1007 f08fbfbf
}

@test "UTF-16 surrogates ED A0 80 and ED BF BF fail with 1007" {
	fails_with_1007 eda080
	fails_with_1007 edbfbf
}

@test "code points above U+10FFFF (F4 90 80 80) fail with 1007" {
	fails_with_1007 f4908080
	fails_with_1007 f4bfbfbf
}

@test "the bytes F5 to FF fail with 1007" {
	for b in f5 f6 f7 f8 f9 fa fb fc fd fe ff; do
		fails_with_1007 "${b}808080"
	done
}

@test "a lone continuation byte fails with 1007" {
	fails_with_1007 80
	fails_with_1007 bf
	fails_with_1007 c3a9a9
}

@test "a sequence cut short by an ASCII byte fails with 1007" {
	fails_with_1007 e28241
	fails_with_1007 c341
}

@test "a sequence truncated at the end of a message fails with 1007" {
	fails_with_1007 e282
	fails_with_1007 f09d84
	fails_with_1007 c3
}

@test "a sequence truncated at the end of a fragmented message fails with 1007" {
	run wst run --expect 3 hs + frame --fin 0 --hex 68e2 + frame --opcode cont --fin 0 --hex 82 + frame --opcode cont -- --close-timeout 1 --random-max 1
	assert_success
	assert_line 'CLOSE 1007'
	refute_line --regexp '^TEXT'
	assert_line 'EXIT 3'
}

@test "an invalid byte fails the connection at once, not at the end of the message" {
	fails_at_once ff
	fails_at_once c0
	fails_at_once 80
	fails_at_once f5
}

@test "an invalid second byte fails at once (E0 80, ED A0, F0 80, F4 90)" {
	fails_at_once e080
	fails_at_once eda0
	fails_at_once f080
	fails_at_once f490
}

@test "an invalid byte at every position of a multi-byte sequence split across frames fails at once" {
	# euro sign E2 82 AC and U+1D11E F0 9D 84 9E, with one byte replaced, one frame per byte
	for bad in ff82ac e241ac e282c0 ff9d849e f0419d9e f09dc09e f09d8441; do
		args=(hs + frame --fin 0 --text x)
		for ((i = 0; i < ${#bad}; i += 2)); do
			args+=(+ frame --opcode cont --fin 0 --hex "${bad:$i:2}")
		done
		run wst run --expect 3 --chunkings all,byte "${args[@]}" + wait '^CLOSE' + frame --opcode cont --text end -- --close-timeout 1
		assert_success
		assert_line 'CLOSE 1007'
		assert_line 'EXIT 3'
	done
}

@test "text after a complete message starts a fresh UTF-8 check" {
	# a message ending in a complete character, then one starting with a continuation byte
	run wst run --expect 3 hs + frame --hex c3a9 + frame --hex a9 -- --close-timeout 1 --random-max 1
	assert_success
	assert_line 'TEXT "é - 1"'
	assert_line 'CLOSE 1007'
	assert_line 'EXIT 3'
}

@test "binary messages are not checked for UTF-8" {
	run wst run --expect 0 --hex hs + frame --opcode binary --hex ffc080eda080 + $(close_frame) -- --echo
	assert_success
	assert_line 'BINARY hex:ffc080eda080'
	assert_line 'EXIT 0'
}

@test "ping payloads are not checked for UTF-8" {
	run wst run --expect 0 --hex hs + frame --opcode ping --hex ffc0 + $(close_frame)
	assert_success
	assert_line 'PONG hex:ffc0'
	assert_line 'EXIT 0'
}

@test "4-byte characters with the lead bytes F1, F2 and F3 pass, whole and split across frames" {
	# U+40000 U+7FFFF U+80000 U+BFFFF U+C0000 U+FFFFF
	hex=f1808080f1bfbfbff2808080f2bfbfbff3808080f3bfbfbf
	run wst run --expect 0 --hex --chunkings all,byte hs + frame --hex $hex \
		+ frame --fin 0 --hex f180 + frame --opcode cont --fin 0 --hex 80 + frame --opcode cont --hex 80 \
		+ frame --fin 0 --hex f3 + frame --opcode cont --hex bfbfbf + $(close_frame) -- --echo
	assert_success
	assert_line --index 4 "TEXT hex:$hex"
	assert_line --index 5 'TEXT hex:f1808080'
	assert_line --index 6 'TEXT hex:f3bfbfbf'
	assert_line 'EXIT 0'
}
