#!/usr/bin/env bats
# The command line: help, version, usage errors.

load common

@test "--help prints the options and exits 0" {
	run "$WSFILTER" --help
	assert_success
	assert_output --partial "usage: wsfilter"
	assert_output --partial "--max-message BYTES"
	assert_output --partial "Exit status"
}

@test "--version prints the version and exits 0" {
	run "$WSFILTER" --version
	assert_success
	assert_output --regexp '^wsfilter [0-9]+\.[0-9]+\.[0-9]+$'
}

@test "an unknown option prints usage on stderr and exits 2" {
	run --separate-stderr "$WSFILTER" --bogus
	assert_failure 2
	assert_equal "$output" ""
	[[ "$stderr" == *"unknown option '--bogus'"* ]]
	[[ "$stderr" == *"usage: wsfilter"* ]]
}

@test "a number out of range is a usage error naming the option" {
	run --separate-stderr "$WSFILTER" --ping-interval -1
	assert_failure 2
	[[ "$stderr" == *"--ping-interval: '-1' is not a number from 0 to 86400"* ]]
}

@test "a missing option value is a usage error" {
	run --separate-stderr "$WSFILTER" --origin
	assert_failure 2
	[[ "$stderr" == *"needs a value"* ]]
}

@test "LISTEN_FDS other than 1 for this process is a usage error" {
	run --separate-stderr bash -c 'LISTEN_FDS=2 exec env LISTEN_PID=$$ "$WSFILTER" </dev/null'
	# env keeps the pid of the shell that exec'd it
	assert_failure 2
	[[ "$stderr" == *"LISTEN_FDS=2"* ]]
}

@test "LISTEN_FDS for another process is ignored" {
	run bash -c 'printf "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" | LISTEN_PID=1 LISTEN_FDS=1 "$WSFILTER" -q'
	assert_success
	assert_output --partial "200 OK"
}
