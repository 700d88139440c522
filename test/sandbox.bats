#!/usr/bin/env bats
# wsfilter confines itself with seccomp before it reads the client's first byte.

load lib/common

# hold_open EXPECT ARGS...: a handshake over TCP, wsfilter's Seccomp and NoNewPrivs
# lines while the connection is open, then a clean close (wstest script).
hold_open() {
	local expect=$1
	shift
	run wst script --expect "$expect" hs head procstatus close:1000 frame eof -- "$@"
}

@test "the seccomp filter is on while a connection is open" {
	skip_if_sanitized "it runs without the seccomp filter"
	hold_open 0
	assert_success
	assert_line "STATUS HTTP/1.1 101 Switching Protocols"
	assert_line "Seccomp: 2"
	assert_line "NoNewPrivs: 1"
	assert_line "EXIT 0"
}

@test "--no-sandbox leaves seccomp off" {
	hold_open 0 --no-sandbox
	assert_success
	assert_line "Seccomp: 0"
	assert_line "EXIT 0"
}

@test "a forbidden system call kills wsfilter with SIGSYS and drops the connection" {
	[ -x "$TOP/wsfilter-test-forbidden" ] || skip "make wsfilter-test-forbidden first"
	# the build opens a file after the handshake; a death by a signal always fails a
	# wstest run, and the run says which signal
	WSFILTER=$TOP/wsfilter-test-forbidden hold_open 0
	assert_failure
	assert_line --regexp '^EOF in head after 0 bytes'
	assert_line "EXIT signal 31"
	assert_line "FAIL: wsfilter was killed by signal 31 (SIGSYS) (expected exit 0)"
}

@test "--sandbox=required starts where seccomp is available" {
	skip_if_sanitized "it runs without the seccomp filter"
	hold_open 0 --sandbox=required
	assert_success
	assert_line "STATUS HTTP/1.1 101 Switching Protocols"
	assert_line "Seccomp: 2"
	assert_line "EXIT 0"
}

@test "--sandbox=on and --sandbox=off: the filter on, then off" {
	skip_if_sanitized "it runs without the seccomp filter"
	hold_open 0 --sandbox=on
	assert_success
	assert_line "Seccomp: 2"
	hold_open 0 --sandbox=off
	assert_success
	assert_line "Seccomp: 0"
	assert_line "NoNewPrivs: 0"
}

@test "--sandbox=required where seccomp cannot be installed: exit 1 before reading, logged" {
	skip_if_sanitized "it runs without the seccomp filter"
	# wstest --no-seccomp runs wsfilter under a filter that makes installing another fail
	run wst run --expect 1 --no-seccomp --show-log http GET /healthz -- --sandbox=required --log=stderr
	assert_success
	assert_line --index 0 --regexp "^LOG ${LOGP}cannot install the seccomp filter: Invalid argument$"
	assert_equal "${#lines[@]}" 2
	assert_line --index 1 "EXIT 1"
}

@test "--sandbox=on where seccomp cannot be installed: a warning, then it serves" {
	skip_if_sanitized "it runs without the seccomp filter"
	for sandbox in --sandbox=on ''; do
		run wst run --expect 0 --no-seccomp --show-log http GET /healthz -- --log=stderr $sandbox
		assert_success
		assert_line --index 0 'HTTP/1.1 200 OK'
		assert_line 'BODY "ok"'
		assert_line --regexp "^LOG ${LOGP}warning: running without the seccomp filter: Invalid argument$"
		assert_line 'EXIT 0'
	done
}

# ---- the filter's table, mode by mode ---------------------------------------

# probe MODE CALL EXPECT: test/lib/filter_probe ($FILTER_PROBE: make mutants
# builds one from each mutant's source) installs wsfilter's filter as
# MODE has it and makes CALL; EXPECT is "allowed (R)" (the line it prints when
# the call came back), SIGSYS (killed by the filter, exit 159, nothing
# printed) or SIGSEGV (exit 139: a child calling a gate it does not have).
probe() {
	run "$FILTER_PROBE" "$1" "$2"
	if [ "$3" = SIGSYS ] || [ "$3" = SIGSEGV ]; then
		local want=$((128 + $(kill -l "$3")))
		[ "$status" = "$want" ] && [ -z "$output" ] ||
			fail "$1 $2: expected death by $3, got exit $status: $output"
	else
		[ "$status" = 0 ] && [ "$output" = "$3" ] ||
			fail "$1 $2: expected '$3', got exit $status: $output"
	fi
}

@test "the filter of each mode: its calls pass; a connection's kill(-1) or of another process, system call -1, an unknown ioctl and what only comes before the filter die by SIGSYS; a spare takes its connection through its own gate alone" {
	FILTER_PROBE=${FILTER_PROBE:-$TOP/test/lib/filter_probe}
	[ -x "$FILTER_PROBE" ] || fail "no $FILTER_PROBE (make test/lib/filter_probe)"
	local m c
	# conn: wsfilter without a program; prog: with one (its group is signalled);
	# acceptor, child: the acceptor's parent and a child forked through its gate;
	# -nogate: the same where there is no gate (a child's filter on the parent's)
	for m in conn prog acceptor child acceptor-nogate child-nogate; do
		probe "$m" write "allowed (0)"
		probe "$m" open SIGSYS
		probe "$m" nr-1 SIGSYS
		probe "$m" ioctl-off SIGSYS
		# writev answers EPERM (glibc's fatal message when stderr is not the log)
		probe "$m" writev-1 "allowed (-1 EPERM)"
		# asked before the filter, by a launched wsfilter; the parent hands
		# an acceptor's child its peer, so its filter has them no more
		probe "$m" getsockname SIGSYS
		probe "$m" fcntl SIGSYS
		probe "$m" fstat SIGSYS
		# a child learns of its parent's death from a pipe, not a death signal
		probe "$m" getppid SIGSYS
		# send(2) on the syslog socket alone, and here there is none
		probe "$m" sendto SIGSYS
	done
	for m in conn prog child child-nogate; do
		probe "$m" kill-all SIGSYS
		probe "$m" kill-init SIGSYS
		probe "$m" kill-child SIGSYS
		# the acceptor's calls: no connection makes them; nor a spare's
		for c in accept4 clone getrandom prctl recvmsg sendmsg socketpair; do
			probe "$m" "$c" SIGSYS
		done
	done
	probe conn kill-prog SIGSYS
	probe child kill-prog SIGSYS
	probe child-nogate kill-prog SIGSYS
	probe prog kill-prog "allowed (0)"
	# the acceptor's parent: its own calls, through its gate, and from nowhere
	# else; it signals its children one at a time (with a PROGRAM, their
	# programs' groups too, but then it has no filter)
	probe acceptor-nogate kill-child "allowed (0)"
	probe acceptor-nogate kill-prog SIGSYS
	probe acceptor-nogate kill-all SIGSYS
	probe acceptor-nogate kill-init "allowed (0)"
	probe acceptor-nogate accept4 "allowed (-1 EBADF)"
	probe acceptor-nogate clone "allowed (-1 EINVAL)"
	probe acceptor-nogate getrandom "allowed (1)"
	probe acceptor-nogate prctl "allowed (1)"
	# a spare's connection: a pair per spare (Unix only), sent and taken
	probe acceptor-nogate socketpair "allowed (0)"
	probe acceptor-nogate socketpair-inet SIGSYS
	probe acceptor-nogate sendmsg "allowed (-1 EBADF)"
	probe acceptor-nogate recvmsg "allowed (-1 EBADF)"
	if [ "$("$FILTER_PROBE" has-gate)" != gate ]; then
		[ "$(uname -m)" != x86_64 ] || fail "x86_64, and the acceptor has no gate"
		skip "no gate on $(uname -m): its half is not run"
	fi
	probe acceptor gate-kill-child "allowed (0)"
	probe acceptor gate-kill-prog SIGSYS
	probe acceptor gate-kill-all SIGSYS
	probe acceptor gate-accept4 "allowed (-1 EBADF)"
	probe acceptor gate-clone "allowed (-1 EINVAL)"
	probe acceptor gate-getrandom "allowed (1)"
	probe acceptor gate-socketpair "allowed (0)"
	probe acceptor gate-socketpair-inet SIGSYS
	probe acceptor gate-sendmsg "allowed (-1 EBADF)"
	for c in kill-child kill-prog kill-all accept4 clone getrandom prctl recvmsg sendmsg socketpair; do
		probe acceptor "$c" SIGSYS
	done
	# a child has the gate's page no more: whatever it would make there
	for c in kill-all kill-prog kill-child accept4 clone getrandom sendmsg socketpair; do
		probe child "gate-$c" SIGSEGV
		probe spare "gate-$c" SIGSEGV
	done
	# a spare: the connection's table, and through the spare's gate its
	# connection and the unmapping of that gate's page, nothing else
	probe spare write "allowed (0)"
	for c in open nr-1 getsockname getppid sendto kill-all kill-child accept4 clone getrandom \
		prctl recvmsg sendmsg socketpair; do
		probe spare "$c" SIGSYS
	done
	probe spare spare-recvmsg "allowed (-1 EBADF)"
	probe spare spare-munmap-gate "allowed (0)"
	probe spare spare-munmap-other SIGSYS
	probe spare spare-accept4 SIGSYS
	# once serving, that page is gone too
	probe child spare-recvmsg SIGSEGV
	probe child spare-munmap-gate SIGSEGV
}
