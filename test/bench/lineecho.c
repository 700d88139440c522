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
 *
 * --fork --run PROG: the program ceiling, what `wsfilter -- PROG` under its
 * acceptor is held against.  The same, but the child runs no filter itself:
 * it makes two pipes, forks again (glibc's fork(), as wsfilter makes the
 * program's process), the grandchild executes PROG on them, and the child
 * relays bytes between the connection and PROG until PROG's output ends,
 * then reaps PROG.  Two process creations and an exec per connection, as a
 * relay that runs a program needs, and nothing else.
 * --fork --spawn PROG: the same with posix_spawn() (glibc's clone(CLONE_VM |
 * CLONE_VFORK)) in place of the second fork: what the full fork of the relay
 * costs over a creation that copies no page tables.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
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

extern char **environ;

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

/*
 * --run, --spawn: PROG on two pipes, in a process made by fork() (spawn 0)
 * or posix_spawn() (spawn 1); bytes relayed between fd and PROG until PROG's
 * output ends; 0, or 1 on an error.
 */
static int
relay(int fd, const char *prog, int spawn)
{
	int to[2], from[2];
	struct pollfd p[2];
	char *argv[] = { (char *)prog, NULL };
	ssize_t n;
	pid_t pid;

	if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
		return 1;
	if (spawn) {
		posix_spawn_file_actions_t fa;
		int err;

		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, to[0], 0);
		posix_spawn_file_actions_adddup2(&fa, from[1], 1);
		err = posix_spawn(&pid, prog, &fa, NULL, argv, environ);
		posix_spawn_file_actions_destroy(&fa);
		if (err != 0)
			return 1;
	} else {
		pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			if (dup2(to[0], 0) < 0 || dup2(from[1], 1) < 0)
				_exit(127);
			execv(prog, argv);
			_exit(127);
		}
	}
	close(to[0]);
	close(from[1]);
	p[0].fd = fd;
	p[0].events = POLLIN;
	p[1].fd = from[0];
	p[1].events = POLLIN;
	while (p[1].fd >= 0) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents) {
			n = read(fd, in, sizeof(in));
			if (n <= 0 || write_all(to[1], in, (size_t)n) < 0) {
				close(to[1]);
				p[0].fd = -1;
			}
		}
		if (p[1].revents) {
			n = read(from[0], in, sizeof(in));
			if (n <= 0 || write_all(fd, in, (size_t)n) < 0)
				p[1].fd = -1;
		}
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static void
on_child(int sig)
{
	(void)sig;
}

/*
 * --fork: accept on LISTEN_FD, a child per connection running the filter, or
 * with prog relaying to prog (see relay); ends by a signal.
 */
static int
serve_forking(int echo, uint64_t rng, const char *prog, int spawn)
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
			if (prog != NULL)
				_exit(relay(fd, prog, spawn));
			_exit(filter(fd, fd, echo, rng | 1));
		}
		close(fd);
	}
}

int
main(int argc, char **argv)
{
	int echo = 0, forking = 0, spawn = 0, i;
	const char *prog = NULL;
	uint64_t rng;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--echo") == 0)
			echo = 1;
		else if (strcmp(argv[i], "--fork") == 0)
			forking = 1;
		else if ((strcmp(argv[i], "--run") == 0 ||
		    strcmp(argv[i], "--spawn") == 0) && i + 1 < argc) {
			spawn = argv[i][2] == 's';
			prog = argv[++i];
		} else {
			fprintf(stderr, "usage: lineecho [--echo] "
			    "[--fork [--run PROG | --spawn PROG]]\n");
			return 2;
		}
	}
	if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || rng == 0)
		rng = (uint64_t)time(NULL) | 1;
	for (i = 1; i <= RANDOM_MAX; i++)
		suffix_len[i] = (unsigned char)snprintf(suffix[i], SUFFIX_MAX,
		    " - %d", i);
	if (prog != NULL && !forking) {
		fprintf(stderr, "lineecho: --run and --spawn go with --fork\n");
		return 2;
	}
	if (forking)
		return serve_forking(echo, rng, prog, spawn);
	return filter(0, 1, echo, rng);
}
