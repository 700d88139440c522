# An acceptor's spares, for the bats tests (through lib/common) and the bench
# scripts (through lib/bench.sh). Bash.

# is_spare PID: PID is one of an acceptor's spares, forked ahead of its
# connection: it holds an end of a Unix SEQPACKET pair (its parent's), which a
# process serving a connection never does.
is_spare() {
	local ino
	for ino in $(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n'); do
		awk -v i="$ino" 'NR > 1 && $5 == "0005" && $7 == i { f = 1 } END { exit !f }' \
			"/proc/$1/net/unix" 2>/dev/null && return 0
	done
	return 1
}

# busy_children PID: PID's children but its spares (each connection's process
# while it runs), one a line.
busy_children() {
	local p
	for p in $(pgrep -P "$1" 2>/dev/null); do
		is_spare "$p" || echo "$p"
	done
	return 0
}
