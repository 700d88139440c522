#!/usr/bin/env bats
# The Debian package (debian/): dpkg-buildpackage -us -uc -b in a fresh clone,
# what the .deb holds, lintian --pedantic, hardening-check, a second build
# from a clone at another path giving the same bytes, and the package's
# autopkgtest (debian/tests) run by autopkgtest in a Debian bookworm container
# booted with systemd as PID 1: the .deb installed there, both unit pairs
# serving 10,000 messages, then purged; and the upgrade to a build one Debian
# revision up, in such a container (test/lib/package-upgrade.sh). The clones
# are of HEAD: uncommitted changes are not in them. make check-package runs
# this file.

load lib/common
load lib/launchers
load lib/nspawn

# The tests use what the ones before them built, in order.
BATS_NO_PARALLELIZE_WITHIN_FILE=true

# The image of nspawn-image.sh with what the autopkgtest needs installed (the
# container has no network of its own to fetch it).
PACKAGE_IMAGE=${WSFILTER_TEST_PACKAGE_IMAGE:-$CACHE_DIR/bookworm-package}

setup_file() {
	export VERSION DEB_VERSION ARCH DEB DBGSYM
	VERSION=$(sed -n 's/^VERSION = //p' "$TOP/Makefile")
	DEB_VERSION=$(dpkg-parsechangelog -l "$TOP/debian/changelog" -S Version)
	ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
	DEB=wsfilter_${DEB_VERSION}_$ARCH.deb
	DBGSYM=wsfilter-dbgsym_${DEB_VERSION}_$ARCH.deb
	# Two clones at paths of different lengths; each build puts its files
	# in the clone's parent.
	export SRC1=$BATS_FILE_TMPDIR/one/wsfilter
	export SRC2=$BATS_FILE_TMPDIR/two/a/longer/path/wsfilter-$VERSION
	export OUT1=${SRC1%/*} OUT2=${SRC2%/*}
	export EXTRACTED=$BATS_FILE_TMPDIR/extracted
	if [ -n "$(git -C "$TOP" status --porcelain --untracked-files=no)" ]; then
		echo "# the working tree has uncommitted changes: the package is built from HEAD" >&3
	fi
}

# The container is booted inside its test, so its pid is known only there:
# the test's own teardown shuts it down.
teardown() {
	nspawn_shutdown
}

# build_in DIR [VAR=VALUE...]: clone the repository into DIR and run
# dpkg-buildpackage -us -uc -b there with the VARs set (10 minutes at most);
# its output is in DIR/../build.log.
build_in() {
	local dir=$1
	shift
	mkdir -p "${dir%/*}"
	git clone -q --no-hardlinks "$TOP" "$dir"
	(cd "$dir" && env "$@" timeout 600 dpkg-buildpackage -us -uc -b) >"${dir%/*}/build.log" 2>&1 || {
		tail -n 40 "${dir%/*}/build.log"
		return 1
	}
}

# need_package: the first build's .deb, unpacked in EXTRACTED.
need_package() {
	[ -f "$OUT1/$DEB" ] || fail "no $OUT1/$DEB: the build failed"
	if [ ! -d "$EXTRACTED" ]; then
		dpkg-deb -x "$OUT1/$DEB" "$EXTRACTED"
	fi
}

# ---- the build -----------------------------------------------------------------

@test "debian/changelog's version is the Makefile's VERSION with a Debian revision" {
	[ -n "$VERSION" ] || fail "no VERSION in the Makefile"
	assert_equal "${DEB_VERSION%-*}" "$VERSION"
	[[ $DEB_VERSION == "$VERSION"-[0-9]* ]] || fail "$DEB_VERSION has no Debian revision"
}

@test "make: -O2 -g by default; CFLAGS from the environment or the command line replace them, the warnings stay" {
	run env -u CFLAGS make -s -n -B -C "$TOP" wsfilter
	assert_line --regexp '^cc -std=c11 -Wall .* -O2 -g .*-o wsfilter wsfilter\.c$'
	run env CFLAGS='-O3 -fstack-protector-strong' make -s -n -B -C "$TOP" wsfilter
	assert_line --regexp '^cc -std=c11 -Wall .* -O3 -fstack-protector-strong -Wl,'
	refute_output --partial '-O2'
	run env -u CFLAGS make -s -n -B -C "$TOP" wsfilter CFLAGS=-Os
	assert_line --regexp '^cc -std=c11 -Wall .* -Os -Wl,'
	refute_output --partial '-O2'
}

@test "dpkg-buildpackage -us -uc -b in a fresh clone builds the .deb named after the version and the architecture" {
	build_in "$SRC1"
	ls "$OUT1" | sed 's/^/# /' >&3
	[ -f "$OUT1/$DEB" ] || fail "no $DEB in $OUT1: $(ls "$OUT1")"
	# the flags of dpkg-buildflags reach the compiler
	run grep -c -e '^cc .* -ffile-prefix-map=[^ ]*=\. .*-fstack-protector-strong' "$OUT1/build.log"
	assert_output 1
}

@test "the package holds the binary, the man page, the four units, the inetd, xinetd, HAProxy and program examples" {
	need_package
	run sh -c "dpkg-deb -c '$OUT1/$DEB' | awk '\$1 !~ /^d/ { print \$6 }' | LC_ALL=C sort"
	assert_success
	# the fixed files, and every file of examples/ in DOCDIR/examples
	assert_output "$({
		git -C "$SRC1" ls-files examples | sed 's|^examples/|./usr/share/doc/wsfilter/examples/|'
		cat <<-'EOF'
			./lib/systemd/system/wsfilter-acceptor.service
			./lib/systemd/system/wsfilter-acceptor.socket
			./lib/systemd/system/wsfilter.socket
			./lib/systemd/system/wsfilter@.service
			./usr/bin/wsfilter
			./usr/share/doc/wsfilter/README.md.gz
			./usr/share/doc/wsfilter/changelog.Debian.gz
			./usr/share/doc/wsfilter/copyright
			./usr/share/doc/wsfilter/examples/haproxy/wsfilter.cfg
			./usr/share/doc/wsfilter/examples/inetd.conf
			./usr/share/doc/wsfilter/examples/xinetd.d/wsfilter
			./usr/share/lintian/overrides/wsfilter
			./usr/share/man/man1/wsfilter.1.gz
		EOF
	} | LC_ALL=C sort)"
	# the program examples are there
	[ -f "$EXTRACTED/usr/share/doc/wsfilter/examples/suffix.sh" ] || fail "no examples/suffix.sh"
}

@test "the packaged units and examples run /usr/bin/wsfilter" {
	need_package
	local u
	for u in wsfilter@.service wsfilter-acceptor.service; do
		run grep '^ExecStart=' "$EXTRACTED/lib/systemd/system/$u"
		assert_output 'ExecStart=/usr/bin/wsfilter'
	done
	run grep -rlE '@BINDIR@|/usr/local/bin/wsfilter' "$EXTRACTED/lib" "$EXTRACTED/usr/share/doc/wsfilter/examples"
	assert_output ''
	run grep -c '/usr/bin/wsfilter' "$EXTRACTED/usr/share/doc/wsfilter/examples/inetd.conf" \
		"$EXTRACTED/usr/share/doc/wsfilter/examples/xinetd.d/wsfilter" \
		"$EXTRACTED/usr/share/doc/wsfilter/examples/wsfilter@.service.d/program.conf"
	refute_line --regexp ':0$'
}

@test "the packaged binary runs, says the version and depends on libc alone" {
	need_package
	run "$EXTRACTED/usr/bin/wsfilter" --version
	assert_success
	assert_output "wsfilter $VERSION"
	run dpkg-deb -f "$OUT1/$DEB" Depends
	assert_output --regexp '^libc6 \(>= [0-9.]+\)$'
}

# ---- lintian and hardening-check ------------------------------------------------

@test "lintian --pedantic reports no error, warning or pedantic tag (informational ones are printed)" {
	need_package
	run lintian --pedantic -I -E --tag-display-limit 0 --fail-on error,warning,pedantic \
		"$OUT1/wsfilter_${DEB_VERSION}_$ARCH.changes"
	printf '# %s\n' "${lines[@]}" >&3
	assert_success
	refute_line --regexp '^[EWP]: '
	# the one override, for a tag that only an upload to Debian can clear
	run lintian --pedantic -I -E --show-overrides "$OUT1/wsfilter_${DEB_VERSION}_$ARCH.changes"
	run grep '^O: ' <<<"$output"
	assert_output 'O: wsfilter: initial-upload-closes-no-bugs [usr/share/doc/wsfilter/changelog.Debian.gz:1]'
}

@test "hardening-check: PIE, stack protector, fortify source, RELRO and immediate binding" {
	need_package
	# Debian 12's dpkg-buildflags has no control-flow protection
	run hardening-check --nocfprotection "$EXTRACTED/usr/bin/wsfilter"
	printf '# %s\n' "${lines[@]}" >&3
	assert_success
	assert_line ' Position Independent Executable: yes'
	assert_line ' Stack protected: yes'
	assert_line --regexp '^ Fortify Source functions: yes'
	assert_line ' Read-only relocations: yes'
	assert_line ' Immediate binding: yes'
}

# ---- reproducible ----------------------------------------------------------------

@test "a second build from a clone at another path, umask and time zone gives byte-identical .deb files" {
	need_package
	umask 0002
	build_in "$SRC2" TZ=XYZ-13 LC_ALL=C.UTF-8
	local f
	for f in "$DEB" "$DBGSYM"; do
		[ -f "$OUT2/$f" ] || fail "the second build made no $f"
		if ! cmp "$OUT1/$f" "$OUT2/$f"; then
			diff <(dpkg-deb -c "$OUT1/$f") <(dpkg-deb -c "$OUT2/$f") || true
			fail "$f differs between the two builds"
		fi
		echo "# $f: $(sha256sum <"$OUT1/$f" | cut -c1-16)... in both builds" >&3
	done
}

# ---- installed, under systemd ------------------------------------------------------

# package_image: PACKAGE_IMAGE, with what debian/tests/control makes the
# tests depend on besides the package (15 minutes at most).
package_image() {
	local deps
	deps=$(sed -n 's/^Depends://p' "$TOP/debian/tests/control" | tr ',' '\n' |
		sed 's/([^)]*)//; s/^ *//; s/ *$//' | grep -vx -e '@' -e wsfilter -e '')
	# shellcheck disable=SC2086 # a list of package names
	timeout 900 sh "$TOP/test/lib/package-image.sh" "$IMAGE" "$PACKAGE_IMAGE" $deps
}

# package_boot SRC DEBDIR LOG: boot PACKAGE_IMAGE in the background with its
# own network namespace (only its loopback: the shipped ports 8765 and 8766
# are free there), SRC read-only on /srv/src and DEBDIR on /srv/deb; sets
# NSPAWN_PID and CONTAINER_PID and waits until its systemd is running.
package_boot() {
	nspawn_boot_image "$PACKAGE_IMAGE" "$3" --private-network \
		--bind-ro="$1:/srv/src" --bind-ro="$2:/srv/deb" ||
		fail "the container did not boot (see $3)"
}

@test "autopkgtest in a container booted with systemd: the installed package serves 10,000 messages through each unit pair, and purge leaves nothing" {
	need_package
	local reason t0
	if reason=$(nspawn_unavailable); then
		skip "$reason"
	fi
	t0=$SECONDS
	package_image
	echo "# image ready in $((SECONDS - t0)) s" >&3
	mkdir -p "$BATS_FILE_TMPDIR/debs"
	cp "$OUT1/$DEB" "$BATS_FILE_TMPDIR/debs/"
	t0=$SECONDS
	# the tests from the tree the package was built in (its debian/files
	# makes it a built tree to autopkgtest: nothing to build or unpack)
	package_boot "$SRC1" "$BATS_FILE_TMPDIR/debs" "$BATS_FILE_TMPDIR/nspawn.log"
	echo "# container booted in $((SECONDS - t0)) s" >&3
	run in_container dpkg-query -W wsfilter
	assert_failure

	# The container is the disposable testbed the restrictions ask for
	# (systemd as PID 1, its changes dropped at shutdown): autopkgtest's null
	# runner cannot know that, hence --ignore-restrictions.
	t0=$SECONDS
	run timeout 600 nsenter -t "$CONTAINER_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 autopkgtest --no-built-binaries \
		--ignore-restrictions=breaks-testbed,isolation-container \
		"/srv/deb/$DEB" /srv/src -- null
	echo "# autopkgtest ran in $((SECONDS - t0)) s" >&3
	printf '# %s\n' "${lines[@]}" | grep -E '^# (ok: |FAIL|systemd-units )' >&3 || true
	assert_success
	assert_line --regexp '^systemd-units +PASS$'
	assert_line --partial 'ok: purged: no file, unit, link, process or listener left'

	# and seen from outside the test: nothing of the package in the container
	run in_container dpkg-query -W -f='${db:Status-Status}' wsfilter
	[ "$status" -ne 0 ] || [ "$output" = not-installed ] || fail "dpkg still has wsfilter: $output"
	run in_container systemctl list-unit-files --no-legend 'wsfilter*'
	assert_output ''
	run in_container find /etc /lib/systemd /usr/share/doc /usr/bin -name '*wsfilter*'
	assert_output ''
	assert_equal "$(count_wsfilter "$NSPAWN_PID")" 0
}

# build_newer DIR: clone the repository into DIR, add a changelog entry one
# revision above DEB_VERSION and build it as build_in does; prints the new
# version.
build_newer() {
	local dir=$1 v=$DEB_VERSION.1
	mkdir -p "${dir%/*}"
	git clone -q --no-hardlinks "$TOP" "$dir"
	{
		printf 'wsfilter (%s) unstable; urgency=medium\n\n' "$v"
		printf '  * The same source one revision up, to test the upgrade.\n\n'
		printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l "$dir/debian/changelog" -S Maintainer)" \
			"$(dpkg-parsechangelog -l "$dir/debian/changelog" -S Date)"
		cat "$dir/debian/changelog"
	} >"$dir/debian/changelog.new"
	mv "$dir/debian/changelog.new" "$dir/debian/changelog"
	(cd "$dir" && timeout 600 dpkg-buildpackage -us -uc -b) >"${dir%/*}/build.log" 2>&1 || {
		tail -n 40 "${dir%/*}/build.log" >&2
		return 1
	}
	echo "$v"
}

@test "an upgrade in a container booted with systemd: the sockets stay enabled and active, a connection's own process goes on, the acceptor restarts and closes its client with 1001, new connections are served" {
	need_package
	local reason new
	if reason=$(nspawn_unavailable); then
		skip "$reason"
	fi
	new=$(build_newer "$BATS_FILE_TMPDIR/three/wsfilter")
	[ -f "$BATS_FILE_TMPDIR/three/wsfilter_${new}_$ARCH.deb" ] || fail "no wsfilter_${new}_$ARCH.deb"
	package_image
	mkdir -p "$BATS_FILE_TMPDIR/upgrade"
	cp "$OUT1/$DEB" "$BATS_FILE_TMPDIR/three/wsfilter_${new}_$ARCH.deb" "$BATS_FILE_TMPDIR/upgrade/"
	package_boot "$SRC1" "$BATS_FILE_TMPDIR/upgrade" "$BATS_FILE_TMPDIR/nspawn-upgrade.log"
	run timeout 300 nsenter -t "$CONTAINER_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 sh -c 'cd /srv/src && exec bash test/lib/package-upgrade.sh "$@"' sh \
		"/srv/deb/$DEB" "/srv/deb/wsfilter_${new}_$ARCH.deb"
	printf '# %s\n' "${lines[@]}" >&3
	assert_success
	assert_line "ok: upgraded to $new"
	assert_line 'ok: the client held on 8765 went on with its process: replied again, close 1000'
	assert_line 'ok: the client held on 8766 got close 1001 from the acceptor'"'"'s restart'
	assert_line 'ok: purged: no process or listener left'
	assert_equal "$(count_wsfilter "$NSPAWN_PID")" 0
}
