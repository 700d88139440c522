/*
 * lineecho: the benchmark's ceiling.  A line filter on stdin/stdout that
 * appends " - N" (N uniform in 1..1000) to every line, or with --echo copies
 * its input unchanged.  It does the least a per-connection filter can do:
 * one big read, the suffixes spliced in, one big write.  Run it under the
 * same launchers as wsfilter (or behind websocketd) to see what the launcher
 * and the kernel cost without any WebSocket work.
 *
 * --fork: the fork ceiling, what wsfilter's acceptor is held against.  The
 * listening socket is descriptor 3 (systemd-socket-activate without
 * --accept); lineecho accepts, forks one process per connection (glibc's
 * fork(), as a plain server would), runs the same filter on the connection
 * in the child and ends it with _exit.  The parent waits in ppoll with
 * SIGCHLD let in there alone and reaps every child, so that their CPU time
 * is the parent's cutime/cstime.  No WebSocket, no log line, no timer, no
 * sandbox: one fork and the filter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IN_SIZE		(64 * 1024)
#define SUFFIX_MAX	8		/* " - 1000" and the newline */
#define RANDOM_MAX	1000
#define LISTEN_FD	3		/* --fork: systemd's first passed socket */

static unsigned char in[IN_SIZE];
static unsigned char out[IN_SIZE * SUFFIX_MAX];	/* every byte a newline */
static char suffix[RANDOM_MAX + 1][SUFFIX_MAX];
static unsigned char suffix_len[RANDOM_MAX + 1];

static int
write_all(int fd, const unsigned char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The filter from fd rd to fd wr until EOF: 0, or 1 on an error. */
static int
filter(int rd, int wr, int echo, uint64_t rng)
{
	const unsigned char *p, *end, *nl;
	unsigned char *o;
	ssize_t n;

	for (;;) {
		n = read(rd, in, sizeof(in));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : 1;
		if (echo) {
			if (write_all(wr, in, (size_t)n) < 0)
				return 1;
			continue;
		}
		p = in;
		end = in + n;
		o = out;
		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			int r;

			memcpy(o, p, (size_t)(nl - p));
			o += nl - p;
			rng ^= rng >> 12;
			rng ^= rng << 25;
			rng ^= rng >> 27;
			r = (int)((rng * 2685821657736338717ULL >> 33) % RANDOM_MAX) + 1;
			memcpy(o, suffix[r], suffix_len[r]);
			o += suffix_len[r];
			*o++ = '\n';
			p = nl + 1;
		}
		memcpy(o, p, (size_t)(end - p));
		o += end - p;
		if (write_all(wr, out, (size_t)(o - out)) < 0)
			return 1;
	}
}

static void
on_child(int sig)
{
	(void)sig;
}

/* --fork: accept on LISTEN_FD, a child per connection; ends by a signal. */
static int
serve_forking(int echo, uint64_t rng)
{
	struct sigaction sa;
	sigset_t chld, run;
	struct pollfd pfd;
	pid_t pid;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_child;
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &run);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		pfd.fd = LISTEN_FD;
		pfd.events = POLLIN;
		if (ppoll(&pfd, 1, NULL, &run) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		/* blocking, as the filter reads and writes on a pipe */
		fd = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		/* each child its own numbers: the state moves on in the parent */
		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		pid = fork();
		if (pid == 0) {
			close(LISTEN_FD);
			_exit(filter(fd, fd, echo, rng | 1));
		}
		close(fd);
	}
}

int
main(int argc, char **argv)
{
	int echo = 0, forking = 0, i;
	uint64_t rng;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--echo") == 0)
			echo = 1;
		else if (strcmp(argv[i], "--fork") == 0)
			forking = 1;
		else {
			fprintf(stderr, "usage: lineecho [--echo] [--fork]\n");
			return 2;
		}
	}
	if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || rng == 0)
		rng = (uint64_t)time(NULL) | 1;
	for (i = 1; i <= RANDOM_MAX; i++)
		suffix_len[i] = (unsigned char)snprintf(suffix[i], SUFFIX_MAX,
		    " - %d", i);
	if (forking)
		return serve_forking(echo, rng);
	return filter(0, 1, echo, rng);
}
