# Byte-exact conversations with wsfilter through test/ws.py: load with
# `load wsrun` after `load common`.

ws() { "$PY" "$BATS_TEST_DIRNAME/ws.py" "$@"; }

# answer [RUN-OPTIONS] CONVERSATION [-- WSFILTER-ARGS]: run the conversation
# (see ws.py) with a short close timeout; bats' $output holds the decoded answer.
answer() {
	local conv=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		conv+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	run ws run --timeout 8 "${conv[@]}" -- --close-timeout 1 "$@"
}
