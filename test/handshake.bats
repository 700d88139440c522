#!/usr/bin/env bats
# The opening handshake (RFC 6455 section 4) and the plain HTTP answers of wsfilter,
# byte-exact over a socketpair (fd 0 = fd 1, as under inetd or socat).

load common
load wsrun

@test "the RFC 6455 example key gets the RFC's Sec-WebSocket-Accept" {
	answer hs --key dGhlIHNhbXBsZSBub25jZQ==
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo='
	assert_line 'Upgrade: websocket'
	assert_line 'Connection: Upgrade'
}

@test "a random key gets the SHA-1/base64 accept value computed from it" {
	key=$("$PY" -c 'import base64,os; print(base64.b64encode(os.urandom(16)).decode())')
	answer hs --key "$key"
	assert_success
	assert_line "Sec-WebSocket-Accept: $(ws accept "$key")"
}

@test "a client that leaves after the handshake makes wsfilter exit 4" {
	answer hs
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'EXIT 4'
}

@test "lower-case header names are accepted" {
	answer hs --header-case lower
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "upper-case header names and tokens are accepted" {
	answer hs --header-case upper --upgrade WEBSOCKET --connection UPGRADE
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "Connection with several tokens (keep-alive, Upgrade) is accepted" {
	answer hs --connection 'keep-alive, Upgrade'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "the upgrade works on any path" {
	answer hs --path '/chat/room?id=7'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a request line without an HTTP version gets 400" {
	answer hs --request-line 'GET /'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a request line with an unknown protocol gets 400" {
	answer hs --request-line 'GET / FTP/1.1'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a garbage request line gets 400" {
	answer hs --request-line $'\x01\x02 garbage'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an HTTP/1.0 upgrade gets 400" {
	answer hs --http HTTP/1.0
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an upgrade without Host gets 400" {
	answer hs --no-host
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "an upgrade without Sec-WebSocket-Key gets 400" {
	answer hs --no-key
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key of 15 bytes gets 400" {
	answer hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*15).decode())')"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key of 17 bytes gets 400" {
	answer hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*17).decode())')"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key that is not base64 gets 400" {
	answer hs --key 'dGhlIHNhbXBsZSBub25j!!=='
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a key with base64 padding in the middle gets 400" {
	answer hs --key 'dGhlIHNhbX=sZSBub25jZQ=='
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "Connection without the Upgrade token gets 400" {
	answer hs --connection keep-alive
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 400 '
	assert_line 'EXIT 3'
}

@test "a POST upgrade gets 405 with Allow: GET" {
	answer hs --method POST
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 405 '
	assert_line 'Allow: GET'
	assert_line 'EXIT 3'
}

@test "Sec-WebSocket-Version 8 gets 426 with Sec-WebSocket-Version: 13" {
	answer hs --version 8
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 426 '
	assert_line 'Sec-WebSocket-Version: 13'
	assert_line 'EXIT 3'
}

@test "with --origin a different Origin gets 403" {
	answer hs --origin https://evil.example -- --origin https://good.example
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 403 '
	assert_line 'EXIT 3'
}

@test "with --origin the same Origin gets 101" {
	answer hs --origin https://good.example -- --origin https://other.example --origin https://good.example
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a head over 8 KiB gets 431" {
	answer hs --pad 9000
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 431 '
	assert_line 'EXIT 3'
}

@test "a head a little under 8 KiB is accepted" {
	answer hs --pad 7000
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "a head that never completes gets 408 or a silent close after --handshake-timeout" {
	run ws run --hold --timeout 6 hs --no-end -- --handshake-timeout 1
	assert_success
	if [ "${#lines[@]}" -gt 1 ]; then
		assert_line --index 0 --regexp '^HTTP/1\.1 408 '
	fi
	assert_line 'EXIT 5'
}

@test "GET / serves the page with its headers" {
	answer http GET /
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
	answer http GET /
	assert_success
	assert_line "Content-Length: $size"
	assert_line "BODY <$size bytes sha256:$sum>"
}

@test "HEAD / sends the same headers as GET / and no body" {
	answer http GET /
	assert_success
	get_headers=$(grep -v -e '^BODY ' -e '^EXIT ' -e '^Date:' <<<"$output")
	answer http HEAD /
	assert_success # a body after the head would show as MALFORMED
	refute_line --partial 'BODY'
	assert_line 'EXIT 0'
	head_headers=$(grep -v -e '^EXIT ' -e '^Date:' <<<"$output")
	assert_equal "$head_headers" "$get_headers"
}

@test "GET /healthz answers 200 ok" {
	answer http GET /healthz
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 200 '
	assert_line --regexp '^BODY "ok(\\n)?"$'
	assert_line 'EXIT 0'
}

@test "GET /nope answers 404" {
	answer http GET /nope
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 404 '
}

@test "every HTTP answer has Connection: close and a Content-Length matching its body" {
	n=0
	for req in "http GET /" "http HEAD /" "http GET /healthz" "http GET /nope" "hs --no-key" \
		"hs --method POST" "hs --version 8" "hs --pad 9000" "hs --origin https://x.example"; do
		# shellcheck disable=SC2086
		answer $req -- --origin https://y.example
		# ws.py flags a missing Connection: close and a Content-Length that differs from
		# the body (or a body after a HEAD answer) as MALFORMED and fails
		assert_success
		assert_line 'Connection: close'
		assert_line --regexp '^Content-Length: [0-9]+$'
		n=$((n + 1))
	done
	assert_equal "$n" 9
}

@test "--protocol selects the first protocol the client offers that the server knows" {
	answer hs --protocol 'foo, superchat, chat' -- --protocol chat --protocol superchat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'Sec-WebSocket-Protocol: superchat'
}

@test "protocols offered on several header lines are all considered" {
	answer hs --protocol foo --protocol chat -- --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
}

@test "no common protocol: 101 without Sec-WebSocket-Protocol" {
	answer hs --protocol 'foo, bar' -- --protocol chat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "without --protocol an offered protocol is not selected" {
	answer hs --protocol chat
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "a permessage-deflate offer gets no Sec-WebSocket-Extensions header" {
	answer hs --extensions 'permessage-deflate; client_max_window_bits'
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	refute_line --partial 'Sec-WebSocket-Extensions'
}

@test "frames pipelined in the same write as the handshake are answered" {
	answer hs + frame --text one + frame --text two + frame --opcode close --code 1000 -- --random-max 1
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'TEXT "one - 1"'
	assert_line 'TEXT "two - 1"'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "the handshake gives the same answer in every chunking, one byte at a time included" {
	answer --chunkings all,byte,random:1,random:2,7 \
		hs --protocol 'x, chat' + frame --text hi + frame --opcode close --code 1000 -- --random-max 1 --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
	assert_line 'TEXT "hi - 1"'
	assert_line 'EXIT 0'
}
