/* filter_probe MODE CALL: installs wsfilter's own seccomp filter as MODE
 * has it, makes one system call, and prints "allowed" when it came back.
 * A call the filter forbids kills the process (SIGSYS) before that.
 *
 *   MODE  conn      a connection without a program (wsfilter, launched)
 *         prog      a connection whose program's group is a child here
 *         acceptor  the acceptor's parent, with its gate (x86_64)
 *         child     an acceptor's child serving its connection: forked
 *                   through the parent's gate, under the parent's filter
 *                   alone, the spare's gate unmapped, as wsfilter's are
 *         spare     the same before its connection: it has the spare's gate
 *         acceptor-nogate, child-nogate
 *                   the same without a gate: the parent's calls from
 *                   anywhere, and a child's own filter over the parent's
 *   CALL  write     write(1, ...): every mode's
 *         open      open("/dev/null"): no mode's
 *         kill-all  kill(-1, 0): every process there is
 *         kill-init kill(1, 0)
 *         kill-prog kill(-PGID, 0), the program's group (prog)
 *         kill-child kill(PID, 0), that process alone (as the acceptor's
 *                   parent signals a child)
 *         nr-1      system call number -1
 *         ioctl-off ioctl(0, 0xffffffff)
 *         writev-1  writev(-1, ...) (stderr not the log)
 *         getsockname, fcntl, fstat  on fd 0: what a launched wsfilter asks
 *                   before its filter, and an acceptor's child no longer does
 *         accept4   accept4(-1, ...)
 *         clone     clone(CLONE_SIGHAND) without CLONE_VM: EINVAL, if allowed
 *         getrandom one byte
 *         prctl     prctl(PR_GET_DUMPABLE)
 *         getppid
 *         sendto    send(-1, ...): there is no syslog socket here
 *         recvmsg, sendmsg  on fd -1
 *         socketpair        AF_UNIX, SOCK_SEQPACKET; socketpair-inet: AF_INET
 *         gate-CALL the same call through the acceptor's gate (acc_call):
 *                   kill-all, kill-prog, kill-child, accept4, clone, getrandom,
 *                   sendmsg, socketpair, socketpair-inet
 *         spare-CALL        through the spare's gate (spare_call): recvmsg,
 *                   accept4, munmap-gate (the spare's gate's page: a spare's
 *                   last call there), munmap-other (an unmapped page)
 *   has-gate        prints "gate" when this build and system have one
 *
 * In the child modes the parent waits for the child and ends as it did:
 * a death by signal S is exit 128 + S.
 *
 * Built by the Makefile from wsfilter.c itself (WSFILTER_NO_MAIN), so it
 * tests the table and gate wsfilter uses, not a copy of them. */
#define WSFILTER_NO_MAIN
#include "wsfilter.c"   /* the top directory's, by -I (the mutants: their own) */
#include <sched.h>      /* CLONE_SIGHAND */

static long probe_call(const char *call, pid_t prog)
{
	struct iovec v = { "x", 1 };
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	struct stat st;
	char b;
	int gate = !strncmp(call, "gate-", 5), spare = !strncmp(call, "spare-", 6);
	long (*sys)(long, long, long, long, long, long) = gate ? acc_call : spare ? spare_call : NULL;
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
	int sv[2];

	if (gate)
		call += 5;
	if (spare)
		call += 6;
	if (spare && !strcmp(call, "munmap-gate"))
		return sys(__NR_munmap, (long)spare_gate_page, GATE_PAGE, 0, 0, 0);
	if (spare && !strcmp(call, "munmap-other"))
		return sys(__NR_munmap, 0x10000, 4096, 0, 0, 0);
	if (!strcmp(call, "recvmsg"))
		return sys ? sys(__NR_recvmsg, -1, (long)&m, 0, 0, 0) : recvmsg(-1, &m, 0);
	if (!strcmp(call, "sendmsg"))
		return sys ? sys(__NR_sendmsg, -1, (long)&m, 0, 0, 0) : sendmsg(-1, &m, 0);
	if (!strcmp(call, "socketpair"))
		return sys ? sys(__NR_socketpair, AF_UNIX, SOCK_SEQPACKET, 0, (long)sv, 0)
			   : socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv);
	if (!strcmp(call, "socketpair-inet"))
		return sys ? sys(__NR_socketpair, AF_INET, SOCK_STREAM, 0, (long)sv, 0)
			   : socketpair(AF_INET, SOCK_STREAM, 0, sv);
	if (!strcmp(call, "kill-all"))
		return sys ? sys(__NR_kill, -1, 0, 0, 0, 0) : kill(-1, 0);
	if (!strcmp(call, "kill-prog"))
		return sys ? sys(__NR_kill, -prog, 0, 0, 0, 0) : kill(-prog, 0);
	if (!strcmp(call, "kill-child"))
		return sys ? sys(__NR_kill, prog, 0, 0, 0, 0) : kill(prog, 0);
	if (!strcmp(call, "accept4"))
		return sys ? sys(__NR_accept4, -1, 0, 0, 0, 0) : syscall(__NR_accept4, -1, 0, 0, 0);
	if (!strcmp(call, "clone"))
		return sys ? sys(__NR_clone, CLONE_SIGHAND, 0, 0, 0, 0)
			   : syscall(__NR_clone, CLONE_SIGHAND, 0, 0, 0, 0);
	if (!strcmp(call, "getrandom"))
		return sys ? sys(__NR_getrandom, (long)&b, 1, 0, 0, 0)
			   : syscall(__NR_getrandom, &b, 1, 0);
	if (gate || spare)
		return -2;
	if (!strcmp(call, "write"))
		return write(1, "", 0);
	if (!strcmp(call, "open"))
		return open("/dev/null", O_RDONLY);
	if (!strcmp(call, "kill-init"))
		return kill(1, 0);
	if (!strcmp(call, "nr-1"))
		return syscall(-1);
	if (!strcmp(call, "ioctl-off"))
		return ioctl(0, 0xffffffffu);
	if (!strcmp(call, "writev-1"))
		return writev(-1, &v, 1);
	if (!strcmp(call, "getsockname"))
		return getsockname(0, (struct sockaddr *)&ss, &sl);
	if (!strcmp(call, "fcntl"))
		return fcntl(0, F_GETFL);
	if (!strcmp(call, "fstat"))
		return fstat(0, &st);
	if (!strcmp(call, "prctl"))
		return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (!strcmp(call, "getppid"))
		return getppid();
	if (!strcmp(call, "sendto"))
		return send(-1, "x", 1, 0);
	return -2;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[1] : "", *call = argc > 2 ? argv[2] : "";
	int acceptor = !strncmp(mode, "acceptor", 8);
	int child = !strncmp(mode, "child", 5) || !strcmp(mode, "spare");
	int nogate = strstr(mode, "-nogate") != NULL;
	pid_t prog = 0, pid = 0;
	long r;
	int st;

	if (argc == 2 && !strcmp(argv[1], "has-gate")) {
		if (gate_open() == 0)
			(void)!write(1, "gate\n", 5);
		return 0;
	}
	if (strcmp(mode, "conn") && strcmp(mode, "prog") && strcmp(mode, "acceptor") &&
	    strcmp(mode, "child") && strcmp(mode, "acceptor-nogate") && strcmp(mode, "child-nogate") &&
	    strcmp(mode, "spare"))
		return 2;
	/* the parent's own calls go through the gate: the library's kill is
	 * what a child (or a bug in the parent) would call */
	if (strstr(call, "kill-prog") || strstr(call, "kill-child") || !strcmp(mode, "prog")) {
		pid_t self = getpid();

		prog = fork();
		if (prog == 0) {
			/* holds nothing of the caller's, and dies with us, even
			 * when we die (SIGSYS) before it has set that up */
			(void)setpgid(0, 0);
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != self)
				_exit(0);
			closefrom(0);
			pause();
			_exit(0);
		}
		(void)setpgid(prog, prog);
	}
	if ((acceptor || child) && !nogate && gate_open() < 0)
		return 3;
	if (sandbox_enter(-1, 0, !strcmp(mode, "prog") ? (int)prog : 0, acceptor || child,
			  acceptor || child ? gate_ip : 0) < 0)
		return 2;
	if (child) {
		pid = acceptor_fork();
		if (pid > 0) {
			while (acc_call(__NR_wait4, pid, (long)&st, 0, 0, 0) < 0 && errno == EINTR)
				;
			if (prog > 0)
				(void)acc_call(__NR_kill, prog, SIGKILL, 0, 0, 0);
			_exit(WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
		}
		if (pid < 0)
			return 2;
		/* without a gate the child installs the connection's filter */
		if (nogate && sandbox_enter(-1, 0, 0, 0, 0) < 0)
			_exit(2);
		/* with one, a child that serves has given up the spare's */
		if (!nogate && !strcmp(mode, "child") &&
		    spare_call(__NR_munmap, (long)spare_gate_page, GATE_PAGE, 0, 0, 0) < 0)
			_exit(2);
	}
	r = probe_call(call, prog);
	if (r == -2)
		_exit(2);
	{
		/* write(2) alone: stdio would ask for more (fstat, mmap) */
		char line[64];
		int n = snprintf(line, sizeof line, "allowed (%ld%s%s)\n", r, r < 0 ? " " : "",
				 r < 0 ? strerrorname_np(errno) : "");

		(void)!write(1, line, (size_t)n);
	}
	/* the helper, as each mode may signal it */
	if (prog > 0 && acceptor)
		(void)acc_call(__NR_kill, prog, SIGKILL, 0, 0, 0);
	else if (prog > 0 && !strcmp(mode, "prog"))
		(void)kill(-prog, SIGKILL);
	_exit(0);
}
