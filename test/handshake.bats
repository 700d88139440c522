#!/usr/bin/env bats
# The opening handshake (RFC 6455 section 4) and the plain HTTP answers of wsfilter,
# byte-exact over a socketpair (fd 0 = fd 1, as under inetd or socat).

load lib/common

@test "the RFC 6455 example key gets the RFC's Sec-WebSocket-Accept" {
	answer --expect 4 hs --key dGhlIHNhbXBsZSBub25jZQ==
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo='
	assert_line 'Upgrade: websocket'
	assert_line 'Connection: Upgrade'
}

@test "a random key gets the SHA-1/base64 accept value computed from it" {
	key=$("$PY" -c 'import base64,os; print(base64.b64encode(os.urandom(16)).decode())')
	answer --expect 4 hs --key "$key"
	assert_success
	assert_line "Sec-WebSocket-Accept: $(wst accept "$key")"
}

@test "a client that leaves after the handshake makes wsfilter exit 4" {
	answer --expect 4 hs
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'EXIT 4'
}

@test "lower-case header names are accepted" {
	answer --expect 4 hs --header-case lower
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "upper-case header names and tokens are accepted" {
	answer --expect 4 hs --header-case upper --upgrade WEBSOCKET --connection UPGRADE
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "Connection with several tokens (keep-alive, Upgrade) is accepted" {
	answer --expect 4 hs --connection 'keep-alive, Upgrade'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "the upgrade works on any path" {
	answer --expect 4 hs --path '/chat/room?id=7'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a request line without an HTTP version gets 400" {
	answer --expect 3 hs --request-line 'GET /'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a request line with an unknown protocol gets 400" {
	answer --expect 3 hs --request-line 'GET / FTP/1.1'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a garbage request line gets 400" {
	answer --expect 3 hs --request-line $'\x01\x02 garbage'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an HTTP/1.0 upgrade gets 400" {
	answer --expect 3 hs --http HTTP/1.0
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an upgrade without Host gets 400" {
	answer --expect 3 hs --no-host
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an upgrade without Sec-WebSocket-Key gets 400" {
	answer --expect 3 hs --no-key
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key of 15 bytes gets 400" {
	answer --expect 3 hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*15).decode())')"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key of 17 bytes gets 400" {
	answer --expect 3 hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*17).decode())')"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key that is not base64 gets 400" {
	answer --expect 3 hs --key 'dGhlIHNhbXBsZSBub25j!!=='
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key with base64 padding in the middle gets 400" {
	answer --expect 3 hs --key 'dGhlIHNhbX=sZSBub25jZQ=='
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "Connection without the Upgrade token gets 400" {
	answer --expect 3 hs --connection keep-alive
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a POST upgrade gets 405 with Allow: GET" {
	answer --expect 3 hs --method POST
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 405 '
	assert_line 'Allow: GET'
	assert_line 'EXIT 3'
}

@test "Sec-WebSocket-Version 8 gets 426 with Sec-WebSocket-Version: 13" {
	answer --expect 3 hs --version 8
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 426 '
	assert_line 'Sec-WebSocket-Version: 13'
	assert_line 'EXIT 3'
}

@test "with --origin a different Origin gets 403" {
	answer --expect 3 hs --origin https://evil.example -- --origin https://good.example
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 403 '
	assert_line 'EXIT 3'
}

@test "with --origin the same Origin gets 101" {
	answer --expect 4 hs --origin https://good.example -- --origin https://other.example --origin https://good.example
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a head over 8 KiB gets 431" {
	answer --expect 3 hs --pad 9000
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 431 '
	assert_line 'EXIT 3'
}

@test "a head a little under 8 KiB is accepted" {
	answer --expect 4 hs --pad 7000
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a head that never completes gets 408 after --handshake-timeout" {
	# README: 408 when part of a head came (a silent close only when nothing came)
	run wst run --expect 5 --hold --timeout 6 --time-from '^HTTP/' hs --no-end -- --handshake-timeout 1
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 408 '
	assert_line --regexp '^BODY "408 '
	assert_line 'EXIT 5'
}

@test "GET / serves the page with its headers" {
	answer --expect 0 http GET /
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	assert_line 'Content-Type: text/html; charset=utf-8'
	assert_line 'X-Content-Type-Options: nosniff'
	assert_line --regexp '^Content-Security-Policy: .+'
	assert_line 'EXIT 0'
}

@test "GET / sends exactly web/index.html with a matching Content-Length" {
	size=$(stat -c %s "$TOP/web/index.html")
	sum=$(sha256sum "$TOP/web/index.html" | cut -c1-16)
	answer --expect 0 http GET /
	assert_success
	assert_line "Content-Length: $size"
	assert_line "BODY <$size bytes sha256:$sum>"
}

@test "HEAD / sends the same headers as GET / and no body" {
	answer --expect 0 http GET /
	assert_success
	get_headers=$(grep -v -e '^BODY ' -e '^EXIT ' -e '^Date:' <<<"$output")
	answer --expect 0 http HEAD /
	assert_success # a body after the head would show as MALFORMED
	refute_line --partial 'BODY'
	assert_line 'EXIT 0'
	head_headers=$(grep -v -e '^EXIT ' -e '^Date:' <<<"$output")
	assert_equal "$head_headers" "$get_headers"
}

@test "GET /healthz answers 200 ok" {
	answer --expect 0 http GET /healthz
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	assert_line --regexp '^BODY "ok(\\n)?"$'
	assert_line 'EXIT 0'
}

@test "GET /nope answers 404" {
	answer --expect 3 http GET /nope
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 404 '
}

@test "every HTTP answer has Connection: close and a Content-Length matching its body" {
	local all=$BATS_TEST_TMPDIR/answers req code
	: >"$all"
	for req in "0 http GET /" "0 http HEAD /" "0 http GET /healthz" "3 http GET /nope" "3 hs --no-key" \
		"3 hs --method POST" "3 hs --version 8" "3 hs --pad 9000" "3 hs --origin https://x.example"; do
		code=${req%% *}
		# shellcheck disable=SC2086
		answer --expect "$code" ${req#* } -- --origin https://y.example
		# wstest flags a missing Connection: close and a Content-Length that differs from
		# the body (or a body after a HEAD answer) as MALFORMED and fails
		assert_success
		assert_line 'Connection: close'
		assert_line --regexp '^Content-Length: [0-9]+$'
		printf '%s\n' "$output" >>"$all"
	done
	# nine answers, each with its status line, Connection: close and Content-Length
	assert_equal "$(grep -c '^HTTP/1\.1 [1-5][0-9][0-9] ' "$all")" 9
	assert_equal "$(grep -cx 'Connection: close' "$all")" 9
	assert_equal "$(grep -cE '^Content-Length: [0-9]+$' "$all")" 9
	assert_equal "$(grep -cE '^HTTP/1\.1 (200|404|400|405|426|431|403) ' "$all")" 9
}

@test "--protocol selects the first protocol the client offers that the server knows" {
	answer --expect 4 hs --protocol 'foo, superchat, chat' -- --protocol chat --protocol superchat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'Sec-WebSocket-Protocol: superchat'
}

@test "protocols offered on several header lines are all considered" {
	answer --expect 4 hs --protocol foo --protocol chat -- --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
}

@test "no common protocol: 101 without Sec-WebSocket-Protocol" {
	answer --expect 4 hs --protocol 'foo, bar' -- --protocol chat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "without --protocol an offered protocol is not selected" {
	answer --expect 4 hs --protocol chat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "a permessage-deflate offer gets no Sec-WebSocket-Extensions header" {
	answer --expect 4 hs --extensions 'permessage-deflate; client_max_window_bits'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Extensions'
}

@test "frames pipelined in the same write as the handshake are answered" {
	answer --expect 0 hs + frame --text one + frame --text two + frame --opcode close --code 1000 -- --random-max 1
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'TEXT "one - 1"'
	assert_line 'TEXT "two - 1"'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "the handshake gives the same answer in every chunking, one byte at a time included" {
	answer --expect 0 --chunkings all,byte,random:1,random:2,7 \
		hs --protocol 'x, chat' + frame --text hi + frame --opcode close --code 1000 -- --random-max 1 --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
	assert_line 'TEXT "hi - 1"'
	assert_line 'EXIT 0'
}

@test "an upgrade without Sec-WebSocket-Version gets 400, not 426" {
	answer --expect 3 hs --no-version
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	refute_line 'Sec-WebSocket-Version: 13'
	assert_line 'EXIT 3'
}

@test "two Host fields get 400, in an upgrade and in a plain request" {
	answer --expect 3 hs --header 'Host: other.example'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET /healthz --header 'Host: other.example'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
}

@test "a header line without a colon gets 400" {
	answer --expect 3 hs --header 'NoColonHere'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET /healthz --header 'NoColonHere'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
}

@test "a header with a control character gets 400" {
	answer --expect 3 hs --header $'X-Note: a\x01b'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET /healthz --header 'X-Note: a\x1fb'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET /healthz --header 'X-\x02: b'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
}

@test "a request target that does not start with / gets 400" {
	# (not the absolute form http://host/path, which HTTP/1.1 servers must accept)
	answer --expect 3 hs --path 'x/y'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET 'x/y'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	answer --expect 3 http GET '*'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
}

@test "POST to a plain path gets 405 with Allow: GET, HEAD" {
	for path in / /healthz /nope; do
		answer --expect 3 http POST "$path" --header 'Content-Length: 0'
		assert_success
		assert_line --index 0 --regexp '^HTTP/1\.1 405 '
		assert_line 'Allow: GET, HEAD'
		assert_line 'EXIT 3'
	done
}
