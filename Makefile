.POSIX:
# wsfilter - WebSocket server for one connection on stdin/stdout

VERSION = 0.1.0
PREFIX = /usr/local
BINDIR = $(PREFIX)/bin
MANPREFIX = $(PREFIX)/share/man
DOCDIR = $(PREFIX)/share/doc/wsfilter
# the inetd, xinetd and HAProxy files (the Debian package: DOCDIR/examples)
EXAMPLEDIR = $(DOCDIR)
SYSTEMDUNITDIR = $(PREFIX)/lib/systemd/system

CC = cc
# The optimisation and debug flags, unless the build brings its own (the
# environment, as dpkg-buildflags exports them, or `make CFLAGS=...`). The
# warnings (WARN) and what wsfilter itself needs (CPPFLAGS_ALL, LDFLAGS_ALL)
# are added to them, never replaced; CPPFLAGS and LDFLAGS are the user's.
# Not `CFLAGS ?=`: under .POSIX, GNU make's own default for CFLAGS is -O1,
# which ?= would keep.
ifeq ($(origin CFLAGS),default)
CFLAGS = -O2 -g
endif
WARN = -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wstrict-prototypes
CPPFLAGS_ALL = -DVERSION=\"$(VERSION)\" -D_FORTIFY_SOURCE=2
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
BATS = bats
PORT = 8765

all: wsfilter

# every symbol bound at start (-z now): the acceptor's children then never
# write the GOT, and share its page with the parent
LDFLAGS_ALL = -Wl,-z,relro,-z,now

wsfilter: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS_ALL) $(LDFLAGS) -o $@ wsfilter.c

# the same program linked statically: make static, then make install STATIC=1
wsfilter-static: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) $(CFLAGS) -static-pie $(LDFLAGS_ALL) $(LDFLAGS) -o $@ wsfilter.c

static: wsfilter-static

wsfilter-asan: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) $(ASAN_FLAGS) -o $@ wsfilter.c

# test build only: opens a file after the handshake, which the sandbox kills
wsfilter-test-forbidden: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) -O2 -DWSFILTER_TEST_FORBIDDEN -o $@ wsfilter.c

# test build only: the acceptor without its gate, as on architectures
# that have none: its calls allowed from anywhere, each child's own filter
wsfilter-test-nogate: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) -O2 -DWSFILTER_TEST_NO_GATE -o $@ wsfilter.c

# test build only: overflows a buffer after the handshake, which
# _FORTIFY_SOURCE turns into abort(): it must die by SIGABRT, not SIGSYS
wsfilter-test-abort: wsfilter.c web_index.h
	$(CC) $(WARN) $(CPPFLAGS_ALL) $(CPPFLAGS) -O2 -DWSFILTER_TEST_ABORT -o $@ wsfilter.c

# test build only: wsfilter's seccomp filter, installed as each mode has it,
# and one system call (test/sandbox.bats)
test/lib/filter_probe: test/lib/filter_probe.c wsfilter.c web_index.h
	$(CC) $(WARN) -Wno-unused-function $(CPPFLAGS_ALL) $(CPPFLAGS) -I. -O2 -o $@ test/lib/filter_probe.c

# the page, as a C array: od and sed, nothing beyond POSIX
web_index.h: web/index.html
	od -An -v -tx1 web/index.html | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g' > $@.tmp
	mv $@.tmp $@

run: wsfilter
	@echo "wsfilter on ws://localhost:$(PORT) — open http://localhost:$(PORT)/"
	socat TCP-LISTEN:$(PORT),reuseaddr,fork,backlog=128,nodelay EXEC:./wsfilter

test: wsfilter wsfilter-test-forbidden wsfilter-test-abort wsfilter-test-nogate test/lib/filter_probe
	$(BATS) test

# everything CI checks, in two stages: check-fast builds warning-free under
# gcc and clang and runs the suites that exercise wsfilter's own code paths,
# also under AddressSanitizer + UndefinedBehaviorSanitizer; check-slow runs
# the launchers, systemd in containers, the browser and the scale suites
check: check-fast check-slow

check-fast: suites-listed
	$(MAKE) clean
	$(MAKE) CC=clang CFLAGS="-O2 -g -Werror" wsfilter
	$(MAKE) clean
	$(MAKE) CC=gcc CFLAGS="-O2 -g -Werror" wsfilter wsfilter-test-forbidden wsfilter-test-abort wsfilter-test-nogate test/lib/filter_probe
	$(BATS) $(FAST_SUITE)
	$(MAKE) test-asan

check-slow: wsfilter wsfilter-test-forbidden wsfilter-test-abort wsfilter-test-nogate
	$(BATS) $(SLOW_SUITE)

# every test/*.bats is in one of the stages
suites-listed:
	@for f in test/*.bats; do case " $(FAST_SUITE) $(SLOW_SUITE) $(PACKAGE_SUITE) " in \
		*" $$f "*) ;; *) echo "$$f is in none of FAST_SUITE, SLOW_SUITE, PACKAGE_SUITE"; exit 1 ;; esac; done

deps:
	sh test/deps.sh

# the Debian package, built in this tree (debian/rules clean runs make clean
# first); the .deb lands in the parent directory
deb:
	dpkg-buildpackage -us -uc -b

# the package built from fresh clones of HEAD, lintian, hardening-check, a
# second build byte for byte, and its autopkgtest under systemd in a container
PACKAGE_SUITE = test/package.bats
check-package: suites-listed
	$(BATS) $(PACKAGE_SUITE)

# the suites that exercise wsfilter's own code paths, under ASan+UBSan too:
# the protocol's, the buffers', and the lifecycle suite's random programs
# and clients, launched and in acceptor mode, which under ASan stand for
# exec.bats, acceptor.bats and operations.bats (run without it, in
# FAST_SUITE: they wait on timers more than they touch memory); the
# launcher, systemd and browser suites test configurations (ASAN_SUITE=test
# runs them all)
ASAN_SUITE = test/cli.bats test/handshake.bats test/framing.bats test/utf8.bats \
	test/close.bats test/limits.bats test/clients.bats test/sandbox.bats \
	test/hostile.bats test/lifecycle.bats
test-asan: wsfilter-asan wsfilter-test-forbidden wsfilter-test-abort wsfilter-test-nogate test/lib/filter_probe
	WSFILTER=$$(pwd)/wsfilter-asan LIFECYCLE_MINUTES=0.5 $(BATS) $(ASAN_SUITE)

# the lifecycle suite's random cases, thousands of them (SEED=N replays a run)
SOAK_CASES = 3000
soak: wsfilter
	/usr/bin/python3 test/lib/lifecycle.py --cases $(SOAK_CASES) --jobs 6

FAST_SUITE = $(ASAN_SUITE) test/operations.bats test/exec.bats test/acceptor.bats \
	test/endings.bats test/routes.bats
SLOW_SUITE = test/launchers.bats test/systemd.bats test/acceptor-systemd.bats \
	test/browser.bats test/scale.bats

# a representative subset under valgrind (slow: not part of check)
VALGRIND_SUITE = test/handshake.bats test/close.bats test/framing.bats
test-valgrind: wsfilter
	WSFILTER=$$(pwd)/test/lib/valgrind-wsfilter $(BATS) $(VALGRIND_SUITE)

# deliberate bugs, one at a time: the byte-level suites must catch each
mutants: web_index.h
	bash test/mutants/run.sh

# FUZZ_TIME seconds of libFuzzer on the core and of AFL++ on the program
FUZZ_TIME = 60
fuzz:
	FUZZ_TIME=$(FUZZ_TIME) sh test/fuzz/run.sh

bench: wsfilter
	QUICK=$(QUICK) sh test/bench/run.sh

install: wsfilter$(STATIC:1=-static)
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANPREFIX)/man1 \
		$(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(EXAMPLEDIR)/xinetd.d $(DESTDIR)$(EXAMPLEDIR)/haproxy
	cp -f wsfilter$(STATIC:1=-static) $(DESTDIR)$(BINDIR)/wsfilter
	chmod 755 $(DESTDIR)$(BINDIR)/wsfilter
	cp -f wsfilter.1 $(DESTDIR)$(MANPREFIX)/man1/wsfilter.1
	chmod 644 $(DESTDIR)$(MANPREFIX)/man1/wsfilter.1
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/wsfilter@.service.in \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter@.service
	cp -f systemd/wsfilter.socket $(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter.socket
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/wsfilter-acceptor.service.in \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.service
	cp -f systemd/wsfilter-acceptor.socket $(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.socket
	sed 's|/usr/local/bin/wsfilter|$(BINDIR)/wsfilter|g' inetd/inetd.conf \
		> $(DESTDIR)$(EXAMPLEDIR)/inetd.conf
	sed 's|/usr/local/bin/wsfilter|$(BINDIR)/wsfilter|g' inetd/xinetd.d/wsfilter \
		> $(DESTDIR)$(EXAMPLEDIR)/xinetd.d/wsfilter
	cp -f haproxy/wsfilter.cfg $(DESTDIR)$(EXAMPLEDIR)/haproxy/wsfilter.cfg
	cp -f README.md $(DESTDIR)$(DOCDIR)/README.md
	chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter@.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter.socket \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.socket $(DESTDIR)$(EXAMPLEDIR)/inetd.conf \
		$(DESTDIR)$(EXAMPLEDIR)/xinetd.d/wsfilter $(DESTDIR)$(EXAMPLEDIR)/haproxy/wsfilter.cfg \
		$(DESTDIR)$(DOCDIR)/README.md

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wsfilter $(DESTDIR)$(MANPREFIX)/man1/wsfilter.1 \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter@.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter.socket \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.service \
		$(DESTDIR)$(SYSTEMDUNITDIR)/wsfilter-acceptor.socket \
		$(DESTDIR)$(EXAMPLEDIR)/inetd.conf $(DESTDIR)$(EXAMPLEDIR)/xinetd.d/wsfilter \
		$(DESTDIR)$(EXAMPLEDIR)/haproxy/wsfilter.cfg $(DESTDIR)$(DOCDIR)/README.md
	-rmdir $(DESTDIR)$(EXAMPLEDIR)/xinetd.d $(DESTDIR)$(EXAMPLEDIR)/haproxy
	-[ "$(EXAMPLEDIR)" = "$(DOCDIR)" ] || rmdir $(DESTDIR)$(EXAMPLEDIR)
	-rmdir $(DESTDIR)$(DOCDIR)

clean:
	rm -f wsfilter wsfilter-static wsfilter-asan wsfilter-test-forbidden wsfilter-test-abort wsfilter-test-nogate web_index.h web_index.h.tmp
	rm -f test/lib/filter_probe
	rm -rf test/fuzz/bin test/fuzz/out

.PHONY: all static run test check check-fast check-slow check-package suites-listed deps deb test-asan test-valgrind mutants fuzz bench soak install uninstall clean
