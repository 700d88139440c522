#!/usr/bin/env bats
# The opening handshake (RFC 6455 section 4) and the plain HTTP answers of wsfilter,
# byte-exact over a socketpair (fd 0 = fd 1, as under inetd or socat).

load lib/common

# refused CODE CONVERSATION [-- WSFILTER-ARGS]: the request is refused: a well-formed
# answer with status CODE, then wsfilter exits 3.
refused() {
	local code=$1
	shift
	answer --expect 3 "$@"
	assert_success
	assert_line --index 0 --regexp "^HTTP/1\.1 $code "
	assert_line 'EXIT 3'
}

# upgraded CONVERSATION [-- WSFILTER-ARGS]: a well-formed 101; the client then
# leaves (exit 4).
upgraded() {
	answer --expect 4 "$@"
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
}

@test "the RFC 6455 example key gets the RFC's Sec-WebSocket-Accept" {
	upgraded hs --key dGhlIHNhbXBsZSBub25jZQ==
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
	upgraded hs
	assert_line 'EXIT 4'
}

@test "lower-case header names are accepted" {
	upgraded hs --header-case lower
}

@test "upper-case header names and tokens are accepted" {
	upgraded hs --header-case upper --upgrade WEBSOCKET --connection UPGRADE
}

@test "Connection with several tokens (keep-alive, Upgrade) is accepted" {
	upgraded hs --connection 'keep-alive, Upgrade'
}

@test "the upgrade works on any path" {
	upgraded hs --path '/chat/room?id=7'
}

@test "a request line without an HTTP version gets 400" {
	refused 400 hs --request-line 'GET /'
}

@test "a request line with an unknown protocol gets 400" {
	refused 400 hs --request-line 'GET / FTP/1.1'
}

@test "a garbage request line gets 400" {
	refused 400 hs --request-line $'\x01\x02 garbage'
}

@test "an HTTP/1.0 upgrade gets 400" {
	refused 400 hs --http HTTP/1.0
}

@test "an upgrade without Host gets 400" {
	refused 400 hs --no-host
}

@test "an upgrade without Sec-WebSocket-Key gets 400" {
	refused 400 hs --no-key
}

@test "a key of 15 bytes gets 400" {
	refused 400 hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*15).decode())')"
}

@test "a key of 17 bytes gets 400" {
	refused 400 hs --key "$("$PY" -c 'import base64; print(base64.b64encode(b"x"*17).decode())')"
}

@test "a key that is not base64 gets 400" {
	refused 400 hs --key 'dGhlIHNhbXBsZSBub25j!!=='
}

@test "a key with base64 padding in the middle gets 400" {
	refused 400 hs --key 'dGhlIHNhbX=sZSBub25jZQ=='
}

@test "Connection without the Upgrade token gets 400" {
	refused 400 hs --connection keep-alive
}

@test "a POST upgrade gets 405 with Allow: GET" {
	refused 405 hs --method POST
	assert_line 'Allow: GET'
	assert_line 'EXIT 3'
}

@test "Sec-WebSocket-Version 8 gets 426 with Sec-WebSocket-Version: 13" {
	refused 426 hs --version 8
	assert_line 'Sec-WebSocket-Version: 13'
	assert_line 'EXIT 3'
}

@test "with --origin a different Origin gets 403" {
	refused 403 hs --origin https://evil.example -- --origin https://good.example
}

@test "with --origin the same Origin gets 101" {
	upgraded hs --origin https://good.example -- --origin https://other.example --origin https://good.example
}

@test "a head over 8 KiB gets 431" {
	refused 431 hs --pad 9000
}

@test "a head a little under 8 KiB is accepted" {
	upgraded hs --pad 7000
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
	refused 404 http GET /nope
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
	upgraded hs --protocol 'foo, superchat, chat' -- --protocol chat --protocol superchat
	assert_line 'Sec-WebSocket-Protocol: superchat'
}

@test "protocols offered on several header lines are all considered" {
	answer --expect 4 hs --protocol foo --protocol chat -- --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
}

@test "no common protocol: 101 without Sec-WebSocket-Protocol" {
	upgraded hs --protocol 'foo, bar' -- --protocol chat
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "without --protocol an offered protocol is not selected" {
	upgraded hs --protocol chat
	refute_line --partial 'Sec-WebSocket-Protocol'
}

@test "a permessage-deflate offer gets no Sec-WebSocket-Extensions header" {
	upgraded hs --extensions 'permessage-deflate; client_max_window_bits'
	refute_line --partial 'Sec-WebSocket-Extensions'
}

@test "frames pipelined in the same write as the handshake are answered" {
	answer --expect 0 hs + frame --text one + frame --text two + $(close_frame) -- --random-max 1
	assert_success
	assert_line --index 0 --regexp '^HTTP/1\.1 101 '
	assert_line 'TEXT "one - 1"'
	assert_line 'TEXT "two - 1"'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

@test "the handshake gives the same answer in every chunking, one byte at a time included" {
	answer --expect 0 --chunkings all,byte,random:1,random:2,7 \
		hs --protocol 'x, chat' + frame --text hi + $(close_frame) -- --random-max 1 --protocol chat
	assert_success
	assert_line 'Sec-WebSocket-Protocol: chat'
	assert_line 'TEXT "hi - 1"'
	assert_line 'EXIT 0'
}

@test "an upgrade without Sec-WebSocket-Version gets 400, not 426" {
	refused 400 hs --no-version
	refute_line 'Sec-WebSocket-Version: 13'
	assert_line 'EXIT 3'
}

@test "two Host fields get 400, in an upgrade and in a plain request" {
	refused 400 hs --header 'Host: other.example'
	refused 400 http GET /healthz --header 'Host: other.example'
}

@test "a header line without a colon gets 400" {
	refused 400 hs --header 'NoColonHere'
	refused 400 http GET /healthz --header 'NoColonHere'
}

@test "a header with a control character gets 400" {
	refused 400 hs --header $'X-Note: a\x01b'
	refused 400 http GET /healthz --header 'X-Note: a\x1fb'
	refused 400 http GET /healthz --header 'X-\x02: b'
}

@test "a request target that does not start with / gets 400" {
	# (not the absolute form http://host/path, which HTTP/1.1 servers must accept)
	refused 400 hs --path 'x/y'
	refused 400 http GET 'x/y'
	refused 400 http GET '*'
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

# ---- strict HTTP heads over TCP: the answer, the log line, the Date ---------
# (ops, expect_transcript, HEAD_101, UPG and assert_http_date: lib/common.bash)

@test "a plain GET without Host gets 400 \"missing Host\", its body then EOF; logged, exit 3" {
	run ops --expect 3 'send:GET / HTTP/1.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_line --regexp '^BODY [0-9]+ 400 Bad Request: missing Host'
	assert_equal "$(grep -A1 '^BODY ' <<<"$output" | sed 1d)" "EOF"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 400 \"GET /\" [0-9.]+s \(missing Host\), exit 3\$"
	assert_http_date
}

@test "methods are case-sensitive: 'get' gets 405, Allow: GET with the upgrade headers and Allow: GET, HEAD without" {
	run ops --expect 3 "send:get / HTTP/1.1\r\nHost: 127.0.0.1\r\n$UPG\r\n" head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 405 Method Not Allowed"
	assert_line "H allow: GET"
	refute_line --partial "101"
	assert_line "EXIT 3"
	assert_line --regexp "^LOG ${LOGP}.* http 405 \"get /\" .*, exit 3\$"
	assert_http_date
	# without the upgrade headers: an unknown method of plain HTTP
	run ops --expect 3 'send:get / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 405 Method Not Allowed"
	assert_line "H allow: GET, HEAD"
	assert_line "EXIT 3"
	assert_http_date
}

@test "HEAD /nope gets 404 with a Content-Length and not one body byte after the head" {
	run ops --expect 3 req:HEAD:/nope head eof
	assert_success
	expect_transcript "STATUS HTTP/1.1 404 Not Found" \
		"$(grep '^H date: ' <<<"$output")" \
		"H content-type: text/plain; charset=utf-8" \
		"$(grep '^H content-length: ' <<<"$output")" \
		"H connection: close" "EOF" "EXIT 3" "$(grep '^LOG ' <<<"$output")"
	assert_line --regexp '^H content-length: [1-9][0-9]*$'
	assert_line --regexp "^LOG ${LOGP}.* http 404 \"HEAD /nope\" .*\(no such page\), exit 3\$"
	assert_http_date
}

@test "a second Origin (evil, then the allowed one) gets 400, and so does a second Host, Sec-WebSocket-Key or Sec-WebSocket-Version" {
	local base='GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n'
	run ops --expect 3 "send:${base}Origin: http://evil.example\r\nOrigin: http://good.example\r\n$UPG\r\n" \
		head body eof -- --origin http://good.example
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_line --regexp '^BODY [0-9]+ 400 Bad Request: more than one Origin'
	assert_line "EXIT 3"
	assert_http_date
	# the allowed Origin alone is let in (the 400 above is for the second field)
	run ops --expect 0 "send:${base}Origin: http://good.example\r\n$UPG\r\n" head close:1000 frame eof \
		-- --origin http://good.example
	assert_success
	assert_line "ACCEPT ok"
	local extra why
	for extra in 'Host: 127.0.0.1\r\n:more than one Host' \
		'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n:more than one Sec-WebSocket-Key' \
		'Sec-WebSocket-Version: 13\r\n:more than one Sec-WebSocket-Version'; do
		why=${extra##*:}
		run ops --expect 3 "send:$base${extra%:*}$UPG\r\n" head body eof
		assert_success
		assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
		assert_line --regexp "^BODY [0-9]+ 400 Bad Request: $why"
		assert_line "EXIT 3"
		assert_http_date
	done
}

@test "the absolute form GET http://x/ HTTP/1.1 is an upgrade with the upgrade headers (101, the right accept) and gets the page without them" {
	run ops --expect 0 "send:GET http://x/ HTTP/1.1\r\nHost: x\r\n$UPG\r\n" head text:hi frame close:1000 frame eof -- --echo
	assert_success
	expect_transcript "${HEAD_101[@]}" "TEXT hi" "CLOSE 1000" "EOF" "EXIT 0" "$(grep '^LOG ' <<<"$output")"
	local size
	size=$(stat -c %s "$TOP/web/index.html")
	run ops --expect 0 'send:GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n' head eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 200 OK"
	assert_line "H content-length: $size"
	assert_line --regexp "^EXTRA $size <!doctype html>"
	assert_line --regexp "^LOG ${LOGP}.* http 200 page \"GET http://x/\" .*exit 0\$"
	assert_http_date
}

@test "HTTP log lines carry the method and the target, control characters and quotes as '?'" {
	run ops --expect 0 req:GET:/healthz?probe=1 head body eof
	assert_success
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ http 200 health check \"GET /healthz\?probe=1\" [0-9]+\.[0-9]{3}s, exit 0\$"
	assert_http_date
	run ops --expect 3 'send:GET /a\x01b"c\x1b[1m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 400 Bad Request"
	assert_equal "$(grep -c '^LOG ' <<<"$output")" 1
	assert_line --regexp "^LOG ${LOGP}.* http 400 \"GET /a\?b\?c\?\[1m\" [0-9.]+s \(malformed request target\), exit 3\$"
	refute_output --partial $'\x1b'
}

@test "every plain HTTP answer carries a Date that is an IMF-fixdate within a minute of now" {
	local req
	for req in req:GET:/healthz req:HEAD:/ req:GET:/nope req:POST:/; do
		run ops --expect "$([ "$req" = req:GET:/healthz ] || [ "$req" = req:HEAD:/ ] && echo 0 || echo 3)" \
			"$req" head eof
		assert_success
		refute_line --regexp '^MALFORMED'
		assert_http_date
	done
	run ops --expect 3 "send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n${UPG/13/8}\r\n" head body eof
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 426 Upgrade Required"
	assert_http_date
	run ops --expect 5 'send:GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n' head body eof -- --handshake-timeout 1
	assert_success
	assert_line --index 1 "STATUS HTTP/1.1 408 Request Timeout"
	assert_http_date
	# the 101 is not a plain answer: no Date there
	run ops --expect 0 hs head close:1000 frame eof
	assert_success
	refute_line --partial "H date:"
}
