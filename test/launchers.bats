#!/usr/bin/env bats
# wsfilter under each real launcher: systemd-socket-activate (both ways of
# passing the connection), openbsd-inetd, xinetd, socat, tcpserver, and TLS
# in front (socat OPENSSL-LISTEN, stunnel4). Every test starts its launcher in
# the foreground on a free loopback port with the shipped configuration, runs
# one check through it, and stops it in teardown. The last part runs
# wsfilter -- PROGRAM (issue 14) under each launcher but TLS.

load lib/common
load lib/launchers

setup() {
	[ -x "$WSFILTER" ] || fail "no wsfilter binary at $WSFILTER (run make)"
}

teardown() {
	stop_launchers
}

# ---- systemd-socket-activate --inetd (the shipped unit's ExecStart) ---------

@test "systemd-socket-activate --inetd: GET / serves the page" {
	start_ssa_inetd
	check_page
}

@test "systemd-socket-activate --inetd: 10,000 pipelined messages all come back in order" {
	start_ssa_inetd
	check_pipelined 10000
}

@test "systemd-socket-activate --inetd: 100 clients at once each get 1,000 replies" {
	start_ssa_inetd
	check_concurrent 100 1000
}

@test "systemd-socket-activate --inetd: a client that vanishes leaves no wsfilter process" {
	start_ssa_inetd
	check_abrupt_disconnect
}

@test "systemd-socket-activate --inetd on [::1]: IPv6 clients are served" {
	start_ssa_inetd ::1
	check_pipelined 1000
	check_page
}

# ---- systemd-socket-activate without --inetd: the connection is fd 3 --------

@test "systemd-socket-activate fd 3: GET / serves the page" {
	start_ssa_fd3
	check_page
}

@test "systemd-socket-activate fd 3: 10,000 pipelined messages all come back in order" {
	start_ssa_fd3
	check_pipelined 10000
}

@test "systemd-socket-activate fd 3: 100 clients at once each get 1,000 replies" {
	start_ssa_fd3
	check_concurrent 100 1000
}

@test "systemd-socket-activate fd 3: a client that vanishes leaves no wsfilter process" {
	start_ssa_fd3
	check_abrupt_disconnect
}

# ---- openbsd-inetd ----------------------------------------------------------

@test "openbsd-inetd: GET / serves the page and nothing after its body" {
	start_openbsd_inetd 4
	check_page
}

@test "openbsd-inetd: an HTTP error body is exactly Content-Length bytes (no log text on the socket)" {
	start_openbsd_inetd 4
	check_error_body
}

@test "openbsd-inetd: a WebSocket ends with the close frame, no log text after it" {
	start_openbsd_inetd 4
	check_ws_exchange
}

@test "openbsd-inetd: 10,000 pipelined messages all come back in order" {
	start_openbsd_inetd 4
	check_pipelined 10000
}

@test "openbsd-inetd: 100 clients at once each get 1,000 replies" {
	start_openbsd_inetd 4
	check_concurrent 100 1000
}

@test "openbsd-inetd: a client that vanishes leaves no wsfilter process" {
	start_openbsd_inetd 4
	check_abrupt_disconnect
}

@test "openbsd-inetd tcp6 line on [::1]: IPv6 clients are served" {
	start_openbsd_inetd 6
	check_page
	check_pipelined 1000
}

# ---- xinetd -----------------------------------------------------------------

@test "xinetd: GET / serves the page and nothing after its body" {
	start_xinetd
	check_page
}

@test "xinetd: an HTTP error body is exactly Content-Length bytes (no log text on the socket)" {
	start_xinetd
	check_error_body
}

@test "xinetd: a WebSocket ends with the close frame, no log text after it" {
	start_xinetd
	check_ws_exchange
}

@test "xinetd: 10,000 pipelined messages all come back in order" {
	start_xinetd
	check_pipelined 10000
}

@test "xinetd: 100 clients at once each get 1,000 replies (per_source and cps raised)" {
	# The shipped per_source (32) and cps (100 10) are meant to refuse a
	# burst of 100 connections from one address; this test raises them.
	start_xinetd 's/^\([[:space:]]*per_source[[:space:]]*=\).*/\1 UNLIMITED/' \
		's/^\([[:space:]]*cps[[:space:]]*=\).*/\1 1000 1/'
	check_concurrent 100 1000
}

@test "xinetd: the shipped per_source limit (32) refuses the 33rd connection from one address" {
	start_xinetd
	# No connection of an earlier check may still count against the limit.
	wait_no_wsfilter "$ROOT_PID" 5
	run timeout 60 "$PY" "$CLIENTS/load_websockets.py" --barrier -c 40 -n 100 --timeout 10 --total-timeout 50 "$(url)"
	show_logs_on_fail
	assert_failure
	assert_output --partial 'clients 32/40 received 3200/4000 lost 800'
}

@test "xinetd: a client that vanishes leaves no wsfilter process" {
	start_xinetd
	check_abrupt_disconnect
}

# ---- socat ------------------------------------------------------------------

@test "socat TCP-LISTEN,fork as users write it: GET / serves the page" {
	start_socat_plain
	check_page
}

@test "socat TCP-LISTEN,fork as users write it: 10,000 pipelined messages all come back in order" {
	start_socat_plain
	check_pipelined 10000
}

@test "socat TCP-LISTEN,fork as users write it: a client that vanishes leaves no wsfilter process" {
	start_socat_plain
	check_abrupt_disconnect
}

@test "socat recommended form: 100 clients at once each get 1,000 replies" {
	start_socat
	check_concurrent 100 1000
}

@test "socat recommended form on [::1]: IPv6 clients are served" {
	start_socat ::1
	check_page
	check_pipelined 1000
}

# ---- tcpserver --------------------------------------------------------------

@test "tcpserver -HRl0: GET / serves the page" {
	start_tcpserver
	check_page
}

@test "tcpserver -HRl0: 10,000 pipelined messages all come back in order" {
	start_tcpserver
	check_pipelined 10000
}

@test "tcpserver -HRl0 -c100: 100 clients at once each get 1,000 replies" {
	# tcpserver runs at most 40 children by default (-c); 100 clients at once
	# need -c 100 (and a backlog for the burst).
	start_tcpserver -c 100 -b 128
	check_concurrent 100 1000
}

@test "tcpserver -HRl0: a client that vanishes leaves no wsfilter process" {
	start_tcpserver
	check_abrupt_disconnect
}

# ---- TLS in front -----------------------------------------------------------

@test "socat OPENSSL-LISTEN: GET / over https serves the page" {
	start_socat_tls
	check_page
}

@test "socat OPENSSL-LISTEN: 10,000 pipelined messages over wss:// all come back in order" {
	start_socat_tls
	check_pipelined 10000
}

@test "socat OPENSSL-LISTEN: 100 wss:// clients at once each get 1,000 replies" {
	start_socat_tls
	check_concurrent 100 1000
}

@test "socat OPENSSL-LISTEN: a wss:// client that vanishes leaves no wsfilter process" {
	start_socat_tls
	check_abrupt_disconnect
}

@test "stunnel4 in front of socat: 10,000 pipelined messages over wss:// all come back in order" {
	start_stunnel_socat
	check_pipelined 10000
}

@test "stunnel4 in front of socat: 100 wss:// clients at once each get 1,000 replies" {
	start_stunnel_socat
	check_concurrent 100 1000
}

# ---- wsfilter -- PROGRAM under each launcher (issue 14) ----------------------
# The program is examples/suffix.sh (the demo's filter as a shell loop), or it
# behind a shell that writes a line to stderr before and after (PROG_NOISY): two
# program processes per connection. Under the inetds stderr is the client's
# socket and wsfilter logs to syslog, collected from a private /dev/log.

@test "systemd-socket-activate --inetd, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_ssa_program inetd "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "systemd-socket-activate --inetd, wsfilter -- PROGRAM: the program's stderr lines reach the launcher's stderr, never the client" {
	launch_program
	start_ssa_program inetd "$PROG_NOISY"
	check_program_stderr
}

@test "systemd-socket-activate --inetd, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_ssa_program inetd "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}

@test "systemd-socket-activate fd 3, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_ssa_program fd3 "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "systemd-socket-activate fd 3, wsfilter -- PROGRAM: the program's stderr lines reach the launcher's stderr, never the client" {
	launch_program
	start_ssa_program fd3 "$PROG_NOISY"
	check_program_stderr
}

@test "systemd-socket-activate fd 3, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_ssa_program fd3 "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}

@test "openbsd-inetd, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_openbsd_inetd_program "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "openbsd-inetd, wsfilter -- PROGRAM: the program's stderr lines reach syslog, never the client" {
	launch_program
	start_openbsd_inetd_program "$PROG_NOISY"
	check_program_stderr
}

@test "openbsd-inetd, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_openbsd_inetd_program "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}

@test "xinetd, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_xinetd_program "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "xinetd, wsfilter -- PROGRAM: the program's stderr lines reach syslog, never the client" {
	launch_program
	start_xinetd_program "$PROG_NOISY"
	check_program_stderr
}

@test "xinetd, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_xinetd_program "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}

@test "tcpserver -vHRl0, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_tcpserver_program "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "tcpserver -vHRl0, wsfilter -- PROGRAM: the program's stderr lines reach the launcher's stderr, never the client" {
	launch_program
	start_tcpserver_program "$PROG_NOISY"
	check_program_stderr
}

@test "tcpserver -vHRl0, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_tcpserver_program "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}

@test "socat recommended form, wsfilter -- examples/suffix.sh: 10,000 pipelined messages all come back in order with the suffix" {
	launch_program
	start_socat_program "$PROG_SUFFIX"
	check_program_pipelined 10000
}

@test "socat recommended form, wsfilter -- PROGRAM: the program's stderr lines reach the launcher's stderr, never the client" {
	launch_program
	start_socat_program "$PROG_NOISY"
	check_program_stderr
}

@test "socat recommended form, wsfilter -- PROGRAM: a client that vanishes leaves neither wsfilter nor the program running" {
	launch_program
	start_socat_program "$PROG_NOISY"
	check_program_abrupt_disconnect 2
}
