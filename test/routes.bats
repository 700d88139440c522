#!/usr/bin/env bats
# Deciding before the 101 (issue 23): --dir DIR routes an upgrade by its path to an
# executable inside DIR (longest match by whole segments, SCRIPT_NAME and PATH_INFO),
# refuses a malformed path (400) or one that names nothing runnable inside DIR (404),
# and never runs anything outside DIR, through symlinks or percent-encoding; --check
# PROGRAM admits (REMOTE_USER), refuses (403, or its own 4xx and headers) or fails
# (500: its exit status, a signal, its output, its time, with nothing of it left);
# --sameorigin; --header on every answer. Real scripts in a temporary DIR, over real
# TCP (wstest.py script), then under socat, systemd-socket-activate and the acceptor.
# Every run of wsfilter names the exit status it must end with (README's table: 0
# clean, 2 usage, 3 refused, 4 gone, 5 timeout, 6 the program or the check failed), and
# every 101 is checked for its Sec-WebSocket-Accept.

load lib/common
load lib/launchers

setup() {
	T=$BATS_TEST_TMPDIR
	D=$T/dir
	# argv of the slow checks' processes carries this, to find whatever is left of them
	MARK=wsroutes-$$-$RANDOM$RANDOM
	make_tree
}

teardown() {
	local p
	stop_launchers
	# the checks' process groups (their pids written down) while a process of this test's
	# is still in them, then anything with MARK
	for p in $(written_pids "$T"); do
		if ps -o args= -g "$p" 2>/dev/null | grep -qF -e "$T/" -e "$MARK"; then
			kill -KILL -- "-$p" 2>/dev/null || true
		fi
	done
	for p in $(pgrep -f -- "$MARK" || true); do
		kill -KILL "$p" 2>/dev/null || true
	done
}

# ---- the tree ---------------------------------------------------------------
#
# $T/dir, the --dir of most tests:
#   chat          executable: prints the variables that matter (env_report), exits 0
#   a/            a directory
#   a/b           executable, the same script
#   a/plain       a regular file without execute permission
#   plain         the same at the top
#   echo          executable: "got LINE" for each line, until EOF
#   fail          executable: reads a line, exits 3
#   cat           executable: exec cat (for --binary)
#   .hidden       executable, but a dot-leading segment is never looked up
#   fifo          a named pipe
#   alias         -> chat (a symlink that stays inside)
#   sub/inner     -> ../chat (the same through ..)
#   escape        -> $T/canary (a file outside)
#   up            -> ..  (a directory outside: $T)
#   outdir        -> $T/outside
#   abs           -> /bin/sh
# $T/canary and $T/outside/canary: executables outside DIR that leave $T/CANARY when run.
# Every program run inside DIR appends its path to $T/ran.
make_tree() {
	local f
	mkdir -p "$D/a" "$D/sub" "$T/outside" "$T/checks"
	for f in "$D/chat" "$D/a/b"; do
		env_report >"$f"
	done
	cat >"$D/echo" <<-EOF
		#!/bin/sh
		echo "\$0" >>"$T/ran"
		while IFS= read -r l; do echo "got \$l"; done
	EOF
	cat >"$D/fail" <<-EOF
		#!/bin/sh
		echo "\$0" >>"$T/ran"
		read -r l
		exit 3
	EOF
	cat >"$D/cat" <<-EOF
		#!/bin/sh
		echo "\$0" >>"$T/ran"
		exec cat
	EOF
	env_report >"$D/.hidden"
	env_report >"$D/plain"
	env_report >"$D/a/plain"
	chmod 755 "$D/chat" "$D/a/b" "$D/echo" "$D/fail" "$D/cat" "$D/.hidden"
	chmod 644 "$D/plain" "$D/a/plain"
	mkfifo "$D/fifo"
	ln -s chat "$D/alias"
	ln -s ../chat "$D/sub/inner"
	ln -s "$T/canary" "$D/escape"
	ln -s .. "$D/up"
	ln -s "$T/outside" "$D/outdir"
	ln -s /bin/sh "$D/abs"
	for f in "$T/canary" "$T/outside/canary"; do
		printf '#!/bin/sh\necho "$0" >>"%s/CANARY"\necho canary\n' "$T" >"$f"
		chmod 755 "$f"
	done
}

# env_report: a program that prints what it was given, one NAME=VALUE a line (<unset>
# for an unset variable), and "routed PATH" on stderr.
env_report() {
	cat <<-EOF
		#!/bin/sh
		echo "\$0" >>"$T/ran"
		printf 'SCRIPT_NAME=%s\n' "\${SCRIPT_NAME-<unset>}"
		printf 'PATH_INFO=%s\n' "\${PATH_INFO-<unset>}"
		printf 'QUERY_STRING=%s\n' "\${QUERY_STRING-<unset>}"
		printf 'REQUEST_URI=%s\n' "\${REQUEST_URI-<unset>}"
		printf 'REMOTE_USER=%s\n' "\${REMOTE_USER-<unset>}"
		printf 'HTTP_REMOTE_USER=%s\n' "\${HTTP_REMOTE_USER-<unset>}"
		printf 'ARGC=%s ARG0=%s\n' "\$#" "\$0"
		echo "routed \$0" >&2
	EOF
}

# check NAME [BODY]: an admission check $T/checks/NAME, a shell script with BODY (read
# from stdin without one); prints its path.
check() {
	local f=$T/checks/$1
	{
		echo '#!/bin/sh'
		if [ $# -gt 1 ]; then printf '%s\n' "$2"; else cat; fi
	} >"$f"
	chmod 755 "$f"
	echo "$f"
}

# ---- running and judging ----------------------------------------------------

# request EXIT STEPS TARGET [HEADER-LINE...] [-- WSFILTER-ARGS]: ws EXIT with an upgrade
# request for TARGET (req_for) and then the wstest.py STEPS (one word each).
request() {
	local expect=$1 steps=$2 target=$3 hdrs=()
	shift 3
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		hdrs+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	# shellcheck disable=SC2086 # STEPS are words
	ws "$expect" "send:$(req_for "$target" "${hdrs[@]}")" $steps -- "$@"
}

# upgrade EXIT TARGET [HEADER-LINE...] [-- WSFILTER-ARGS]: an upgrade request for TARGET
# (req_for), the answer's head, the program's messages until its close (wait:3), then EOF;
# wsfilter must end with EXIT (see assert_101).
upgrade() {
	request "$1" "head wait:3 eof" "${@:2}"
}

# refused CODE EXIT TARGET [HEADER-LINE...] [-- WSFILTER-ARGS]: an upgrade request for
# TARGET gets CODE instead of a 101 (a well-formed answer, its body whole), and wsfilter
# ends with EXIT.
refused() {
	local code=$1 expect=$2
	shift 2
	request "$expect" "head body eof" "$@"
	assert_success
	assert_line --index 1 --regexp "^STATUS HTTP/1\.1 $code "
	refute_line --partial '101 Switching'
	assert_line "EXIT $expect"
}

# assert_101: the transcript is a 101 with the right accept value, then the routed
# program's output and close 1000, and exit 0.
assert_101() {
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line 'CLOSE 1000'
	assert_line 'EXIT 0'
}

# assert_log REGEX: the connection's final log line is '<peer> REGEX' (the end of the line).
assert_log() {
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ $1\$"
}

# frames: the transcript's frames (TEXT, BINARY, CLOSE ... lines), in order.
frames() {
	grep -E '^(TEXT|BINARY|PING|PONG|CLOSE)( |$)' <<<"$output"
}

# assert_log_user NAME-REGEX: the connection's final log line is a websocket's, exit 0,
# and names the check's user (" user NAME" before a space or a comma).
assert_log_user() {
	grep -E "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ (.* )?user $1[ ,].*, exit 0\$" <<<"$output" | grep -q ' websocket ' ||
		fail "no websocket log line with 'user $1'"
}

# nothing_ran: no program inside DIR ran, and no canary outside it.
nothing_ran() {
	[ ! -e "$T/ran" ] || fail "a program ran: $(cat "$T/ran")"
	no_canary
}

no_canary() {
	[ ! -e "$T/CANARY" ] || fail "a program outside DIR ran: $(cat "$T/CANARY")"
}

# ---- routes -----------------------------------------------------------------

@test "--dir: /chat runs DIR/chat with SCRIPT_NAME=/chat, PATH_INFO empty, the query in QUERY_STRING, no arguments; its stderr in the log" {
	upgrade 0 '/chat?x=1&y=%2F' -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/chat'
	assert_line 'TEXT PATH_INFO='
	assert_line 'TEXT QUERY_STRING=x=1&y=%2F'
	assert_line 'TEXT REQUEST_URI=/chat?x=1&y=%2F'
	assert_line 'TEXT REMOTE_USER=<unset>'
	assert_line --regexp '^TEXT ARGC=0 ARG0=/.*/chat$'
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: routed /.*/chat$"
	assert_log 'websocket [0-9.]+s, in 0 msg 0 B, out 7 msg [0-9]+ B, close 1000 by server, program exited 0, exit 0'
	assert_equal "$(wc -l <"$T/ran")" 1
	no_canary
}

@test "--dir: longest match by whole segments: /chat/room1/x runs DIR/chat with PATH_INFO=/room1/x; /chatroom and /cha run nothing" {
	upgrade 0 /chat/room1/x -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/chat'
	assert_line 'TEXT PATH_INFO=/room1/x'
	assert_line 'TEXT QUERY_STRING='
	assert_line 'TEXT REQUEST_URI=/chat/room1/x'
	rm "$T/ran"
	local t
	for t in /chatroom /cha /chat.sh; do
		refused 404 3 "$t" -- --dir "$D"
		assert_log "http 404 \"GET [^\"]*\" [0-9.]+s \(no program for the path\), exit 3"
	done
	nothing_ran
}

@test "--dir: a directory is walked into: /a/b/c/d runs DIR/a/b with SCRIPT_NAME=/a/b and PATH_INFO=/c/d" {
	upgrade 0 '/a/b/c/d?q' -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/a/b'
	assert_line 'TEXT PATH_INFO=/c/d'
	assert_line 'TEXT QUERY_STRING=q'
	assert_line 'TEXT REQUEST_URI=/a/b/c/d?q'
	assert_line --regexp '^TEXT ARGC=0 ARG0=/.*/a/b$'
	upgrade 0 /a/b -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/a/b'
	assert_line 'TEXT PATH_INFO='
}

@test "--dir: SCRIPT_NAME and PATH_INFO are percent-decoded once; REQUEST_URI and QUERY_STRING stay as sent" {
	upgrade 0 '/%63hat/a%20b%2541/%C3%A9?q=%2F%2e' -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/chat'
	assert_line 'TEXT PATH_INFO=/a b%41/é'
	assert_line 'TEXT QUERY_STRING=q=%2F%2e'
	assert_line 'TEXT REQUEST_URI=/%63hat/a%20b%2541/%C3%A9?q=%2F%2e'
}

@test "--dir: the routed program runs as with -- PROGRAM: lines both ways, --binary, exit 3 gives close 1011 and exit 6" {
	ws 0 "send:$(req_for /echo/x)" head text:one frame text:two frame close:1000 frame eof -- --dir "$D"
	assert_success
	assert_line 'ACCEPT ok'
	assert_equal "$(frames)" $'TEXT got one\nTEXT got two\nCLOSE 1000'
	assert_line 'EXIT 0'
	assert_log 'websocket [0-9.]+s, in 2 msg 6 B, out 2 msg 14 B, close 1000 by client, program exited 0, exit 0'

	ws 0 "send:$(req_for /cat)" head bin:70000 collect:70000 close:1000 frame eof -- --binary --dir "$D"
	assert_success
	assert_line 'ACCEPT ok'
	assert_line --regexp '^COLLECTED 70000 B in [0-9]+ messages, equal$'
	assert_line 'EXIT 0'

	ws 6 "send:$(req_for /fail)" head text:x frame eof -- --dir "$D"
	assert_success
	assert_line 'ACCEPT ok'
	assert_line 'CLOSE 1011 program exited 3'
	assert_line 'EXIT 6'
	assert_log 'websocket .*close 1011 by server \(program exited 3\), exit 6'
}

@test "--dir: a symlink whose real path stays inside DIR runs its target; DIR given through a symlink, or relative, works" {
	upgrade 0 /alias/x -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/alias'
	assert_line 'TEXT PATH_INFO=/x'
	upgrade 0 /sub/inner -- --dir "$D"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/sub/inner'
	assert_line 'TEXT PATH_INFO='
	# DIR named through a symlink: the real paths below it are inside all the same
	ln -s "$D" "$T/dirlink"
	upgrade 0 /a/b/z -- --dir "$T/dirlink"
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/a/b'
	assert_line 'TEXT PATH_INFO=/z'
	# websocketd's users write --dir=scripts: relative to the working directory
	cd "$T"
	upgrade 0 /chat/y -- --dir dir
	assert_101
	assert_line 'TEXT SCRIPT_NAME=/chat'
	assert_line 'TEXT PATH_INFO=/y'
	assert_equal "$(wc -l <"$T/ran")" 4
	no_canary
}

@test "--dir: 404 and no program run for / , nothing there, a directory, a file without execute permission, a FIFO" {
	local row target reason
	for row in \
		'/|.*' \
		'/nothing|no program for the path' \
		'/nothing/more|no program for the path' \
		'/a|the path names a directory' \
		'/a/zz|no program for the path' \
		'/a/zz/b|no program for the path' \
		'/plain|.*not (an )?executable.*' \
		'/plain/x|.*not (an )?executable.*' \
		'/a/plain|.*not (an )?executable.*' \
		'/fifo|.*'; do
		target=${row%%|*} reason=${row#*|}
		echo "# $target"
		refused 404 3 "$target" -- --dir "$D"
		assert_log "http 404 \"GET [^\"]*\" [0-9.]+s \($reason\), exit 3"
	done
	nothing_ran
}

@test "--dir: 404 for a symlink whose real path lies outside DIR (a file, a directory, .., an absolute one): nothing outside runs" {
	local t
	for t in /escape /escape/x /up/canary /outdir/canary /abs /sub/inner/../../canary; do
		case $t in
		*/../*)
			# a .. segment is malformed before any lookup
			refused 400 3 "$t" -- --dir "$D"
			assert_log "http 400 \"GET [^\"]*\" [0-9.]+s \(malformed path for --dir\), exit 3"
			;;
		*)
			refused 404 3 "$t" -- --dir "$D"
			assert_log "http 404 \"GET [^\"]*\" [0-9.]+s \(.*outside --dir.*\), exit 3"
			;;
		esac
	done
	nothing_ran
}

@test "--dir: 400 for a malformed path: //, a trailing /, ., .., a dot-leading segment, %2F, %00, %0A, %7F, %zz, %4, a lone %; nothing runs" {
	local t
	for t in //chat /chat//x /chat/ /./chat /chat/.. /.hidden /a/.b \
		/chat%2Fx /a%2fb /chat/x%00y /chat%0A /chat%09 /chat%7F /chat%zz /chat%4 /chat%; do
		refused 400 3 "$t" -- --dir "$D"
		assert_log "http 400 \"GET [^\"]*\" [0-9.]+s \(malformed path for --dir\), exit 3"
	done
	nothing_ran
}

@test "--dir: traversal through percent-encoding never runs anything outside DIR: 400, or 404 for a double encoding decoded once" {
	local t
	for t in /%2e%2e/canary /%2E%2E/canary /.%2e/canary /a/%2e%2e/%2e%2e/canary \
		/..%2Fcanary /%2e%2e%2fcanary /a%2F..%2F..%2Fcanary /chat/..%2F..%2Fcanary \
		/..%5Ccanary '/%2e%2e/canary?x=1' 'http://h.example:99/%2e%2e/canary' 'http://h.example:99/a/../../canary'; do
		refused 400 3 "$t" -- --dir "$D"
		assert_log "http 400 \"GET [^\"]*\" [0-9.]+s \(malformed path for --dir\), exit 3"
	done
	# decoded once: "%2e%2e" is a name like any other, and nothing has it
	for t in /%252e%252e/canary /a/%252E%252E%252F%252E%252E/canary; do
		refused 404 3 "$t" -- --dir "$D"
		assert_log "http 404 \"GET [^\"]*\" [0-9.]+s \(no program for the path\), exit 3"
	done
	nothing_ran
}

@test "--dir: plain HTTP is unchanged: GET / is the page, GET /healthz 200, GET /chat 404 and runs nothing" {
	local size
	size=$(stat -c %s "$TOP/web/index.html")
	ws 0 req:GET:/ head body eof -- --dir "$D"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 200 OK'
	assert_line "H content-length: $size"
	assert_line --regexp "^BODY $size <!doctype html>"
	assert_log 'http 200 page "GET /" [0-9.]+s, exit 0'
	ws 0 req:GET:/healthz head body eof -- --dir "$D"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 200 OK'
	assert_line 'BODY 2 ok'
	ws 3 req:GET:/chat head body eof -- --dir "$D"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 404 Not Found'
	assert_log 'http 404 "GET /chat" [0-9.]+s \(no such page\), exit 3'
	nothing_ran
}

@test "usage: --dir with a PROGRAM, a --dir that is not a directory, missing or empty; --check without its word: exit 2" {
	local args
	for args in "--dir $D -- cat" "--dir $D cat" "--dir $D --binary -- $D/chat" "--dir $T/nonexistent" \
		"--dir $D/chat" "--dir $D/escape" "--dir /dev/null" "--dir" "--dir=" "--check"; do
		# shellcheck disable=SC2086
		run "$WSFILTER" $args </dev/null
		echo "wsfilter $args: exit $status: $output"
		assert_equal "$status" 2
	done
	nothing_ran
}

# ---- --check ----------------------------------------------------------------

@test "--check exit 0 admits: its Remote-User (LF or CRLF) is the program's REMOTE_USER and the log line's 'user NAME'" {
	local lf crlf
	lf=$(check lf 'echo "Remote-User: alice"')
	crlf=$(check crlf 'printf "X-Other: 1\r\nRemote-User: bob.o-k_1@example\r\n"')
	upgrade 0 /chat -- --dir "$D" --check "$lf"
	assert_101
	assert_line 'TEXT REMOTE_USER=alice'
	assert_line 'TEXT HTTP_REMOTE_USER=<unset>'
	assert_log_user alice
	upgrade 0 /chat -- --dir "$D" --check "$crlf"
	assert_101
	assert_line 'TEXT REMOTE_USER=bob.o-k_1@example'
	assert_log_user 'bob\.o-k_1@example'
	# a name of 64 bytes, the longest
	upgrade 0 /chat -- --dir "$D" --check "$(check u64 'printf "Remote-User: %064d\n" 0')"
	assert_101
	assert_line "TEXT REMOTE_USER=$(printf '%064d' 0)"
	assert_log_user "$(printf '%064d' 0)"
	# no Remote-User: no user, no REMOTE_USER
	upgrade 0 /chat -- --dir "$D" --check "$(check none 'exit 0')"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
	refute_line --regexp "^LOG .* user "
}

@test "a client's own Remote-User header only ever becomes HTTP_REMOTE_USER: without a check, with one that names no user, with one that names another" {
	local c
	upgrade 0 /chat 'Remote-User: mallory' -- --dir "$D"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
	assert_line 'TEXT HTTP_REMOTE_USER=mallory'
	refute_line --regexp "^LOG .* user mallory"
	upgrade 0 /chat 'remote-user: mallory' -- --dir "$D" --check "$(check nouser 'exit 0')"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
	assert_line 'TEXT HTTP_REMOTE_USER=mallory'
	refute_line --regexp "^LOG .* user "
	upgrade 0 /chat 'Remote-User: mallory' -- --dir "$D" --check "$(check alice 'echo "Remote-User: alice"')"
	assert_101
	assert_line 'TEXT REMOTE_USER=alice'
	assert_line 'TEXT HTTP_REMOTE_USER=mallory'
	refute_line --regexp "^LOG .* user mallory"
	# the same with a PROGRAM instead of --dir
	ws 0 "send:$(req_for /x 'Remote-User: mallory')" head wait:3 eof -- --check "$T/checks/nouser" "$D/chat"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
	assert_line 'TEXT HTTP_REMOTE_USER=mallory'
}

@test "REMOTE_USER never comes from wsfilter's own environment: only the check gives it" {
	# a CGI name, like the others README says never come from wsfilter's environment
	ws 0 --env REMOTE_USER=inherited "send:$(req_for /chat)" head wait:3 eof -- \
		--dir "$D" --check "$(check nouser 'exit 0')"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
	ws 0 --env REMOTE_USER=inherited "send:$(req_for /chat)" head wait:3 eof -- --dir "$D"
	assert_101
	assert_line 'TEXT REMOTE_USER=<unset>'
}

@test "--check sees the request's CGI variables (with --dir the routed SCRIPT_NAME and PATH_INFO), stdin /dev/null, its own process group; its stderr lines reach the log" {
	local c
	c=$(check vars <<-'EOF'
		echo "check REQUEST_URI=$REQUEST_URI SCRIPT_NAME=$SCRIPT_NAME PATH_INFO=$PATH_INFO QUERY_STRING=$QUERY_STRING" >&2
		echo "check REQUEST_METHOD=$REQUEST_METHOD REMOTE_ADDR=$REMOTE_ADDR HTTP_HOST=$HTTP_HOST HTTP_AUTHORIZATION=$HTTP_AUTHORIZATION" >&2
		echo "check stdin $(readlink /proc/$$/fd/0) $(wc -c) bytes" >&2
		pgid=$(cut -d' ' -f5 /proc/$$/stat)
		[ "$pgid" = $$ ] && echo "check leads its own process group" >&2
		echo "Remote-User: carol"
	EOF
	)
	# a message sent right behind the request: the check must not read it, the program gets it
	ws 0 "send:$(req_for '/echo/room/1?q=%41' 'Authorization: Bearer t0k')" text:hello head frame close:1000 frame eof -- \
		--dir "$D" --check "$c"
	assert_success
	assert_line 'ACCEPT ok'
	assert_equal "$(frames)" $'TEXT got hello\nCLOSE 1000'
	assert_line 'EXIT 0'
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: check REQUEST_URI=/echo/room/1\?q=%41 SCRIPT_NAME=/echo PATH_INFO=/room/1 QUERY_STRING=q=%41$"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: check REQUEST_METHOD=GET REMOTE_ADDR=127\.0\.0\.1 HTTP_HOST=h\.example:99 HTTP_AUTHORIZATION=Bearer t0k$"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: check stdin /dev/null 0 bytes$"
	assert_line --regexp "^LOG ${LOGP}127\.0\.0\.1:[0-9]+ program: check leads its own process group$"
	# run once
	assert_equal "$(grep -c 'program: check REQUEST_URI=' <<<"$output")" 1
	assert_log_user carol
}

@test "--check NAME without a slash is looked up in PATH" {
	mkdir "$T/bin"
	printf '#!/bin/sh\necho "Remote-User: pathuser"\n' >"$T/bin/wsroutes-check"
	chmod 755 "$T/bin/wsroutes-check"
	ws 0 --env "PATH=$T/bin:/usr/bin:/bin" "send:$(req_for /chat)" head wait:3 eof -- \
		--dir "$D" --check wsroutes-check
	assert_101
	assert_line 'TEXT REMOTE_USER=pathuser'
}

@test "--check exit 1 refuses with 403 and runs no program; a Status line gives its own 4xx, with the check's other header lines" {
	refused 403 3 /chat -- --dir "$D" --check "$(check deny 'exit 1')"
	assert_line --regexp '^STATUS HTTP/1\.1 403 Forbidden$'
	assert_log 'http 403 "GET /chat" [0-9.]+s \(.*\), exit 3'
	refused 401 3 /chat -- --dir "$D" --check \
		"$(check basic 'printf "Status: 401 Unauthorized\nWWW-Authenticate: Basic realm=\"x\"\n"; exit 1')"
	assert_line 'H www-authenticate: Basic realm="x"'
	assert_log 'http 401 "GET /chat" [0-9.]+s \(.*\), exit 3'
	refused 429 3 /chat -- --dir "$D" --check \
		"$(check slowdown 'printf "Status: 429 Slow Down\r\nRetry-After: 7\r\nX-Why: too many\r\n"; exit 1')"
	assert_line 'H retry-after: 7'
	assert_line 'H x-why: too many'
	# a status wsfilter has no name for
	refused 499 3 /chat -- --dir "$D" --check "$(check odd 'echo "Status: 499 Custom Thing"; exit 1')"
	# its own body, with its own Content-Type (once: ours gives way)
	refused 401 3 /chat -- --dir "$D" --check \
		"$(check page 'printf "Status: 401 No\nContent-Type: text/html\n\n<p>log in</p>\n"; exit 1')"
	assert_line 'H content-type: text/html'
	assert_equal "$(grep -ci '^H content-type:' <<<"$output")" 1
	assert_line 'BODY 14 <p>log in</p>\n'
	# the same with a PROGRAM
	refused 401 3 /x -- --check "$T/checks/basic" "$D/chat"
	assert_line 'H www-authenticate: Basic realm="x"'
	nothing_ran
}

@test "--check failing gives 500 and exit 6, no program run: another exit status, a signal, a forbidden or malformed line, a Status outside 4xx, a bad Remote-User, a check that cannot be run" {
	local row name body reason
	while IFS='|' read -r name body reason; do
		[ -n "$name" ] || continue
		echo "# $name: $body"
		refused 500 6 /chat -- --dir "$D" --check "$(check "$name" "$body")"
		assert_log "http 500 \"GET /chat\" [0-9.]+s \($reason\), exit 6"
	done <<-'EOF'
		exit2|exit 2|.*exited 2.*
		exit255|echo "Remote-User: x"; exit 255|.*exited 255.*
		segv|kill -SEGV $$|.*SIGSEGV.*
		kill9|echo "Status: 401 No"; kill -KILL $$|.*SIGKILL.*
		cl|echo "Content-Length: 5"; exit 1|.*
		cl-lower|echo "content-length: 5"; exit 1|.*
		connection|echo "Connection: keep-alive"; exit 1|.*
		date|echo "Date: Thu, 01 Jan 1970 00:00:00 GMT"; exit 1|.*
		upgrade|echo "Upgrade: websocket"; exit 1|.*
		te|printf "Status: 401 No\nTransfer-Encoding: chunked\n"; exit 1|.*
		keep-alive|echo "Keep-Alive: timeout=5"; exit 1|.*
		sec-accept|echo "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRk7sxOo="; exit 0|.*
		sec-protocol|echo "sec-websocket-protocol: chat"; exit 1|.*
		two-types|printf "Content-Type: text/html\nContent-Type: text/plain\n"; exit 1|.*
		empty-type|echo "Content-Type:"; exit 1|.*
		two-status|printf "Status: 401 No\nStatus: 403 No\n"; exit 1|.*
		two-users|printf "Remote-User: alice\nRemote-User: bob\n"; exit 0|.*
		nocolon|echo "no colon here"; exit 1|.*
		space-name|echo "Bad Name: x"; exit 1|.*
		empty-name|echo ": x"; exit 1|.*
		cr-inside|printf "X-A: a\rb\n"; exit 1|.*
		nul-inside|printf "X-A: a\000b\n"; exit 1|.*
		status-302|echo "Status: 302 Found"; exit 1|.*
		status-200|echo "Status: 200 OK"; exit 1|.*
		status-500|echo "Status: 500 Oops"; exit 1|.*
		status-399|echo "Status: 399 Low"; exit 1|.*
		status-text|echo "Status: abc"; exit 1|.*
		admit-garbage|echo "garbage"; exit 0|.*
		user-space|echo "Remote-User: a b"; exit 0|.*
		user-empty|echo "Remote-User: "; exit 0|.*
		user-65|printf "Remote-User: %065d\n" 0; exit 0|.*
		user-control|printf "Remote-User: a\033b\n"; exit 0|.*
	EOF
	# cannot be run: missing, not executable
	refused 500 6 /chat -- --dir "$D" --check "$T/checks/nonexistent"
	printf '#!/bin/sh\nexit 0\n' >"$T/checks/noexec"
	refused 500 6 /chat -- --dir "$D" --check "$T/checks/noexec"
	nothing_ran
}

@test "--check output: 4096 bytes are read whole (admitted), 4097 give 500; a check writing without end, fast or slowly, gives 500 at once, nothing of it left" {
	# 64 lines of 64 bytes
	local i
	for i in $(seq 1 64); do printf 'X-Pad: %056d\n' 0; done >"$T/out4096"
	assert_equal "$(stat -c %s "$T/out4096")" 4096
	{ printf 'X-Pad: %057d\n' 0; tail -n +2 "$T/out4096"; } >"$T/out4097"
	assert_equal "$(stat -c %s "$T/out4097")" 4097
	upgrade 0 /chat -- --dir "$D" --check "$(check c4096 "cat '$T/out4096'")"
	assert_101
	refused 500 6 /chat -- --dir "$D" --check "$(check c4097 "cat '$T/out4097'")"
	assert_log 'http 500 "GET /chat" [0-9.]+s \(.*4 KiB.*\), exit 6'
	# yes: well-formed lines, never an end; long before the handshake timeout (10 s)
	ws 6 mark "send:$(req_for /chat)" head elapsed body eof -- --dir "$D" \
		--check "$(check flood "echo \$\$ >'$T/flood.pid'; yes 'X-Pad: p'")"
	assert_success
	assert_line --index 1 --regexp '^STATUS HTTP/1\.1 500 '
	within 0 3 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	assert_gone "$(pid_of "$T/flood.pid")"
	# well-formed lines 100 bytes at a time, every 10 ms: over 4 KiB after half a second,
	# long before the handshake timeout (5 s)
	ws 6 mark "send:$(req_for /chat)" head elapsed body eof -- --dir "$D" --handshake-timeout 5 \
		--check "$(check drip "echo \$\$ >'$T/drip.pid'; while :; do printf 'X-Pad: %090d\\n' 0; sleep 0.01; done")"
	assert_success
	assert_line --index 1 --regexp '^STATUS HTTP/1\.1 500 '
	assert_log 'http 500 "GET /chat" [0-9.]+s \(.*4 KiB.*\), exit 6'
	within 0 3 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	assert_gone "$(pid_of "$T/drip.pid")"
	assert_equal "$(wc -l <"$T/ran")" 1
}

@test "a slow check is killed with its process group at --handshake-timeout: 500, exit 6, no process of it left" {
	local c pid
	c=$(check slow <<-EOF
		echo \$\$ >"$T/slow.pid"
		sh -c 'sleep 300; :' bg-$MARK &
		sh -c 'sleep 300; :' fg-$MARK
		echo "Remote-User: late"
	EOF
	)
	ws 6 mark "send:$(req_for /chat)" head elapsed body eof -- --dir "$D" --check "$c" --handshake-timeout 1
	assert_success
	assert_line --index 1 --regexp '^STATUS HTTP/1\.1 500 '
	assert_line 'EXIT 6'
	assert_log 'http 500 "GET /chat" [0-9.]+s \(.*within 1 s.*\), exit 6'
	# counted from the connection's start: about 1 s
	within 0.5 3 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	pid=$(pid_of "$T/slow.pid")
	assert_gone "$pid"
	assert_none_matching "$MARK" "the check"
	nothing_ran
}

@test "--check guards the built-in filter: refused with 403, or admitted and answered with the suffix" {
	refused 403 3 / -- --check "$(check deny 'exit 1')"
	ws 0 "send:$(req_for /any/path)" head text:hi frame close:1000 frame eof -- --check "$(check ok 'echo "Remote-User: dave"')"
	assert_success
	assert_line 'ACCEPT ok'
	assert_line --regexp '^TEXT hi - [0-9]+$'
	assert_line 'EXIT 0'
	assert_log_user dave
	ws 0 "send:$(req_for /)" head text:hi frame close:1000 frame eof -- --echo --check "$T/checks/ok"
	assert_success
	assert_line 'TEXT hi'
}

@test "--check runs only for an upgrade that passed wsfilter's own checks: not for the page, /healthz, a bad version, a wrong Origin, a route refused" {
	local c v8
	c=$(check count "echo \"\$REQUEST_URI\" >>'$T/checked'; exit 0")
	ws 0 req:GET:/ head body eof -- --dir "$D" --check "$c"
	assert_success
	ws 0 req:GET:/healthz head body eof -- --dir "$D" --check "$c"
	assert_success
	v8="GET /chat HTTP/1.1\r\nHost: h.example:99\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
	ws 3 "send:$v8" head body eof -- --dir "$D" --check "$c"
	assert_success
	assert_line --index 1 --regexp '^STATUS HTTP/1\.1 426 '
	refused 403 3 /chat 'Origin: https://evil.example' -- --dir "$D" --check "$c" --origin https://good.example
	refused 403 3 /chat 'Origin: https://evil.example' -- --dir "$D" --check "$c" --sameorigin
	refused 404 3 /nothing -- --dir "$D" --check "$c"
	refused 404 3 /escape -- --dir "$D" --check "$c"
	refused 400 3 /%2e%2e/canary -- --dir "$D" --check "$c"
	[ ! -e "$T/checked" ] || fail "the check ran: $(cat "$T/checked")"
	nothing_ran
	upgrade 0 /chat 'Origin: http://h.example:99' -- --dir "$D" --check "$c" --sameorigin
	assert_101
	assert_equal "$(cat "$T/checked")" /chat
}

# ---- --sameorigin -----------------------------------------------------------

@test "--sameorigin admits an Origin whose host[:port] is the Host, case-insensitively, whatever its scheme" {
	local o
	for o in http://h.example:99 https://h.example:99 http://H.EXAMPLE:99 HTTPS://H.Example:99; do
		ws 0 "send:$(req_for / "Origin: $o")" head close:1000 frame eof -- --sameorigin
		assert_success
		assert_line --index 1 'STATUS HTTP/1.1 101 Switching Protocols'
		assert_line 'ACCEPT ok'
		assert_line 'EXIT 0'
	done
	REQ_HOST=H.Example upgrade 0 /chat 'Origin: http://h.example' -- --sameorigin --dir "$D"
	assert_101
	REQ_HOST='[::1]:8080' upgrade 0 /chat 'Origin: http://[::1]:8080' -- --sameorigin --dir "$D"
	assert_101
}

@test "--sameorigin refuses with 403: another host, another port, a port missing or added, a longer host, null, no Origin" {
	local o
	for o in 'Origin: http://evil.example:99' 'Origin: http://h.example:98' 'Origin: http://h.example' \
		'Origin: http://h.example:990' 'Origin: http://h.example:99.evil.example' 'Origin: null' 'X-No-Origin: 1'; do
		refused 403 3 /chat "$o" -- --sameorigin --dir "$D"
		assert_log 'http 403 "GET /chat" [0-9.]+s \(.*\), exit 3'
	done
	REQ_HOST=h.example refused 403 3 /chat 'Origin: http://h.example:80' -- --sameorigin --dir "$D"
	nothing_ran
}

# ---- --header ---------------------------------------------------------------

# assert_extra_headers: the answer carries both --header values of the test below.
assert_extra_headers() {
	assert_line 'H x-frame-options: DENY'
	assert_line 'H x-test: a b;c=1'
}

@test "--header is on every answer: the 101 (built-in and routed), the page, /healthz, 404, 400, 426, a check's 403 and 401, a 500" {
	local h=(--header 'X-Frame-Options: DENY' --header 'X-Test: a b;c=1')
	ws 0 hs head close:1000 frame eof -- "${h[@]}"
	assert_success
	assert_line 'ACCEPT ok'
	assert_extra_headers
	upgrade 0 /chat -- "${h[@]}" --dir "$D"
	assert_101
	assert_extra_headers
	ws 0 req:GET:/ head body eof -- "${h[@]}" --dir "$D"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 200 OK'
	assert_extra_headers
	ws 0 req:GET:/healthz head body eof -- "${h[@]}"
	assert_success
	assert_line 'BODY 2 ok'
	assert_extra_headers
	ws 3 req:GET:/nope head body eof -- "${h[@]}"
	assert_success
	assert_line --index 1 'STATUS HTTP/1.1 404 Not Found'
	assert_extra_headers
	refused 404 3 /nothing -- "${h[@]}" --dir "$D"
	assert_extra_headers
	refused 400 3 /%2e%2e -- "${h[@]}" --dir "$D"
	assert_extra_headers
	ws 3 "send:GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n" \
		head body eof -- "${h[@]}"
	assert_success
	assert_line --index 1 --regexp '^STATUS HTTP/1\.1 426 '
	assert_extra_headers
	refused 403 3 /chat -- "${h[@]}" --dir "$D" --check "$(check deny 'exit 1')"
	assert_extra_headers
	refused 401 3 /chat -- "${h[@]}" --dir "$D" --check \
		"$(check basic 'printf "Status: 401 Unauthorized\nWWW-Authenticate: Basic realm=\"x\"\n"; exit 1')"
	assert_extra_headers
	assert_line 'H www-authenticate: Basic realm="x"'
	refused 500 6 /chat -- "${h[@]}" --dir "$D" --check "$(check exit2 'exit 2')"
	assert_extra_headers
}

@test "--header with a name that is not a token, no colon, a CR or LF in its value, or a header wsfilter writes itself: exit 2" {
	local v
	for v in 'X-Test' 'X Test: v' ': v' 'X(y): v' 'X-Test;: v' 'Ä: v' $'X-Test: a\rb' $'X-Test: a\nb' \
		$'X-Test: a\r\nInjected: 1' $'X-Test: a\r' '' 'Content-Length: 0' 'connection: keep-alive' \
		'Date: x' 'Upgrade: h2c' 'Transfer-Encoding: chunked' 'Content-Type: text/html' \
		'Sec-WebSocket-Protocol: chat' 'sec-websocket-accept: x' 'Keep-Alive: 5'; do
		run "$WSFILTER" --header "$v" </dev/null
		echo "wsfilter --header $(printf '%q' "$v"): exit $status: $output"
		assert_equal "$status" 2
	done
	run "$WSFILTER" --header </dev/null
	assert_equal "$status" 2
}

# ---- under launchers --------------------------------------------------------
#
# A token check as an administrator would write one: "Authorization: Bearer good" is
# alice, anything else gets 401 with a WWW-Authenticate challenge; for SCRIPT_NAME
# /a/b it takes forever (with a background job in its group) instead.

launcher_check() {
	check token <<-EOF
		case \$SCRIPT_NAME in
		/a/b)
			echo \$\$ >>"$T/slow.pid"
			sh -c 'sleep 300; :' bg-$MARK &
			sh -c 'sleep 300; :' fg-$MARK
			;;
		esac
		echo "token check for \$REQUEST_URI" >&2
		if [ "\$HTTP_AUTHORIZATION" = "Bearer good" ]; then
			echo "Remote-User: alice"
			exit 0
		fi
		printf 'Status: 401 Unauthorized\nWWW-Authenticate: Bearer realm="routes"\n'
		exit 1
	EOF
}

# launcher_round: against the launcher at HOST:PORT, one connection each: a route with
# the token (101, the program's variables, REMOTE_USER), one without (401 with the
# challenge), a route to nothing (404), a malformed path (400).
launcher_round() {
	local to=(wst script --timeout 10 --connect "$(hostport)")
	run "${to[@]}" "send:$(req_for '/chat/room1?x=1' 'Authorization: Bearer good')" head wait:3 eof
	echo "$output"
	assert_success
	assert_line --index 0 'STATUS HTTP/1.1 101 Switching Protocols'
	assert_line 'ACCEPT ok'
	assert_line 'TEXT SCRIPT_NAME=/chat'
	assert_line 'TEXT PATH_INFO=/room1'
	assert_line 'TEXT QUERY_STRING=x=1'
	assert_line 'TEXT REMOTE_USER=alice'
	assert_line 'CLOSE 1000'
	assert_line 'EOF'
	run "${to[@]}" "send:$(req_for /chat 'Authorization: Bearer bad')" head body eof
	echo "$output"
	assert_success
	assert_line --index 0 --regexp '^STATUS HTTP/1\.1 401 '
	assert_line 'H www-authenticate: Bearer realm="routes"'
	run "${to[@]}" "send:$(req_for /nothing 'Authorization: Bearer good')" head body eof
	echo "$output"
	assert_success
	assert_line --index 0 'STATUS HTTP/1.1 404 Not Found'
	run "${to[@]}" "send:$(req_for /%2e%2e/canary 'Authorization: Bearer good')" head body eof
	echo "$output"
	assert_success
	assert_line --index 0 'STATUS HTTP/1.1 400 Bad Request'
	assert_equal "$(wc -l <"$T/ran")" 1
	no_canary
}

# launcher_log FILE: FILE holds the four connections' lines of launcher_round, in order.
launcher_log() {
	local i
	for i in $(seq 1 50); do
		[ "$(grep -cE "^${LOGP}127\.0\.0\.1:[0-9]+ (user [^ ]+ )?(websocket|http) .*, exit [0-9]+$" "$1")" -ge 4 ] && break
		sleep 0.1
	done
	run grep -E "^${LOGP}127\.0\.0\.1:[0-9]+ (websocket|http|user|program: token)" "$1"
	echo "$output"
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ program: token check for /chat/room1\?x=1$"
	grep -E "^${LOGP}127\.0\.0\.1:[0-9]+ (.* )?user alice[ ,].*, program exited 0, exit 0$" <<<"$output" |
		grep -q ' websocket ' || fail "no websocket log line with 'user alice'"
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 401 \"GET /chat\" .*, exit 3$"
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 404 \"GET /nothing\" .*\(no program for the path\), exit 3$"
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 400 \"GET /%2e%2e/canary\" .*\(malformed path for --dir\), exit 3$"
}

@test "under socat: a route with the token check's user, its 401, a 404 and a 400; each wsfilter's exit status" {
	local wrapper c
	c=$(launcher_check)
	wrapper=$(exit_status_wrapper "$T/status")
	HOST=127.0.0.1 SCHEME=ws
	start_listening "$T/socat.log" socat "TCP4-LISTEN:\$PORT,bind=127.0.0.1,reuseaddr,fork" \
		"EXEC:$wrapper --close-timeout 1 --dir $D --check $c"
	launcher_round
	wait_status_count "$T/status" 0 1
	wait_status_count "$T/status" 3 3
	assert_equal "$(wc -l <"$T/status")" 4
	launcher_log "$T/socat.log"
}

@test "under systemd-socket-activate --accept: a route with the token check's user, its 401, a 404 and a 400; each wsfilter's exit status" {
	local c
	c=$(launcher_check)
	UNIT_ARGS=("$WSFILTER" --close-timeout 1 --dir "$D" --check "$c")
	HOST=127.0.0.1 SCHEME=ws
	start_on_port 127.0.0.1 _ssa_at
	launcher_round
	assert_children_ended_well "$T/ssa.log"
	assert_equal "$(grep -c 'died with code 0$' "$T/ssa.log")" 1
	assert_equal "$(grep -c 'died with code 3$' "$T/ssa.log")" 3
	launcher_log "$T/ssa.log"
}

@test "in acceptor mode: a route with the token check's user, its 401, a 404, a 400, and a slow check killed with nothing of it left" {
	local c p
	c=$(launcher_check)
	start_acceptor --close-timeout 1 --handshake-timeout 2 --dir "$D" --check "$c"
	launcher_round
	p=$(acceptor_parent)
	# the slow branch of the check (SCRIPT_NAME /a/b)
	run wst script --timeout 10 --connect "$(hostport)" mark "send:$(req_for /a/b/x 'Authorization: Bearer good')" head elapsed body eof
	echo "$output"
	assert_success
	assert_line --index 0 --regexp '^STATUS HTTP/1\.1 500 '
	within 1.5 5 "$(sed -n 's/^ELAPSED //p' <<<"$output")"
	assert_gone "$(pid_of "$T/slow.pid")"
	assert_none_matching "$MARK" "the check"
	assert_children_ended "$p" 5 '0|3|6'
	run child_ends "$p"
	assert_equal "$(grep -c ', exit 0$' <<<"$output")" 1
	assert_equal "$(grep -c ', exit 3$' <<<"$output")" 3
	assert_line --regexp "^${LOGP}127\.0\.0\.1:[0-9]+ http 500 \"GET /a/b/x\" .*within 2 s.*, exit 6$"
	launcher_log "$ACCEPTOR_LOG"
	assert_equal "$(wc -l <"$T/ran")" 1
	# the parent lives on and stops cleanly
	stop_acceptor "$p"
}
