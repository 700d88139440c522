#!/usr/bin/env bats
# The command line: help, version, usage errors.

load lib/common

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
	run --separate-stderr "$WSFILTER" --spares 65
	assert_failure 2
	[[ "$stderr" == *"--spares: '65' is not a number from 0 to 64"* ]]
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
	run wst run --expect 0 --env LISTEN_PID=1 --env LISTEN_FDS=1 http GET /healthz -- -q
	assert_success
	assert_line --index 0 "HTTP/1.1 200 OK"
	assert_line 'BODY "ok"'
}

@test "--log and --sandbox take only their documented values" {
	for opt in --log=auto --log=stderr --log=syslog --log=none --sandbox=on --sandbox=off --sandbox=required; do
		run "$WSFILTER" "$opt" --version
		assert_success
	done
	run --separate-stderr "$WSFILTER" --log=file
	assert_failure 2
	[[ "$stderr" == *"--log: 'file' is not auto, stderr, syslog or none"* ]]
	run --separate-stderr "$WSFILTER" --sandbox=maybe
	assert_failure 2
	[[ "$stderr" == *"--sandbox: 'maybe' is not on, off or required"* ]]
}
