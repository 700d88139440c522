# Free ports and listeners, for the bats tests (through lib/common) and the
# bench scripts (through lib/bench.sh). Bash; needs python3 and ss.

: "${PY:=/usr/bin/python3}"

# pick_port [HOST]: a TCP port on HOST (default 127.0.0.1) that nothing listens on
# now, outside the kernel's ephemeral range, so that no outgoing connection takes it
# (another program can still bind it first: common.bash's start_on_port checks and
# retries).
pick_port() {
	"$PY" - "${1:-127.0.0.1}" <<-'EOF'
		import random, socket, sys
		host = sys.argv[1]
		lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
		ranges = [r for r in ((10000, lo - 1), (hi + 1, 65535)) if r[1] - r[0] > 1000]
		for _ in range(200):
		    a, b = random.choice(ranges)
		    port = random.randint(a, b)
		    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
		    try:
		        s.bind((host, port))
		    except OSError:
		        continue
		    finally:
		        s.close()
		    print(port)
		    sys.exit(0)
		sys.exit("no free port found")
	EOF
}

# listening PORT [HOST]: a socket listens on HOST:PORT (HOST 127.0.0.1 by default),
# or on the port of every address (0.0.0.0, [::], *). Read from ss: nothing connects,
# so no launcher starts a server for it.
listening() {
	ss -Hltn "sport = :$1" 2>/dev/null | awk -v h="${2:-127.0.0.1}" '
		{ a = $4; sub(/:[0-9]+$/, "", a); sub(/%.*$/, "", a)
		  if (a == h || a == "[" h "]" || a == "0.0.0.0" || a == "*" || a == "[::]") found = 1 }
		END { exit !found }'
}

# wait_port PORT [HOST] [SECONDS]: wait up to SECONDS (5) until a socket listens on
# HOST:PORT (see listening); fails after that.
wait_port() {
	# each try 0.05 s apart
	for _ in $(seq 1 $(( ${3:-5} * 20 ))); do
		listening "$1" "${2:-127.0.0.1}" && return 0
		sleep 0.05
	done
	echo "nothing listens on ${2:-127.0.0.1}:$1 after ${3:-5} s" >&2
	return 1
}
