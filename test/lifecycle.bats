#!/usr/bin/env bats
# wsfilter -- PROGRAM's lifecycle: the program's stdin, stdout, stderr and process group
# each end, whatever the client, the program or a signal does, and nothing is lost or
# left behind. Each test runs cases of test/lib/lifecycle.py, which checks on every case:
# the data (whole messages, in order, all of them for a client that reads on), the ending
# (exit status, close code and log line agree; a death by a signal fails), the program's
# group gone after the connection, the connection's CPU near zero while it waits, a
# bounded end, one log line, and in acceptor mode a parent with no descriptor or zombie
# left and nothing of its spares (processes forked ahead) left after it. The last test draws random cases for LIFECYCLE_MINUTES (default 1.25); its seed is
# printed, and `SEED=N make soak` or `lifecycle.py --seed N` replays them.

load lib/common

lc() {
	run "$PY" "$LIB/lifecycle.py" "$@"
	echo "$output"
}

# case FIELDS...: one fixed case, the defaults below overridden by FIELDS (k=v each)
case_of() {
	local -A f=([mode]=launched [bin]=0 [lines]=5 [size]=20 [rate]=0 [end]=exit0 [msgs]=0
		[client]=fast [at]=0 [pause]=3.0 [event]=none [et]=0.5)
	local kv k out=
	for kv; do
		f[${kv%%=*}]=${kv#*=}
	done
	for k in mode bin lines size rate end msgs client at pause event et; do
		out+="$k=${f[$k]} "
	done
	# want=ENDING: this case must end so (lifecycle.py: signal, prog0, ...)
	[ -z "${f[want]:-}" ] || out+="want=${f[want]} "
	# spares=N: the acceptor's --spares (default: wsfilter's)
	[ -z "${f[spares]:-}" ] || out+="spares=${f[spares]} "
	echo "${out% }"
}

one_case() {
	lc --case "$(case_of "$@")"
	assert_success
	assert_line '1 passed, 0 failed'
}

@test "a program writes 400 lines and exits 0, the client pauses 3 s (past the close timeout): every line, whole and in order, then close 1000" {
	one_case lines=400 size=1000 client=pause pause=3.0
	one_case lines=400 size=1000 client=pause pause=3.0 bin=1
}

@test "a program writes 400 KB and exits while the client reads at 60 KB/s: every byte, and wsfilter's CPU stays near zero" {
	one_case lines=400 size=1000 client=slow
	one_case lines=30 size=70000 client=pause pause=3.0
	# past the last stop step (3 s with --grace 1) the pipe still holds what it wrote
	one_case lines=400 size=1000 client=pause pause=4.5
}

@test "SIGTERM while the client is 1.5 s behind a program that wrote 2,000 lines and exited: all of them, then 1001 (launched and acceptor)" {
	one_case lines=2000 size=100 client=pause pause=1.5 event=sigterm et=0.5
	one_case lines=2000 size=100 client=pause pause=1.5 event=sigterm et=0.5 mode=acceptor
	# 2 MB: more than the queues hold when the signal comes
	one_case lines=2000 size=1000 client=pause pause=1.5 event=sigterm et=0.5
}

@test "SIGTERM while the program still writes: what it writes until its stdout ends reaches the client, then 1001" {
	one_case lines=30 size=200 rate=50 end=exit0 event=sigterm et=0.2
	one_case lines=30 size=200 rate=50 end=ignore event=sigterm et=0.2
}

@test "a shell's background job does not outlive the connection: client close, program exit 0, SIGTERM" {
	one_case end=bgfree msgs=3 client=close at=0.3
	one_case end=bgexit
	one_case end=bgfree msgs=3 event=sigterm
	one_case end=bghold
}

@test "acceptor: a program that ignores SIGTERM, --stop-timeout 1: the connection process and its program are both gone" {
	one_case mode=acceptor end=ignore event=accstop
}

@test "acceptor: the parent killed by SIGKILL: each connection ends as on SIGTERM (close 1001 after its replies), its program's group too, and nothing of its spares is left" {
	one_case mode=acceptor end=cat msgs=3 event=killparent et=0.5 want=signal
	one_case mode=acceptor end=bgfree event=killparent et=0.5 want=signal
	one_case mode=acceptor end=cat msgs=3 event=killparent et=0.5 want=signal spares=2
	one_case mode=acceptor end=cat msgs=3 event=killparent et=0.5 want=signal spares=0
	# its stop steps take 2 s (--grace 1): the client's quiet close may come first
	one_case mode=acceptor end=ignore event=killparent et=0.5
}

@test "acceptor: the connection process killed by SIGKILL: its program's group is killed too" {
	one_case mode=acceptor end=bgfree event=killconn
	one_case mode=acceptor end=ignore event=killconn
}

@test "SIGTERM after the ending is decided (program exited, close 1000 queued) changes nothing: the queue is still written" {
	one_case lines=2000 size=100 client=pause pause=2.0 event=sigterm et=1.0
}

@test "a client that resets, half-closes or stops reading: the program is stopped and nothing is left" {
	one_case end=flood client=rst at=0.3
	one_case end=cat msgs=3 client=halfclose at=0.3
	one_case end=flood client=stop at=0.3
}

@test "randomized cases: program x client x event, every invariant on each (the seed is printed)" {
	lc --minutes "${LIFECYCLE_MINUTES:-1.25}" --jobs 6
	# the seed and the count in the run's output, passed or not
	grep -E '^lifecycle: SEED=|^[0-9]+ passed, [0-9]+ failed$' <<<"$output" | sed 's/^/# /' >&3
	assert_success
	assert_line --regexp '^lifecycle: SEED=[0-9]+'
	assert_line --regexp '^[1-9][0-9]* passed, 0 failed$'
}
