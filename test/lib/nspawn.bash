# The shipped systemd units, for wsfilter's systemd tests (load after common and
# lib/launchers): checked as installed on the host, and run by a Debian bookworm
# container booted with systemd as PID 1 under systemd-nspawn.
#
# The image is built once by nspawn-image.sh and cached; each boot runs it
# with --volatile=overlay (every change lands in a tmpfs and is dropped at
# shutdown) and binds a `make install DESTDIR=...` tree read-only on
# /usr/local, where systemd finds units in /usr/local/lib/systemd/system.
# The container shares the host's network namespace, so its sockets listen
# on the host's loopback.

IMAGE=${WSFILTER_TEST_IMAGE:-$CACHE_DIR/bookworm}

# ---- the units installed on the host ----------------------------------------

# units_install UNIT...: `make install PREFIX=$BATS_TEST_TMPDIR/prefix` (INSTALL_PREFIX)
# without rebuilding, so that the generated units' ExecStart= names a binary that
# exists on this host; UNITDIR is where the units went. Fails unless each UNIT is
# there.
units_install() {
	local u
	INSTALL_PREFIX=$BATS_TEST_TMPDIR/prefix
	make -s -C "$TOP" -o wsfilter -o web_index.h install PREFIX="$INSTALL_PREFIX" >/dev/null
	UNITDIR=$INSTALL_PREFIX/lib/systemd/system
	for u in "$@"; do
		[ -f "$UNITDIR/$u" ] || fail "make install did not install $u"
	done
}

# assert_units_verify UNIT...: systemd-analyze verify prints nothing for the
# installed UNITs (MANPATH lets it find the man page named by Documentation=).
assert_units_verify() {
	local u files=()
	for u in "$@"; do
		files+=("$UNITDIR/$u")
	done
	run env MANPATH="$INSTALL_PREFIX/share/man" systemd-analyze verify "${files[@]}"
	assert_success
	assert_output ''
}

# assert_exposure UNIT MAX: systemd-analyze security rates the installed UNIT's
# exposure at most MAX.
assert_exposure() {
	local score
	run systemd-analyze security --offline=true "$UNITDIR/$1"
	assert_success
	score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p' <<<"$output")
	echo "exposure $score"
	[ -n "$score" ] || fail "no overall exposure level"
	awk -v s="$score" -v max="$2" 'BEGIN { exit !(s <= max) }' || fail "exposure $score, above $2"
}

# ---- the container ------------------------------------------------------------

# nspawn_unavailable: print why this machine cannot boot a container, if so.
nspawn_unavailable() {
	[ "$(id -u)" = 0 ] || { echo "systemd-nspawn needs root"; return 0; }
	command -v systemd-nspawn >/dev/null || { echo "systemd-nspawn is missing (package systemd-container)"; return 0; }
	command -v debootstrap >/dev/null || [ -e "$IMAGE/.wsfilter-image-v1" ] ||
		{ echo "debootstrap is missing"; return 0; }
	return 1
}

# nspawn_image: build the cached image when it is missing (about a minute).
nspawn_image() {
	timeout 900 sh "$TOP/test/lib/nspawn-image.sh" "$IMAGE"
}

# nspawn_stage DIR: install wsfilter into DIR as `make install` does, without
# rebuilding the binary.
nspawn_stage() {
	make -s -C "$TOP" -o wsfilter -o web_index.h install DESTDIR="$1" PREFIX=/usr/local >/dev/null
}

# nspawn_boot STAGE LOG: boot the image in the background, sharing the host's
# network, with STAGE's /usr/local read-only on /usr/local; as nspawn_boot_image.
nspawn_boot() {
	nspawn_boot_image "$IMAGE" "$2" --bind-ro="$1/usr/local:/usr/local"
}

# nspawn_boot_image IMAGE LOG OPTION...: boot IMAGE in the background with the
# extra systemd-nspawn OPTIONs, its console in LOG; sets NSPAWN_PID and
# CONTAINER_PID (the container's PID 1 as seen from the host) and waits until
# the container's systemd reports running (or degraded). Otherwise prints why,
# with LOG, and returns 1.
nspawn_boot_image() {
	local image=$1 log=$2 i p state
	shift 2
	systemd-nspawn --register=no --keep-unit --volatile=overlay --console=passive \
		"$@" -D "$image" -b </dev/null >"$log" 2>&1 3>&- &
	NSPAWN_PID=$!
	CONTAINER_PID=
	for i in $(seq 1 200); do
		for p in $(descendants "$NSPAWN_PID"); do
			if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] &&
				grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" 2>/dev/null; then
				CONTAINER_PID=$p
				break 2
			fi
		done
		kill -0 "$NSPAWN_PID" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$CONTAINER_PID" ]; then
		echo "the container's systemd did not start:" >&2
		cat "$log" >&2
		return 1
	fi
	# systemctl fails until PID 1 has set up its private bus socket (it
	# says so, or just "offline"); then --wait blocks until start-up is
	# complete.
	for i in $(seq 1 120); do
		state=$(timeout 60 nsenter -t "$CONTAINER_PID" -a systemctl is-system-running --wait 2>&1) || true
		case $state in
		running | degraded) return 0 ;;
		*"Failed to connect to bus"* | offline) sleep 0.25 ;;
		*) break ;;
		esac
	done
	echo "the container did not finish booting: $state" >&2
	cat "$log" >&2
	return 1
}

# in_container CMD...: run CMD in the container's namespaces (30 s at most).
in_container() {
	timeout 30 nsenter -t "$CONTAINER_PID" -a "$@"
}

# nspawn_shutdown: ask the container to power off (nspawn turns SIGTERM into
# that), wait up to 30 s, then kill what is left.
nspawn_shutdown() {
	local i p all
	[ -n "${NSPAWN_PID:-}" ] || return 0
	all=$(descendants "$NSPAWN_PID")
	kill -TERM "$NSPAWN_PID" 2>/dev/null || true
	for i in $(seq 1 300); do
		kill -0 "$NSPAWN_PID" 2>/dev/null || break
		sleep 0.1
	done
	for p in $NSPAWN_PID $all; do
		kill -KILL "$p" 2>/dev/null || true
	done
	wait "$NSPAWN_PID" 2>/dev/null || true
	NSPAWN_PID=
}

# nspawn_socket_port SOCKET LINE...: a drop-in for SOCKET in the container
# with ListenStream= emptied and then each LINE (in single quotes, '$PORT'
# stands for the port), on a free port, restarted; sets PORT. Up to five
# ports are tried: the container's systemd, not another program, must be
# the one that holds it.
nspawn_socket_port() {
	local socket=$1 try i line lines
	shift
	for try in 1 2 3 4 5; do
		PORT=$(pick_port)
		lines="'[Socket]' 'ListenStream='"
		for line in "$@"; do
			lines+=" '${line//\$PORT/$PORT}'"
		done
		in_container sh -c "mkdir -p /etc/systemd/system/$socket.d && printf '%s\n' $lines \
			>/etc/systemd/system/$socket.d/port.conf"
		in_container systemctl daemon-reload
		in_container systemctl enable "$socket" >/dev/null 2>&1 || true
		in_container systemctl restart "$socket" || true
		for i in $(seq 1 50); do
			owns_listener "$NSPAWN_PID" "$PORT" && return 0
			sleep 0.1
		done
		echo "# try $try: port $PORT not held by the container's systemd" >&3
	done
	return 1
}

# ---- a suite's one container -------------------------------------------------

# nspawn_setup_file SOCKET LINE...: setup_file of a suite whose tests share one
# container: the image (built when missing), a `make install` tree staged in
# STAGE (and, when the suite defines nspawn_stage_extra, that called with STAGE),
# the container booted and SOCKET moved to a free port with nspawn_socket_port
# SOCKET LINE...; exports STAGE, NSPAWN_PID, CONTAINER_PID, PORT, HOST and
# SCHEME. Where the container cannot boot, NSPAWN_SKIP says why (need_container
# skips); without the binary each test reports it.
nspawn_setup_file() {
	[ -x "$TOP/wsfilter" ] || return 0
	local t0 t1 reason
	export NSPAWN_SKIP=
	if reason=$(nspawn_unavailable); then
		export NSPAWN_SKIP=$reason
		return 0
	fi
	t0=$(date +%s)
	nspawn_image
	t1=$(date +%s)
	export STAGE
	STAGE=$(mktemp -d /tmp/wsfilter-stage.XXXXXX)
	nspawn_stage "$STAGE"
	if declare -F nspawn_stage_extra >/dev/null; then
		nspawn_stage_extra "$STAGE"
	fi
	nspawn_boot "$STAGE" "$BATS_FILE_TMPDIR/nspawn.log"
	export NSPAWN_PID CONTAINER_PID
	echo "# image ready in $((t1 - t0)) s, container booted in $(($(date +%s) - t1)) s" >&3
	export PORT HOST=127.0.0.1 SCHEME=ws
	nspawn_socket_port "$@"
}

# nspawn_teardown_file: teardown_file of such a suite.
nspawn_teardown_file() {
	nspawn_shutdown
	[ -z "${STAGE:-}" ] || rm -rf "$STAGE"
}

# need_container: skip the test where the container cannot boot; fail it when the
# container is not running.
need_container() {
	[ -z "$NSPAWN_SKIP" ] || skip "$NSPAWN_SKIP"
	if [ -z "${CONTAINER_PID:-}" ] || ! kill -0 "$CONTAINER_PID" 2>/dev/null; then
		fail "the container is not running (see $BATS_FILE_TMPDIR/nspawn.log)"
	fi
}
