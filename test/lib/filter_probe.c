/* filter_probe MODE CALL: installs wsfilter's own seccomp filter as MODE
 * has it, makes one system call, and prints "allowed" when it came back.
 * A call the filter forbids kills the process (SIGSYS) before that.
 *
 *   MODE  conn      a connection without a program (wsfilter, launched)
 *         prog      a connection whose program's group is a child here
 *         acceptor  the acceptor's parent
 *         child     an acceptor's child: the parent's filter, then its own
 *   CALL  write     write(1, ...): every mode's
 *         open      open("/dev/null"): no mode's
 *         kill-all  kill(-1, 0): every process there is
 *         kill-init kill(1, 0)
 *         kill-prog kill(-PGID, 0), the program's group (prog)
 *         nr-1      system call number -1
 *         ioctl-off ioctl(0, 0xffffffff)
 *         writev-1  writev(-1, ...) (stderr not the log)
 *         getsockname, fcntl, fstat  on fd 0: what a launched wsfilter asks
 *                   before its filter, and an acceptor's child no longer does
 *
 * Built by the Makefile from wsfilter.c itself (WSFILTER_NO_MAIN), so it
 * tests the table wsfilter installs, not a copy of it. */
#define WSFILTER_NO_MAIN
#include "wsfilter.c"   /* the top directory's, by -I (the mutants: their own) */

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[1] : "", *call = argc > 2 ? argv[2] : "";
	struct iovec v = { "x", 1 };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	struct stat st;
	pid_t prog = 0;
	long r = 0;

	if (strcmp(mode, "conn") && strcmp(mode, "prog") && strcmp(mode, "acceptor") &&
	    strcmp(mode, "child"))
		return 2;
	if (!strcmp(mode, "prog")) {
		prog = fork();
		if (prog == 0) {
			/* holds nothing of the caller's, and dies with us */
			(void)setpgid(0, 0);
			(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
			closefrom(0);
			pause();
			_exit(0);
		}
		(void)setpgid(prog, prog);
	}
	if (!strcmp(mode, "child") && sandbox_enter(-1, 0, 0, 1) < 0)
		return 2;
	if (sandbox_enter(-1, 0, (int)prog, !strcmp(mode, "acceptor")) < 0)
		return 2;
	if (!strcmp(call, "write"))
		r = write(1, "", 0);
	else if (!strcmp(call, "open"))
		r = open("/dev/null", O_RDONLY);
	else if (!strcmp(call, "kill-all"))
		r = kill(-1, 0);
	else if (!strcmp(call, "kill-init"))
		r = kill(1, 0);
	else if (!strcmp(call, "kill-prog"))
		r = kill(-prog, 0);
	else if (!strcmp(call, "nr-1"))
		r = syscall(-1);
	else if (!strcmp(call, "ioctl-off"))
		r = ioctl(0, 0xffffffffu);
	else if (!strcmp(call, "writev-1"))
		r = writev(-1, &v, 1);
	else if (!strcmp(call, "getsockname"))
		r = getsockname(0, (struct sockaddr *)&ss, &sl);
	else if (!strcmp(call, "fcntl"))
		r = fcntl(0, F_GETFL);
	else if (!strcmp(call, "fstat"))
		r = fstat(0, &st);
	else
		return 2;
	{
		/* write(2) alone: stdio would ask for more (fstat, mmap) */
		char line[64];
		int n = snprintf(line, sizeof line, "allowed (%ld%s%s)\n", r, r < 0 ? " " : "",
				 r < 0 ? strerrorname_np(errno) : "");

		(void)!write(1, line, (size_t)n);
	}
	if (prog > 0)
		(void)kill(-prog, SIGKILL);
	_exit(0);
}
