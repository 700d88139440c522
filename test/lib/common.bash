# Shared set-up of wsfilter's bats tests: `load lib/common` first.
# WSFILTER is the binary under test (make test-asan points it at the sanitizer build).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
LIB="$TOP/test/lib"
CLIENTS="$TOP/test/clients"
: "${WSFILTER:=$TOP/wsfilter}"
export WSFILTER
# Debian's python3 (python3-websockets lives there), whatever python3 is first on PATH.
PY=/usr/bin/python3
# pick_port, listening, wait_port
source "$LIB/ports.sh"
source "$LIB/spares.sh"

# The start of each log line of wsfilter: "wsfilter[PID]: ".
LOGP='wsfilter\[[0-9]+\]: '

# ---- what this machine and this build allow --------------------------------

# sanitized: $WSFILTER is a sanitizer build (make test-asan): it runs without the
# seccomp filter, and its memory (shadow memory, reserved address space) says
# nothing about wsfilter's.
sanitized() {
	grep -qa -e __asan_init -e __msan_init -e __tsan_init "$WSFILTER"
}

# skip_if_sanitized WHY: skip the test under a sanitizer build, saying WHY.
skip_if_sanitized() {
	if sanitized; then
		skip "sanitizer build: $1"
	fi
}

# need_unshare: skip the test unless this user may make a private mount namespace.
need_unshare() {
	unshare --mount true 2>/dev/null || skip "unshare --mount is not permitted here (needs root)"
}

# ---- the byte-level toolkit (test/lib/wstest.py) ----------------------------

wst() { "$PY" "$LIB/wstest.py" "$@"; }

# close_frame: the steps of `wst run` for a client close 1000.
close_frame() { echo "frame --opcode close --code 1000"; }

# answer --expect STATUS [RUN-OPTIONS] CONVERSATION [-- WSFILTER-ARGS]: run the
# conversation (see wstest.py run) with a short close timeout; $output holds the
# decoded answer and $status is 0 only if the answer was well-formed and wsfilter
# ended with exit STATUS.
answer() {
	local conv=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		conv+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	run wst run --timeout 8 "${conv[@]}" -- --close-timeout 1 "$@"
}

# ---- scripted connections (wstest.py script) --------------------------------
#
# `wstest.py script` (see its --help) starts wsfilter on an accepted loopback TCP
# socket (fds 0/1; with --stderr socket 0/1/2 like inetd; with --pipes two pipes)
# or connects to a launcher (--connect), runs the steps it is given and prints a
# transcript, one event a line: "CLIENT 127.0.0.1:<port>", "STATUS ...", "TEXT ...",
# "CLOSE 1000", "EOF", "EXIT 0", "LOG <stderr line>". A run that starts wsfilter
# names the exit status it must end with (--expect); a malformed answer, a wrong
# accept value, a death by a signal or a step that runs out of time fail the run.
# wstest.py kills what it started when it ends, on SIGTERM too.

# ops [--expect STATUS] STEP... [-- WSFILTER-ARGS]: one scripted connection, ended
# (SIGTERM, then SIGKILL 5 s later) if it is not done within 60 s.
ops() {
	timeout -k 5 60 "$PY" "$LIB/wstest.py" script "$@"
}

# ops_devlog ...: the same in a private mount namespace whose /dev/log is the
# script's (--syslog /dev/log prints what arrives there as SYSLOG lines); see
# need_unshare.
ops_devlog() {
	mkdir -p "$BATS_TEST_TMPDIR/realdev"
	timeout -k 5 60 "$LIB/fake-devlog.sh" "$BATS_TEST_TMPDIR/realdev" \
		"$PY" "$LIB/wstest.py" script --syslog /dev/log "$@"
}

# expect_transcript LINE...: the transcript without its first line (CLIENT
# 127.0.0.1:<port>, which differs every run) is exactly these lines.
expect_transcript() {
	assert_equal "$(sed 1d <<<"$output")" "$(printf '%s\n' "$@")"
}

# transcript_value NAME: the number after "NAME " in the transcript (the first such line).
transcript_value() {
	sed -n "s/^$1 \([0-9.]*\)\$/\1/p" <<<"$output" | head -1
}

# client_port: the client's port, from the transcript's CLIENT line.
client_port() {
	sed -n '1s/^CLIENT 127\.0\.0\.1:\([0-9]*\)$/\1/p' <<<"$output"
}

# The head of a 101 answer to the RFC 6455 sample key, as the transcript shows it.
HEAD_101=(
	"STATUS HTTP/1.1 101 Switching Protocols"
	"H upgrade: websocket"
	"H connection: Upgrade"
	"H sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	"ACCEPT ok"
)

# The upgrade headers of RFC 6455's sample request, to follow a request line and a
# Host in a send: step.
UPG='Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'

# assert_http_date: the transcript has exactly one Date header, an IMF-fixdate
# within a minute of now (assert_imf_fixdate).
assert_http_date() {
	assert_equal "$(grep -c '^H date: ' <<<"$output")" 1
	assert_imf_fixdate "$(sed -n 's/^H date: //p' <<<"$output")" 60
}

# ---- a program per connection (wsfilter -- PROGRAM, --dir) -------------------

# ws STATUS [SCRIPT-OPTION...] STEP... [-- WSFILTER-ARGS]: a scripted conversation over
# TCP (wstest.py script); wsfilter must end with exit STATUS. --close-timeout 1 unless
# the arguments set another.
ws() {
	local expect=$1 steps=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		steps+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	run wst script --timeout 10 --expect "$expect" "${steps[@]}" -- --close-timeout 1 "$@"
	echo "$output"
}

# running PID: PID exists and is not a zombie.
running() {
	local s
	s=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$s" ] && [[ $s != Z* ]]
}

# group_running PGID: the live processes of process group PGID, one pid a line.
group_running() {
	ps -e -o pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ { print $1 }'
}

# assert_gone PID...: within 5 s none of the PIDs runs, nor anything in their process groups.
assert_gone() {
	local i p left
	for i in $(seq 1 50); do
		left=
		for p; do
			running "$p" && left+=" $p"
			left+=$(group_running "$p" | sed 's/^/ /' | tr -d '\n')
		done
		[ -z "$left" ] && return 0
		sleep 0.1
	done
	ps -o pid,ppid,pgid,stat,args -p "$(echo $left | tr ' ' ,)" || true
	fail "still running:$left"
}

# assert_none_matching PATTERN WHAT: within 5 s no process's command line matches
# PATTERN (pgrep -f); else fails naming those left of WHAT.
assert_none_matching() {
	local i left
	for i in $(seq 1 50); do
		left=$(pgrep -f -- "$1" || true)
		[ -z "$left" ] && return 0
		sleep 0.1
	done
	fail "left of $2: $(ps -o pid,pgid,args -p "$(paste -sd, <<<"$left")")"
}

# pid_of FILE: the pid a program wrote into FILE (waits up to 5 s for it).
pid_of() {
	local i
	for i in $(seq 1 50); do
		[ -s "$1" ] && head -n 1 "$1" && return 0
		sleep 0.1
	done
	fail "no pid in $1"
}

# written_pids DIR: the pids that programs wrote into DIR/*.pid, one a line.
written_pids() {
	local f
	for f in "$1"/*.pid; do
		[ -e "$f" ] && cat "$f"
	done
	return 0
}

# req_for TARGET [HEADER-LINE...]: an upgrade request for TARGET (Host: $REQ_HOST, default
# h.example:99, and RFC 6455's sample key) with these header lines after the usual ones,
# as a send: step takes it (\r\n escapes).
req_for() {
	local r="GET $1 HTTP/1.1\r\nHost: ${REQ_HOST:-h.example:99}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" h
	shift
	for h; do
		r+="$h\r\n"
	done
	printf '%s\\r\\n' "$r"
}

# ---- hostile clients (test/lib/hostile_cases.py) ----------------------------

# hostile NAME: run scenario NAME of hostile_cases.py (it checks the answer, the
# exit status, the timings, CPU time, peak RSS and the log line) with a hard time
# limit. HOSTILE_VERBOSE=1 prints the measured figures as TAP comments.
hostile() {
	[ -x /usr/bin/time ] || fail "needs /usr/bin/time (Debian package time) to measure peak RSS and CPU"
	run timeout -k 5 60 "$PY" "$LIB/hostile_cases.py" "$1"
	assert_success
	assert_output --partial "measure "
	if [ -n "${HOSTILE_VERBOSE:-}" ]; then
		printf '# %s\n' "${lines[@]}" >&3
	fi
}

# ---- numbers ----------------------------------------------------------------

# within LOW HIGH VALUE: LOW <= VALUE < HIGH (decimals)
within() {
	awk -v lo="$1" -v hi="$2" -v v="$3" 'BEGIN { exit !(v != "" && v >= lo && v < hi) }' ||
		fail "$3 is not within [$1, $2)"
}

# ---- processes and ports ----------------------------------------------------

# map_units PID: the mappings of PID, one a line ("START-END PERM PATH"), but
# those of its own executable's code page by page ("PAGE r-xp PATH"): a page
# taken out of that code splits its mapping, and the rest stays comparable.
map_units() {
	local exe range perm off dev ino path a e
	exe=$(readlink "/proc/$1/exe")
	while read -r range perm off dev ino path; do
		if [ "$perm" = r-xp ] && [ "$path" = "$exe" ]; then
			for ((a = 16#${range%-*}, e = 16#${range#*-}; a < e; a += 4096)); do
				printf '%x r-xp %s\n' "$a" "$path"
			done
		else
			echo "$range $perm $path"
		fi
	done <"/proc/$1/maps" | sort
}

# assert_child_confined PARENT CHILD [nogate|spare]: an acceptor's child runs
# under its parent's filter alone and lacks the gates' pages, where this
# machine has a gate (filter_probe has-gate: x86_64) and the build uses it
# (not nogate: wsfilter-test-nogate); else it has its own filter on top, and
# every page. The gates' pages: two pages of the parent's own code, one after
# the other, that a child serving a connection has not (a spare, waiting for
# its connection, still has the second: one page); and the child has no
# mapping the parent has not.
assert_child_confined() {
	local probe=${FILTER_PROBE:-$TOP/test/lib/filter_probe} pf cf only_parent only_child
	local want=2 exe
	[ -x "$probe" ] || fail "no $probe (make test/lib/filter_probe)"
	[ "${3:-}" != spare ] || want=1
	pf=$(awk '/^Seccomp_filters:/ { print $2 }' "/proc/$1/status")
	cf=$(awk '/^Seccomp_filters:/ { print $2 }' "/proc/$2/status")
	only_parent=$(comm -23 <(map_units "$1") <(map_units "$2"))
	only_child=$(comm -13 <(map_units "$1") <(map_units "$2"))
	echo "filters: the parent's $pf, the child's $cf"
	echo "only the parent's: $only_parent"
	echo "only the child's: $only_child"
	if [ "${3:-}" = nogate ] || [ "$("$probe" has-gate)" != gate ]; then
		[ "$cf" -gt "$pf" ] || [ "${3:-}" = spare ] || fail "the child has $cf filters, the parent $pf"
		[ -z "$only_parent$only_child" ] || fail "the child's mappings are not its parent's"
		return
	fi
	# one filter for both: the child cannot reach the gate its parent's
	# accept4, clone, wait4 and kill must come from, nor (serving) the one
	# its recvmsg came from
	[ "$cf" = "$pf" ] || fail "the child has $cf filters, the parent $pf"
	[ "$(grep -c . <<<"$only_parent")" = "$want" ] ||
		fail "the child lacks other than $want page(s) of code: $only_parent"
	exe=$(readlink "/proc/$1/exe")
	local page perm path first=
	while read -r page perm path; do
		[ "$perm" = r-xp ] || fail "a page the child lacks is $perm, not r-xp"
		[ "$path" = "$exe" ] || fail "a page the child lacks is of $path"
		[ -z "$first" ] || [ $((16#$page)) = $((16#$first + 4096)) ] ||
			fail "the pages the child lacks are not one after the other: $only_parent"
		first=$page
	done <<<"$only_parent"
	[ -z "$only_child" ] || fail "the child has mappings its parent has not: $only_child"
}

# spares PID: the spares among PID's descendants, one a line.
spares() {
	local p
	for p in $(descendants "$1"); do
		is_spare "$p" && echo "$p"
	done
	return 0
}

# wait_spares PID N: wait up to 5 s until N spares descend from PID; fails if
# they do not.
wait_spares() {
	local i n
	for i in $(seq 1 50); do
		n=$(spares "$1" | wc -l)
		[ "$n" = "$2" ] && return 0
		sleep 0.1
	done
	fail "$n spare(s) under $1 after 5 s, not $2"
}

# serving PID: the descendants of PID but its spares and theirs (a spare's
# program's waiting child): the processes of its connections and their
# programs, one a line.
serving() {
	ps -e -o pid=,ppid= | awk -v root="$1" -v spares="$(spares "$1" | paste -sd' ')" '
		{ parent[$1] = $2 }
		END {
			n = split(spares, s, " ")
			for (i = 1; i <= n; i++) skip[s[i]] = 1
			for (p in parent) {
				for (q = p; (q in parent) && !(q in skip); q = parent[q])
					if (parent[q] == root) { print p; break }
			}
		}'
}

# descendants PID: the pids of every descendant of PID, one a line.
descendants() {
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ parent[$1] = $2 }
		END {
			n = 1; want[root] = 1; changed = 1
			while (changed) {
				changed = 0
				for (p in parent)
					if (!(p in want) && (parent[p] in want)) { want[p] = 1; changed = 1 }
			}
			for (p in want) if (p != root) print p
		}'
}

# wait_gone TRIES STEP PID...: wait until none of the PIDs is alive, checking
# TRIES times STEP seconds apart; fails if some are still there.
wait_gone() {
	local tries=$1 step=$2 p i alive
	shift 2
	for i in $(seq 1 "$tries"); do
		alive=0
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ "$alive" = 0 ] && return 0
		sleep "$step"
	done
	return 1
}

# gone_or_kill TRIES STEP PID...: wait_gone; whatever is still alive is then
# killed (a test leaves nothing running, even when it fails) and it fails.
gone_or_kill() {
	wait_gone "$@" && return 0
	shift 2
	kill -KILL "$@" 2>/dev/null
	return 1
}

# stop_tree PID: TERM PID and its descendants, KILL what is left after 3 s, reap PID.
stop_tree() {
	local all
	mapfile -t all < <(descendants "$1")
	all+=("$1")
	kill -TERM "${all[@]}" 2>/dev/null || true
	wait_gone 60 0.05 "${all[@]}" || true
	kill -KILL "${all[@]}" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# listener_pids PORT: the pids holding a listening TCP socket on PORT.
listener_pids() {
	ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# owns_listener PID PORT: PID or one of its descendants listens on PORT.
owns_listener() {
	local p tree
	tree=" $1 $(descendants "$1" | tr '\n' ' ') "
	for p in $(listener_pids "$2"); do
		[[ $tree == *" $p "* ]] && return 0
	done
	return 1
}

# start_on_port HOST FUNCTION ARGS...: PORT=<a free port>, then FUNCTION ARGS, which
# starts a server in the background and sets LAUNCH_PID; wait up to 5 s until that
# server (or a process below it) listens on HOST:PORT. A server that lost the port to
# another program (or did not come up) is stopped and the whole is tried again with
# another port, 5 times at most.
start_on_port() {
	local host=$1 try i
	shift
	for try in 1 2 3 4 5; do
		PORT=$(pick_port "$host") || return 1
		LAUNCH_PID=
		"$@" || return 1
		for i in $(seq 1 100); do
			if owns_listener "$LAUNCH_PID" "$PORT"; then
				return 0
			fi
			kill -0 "$LAUNCH_PID" 2>/dev/null || break
			sleep 0.05
		done
		echo "# try $try: nothing of pid $LAUNCH_PID listens on $host:$PORT; another port" >&2
		stop_tree "$LAUNCH_PID"
	done
	echo "could not start a server on a free port of $host" >&2
	return 1
}

# exit_status_wrapper FILE: print the path of a script that runs $WSFILTER with its
# arguments and appends its exit status to FILE (159 = killed by SIGSYS), for servers
# started by socat, whose exit status the tests otherwise never see. socat signals its
# child when the connection ends: the script passes TERM, INT and HUP on to wsfilter
# and still records how it ended. (An asynchronous command's stdin would be /dev/null:
# the connection is handed over on fd 5.)
exit_status_wrapper() {
	local w="${BATS_FILE_TMPDIR:-$BATS_TEST_TMPDIR}/wsfilter-status.sh"
	cat >"$w" <<-EOF
		#!/bin/sh
		exec 5<&0
		"$WSFILTER" "\$@" <&5 5<&- &
		pid=\$!
		exec 5<&-
		trap 'kill -TERM \$pid 2>/dev/null' TERM INT HUP
		wait \$pid
		while kill -0 \$pid 2>/dev/null; do wait \$pid; done
		wait \$pid
		echo \$? >>"$1"
	EOF
	chmod +x "$w"
	echo "$w"
}

# status_count FILE STATUS: how many servers recorded in FILE ended with STATUS.
status_count() {
	grep -cx -- "$2" "$1" 2>/dev/null || true
}

# wait_status_count FILE STATUS N: wait up to 5 s until N servers in FILE ended with
# STATUS; fail if fewer did, or if any server in FILE was killed by a signal.
wait_status_count() {
	local i
	for i in $(seq 1 50); do
		[ "$(status_count "$1" "$2")" -ge "$3" ] && break
		sleep 0.1
	done
	if grep -qvE '^[0-5]$' "$1" 2>/dev/null; then
		fail "a wsfilter ended with a status outside 0..5, e.g. 159 = SIGSYS (statuses: $(sort "$1" | uniq -c | tr '\n' ' '))"
	fi
	assert_equal "$(status_count "$1" "$2")" "$3"
}

# assert_children_ended_well LOG: systemd-socket-activate logs "Child PID died with
# code C" for each connection it spawned; wait up to 5 s until every spawned child has
# died, then fail if any ended otherwise than with an exit status of 0..5 (a death by
# signal 31, SIGSYS, shows as code 31).
assert_children_ended_well() {
	local i spawned died
	for i in $(seq 1 50); do
		spawned=$(grep -c '^Spawned ' "$1" || true)
		died=$(grep -c '^Child [0-9]* died with code ' "$1" || true)
		[ "$died" -ge "$spawned" ] && break
		sleep 0.1
	done
	[ "$died" -ge "$spawned" ] || fail "$spawned children spawned, only $died ended (see $1)"
	if grep '^Child [0-9]* died with code ' "$1" | grep -qvE 'code [0-5]$'; then
		fail "a wsfilter ended badly: $(grep -vE 'code [0-5]$' "$1" | grep '^Child ' | head -3)"
	fi
}

# assert_imf_fixdate VALUE [SECONDS]: VALUE is an HTTP date in the preferred format,
# IMF-fixdate (RFC 9110 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT"), its weekday right for
# its date, and within SECONDS (10) of now.
assert_imf_fixdate() {
	LC_ALL=C "$PY" - "$1" "${2:-10}" <<-'EOF' || fail "Date '$1' is not an IMF-fixdate within ${2:-10} s of now"
		import calendar, re, sys, time
		v, limit = sys.argv[1], float(sys.argv[2])
		days = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
		months = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
		if not re.fullmatch(r"(%s), [0-3][0-9] (%s) [0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT" % (days, months), v):
		    sys.exit("not in IMF-fixdate form: %r" % v)
		t = calendar.timegm(time.strptime(v, "%a, %d %b %Y %H:%M:%S GMT"))
		if time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t)) != v:
		    sys.exit("not a real date (weekday or day of month): %r" % v)
		if abs(t - time.time()) > limit:
		    sys.exit("%r is %+.0f s from now" % (v, t - time.time()))
	EOF
}

# proc_cpu PID: the CPU time PID has used so far (utime + stime), in seconds.
proc_cpu() {
	awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / tck }' "/proc/$1/stat"
}

# lowest_free_fd PID: the lowest descriptor number PID does not hold: the next one
# it would get from accept(2), open(2) or pipe(2).
lowest_free_fd() {
	local fd=0
	while [ -e "/proc/$1/fd/$fd" ]; do
		fd=$((fd + 1))
	done
	echo "$fd"
}
