# Shared setup for wsfilter's bats tests: load with `load common`.
# WSFILTER is the binary under test (make test-asan points it at the sanitizer build).

bats_require_minimum_version 1.5.0
bats_load_library bats-support
bats_load_library bats-assert

TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
: "${WSFILTER:=$TOP/wsfilter}"
export WSFILTER
# Debian's python3 (python3-websockets lives there), whatever python3 is first on PATH.
PY=/usr/bin/python3

# free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [HOST]: wait up to 5 s for something to listen on HOST:PORT.
wait_port() {
	local i
	for i in $(seq 1 100); do
		if "$PY" -c 'import socket,sys; socket.create_connection((sys.argv[2], int(sys.argv[1])), 0.2).close()' \
			"$1" "${2:-127.0.0.1}" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "nothing listens on ${2:-127.0.0.1}:$1" >&2
	return 1
}
