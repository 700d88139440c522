# A Debian bookworm container booted with systemd as PID 1 under
# systemd-nspawn, for wsfilter's systemd tests (load after common and
# lib/launchers).
#
# The image is built once by nspawn-image.sh and cached; each boot runs it
# with --volatile=overlay (every change lands in a tmpfs and is dropped at
# shutdown) and binds a `make install DESTDIR=...` tree read-only on
# /usr/local, where systemd finds units in /usr/local/lib/systemd/system.
# The container shares the host's network namespace, so its sockets listen
# on the host's loopback.

IMAGE=${WSFILTER_TEST_IMAGE:-$CACHE_DIR/bookworm}

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

# nspawn_boot STAGE LOG: boot the image in the background; sets NSPAWN_PID and
# CONTAINER_PID (the container's PID 1 as seen from the host) and waits until
# the container's systemd reports running (or degraded).
nspawn_boot() {
	local stage=$1 log=$2 i p state
	systemd-nspawn --register=no --keep-unit --volatile=overlay --console=passive \
		--bind-ro="$stage/usr/local:/usr/local" -D "$IMAGE" -b \
		</dev/null >"$log" 2>&1 3>&- &
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
