/*
 * wsfilter - a WebSocket server (RFC 6455) for exactly one connection.
 *
 * A launcher accepts the TCP connection and starts one wsfilter per client:
 * systemd socket activation (Accept=yes), inetd, xinetd, tcpserver or
 * "socat TCP-LISTEN:8765,fork EXEC:wsfilter".  wsfilter reads the client's
 * bytes from descriptor 0 and writes to descriptor 1 (or uses descriptor 3
 * for both when systemd passes it with LISTEN_FDS), performs the opening
 * handshake, answers every data message with the same message followed by
 * " - N" (N random, 1..1000), or unchanged with --echo, and exits when the
 * connection ends.  A plain "GET /" gets the browser page compiled into the
 * binary from web/index.html.
 *
 * Memory is fixed: payload is unmasked, checked and forwarded as it streams
 * through, so a message of any size costs the same two buffers.  One poll
 * loop drives both directions; when the client stops reading, wsfilter stops
 * reading too.  Every connection ends in bounded time: the handshake has a
 * timeout, keepalive pings find dead peers, and a client that takes none of
 * the pending output for the send timeout is gone.
 *
 * The file reads top to bottom: limits, types (struct core, the
 * protocol's state, inside struct conn, the process's), the table of
 * endings, helpers, logging, the output queue, ending a connection, the
 * handshake, frames and the filter, a program's bytes, the protocol core
 * (core_init, conn_process: no globals, no system calls), timers, a
 * program's process, the I/O loop of one connection, the sandbox, options
 * and main, and the acceptor with its own loop.
 */

#define _GNU_SOURCE
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#ifdef __linux__
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#ifndef VERSION
#define VERSION "0.1.0"
#endif

/* ==== Limits and defaults ============================================== */

#define HEAD_MAX          8192         /* request head; 431 above */
#define IN_BUF_SIZE       65536        /* one read(2) at most */
#define OUT_BUF_SIZE      (256 * 1024) /* queued output; reading stops when full */
#define OUT_FRAME_MIN     512          /* free output needed to start a frame */
#define CLOSE_RESERVE     160          /* always kept free for a close frame */
#define SUFFIX_MAX        24           /* " - " and up to 20 digits */
#define CTRL_MAX          125          /* RFC 6455 5.5 */
#define REASON_MAX        100          /* a reason with its detail */
#define LIST_MAX          16           /* --origin and --protocol entries */
#define PEER_MAX          80           /* sanitized peer text in log lines */
#define REQ_MAX           72           /* sanitized method and target in log lines */
#define LOG_MAX           512          /* one log line */
#define DISCARD_MAX       (256 * 1024) /* input read and dropped after the end,
						 * before and after our shutdown */
#define HEADERS_MAX       1024         /* --header lines, all of them */
#define CHECK_OUT_MAX     4096         /* what --check may write */
#define USER_MAX          64           /* Remote-User from --check */
/* the head of our own HTTP answers: ours, --header's, a check's refusal */
#define HTTP_HEAD_MAX     (1024 + HEADERS_MAX + CHECK_OUT_MAX)
#define PIPE_BUF_SIZE     65536        /* to and from a program, each way */
#define ERR_LINE_MAX      400          /* a line of the program's stderr in the log */
/* The request's CGI variables.  The target appears up to three times
 * (REQUEST_URI, PATH_INFO, QUERY_STRING), each header once with at most
 * 3 bytes more than its line ("HTTP_" and "=" and NUL for ": " and CRLF),
 * the Host once more in SERVER_NAME, and the fixed names and the peer
 * take well under 1 KiB: a head of HEAD_MAX bytes always fits. */
#define ENV_MAX           (4 * HEAD_MAX + 2048)
/* Unsent bytes the kernel may hold for us on a TCP socket.  Writes then
 * progress as the client reads, which is what the send timeout measures,
 * and a client that never reads pins little kernel memory. */
#define NOTSENT_LOWAT     (16 * 1024)

#define DEF_RANDOM_MAX    1000
#define DEF_HS_TIMEOUT    10
#define DEF_CLOSE_TIMEOUT 2
#define DEF_GRACE         2            /* a program's stop steps, apart */
#define DEF_PING_INTERVAL 20           /* keepalive, as Python websockets */
#define DEF_SEND_TIMEOUT  20           /* when pings are off */
#define DEF_MAX_CONN      4096         /* the acceptor's children at once */
#define DEF_SPARES        1            /* and forked ahead of their connection
					* (0 with a program: measured, no gain) */
#define SPARES_MAX        64
#define DEF_STOP_TIMEOUT  10           /* the acceptor's wait for them at a stop */
#define DEF_IDLE_INETD    60           /* inetd wait: the socket goes back when idle */
#define ACCEPT_BATCH      32           /* accepts per wakeup */
#define ACCEPT_RETRY_MS   100          /* after accept(2) or fork(2) failed */

/* Exit status, documented in README.md and wsfilter.1. */
enum {
	EXIT_CLEAN    = 0, /* close handshake done, page served, stopped by signal */
	EXIT_INTERNAL = 1, /* internal error */
	EXIT_USAGE    = 2, /* bad command line or environment */
	EXIT_PROTOCOL = 3, /* the client broke the protocol (HTTP 4xx, close 1002/1007/1009) */
	EXIT_GONE     = 4, /* the client vanished without a close */
	EXIT_TIMEOUT  = 5, /* handshake, idle, ping or send timeout */
	EXIT_PROGRAM  = 6, /* the program could not be run, exited non-zero or was killed */
};

/* RFC 6455 5.2 opcodes */
enum {
	OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2,
	OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA,
};

#define WSBIT_FIN  0x80
#define WSBIT_RSV  0x70
#define WSBIT_MASK 0x80

/* RFC 6455 7.4.1 close codes used by wsfilter */
enum {
	CLOSE_NORMAL = 1000, CLOSE_GOING_AWAY = 1001, CLOSE_PROTOCOL = 1002,
	CLOSE_NO_STATUS = 1005, /* never sent: a close frame without a code */
	CLOSE_INVALID_DATA = 1007, CLOSE_TOO_BIG = 1009, CLOSE_INTERNAL = 1011,
};

enum http_status {
	HTTP_SWITCHING = 101, HTTP_OK = 200, HTTP_BAD_REQUEST = 400,
	HTTP_FORBIDDEN = 403, HTTP_NOT_FOUND = 404, HTTP_METHOD = 405,
	HTTP_TIMEOUT = 408, HTTP_UPGRADE_REQUIRED = 426, HTTP_TOO_LARGE = 431,
	HTTP_INTERNAL = 500, HTTP_UNAVAILABLE = 503,
};

/* ==== Types ============================================================ */

enum conn_state {
	CS_HANDSHAKE, /* reading the request head */
	CS_STARTING,  /* the request is accepted: the 101 waits for the
		       * program's exec, and the client's bytes wait too */
	CS_OPEN,      /* exchanging frames */
	CS_LINGER,    /* the end is decided: flush, shut down, wait for EOF */
	CS_DONE,      /* exit now */
};

enum log_mode { LOG_AUTO, LOG_STDERR, LOG_SYSLOG, LOG_NONE };
enum sandbox_mode { SANDBOX_OFF, SANDBOX_ON, SANDBOX_REQUIRED };
enum who { BY_NONE, BY_CLIENT, BY_SERVER };

/* What the request asked for, for the answer and the log line. */
enum http_kind { HK_NONE, HK_HTTP, HK_PAGE, HK_HEALTH, HK_WEBSOCKET };

/* Every way a connection ends, or a request is answered; endings[] below
 * gives each its HTTP status or close code, exit status and reason. */
enum why {
	W_NONE,
	/* request syntax (RFC 9112) */
	W_HEAD_TOO_LARGE, W_REQUEST_LINE, W_TARGET, W_HTTP_VERSION,
	W_HEADER_LINE, W_HEADER_NAME, W_HEADER_CTL,
	W_NO_HOST, W_HOSTS, W_KEYS, W_VERSIONS, W_ORIGINS, W_PROTOCOLS,
	/* what the request asks for */
	W_METHOD, W_UPGRADE_METHOD, W_UPGRADE_HTTP10, W_NO_CONNECTION_UPGRADE,
	W_NO_KEY, W_BAD_KEY, W_NO_VERSION, W_VERSION, W_NO_ORIGIN, W_ORIGIN,
	W_CROSS_ORIGIN, W_NOT_FOUND, W_PAGE, W_HEALTH,
	/* --dir and --check: the route and the admission */
	W_PATH_BAD, W_ROUTE_NONE, W_ROUTE_DIR, W_ROUTE_NOEXEC, W_ROUTE_OUTSIDE,
	W_CHECK_REFUSED, W_CHECK_EXIT, W_CHECK_KILLED, W_CHECK_SLOW, W_CHECK_BIG,
	W_CHECK_OUTPUT,
	/* before a request */
	W_NO_REQUEST, W_HEAD_TIMEOUT, W_LEFT_EARLY, W_LEFT_IN_HEAD,
	/* frames (RFC 6455 5) */
	W_RSV, W_OPCODE, W_UNMASKED, W_CTRL_FRAGMENTED, W_CTRL_TOO_BIG,
	W_LEN16, W_LEN64_TOP, W_LEN64, W_STRAY_CONT, W_NESTED, W_TOO_BIG,
	W_UTF8, W_CLOSE_1BYTE, W_CLOSE_CODE, W_CLOSE_UTF8,
	/* the end of an open connection */
	W_CLIENT_CLOSE, W_IDLE, W_NO_PONG, W_LEFT, W_LEFT_MID_FRAME,
	W_LEFT_MID_PAYLOAD,
	/* in any state */
	/* the program */
	W_PROG_DONE, W_PROG_EXIT, W_PROG_KILLED, W_PROG_EXEC, W_PROG_SLOW,
	W_PROG_PREPARE, W_ENV_TOO_LARGE,
	W_SIGNAL, W_SIGNAL_EARLY, W_SIGNAL_STARTING, W_RESET, W_STALL, W_BAD_FD, W_POLL, W_NO_ROOM,
	W_COUNT
};

#define E_NOW     1 /* nothing more can be sent or waited for: exit at once */
#define E_SECONDS 2 /* the detail is a number of seconds */
#define E_NUMBER  4 /* the detail is a number (an exit status) */
#define E_SIGNAME 8 /* the detail is a signal number */
#define E_ERRNO  16 /* the detail is an errno value */

struct ending {
	unsigned short http;  /* answer during the handshake, 0: none */
	unsigned short close; /* close code once open, 0: none */
	unsigned char status; /* exit status */
	unsigned char flags;  /* E_* */
	const char *reason;   /* for the log line and the close frame */
};

/* Incremental UTF-8 validator: bytes still expected, and the range the next
 * continuation byte must fall in (narrower after E0, ED, F0 and F4). */
struct utf8 {
	uint8_t need, lo, hi;
};

/* A decoded client frame header (RFC 6455 5.2). */
struct frame_header {
	int fin, opcode;
	uint8_t mask[4];
	uint64_t len;    /* payload length */
	size_t size;     /* header bytes, mask included */
};

/* The data frame whose payload is streaming through. */
struct frame {
	int active;      /* header consumed, payload pending */
	int fin;
	uint8_t mask[4];
	uint64_t len;    /* payload length from the header */
	uint64_t pos;    /* payload bytes consumed so far */
};

/* The data message in progress (possibly over several frames). */
struct message {
	int active;      /* a message is open: continuation frames may follow */
	int opcode;      /* OP_TEXT or OP_BINARY */
	int out_started; /* its first output frame (with the opcode) is queued */
	uint64_t size;   /* payload bytes announced so far, for --max-message */
	struct utf8 utf8;
};

/* Walks our own frames as they are written, so that the log line counts
 * what reached the client's side, not what was queued. */
struct out_meter {
	uint64_t frames_from;  /* stream offset where frames start (after the 101) */
	unsigned char hdr[10]; /* a frame header being passed */
	size_t hlen, hneed;
	uint64_t left;         /* payload bytes of the current frame still to pass */
	int data, fin;         /* the current frame carries data; it ends a message */
	uint64_t msgs, bytes;  /* data messages and payload bytes written */
};

struct options {
	int echo;
	int trust_proxy;
	long long random_max;
	long long max_message;       /* 0: unlimited */
	long long hs_timeout;        /* seconds */
	long long idle_timeout;      /* seconds, 0: off */
	long long close_timeout;     /* seconds, counted from our last byte */
	long long ping_interval;     /* seconds, 0: off */
	long long ping_timeout;      /* seconds, 0: same as the interval */
	long long send_timeout;      /* seconds, 0: the ping timeout */
	long long grace;             /* seconds between a program's stop steps */
	const char *origins[LIST_MAX];
	int norigins;
	const char *protocols[LIST_MAX];
	int nprotocols;
	enum log_mode log;
	enum sandbox_mode sandbox;
	char **program;              /* PROGRAM ARG..., or NULL: the built-in filter */
	int binary;                  /* --binary: bytes as they come, no lines */
	int clear_env;               /* --clear-env: only the request's variables */
	long long max_conn;          /* the acceptor: children at once */
	long long spares;            /* the acceptor: children forked ahead,
				      * -1: the default for the mode */
	long long max_per_source;    /* children per source address, 0: no own limit */
	long long stop_timeout;      /* seconds to wait for them at a stop */
	long long idle_exit;         /* seconds without a child to exit, 0: never,
				      * -1: the default of the launcher */
	const char *dir;             /* --dir: DIR's real path, or NULL */
	const char *check;           /* --check PROGRAM, or NULL */
	int sameorigin;              /* --sameorigin: Origin's host must be Host */
	int runs;                    /* a program per connection: PROGRAM or --dir */
	int gate;                    /* a child waits for the request before the
				      * sandbox: a program to run, or --check */
	char headers[HEADERS_MAX];   /* --header lines, "Name: value\r\n" each */
	size_t headers_len;
};

/* What the waiting child reports on the exec pipe, in records of a head
 * and len bytes, before it execs or exits; its EOF ends the report (an
 * empty one: the program runs). */
enum { REP_ERRNO, REP_ROUTE, REP_CHECK };
#define CHECK_TIMEOUT (-1)           /* REP_CHECK: no exit before the deadline */
#define CHECK_TOO_BIG (-2)           /* REP_CHECK: output over CHECK_OUT_MAX */
struct report {
	int kind;                    /* REP_* */
	int value;                   /* errno, enum why, or the check's wait status */
	unsigned len;                /* bytes that follow: the check's output */
};
#define REPORT_MAX (3 * sizeof(struct report) + CHECK_OUT_MAX)

/* A string inside the request head. */
struct span {
	const char *p;
	size_t len;
};

/* What an admission check's output says. */
struct check_answer {
	int status, status_line;     /* Status: 4NN and its line; 0: none */
	struct span user;            /* Remote-User */
	struct span body;            /* after a blank line */
	struct span type;            /* Content-Type: the body's */
	char headers[2 * CHECK_OUT_MAX]; /* the others, "Name: value\r\n" each */
	size_t headers_len;
};

/* The descriptors the loop polls.  A finished direction has fd -1. */
enum {
	EP_CLIENT_IN, EP_CLIENT_OUT,
	EP_PROG_EXEC, /* the program's exec: EOF when it succeeded, else errno */
	EP_PROG_IN, EP_PROG_OUT, EP_PROG_ERR,
	EP_PARENT,    /* an acceptor's child: EOF when its parent is gone */
	EP_COUNT
};

struct endpoint {
	int fd;
	short events;                /* what the loop waits for on it */
};

/* The protocol core's state: everything conn_process and the timers read
 * and write, and nothing of the process around them (no descriptor, no
 * pid).  Tests and fuzzers drive a struct core alone.  Buffers are fixed
 * and come last: nothing grows with what the client sends, and core_init
 * leaves them untouched so that a fresh process maps only the pages it
 * uses. */
struct core {
	const struct options *opt;
	enum conn_state state;
	enum why why;                /* how it ended, W_NONE while it runs */
	int why_detail;              /* the reason's detail: seconds, a status, a signal */
	int status;                  /* exit status once decided */
	size_t discarded;            /* input dropped while lingering */

	size_t in_off, in_len;       /* unconsumed input is in[in_off, in_len) */
	size_t out_off, out_len;     /* queued output is out[out_off, out_off + out_len) */
	uint64_t out_total;          /* bytes ever queued */
	uint64_t written_total;      /* bytes ever written */
	struct out_meter meter;

	struct frame frame;
	struct message msg;
	const char *protocol;        /* selected subprotocol, or NULL */

	/* timers, in milliseconds of CLOCK_MONOTONIC; 0: not running */
	int64_t now;                 /* the time of the step being taken */
	int64_t start_ms;
	int64_t wall_start;          /* CLOCK_REALTIME seconds at start, for Date */
	int64_t last_rx_ms;          /* last byte from the client */
	int64_t send_since;          /* output pending and no byte written since */
	int64_t linger_deadline;     /* our side is shut: wait this long for EOF */
	int64_t next_ping_ms;        /* when to queue the next keepalive ping */
	uint64_t ping_end;           /* out_total once the ping is queued; 0: none */
	int64_t ping_check;          /* the ping is written: look whether it got through */
	int64_t ping_written;        /* when it was written */
	int ping_idle;               /* looks without progress; -1: seen on its way */
	int64_t pong_deadline;
	uint64_t acked_total;        /* bytes the client's side has taken (the I/O loop
				      * asks the kernel when a timer needs it) */
	uint64_t acked_mark;         /* acked_total at the last look */

	/* what the log line reports */
	char peer[PEER_MAX];
	char request[REQ_MAX];       /* method and target, sanitized */
	char user[USER_MAX + 1];     /* Remote-User from --check, or "" */
	int head_only;               /* a HEAD request: answers carry no body */
	int http_status;             /* HTTP answer, 0 before one is queued */
	enum http_kind kind;
	uint64_t msgs_in, bytes_in;
	int close_code;              /* close code sent or received, 0: none */
	enum who close_by;

	uint64_t rng[4];             /* xoshiro256** state */

	/* a program per connection, as the protocol sees it: its bytes
	 * both ways, the request's variables for it, and when its output
	 * ends the connection */
	int prog_errno;              /* its pipes or process could not be made */
	int prog_go;                 /* the request is accepted: start the program */
	char accept[29];             /* Sec-WebSocket-Accept, for the 101 */
	int pin_closed;              /* its stdin is closed: its input is dropped */
	int prog_eof;                /* its stdout has ended */
	int pmsg_open;               /* a text message from it is open (fragmented) */
	int peer_closed;             /* the client's close came: the program's answers
				      * go out first, until its output ends */
	int stopping;                /* a stop signal came: close 1001 once its
				      * output ends */
	unsigned char close_echo[2]; /* the code our close will echo */
	size_t close_echo_len;
	size_t pin_off, pin_len;     /* queued for its stdin */
	size_t pout_off, pout_len;   /* read from its stdout, not yet framed */
	size_t env_len;              /* the CGI variables, NAME=VALUE\0 each */
	int env_full;                /* one did not fit */
	char peer_addr[INET6_ADDRSTRLEN + 8], peer_port[8], local_port[8];

	unsigned char in[IN_BUF_SIZE];
	unsigned char out[OUT_BUF_SIZE];
	unsigned char pin[PIPE_BUF_SIZE];
	unsigned char pout[PIPE_BUF_SIZE];
	char env[ENV_MAX];
};

/* One connection in its process: the core, and the descriptors and the
 * program's process around it, which only the I/O loop touches. */
struct conn {
	struct core k;
	struct endpoint ep[EP_COUNT];
	int shared;                  /* one socket for both directions of the client */
	int out_socket;              /* the client's output is a socket (else a pipe) */

	/* A program per connection.  Its stdin, stdout and stderr are the
	 * endpoints EP_PROG_*, each with an end of its own; its process
	 * group ends with the connection.  Once its input has ended (the
	 * client's close or EOF, a stop signal, the connection's end, or
	 * its own exit) the stop steps run, --grace apart: SIGTERM to the
	 * group, SIGKILL, then its stdout and stderr are read up to what
	 * they hold and closed.  The connection ends only when the
	 * client's side is done and the program's is (prog_finished). */
	int prog_pid;                /* 0: the built-in filter */
	int prog_ctl;                /* to the waiting child: the environment, then EOF */
	int prog_ran;                /* its exec succeeded */
	int prog_exited;             /* it exited (kept a zombie, so that its process
				      * group's id stays ours until prog_end) */
	int prog_status;             /* wait(2) status */
	int64_t input_end;           /* when its input ended; 0: not yet */
	int stop_step;               /* 0; 1 SIGTERM; 2 SIGKILL; 3 its output cut */
	int64_t stop_at;             /* when the next stop step is due; 0: none */
	long long pout_cap;          /* after the cut: bytes of its stdout still read */
	pid_t *pgid_slot;            /* the acceptor's record of the group, or NULL */
	size_t rep_len;              /* the waiting child's report, so far */
	size_t perr_len;             /* a partial line of its stderr */
	char perr[ERR_LINE_MAX];     /* conn_init clears up to here */
	unsigned char rep[REPORT_MAX];
};

/* A program's waiting child, made before the sandbox (prog_prepare):
 * its pid (0: none, err says why) and the parent's ends of its pipes. */
struct waiter {
	pid_t pid;
	int err;
	int ctl, in, out, err_fd, exec;
};

/* ==== How a connection ends ============================================ */

static const struct ending endings[W_COUNT] = {
	[W_NONE]            = { 0, 0, EXIT_INTERNAL, E_NOW, "no reason" },
	[W_HEAD_TOO_LARGE]  = { HTTP_TOO_LARGE, 0, EXIT_PROTOCOL, 0, "request head over 8 KiB" },
	[W_REQUEST_LINE]    = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "malformed request line" },
	[W_TARGET]          = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "malformed request target" },
	[W_HTTP_VERSION]    = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "unsupported HTTP version" },
	[W_HEADER_LINE]     = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "malformed header line" },
	[W_HEADER_NAME]     = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "malformed header name" },
	[W_HEADER_CTL]      = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "control character in header value" },
	[W_NO_HOST]         = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "missing Host" },
	[W_HOSTS]           = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "more than one Host header" },
	[W_KEYS]            = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "more than one Sec-WebSocket-Key" },
	[W_VERSIONS]        = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "more than one Sec-WebSocket-Version" },
	[W_ORIGINS]         = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "more than one Origin" },
	[W_PROTOCOLS]       = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "too many Sec-WebSocket-Protocol headers" },
	[W_METHOD]          = { HTTP_METHOD, 0, EXIT_PROTOCOL, 0, "method not allowed" },
	[W_UPGRADE_METHOD]  = { HTTP_METHOD, 0, EXIT_PROTOCOL, 0, "WebSocket upgrade needs GET" },
	[W_UPGRADE_HTTP10]  = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "WebSocket upgrade needs HTTP/1.1" },
	[W_NO_CONNECTION_UPGRADE] = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "Connection header lacks Upgrade" },
	[W_NO_KEY]          = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "missing Sec-WebSocket-Key" },
	[W_BAD_KEY]         = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "invalid Sec-WebSocket-Key" },
	[W_NO_VERSION]      = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "missing Sec-WebSocket-Version" },
	[W_VERSION]         = { HTTP_UPGRADE_REQUIRED, 0, EXIT_PROTOCOL, 0, "unsupported Sec-WebSocket-Version" },
	[W_NO_ORIGIN]       = { HTTP_FORBIDDEN, 0, EXIT_PROTOCOL, 0, "missing Origin" },
	[W_ORIGIN]          = { HTTP_FORBIDDEN, 0, EXIT_PROTOCOL, 0, "Origin not allowed" },
	[W_CROSS_ORIGIN]    = { HTTP_FORBIDDEN, 0, EXIT_PROTOCOL, 0, "Origin is not the Host (--sameorigin)" },
	[W_NOT_FOUND]       = { HTTP_NOT_FOUND, 0, EXIT_PROTOCOL, 0, "no such page" },
	[W_PAGE]            = { 0, 0, EXIT_CLEAN, 0, NULL },
	[W_HEALTH]          = { 0, 0, EXIT_CLEAN, 0, NULL },
	[W_PATH_BAD]        = { HTTP_BAD_REQUEST, 0, EXIT_PROTOCOL, 0, "malformed path for --dir" },
	[W_ROUTE_NONE]      = { HTTP_NOT_FOUND, 0, EXIT_PROTOCOL, 0, "no program for the path" },
	[W_ROUTE_DIR]       = { HTTP_NOT_FOUND, 0, EXIT_PROTOCOL, 0, "the path names a directory" },
	[W_ROUTE_NOEXEC]    = { HTTP_NOT_FOUND, 0, EXIT_PROTOCOL, 0, "the path names a file that is not an executable" },
	[W_ROUTE_OUTSIDE]   = { HTTP_NOT_FOUND, 0, EXIT_PROTOCOL, 0, "the path leads outside --dir" },
	/* the check's own answer is queued before: no http here */
	[W_CHECK_REFUSED]   = { 0, 0, EXIT_PROTOCOL, E_NUMBER, "refused by the admission check with" },
	[W_CHECK_EXIT]      = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_NUMBER, "admission check exited" },
	[W_CHECK_KILLED]    = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_SIGNAME, "admission check killed by" },
	[W_CHECK_SLOW]      = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_SECONDS, "admission check gave no answer within" },
	[W_CHECK_BIG]       = { HTTP_INTERNAL, 0, EXIT_PROGRAM, 0, "admission check wrote over 4 KiB" },
	[W_CHECK_OUTPUT]    = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_NUMBER, "admission check's output is malformed at line" },
	[W_NO_REQUEST]      = { 0, 0, EXIT_TIMEOUT, E_SECONDS, "no request within" },
	[W_HEAD_TIMEOUT]    = { HTTP_TIMEOUT, 0, EXIT_TIMEOUT, 0, "request head incomplete at the handshake timeout" },
	[W_LEFT_EARLY]      = { 0, 0, EXIT_GONE, 0, "client left before a request" },
	[W_LEFT_IN_HEAD]    = { 0, 0, EXIT_GONE, 0, "client left during the handshake" },
	[W_RSV]             = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "RSV bits set without an extension" },
	[W_OPCODE]          = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "reserved opcode" },
	[W_UNMASKED]        = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "unmasked client frame" },
	[W_CTRL_FRAGMENTED] = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "fragmented control frame" },
	[W_CTRL_TOO_BIG]    = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "control frame over 125 bytes" },
	[W_LEN16]           = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "non-minimal 16-bit length" },
	[W_LEN64_TOP]       = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "64-bit length with the top bit set" },
	[W_LEN64]           = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "non-minimal 64-bit length" },
	[W_STRAY_CONT]      = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "continuation without a message in progress" },
	[W_NESTED]          = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "new message while a fragmented one is in progress" },
	[W_TOO_BIG]         = { 0, CLOSE_TOO_BIG, EXIT_PROTOCOL, 0, "message over --max-message" },
	[W_UTF8]            = { 0, CLOSE_INVALID_DATA, EXIT_PROTOCOL, 0, "invalid UTF-8 in a text message" },
	[W_CLOSE_1BYTE]     = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "close frame with a 1-byte payload" },
	[W_CLOSE_CODE]      = { 0, CLOSE_PROTOCOL, EXIT_PROTOCOL, 0, "invalid close code" },
	[W_CLOSE_UTF8]      = { 0, CLOSE_INVALID_DATA, EXIT_PROTOCOL, 0, "close reason is not UTF-8" },
	[W_CLIENT_CLOSE]    = { 0, 0, EXIT_CLEAN, 0, NULL },
	[W_IDLE]            = { 0, CLOSE_GOING_AWAY, EXIT_TIMEOUT, E_SECONDS, "idle for" },
	[W_NO_PONG]         = { 0, CLOSE_INTERNAL, EXIT_TIMEOUT, E_SECONDS, "no pong within" },
	[W_LEFT]            = { 0, 0, EXIT_GONE, 0, "client left without a close" },
	[W_LEFT_MID_FRAME]  = { 0, 0, EXIT_GONE, 0, "client left without a close, mid-frame" },
	[W_LEFT_MID_PAYLOAD] = { 0, 0, EXIT_GONE, 0, "client left without a close, mid-payload" },
	[W_PROG_DONE]       = { 0, CLOSE_NORMAL, EXIT_CLEAN, 0, NULL },
	[W_PROG_EXIT]       = { 0, CLOSE_INTERNAL, EXIT_PROGRAM, E_NUMBER, "program exited" },
	[W_PROG_KILLED]     = { 0, CLOSE_INTERNAL, EXIT_PROGRAM, E_SIGNAME, "program killed by" },
	[W_PROG_EXEC]       = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_ERRNO, "the program cannot be run" },
	[W_PROG_SLOW]       = { HTTP_INTERNAL, 0, EXIT_PROGRAM, E_SECONDS, "the program was not running within" },
	[W_PROG_PREPARE]    = { HTTP_UNAVAILABLE, 0, EXIT_PROGRAM, E_ERRNO, "cannot start the program" },
	[W_ENV_TOO_LARGE]   = { HTTP_TOO_LARGE, 0, EXIT_PROTOCOL, 0, "request too large for the program's environment" },
	[W_SIGNAL]          = { 0, CLOSE_GOING_AWAY, EXIT_CLEAN, 0, "server shutting down" },
	[W_SIGNAL_EARLY]    = { 0, 0, EXIT_CLEAN, E_NOW, "server shutting down" },
	[W_SIGNAL_STARTING] = { HTTP_UNAVAILABLE, 0, EXIT_CLEAN, 0, "server shutting down" },
	[W_RESET]           = { 0, 0, EXIT_GONE, E_NOW, "client reset the connection" },
	[W_STALL]           = { 0, 0, EXIT_TIMEOUT, E_NOW | E_SECONDS, "client took no bytes for" },
	[W_BAD_FD]          = { 0, 0, EXIT_INTERNAL, E_NOW, "client descriptor not open" },
	[W_POLL]            = { 0, 0, EXIT_INTERNAL, E_NOW, "poll failed" },
	[W_NO_ROOM]         = { 0, 0, EXIT_INTERNAL, E_NOW, "the 101 does not fit the output queue" },
};

/* Process-wide state of the shell around the core: none of it is read by
 * conn_process. */
static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t child_signal;
static enum log_mode log_to = LOG_STDERR; /* resolved log mode */
static int syslog_fd = -1;

/* The browser page, built from web/index.html by the Makefile. */
static const unsigned char web_index[] = {
#include "web_index.h"
};

/* The page and its head always fit the empty queue, with room for a close. */
static_assert(sizeof web_index + HTTP_HEAD_MAX + CLOSE_RESERVE <= OUT_BUF_SIZE,
	      "web/index.html is too large for the output queue");

/* ==== Prototypes ======================================================= */

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void conn_end(struct core *c, enum why why, int detail);
static size_t conn_process(struct core *c, int64_t now);
static int64_t now_ms(void);

/* ==== Helpers: SHA-1, base64, UTF-8, random, numbers ==================== */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20)      { f = (b & c) | (~b & d);           k = 0x5A827999; }
		else if (i < 40) { f = b ^ c ^ d;                    k = 0x6ED9EBA1; }
		else if (i < 60) { f = (b & c) | (b & d) | (c & d);  k = 0x8F1BBCDC; }
		else             { f = b ^ c ^ d;                    k = 0xCA62C1D6; }
		t = rol32(a, 5) + f + e + k + w[i];
		e = d; d = c; c = rol32(b, 30); b = a; a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

/* SHA-1 of a short message (the handshake hashes 60 bytes). */
static void sha1(const unsigned char *msg, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
	unsigned char block[64];
	uint64_t bits = (uint64_t)len * 8;
	size_t i, n;

	for (; len >= 64; msg += 64, len -= 64)
		sha1_block(h, msg);
	memset(block, 0, sizeof block);
	memcpy(block, msg, len);
	block[len] = 0x80;
	if (len >= 56) {
		sha1_block(h, block);
		memset(block, 0, sizeof block);
	}
	for (i = 0; i < 8; i++)
		block[63 - i] = (unsigned char)(bits >> (8 * i));
	sha1_block(h, block);
	for (i = 0, n = 0; i < 5; i++) {
		out[n++] = (unsigned char)(h[i] >> 24);
		out[n++] = (unsigned char)(h[i] >> 16);
		out[n++] = (unsigned char)(h[i] >> 8);
		out[n++] = (unsigned char)h[i];
	}
}

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Writes 4 * ceil(len / 3) characters and a NUL. */
static void base64_encode(const unsigned char *p, size_t len, char *out)
{
	size_t i;
	uint32_t v;

	for (i = 0; i + 3 <= len; i += 3) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*out++ = b64_alphabet[v >> 18];
		*out++ = b64_alphabet[(v >> 12) & 63];
		*out++ = b64_alphabet[(v >> 6) & 63];
		*out++ = b64_alphabet[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)p[i] << 16;
		*out++ = b64_alphabet[v >> 18];
		*out++ = b64_alphabet[(v >> 12) & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (len - i == 2) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		*out++ = b64_alphabet[v >> 18];
		*out++ = b64_alphabet[(v >> 12) & 63];
		*out++ = b64_alphabet[(v >> 6) & 63];
		*out++ = '=';
	}
	*out = '\0';
}

/* RFC 6455 4.2.1: the key is base64 of 16 bytes: 22 characters and "==". */
static int ws_key_valid(const char *k, size_t len)
{
	size_t i;

	if (len != 24 || k[22] != '=' || k[23] != '=')
		return 0;
	for (i = 0; i < 22; i++)
		if (!memchr(b64_alphabet, k[i], 64) || k[i] == '\0')
			return 0;
	/* the last character carries 2 bits; the other 4 must be zero */
	return (strchr(b64_alphabet, k[21]) - b64_alphabet) % 16 == 0;
}

static void utf8_reset(struct utf8 *u) { u->need = 0; }

/* Feed bytes to the validator: 0 if still valid, -1 at the first byte that
 * cannot be part of valid UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF).  *bad gets the offset of that byte. */
static int utf8_run(struct utf8 *u, const unsigned char *p, size_t n, size_t *bad)
{
	size_t i = 0;
	unsigned char b;

	while (i < n) {
		if (u->need == 0) {
			/* ASCII runs, eight bytes at a time */
			uint64_t v;

			while (i + 8 <= n) {
				memcpy(&v, p + i, 8);
				if (v & 0x8080808080808080ull)
					break;
				i += 8;
			}
			if (i == n)
				break;
			/* a tail under eight bytes: the last eight at once (the
			 * ones before i are valid already) */
			if (n - i < 8 && n >= 8) {
				memcpy(&v, p + n - 8, 8);
				if (!(v & 0x8080808080808080ull))
					break;
			}
			b = p[i++];
			if (b < 0x80)
				continue;
			u->lo = 0x80; u->hi = 0xBF;
			if (b >= 0xC2 && b <= 0xDF)      u->need = 1;
			else if (b == 0xE0)              { u->need = 2; u->lo = 0xA0; }
			else if (b == 0xED)              { u->need = 2; u->hi = 0x9F; }
			else if (b >= 0xE1 && b <= 0xEF) u->need = 2;
			else if (b == 0xF0)              { u->need = 3; u->lo = 0x90; }
			else if (b == 0xF4)              { u->need = 3; u->hi = 0x8F; }
			else if (b >= 0xF1 && b <= 0xF3) u->need = 3;
			else {
				*bad = i - 1;
				return -1;
			}
		} else {
			b = p[i++];
			if (b < u->lo || b > u->hi) {
				*bad = i - 1;
				return -1;
			}
			u->need--;
			u->lo = 0x80; u->hi = 0xBF;
		}
	}
	return 0;
}

static long acc_call(long nr, long a, long b, long c, long d, long e);

/* xoshiro256**: seeded once from getrandom(2) before the loop, so a reply
 * costs no system call.  An acceptor's child gets its seed from the
 * parent, which draws it through its gate (acc_call). */
static uint64_t rol64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

static uint64_t rng_next(uint64_t s[4])
{
	uint64_t r = rol64(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
	s[2] ^= t; s[3] = rol64(s[3], 45);
	return r;
}

/* Uniform in 1..n: values below 2^64 mod n are redrawn, so every residue
 * is equally likely. */
static uint64_t rng_range(uint64_t s[4], uint64_t n)
{
	uint64_t x, threshold = (0 - n) % n;

	do
		x = rng_next(s);
	while (x < threshold);
	return x % n + 1;
}

static void rng_seed(uint64_t s[4])
{
	uint64_t z;
	size_t got = 0;
	ssize_t r;
	int i;

	while (got < 32) {
		r = acc_call(__NR_getrandom, (long)((char *)s + got), (long)(32 - got), 0, 0, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	if (got < 32) {
		/* no getrandom: clock and pid, spread by splitmix64 */
		z = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
		for (i = 0; i < 4; i++) {
			z += 0x9E3779B97F4A7C15ull;
			s[i] = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
			s[i] = (s[i] ^ (s[i] >> 27)) * 0x94D049BB133111EBull;
			s[i] ^= s[i] >> 31;
		}
	}
	if (!(s[0] | s[1] | s[2] | s[3]))
		s[0] = 1;
}

/* Decimal digits of v into p; returns their count. */
static size_t u64_to_dec(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* Copy peer-supplied text for a log line: length capped, anything but
 * printable ASCII replaced by '?'. */
static void sanitize(char *dst, size_t size, const char *src, size_t len)
{
	size_t i;

	if (len > size - 1)
		len = size - 1;
	for (i = 0; i < len; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '"') ? src[i] : '?';
	dst[len] = '\0';
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 9110 5.6.7 IMF-fixdate of a POSIX time, e.g.
 * "Sun, 06 Nov 1994 08:49:37 GMT".  Pure
 * arithmetic (days to civil date), so no time zone file is ever read. */
static void http_date(int64_t t, char out[40])
{
	static const char wday[] = "ThuFriSatSunMonTueWed", mon[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int64_t days = t / 86400, secs = t % 86400, z, era, doe, yoe, doy, mp, y, d, m;

	if (secs < 0)
		secs += 86400, days--;
	z = days + 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y = yoe + era * 400 + (m <= 2);
	snprintf(out, 40, "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
		 wday + 3 * (int)(((days % 7) + 7) % 7), (int)d, mon + 3 * (int)(m - 1),
		 (int)(y % 10000), (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

/* ==== Logging ========================================================== */

/* Every line goes through here: to stderr, to syslog when stderr is the
 * client's socket (inetd, xinetd), or nowhere.  Lines carry the pid, so
 * the lines of concurrent connections can be told apart. */
static void log_line(const char *fmt, ...)
{
	char buf[LOG_MAX];
	va_list ap;
	int n, h;

	if (log_to == LOG_NONE)
		return;
	/* RFC 3164 without timestamp: the syslog daemon adds one.
	 * <30> is LOG_DAEMON | LOG_INFO. */
	h = snprintf(buf, sizeof buf, "%swsfilter[%ld]: ", log_to == LOG_SYSLOG ? "<30>" : "",
		     (long)getpid());
	va_start(ap, fmt);
	n = vsnprintf(buf + h, sizeof buf - (size_t)h - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += h;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	if (log_to == LOG_SYSLOG) {
		if (syslog_fd >= 0)
			(void)send(syslog_fd, buf, (size_t)n, MSG_NOSIGNAL);
		return;
	}
	buf[n++] = '\n';
	(void)!write(2, buf, (size_t)n);
}

/* ==== Output queue ===================================================== */

/* Room for n more bytes at the tail, moving the queue to the front of the
 * buffer when that makes the room.  NULL when the queue is too full. */
static unsigned char *out_reserve(struct core *c, size_t n)
{
	if (OUT_BUF_SIZE - c->out_off - c->out_len < n && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len);
		c->out_off = 0;
	}
	if (OUT_BUF_SIZE - c->out_off - c->out_len < n)
		return NULL;
	return c->out + c->out_off + c->out_len;
}

static size_t out_room(const struct core *c)
{
	return OUT_BUF_SIZE - c->out_len;
}

static void out_commit(struct core *c, size_t n)
{
	c->out_len += n;
	c->out_total += n;
}

/* Queue bytes that must go out whole (HTTP answers, control frames). */
static int out_put(struct core *c, const void *p, size_t n)
{
	unsigned char *dst = out_reserve(c, n);

	if (!dst)
		return -1;
	memcpy(dst, p, n);
	out_commit(c, n);
	return 0;
}

/* Count the data messages and payload bytes in n written bytes at p. */
static void meter_pass(struct out_meter *m, const unsigned char *p, size_t n)
{
	size_t k;

	while (n) {
		if (m->left) {
			k = n < m->left ? n : (size_t)m->left;
			if (m->data)
				m->bytes += k;
			m->left -= k;
			p += k, n -= k;
		} else {
			m->hdr[m->hlen++] = *p++, n--;
			if (m->hlen == 2)
				m->hneed = (m->hdr[1] & 0x7F) == 126 ? 4 : (m->hdr[1] & 0x7F) == 127 ? 10 : 2;
			if (m->hlen < 2 || m->hlen < m->hneed)
				continue;
			m->left = m->hdr[1] & 0x7F;
			if (m->hlen > 2)
				for (m->left = 0, k = 2; k < m->hlen; k++)
					m->left = m->left << 8 | m->hdr[k];
			m->data = (m->hdr[0] & 0x0F) < OP_CLOSE;
			m->fin = m->hdr[0] & WSBIT_FIN;
			m->hlen = 0;
		}
		if (!m->left && !m->hlen && m->data && m->fin) {
			m->msgs++;
			m->data = 0;
		}
	}
}

/* n queued bytes have been written: drop them from the queue. */
static void out_consume(struct core *c, size_t n)
{
	const unsigned char *p = c->out + c->out_off;
	uint64_t skip = 0;

	if (c->meter.frames_from && c->written_total + n > c->meter.frames_from) {
		if (c->written_total < c->meter.frames_from)
			skip = c->meter.frames_from - c->written_total;
		meter_pass(&c->meter, p + skip, n - (size_t)skip);
	}
	c->out_off += n;
	c->out_len -= n;
	c->written_total += n;
	if (!c->out_len)
		c->out_off = 0;
}

/* ==== Ending a connection ============================================== */

/* The reason of an ending with its detail, e.g. "no pong within 20 s". */
static size_t reason_text(enum why why, int detail, char *buf, size_t size)
{
	const struct ending *e = &endings[why];
	int n;

	if (!e->reason)
		n = snprintf(buf, size, "%s", "");
	else if (e->flags & E_SECONDS)
		n = snprintf(buf, size, "%s %d s", e->reason, detail);
	else if (e->flags & E_NUMBER)
		n = snprintf(buf, size, "%s %d", e->reason, detail);
	else if (e->flags & E_SIGNAME)
		n = snprintf(buf, size, "%s SIG%s", e->reason,
			     sigabbrev_np(detail) ? sigabbrev_np(detail) : "?");
	else if (e->flags & E_ERRNO)
		n = snprintf(buf, size, "%s: %s", e->reason,
			     strerrordesc_np(detail) ? strerrordesc_np(detail) : "?");
	else
		n = snprintf(buf, size, "%s", e->reason);
	return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

/* Queue a control frame (payload at most 125 bytes). */
static void ctrl_frame(struct core *c, int opcode, const unsigned char *p, size_t n)
{
	unsigned char f[2 + CTRL_MAX];
	int queued;

	assert(n <= CTRL_MAX);
	f[0] = (unsigned char)(WSBIT_FIN | opcode);
	f[1] = (unsigned char)n;
	memcpy(f + 2, p, n);
	/* frames start only with OUT_FRAME_MIN free, and CLOSE_RESERVE
	 * stays free for the close */
	queued = out_put(c, f, 2 + n);
	assert(queued == 0);
	(void)queued;
}

/* RFC 6455 5.5.1: a close frame with our code and reason. */
static void close_frame(struct core *c, int code, enum why why, int detail)
{
	unsigned char p[CTRL_MAX];
	char text[REASON_MAX];
	size_t n = reason_text(why, detail, text, sizeof text);

	if (n > CTRL_MAX - 2)
		n = CTRL_MAX - 2;
	p[0] = (unsigned char)(code >> 8);
	p[1] = (unsigned char)code;
	memcpy(p + 2, text, n);
	ctrl_frame(c, OP_CLOSE, p, n + 2);
	c->close_code = code;
	c->close_by = BY_SERVER;
}

static void http_error(struct core *c, enum why why, int detail);

/* The one place a connection's end is decided: the HTTP answer or close
 * frame that tells the client, the exit status, the reason for the log,
 * and whether to flush and linger or go at once.  An end that comes while
 * another is under way cuts the linger short; the first decision stands. */
static void conn_end(struct core *c, enum why why, int detail)
{
	const struct ending *e = &endings[why];

	if (c->state == CS_LINGER || c->state == CS_DONE) {
		/* a client that never takes what it was sent has not ended
		 * cleanly, however it said goodbye */
		if (why == W_STALL && (c->status == EXIT_CLEAN || c->status == EXIT_GONE)) {
			c->why = why;
			c->why_detail = detail;
			c->status = e->status;
		}
		c->state = CS_DONE;
		return;
	}
	c->why = why;
	c->why_detail = detail;
	c->status = e->status;
	if ((c->state == CS_HANDSHAKE || c->state == CS_STARTING) && e->http)
		http_error(c, why, detail);
	else if (c->state == CS_OPEN && e->close)
		close_frame(c, e->close, why, detail);
	c->state = (e->flags & E_NOW) ? CS_DONE : CS_LINGER;
	c->ping_end = 0;
	c->ping_check = 0;
	c->pong_deadline = 0;
}

/* ==== Opening handshake (RFC 6455 4.2, RFC 9112) ======================= */

/* RFC 9110 15: the reason phrases of the statuses wsfilter sends, and of
 * the client errors an admission check may choose. */
static const char *http_reason(int status)
{
	static const struct { short status; const char *text; } reasons[] = {
		{ 200, "OK" }, { 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 402, "Payment Required" }, { 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 406, "Not Acceptable" },
		{ 407, "Proxy Authentication Required" }, { 408, "Request Timeout" },
		{ 409, "Conflict" }, { 410, "Gone" }, { 411, "Length Required" },
		{ 412, "Precondition Failed" }, { 413, "Content Too Large" },
		{ 414, "URI Too Long" }, { 415, "Unsupported Media Type" },
		{ 416, "Range Not Satisfiable" }, { 417, "Expectation Failed" },
		{ 421, "Misdirected Request" }, { 422, "Unprocessable Content" },
		{ 426, "Upgrade Required" }, { 428, "Precondition Required" },
		{ 429, "Too Many Requests" }, { 431, "Request Header Fields Too Large" },
		{ 451, "Unavailable For Legal Reasons" }, { 500, "Internal Server Error" },
		{ 503, "Service Unavailable" },
	};
	size_t i;

	for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
		if (reasons[i].status == status)
			return reasons[i].text;
	return status < 500 ? "Client Error" : "Server Error";
}


/* What the syntax pass takes from the request head.  Fields that may
 * appear once are counted, so that a second one is refused, never read. */
struct hs_request {
	struct span method, target, path; /* path: the target's path, no query */
	int minor;                        /* HTTP/1.minor */
	struct span key, ws_version, origin, forwarded, forwarded_proto, host;
	int hosts, keys, ws_versions, origins;
	int upgrade_ws, connection_upgrade;
	struct span protocols[LIST_MAX];  /* Sec-WebSocket-Protocol values */
	int nprotocols;
};

/* Header names and tokens compare case-insensitively (RFC 9110 5.1). */
static int span_eq(struct span s, const char *lit)
{
	return s.len == strlen(lit) && strncasecmp(s.p, lit, s.len) == 0;
}

/* Methods are case-sensitive (RFC 9110 9.1). */
static int span_is(struct span s, const char *lit)
{
	return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static struct span span_trim(const char *p, size_t len)
{
	while (len && (*p == ' ' || *p == '\t'))
		p++, len--;
	while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	return (struct span){ p, len };
}

/* The next item of a comma-separated header value (RFC 9110 5.6.1),
 * trimmed, from *p on; 0 at the end. */
static int list_next(const char **p, const char *end, struct span *item)
{
	const char *q;

	if (*p >= end)
		return 0;
	q = memchr(*p, ',', (size_t)(end - *p));
	if (!q)
		q = end;
	*item = span_trim(*p, (size_t)(q - *p));
	*p = q + 1;
	return 1;
}

/* Whether a comma-separated header value holds the token. */
static int list_has(struct span v, const char *token)
{
	const char *p = v.p;
	struct span item;

	while (list_next(&p, v.p + v.len, &item))
		if (span_eq(item, token))
			return 1;
	return 0;
}

/* Where a line of the head that starts at line ends: its CRLF, or the
 * end of the head. */
static const char *line_end(const char *line, const char *end)
{
	const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);

	return eol ? eol : end;
}

static int is_tchar(unsigned char ch)
{
	return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* RFC 9112 3.2: origin-form ("/path?q"), absolute-form
 * ("http://host/path", which a server MUST accept) or, for OPTIONS,
 * asterisk-form.  Sets the path the target names. */
static enum why hs_target(struct hs_request *r)
{
	struct span t = r->target;
	const char *q, *s;
	size_t i;

	for (i = 0; i < t.len; i++)
		if ((unsigned char)t.p[i] <= 0x20 || (unsigned char)t.p[i] >= 0x7f)
			return W_TARGET;
	if (t.len == 1 && t.p[0] == '*' && span_is(r->method, "OPTIONS")) {
		r->path = t;
		return W_NONE;
	}
	if (t.p[0] != '/') {
		s = memmem(t.p, t.len, "://", 3);
		if (!s || s == t.p)
			return W_TARGET;
		for (q = t.p; q < s; q++)
			if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.", *q))
				return W_TARGET;
		s += 3;
		q = memchr(s, '/', (size_t)(t.p + t.len - s));
		if (q == s || s == t.p + t.len)
			return W_TARGET; /* no authority */
		t = q ? (struct span){ q, (size_t)(t.p + t.len - q) } : (struct span){ "/", 1 };
	}
	q = memchr(t.p, '?', t.len);
	r->path = (struct span){ t.p, q ? (size_t)(q - t.p) : t.len };
	return W_NONE;
}

/* The request line: method SP request-target SP HTTP-version. */
static enum why hs_request_line(const char *line, const char *eol, struct hs_request *r)
{
	const char *sp1 = memchr(line, ' ', (size_t)(eol - line)), *sp2, *v;
	size_t i;

	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || sp2 + 1 == eol)
		return W_REQUEST_LINE;
	r->method = (struct span){ line, (size_t)(sp1 - line) };
	r->target = (struct span){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
	for (i = 0; i < r->method.len; i++)
		if (!is_tchar((unsigned char)r->method.p[i]))
			return W_REQUEST_LINE;
	v = sp2 + 1;
	if (eol - v != 8 || strncmp(v, "HTTP/1.", 7) != 0 || v[7] < '0' || v[7] > '9')
		return W_HTTP_VERSION;
	r->minor = v[7] - '0';
	return hs_target(r);
}

/* One header line: name ":" OWS value OWS. */
static enum why hs_field(const char *line, const char *eol, struct hs_request *r)
{
	const char *colon = memchr(line, ':', (size_t)(eol - line));
	struct span name, value;
	size_t i;

	if (!colon || colon == line)
		return W_HEADER_LINE;
	for (i = 0; line + i < colon; i++)
		if (!is_tchar((unsigned char)line[i]))
			return W_HEADER_NAME; /* also catches obsolete line folding */
	name = (struct span){ line, (size_t)(colon - line) };
	value = span_trim(colon + 1, (size_t)(eol - colon - 1));
	for (i = 0; i < value.len; i++)
		if (((unsigned char)value.p[i] < 0x20 && value.p[i] != '\t') || value.p[i] == 0x7f)
			return W_HEADER_CTL;
	if (span_eq(name, "Host")) {
		r->host = value;
		r->hosts++;
	} else if (span_eq(name, "Upgrade")) {
		r->upgrade_ws |= list_has(value, "websocket");
	} else if (span_eq(name, "Connection")) {
		r->connection_upgrade |= list_has(value, "upgrade");
	} else if (span_eq(name, "Sec-WebSocket-Key")) {
		r->key = value;
		r->keys++;
	} else if (span_eq(name, "Sec-WebSocket-Version")) {
		r->ws_version = value;
		r->ws_versions++;
	} else if (span_eq(name, "Origin")) {
		r->origin = value;
		r->origins++;
	} else if (span_eq(name, "Sec-WebSocket-Protocol")) {
		if (r->nprotocols == LIST_MAX)
			return W_PROTOCOLS;
		r->protocols[r->nprotocols++] = value;
	} else if (span_eq(name, "X-Forwarded-For") && !r->forwarded.p) {
		r->forwarded = value;
	} else if (span_eq(name, "X-Forwarded-Proto") && !r->forwarded_proto.p) {
		r->forwarded_proto = value;
	}
	return W_NONE;
}

/* Syntax only: the head (request line and header lines, each ending in
 * CRLF, without the final empty line) into r.  W_NONE or why not. */
static enum why hs_parse(const char *head, size_t len, struct hs_request *r)
{
	const char *end = head + len, *line, *eol;
	enum why why;

	memset(r, 0, sizeof *r);
	for (line = head; line < end || line == head; line = eol + 2) {
		eol = line_end(line, end);
		why = line == head ? hs_request_line(line, eol, r) : hs_field(line, eol, r);
		if (why != W_NONE)
			return why;
	}
	/* RFC 9112 3.2: exactly one Host in HTTP/1.1; RFC 6455 4.1 and
	 * RFC 9110 5.3: the handshake's own fields at most once */
	if (r->hosts > 1)
		return W_HOSTS;
	if (r->minor >= 1 && !r->hosts)
		return W_NO_HOST;
	if (r->keys > 1)
		return W_KEYS;
	if (r->ws_versions > 1)
		return W_VERSIONS;
	if (r->origins > 1)
		return W_ORIGINS;
	return W_NONE;
}

/* Plain HTTP: the page and the health check. */
static enum why hs_route(const struct hs_request *r)
{
	if (!span_is(r->method, "GET") && !span_is(r->method, "HEAD"))
		return W_METHOD;
	if (span_is(r->path, "/") || span_is(r->path, "/index.html"))
		return W_PAGE;
	if (span_is(r->path, "/healthz"))
		return W_HEALTH;
	return W_NOT_FOUND;
}

/* --sameorigin: Origin is "scheme://host[:port]" (RFC 6454 6.1); its
 * host[:port] must be Host's, case-insensitively. */
static int same_origin(struct span origin, struct span host)
{
	const char *s = memmem(origin.p, origin.len, "://", 3);
	struct span auth;

	if (!s)
		return 0; /* "null", or no scheme */
	auth = (struct span){ s + 3, (size_t)(origin.p + origin.len - s - 3) };
	return auth.len && auth.len == host.len && !strncasecmp(auth.p, host.p, host.len);
}

static int hex_value(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (unsigned char)tolower(ch);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* --dir: the path percent-decoded once into out (size bytes; NULL: only
 * checked), 0 when it cannot name a program safely: a segment that is
 * empty ("//", a trailing "/"), ".", ".." or starts with '.'; a '/', NUL
 * or control byte decoded inside one; a malformed escape.  "/" alone is
 * well-formed: it names nothing. */
static int path_decode(struct span path, char *out, size_t size)
{
	size_t i, n = 1, seg = 1; /* seg: where the segment starts in out */
	int ch, hi, lo;

	if (!path.len || path.p[0] != '/')
		return 0;
	if (out && size > 1)
		out[0] = '/';
	for (i = 1; i < path.len; i++) {
		ch = (unsigned char)path.p[i];
		if (ch == '/') {
			if (n == seg)
				return 0; /* empty */
			seg = n + 1;
		} else {
			if (ch == '%') {
				if (path.len - i < 3)
					return 0;
				hi = hex_value((unsigned char)path.p[i + 1]);
				lo = hex_value((unsigned char)path.p[i + 2]);
				if (hi < 0 || lo < 0)
					return 0;
				ch = hi << 4 | lo;
				i += 2;
			}
			if (ch == '/' || ch < 0x20 || ch == 0x7f || (n == seg && ch == '.'))
				return 0;
		}
		if (out && n + 1 < size)
			out[n] = (char)ch;
		n++;
	}
	if (out && size)
		out[n < size ? n : size - 1] = '\0';
	return path.len == 1 || n > seg; /* "/", or a last segment not empty */
}

/* Policy: what a well-formed request gets.  W_NONE is the upgrade, with
 * *protocol the first subprotocol the client offers that we accept. */
static enum why hs_policy(const struct options *o, const struct hs_request *r,
			  const char **protocol)
{
	int i, j;

	if (!r->upgrade_ws)
		return hs_route(r);
	if (!span_is(r->method, "GET"))
		return W_UPGRADE_METHOD;
	if (r->minor < 1)
		return W_UPGRADE_HTTP10;
	if (!r->connection_upgrade)
		return W_NO_CONNECTION_UPGRADE;
	if (!r->keys)
		return W_NO_KEY;
	if (!ws_key_valid(r->key.p, r->key.len))
		return W_BAD_KEY;
	if (!r->ws_versions)
		return W_NO_VERSION;
	if (!span_eq(r->ws_version, "13"))
		return W_VERSION;
	if (o->norigins) {
		for (i = 0; i < o->norigins; i++)
			if (r->origin.p && span_eq(r->origin, o->origins[i]))
				break;
		if (i == o->norigins)
			return r->origin.p ? W_ORIGIN : W_NO_ORIGIN;
	}
	if (o->sameorigin && !r->origin.p)
		return W_NO_ORIGIN;
	if (o->sameorigin && !same_origin(r->origin, r->host))
		return W_CROSS_ORIGIN;
	if (o->dir && !path_decode(r->path, NULL, 0))
		return W_PATH_BAD;
	*protocol = NULL;
	for (i = 0; i < r->nprotocols && !*protocol; i++) {
		const char *p = r->protocols[i].p;
		struct span item;

		while (!*protocol && list_next(&p, r->protocols[i].p + r->protocols[i].len, &item))
			for (j = 0; j < o->nprotocols && !*protocol; j++)
				if (span_is(item, o->protocols[j]))
					*protocol = o->protocols[j];
	}
	return W_NONE;
}

/* Queue an HTTP answer: status line, Date, the given headers and
 * --header's, the body (none for HEAD). */
static void http_answer(struct core *c, int status, const char *extra,
			const char *ctype, const void *body, size_t blen)
{
	char hdr[HTTP_HEAD_MAX], date[40];
	int n;

	http_date(c->wall_start + (c->now - c->start_ms) / 1000, date);
	n = snprintf(hdr, sizeof hdr,
		"HTTP/1.1 %d %s\r\n"
		"Date: %s\r\n"
		"Content-Type: %s\r\n"
		"Content-Length: %zu\r\n"
		"%s%s"
		"Connection: close\r\n\r\n",
		status, http_reason(status), date, ctype, blen, extra ? extra : "",
		c->opt->headers);
	/* the queue is empty, and the static_assert on the page keeps every
	 * answer inside it */
	assert(n > 0 && (size_t)n < sizeof hdr && c->out_len == 0);
	(void)out_put(c, hdr, (size_t)n);
	if (!c->head_only)
		(void)out_put(c, body, blen);
	c->http_status = status;
}

/* The answer to a refused request: its status and a one-line body (a
 * number of seconds in it, no other detail: those are for the log). */
static void http_error(struct core *c, enum why why, int detail)
{
	int status = endings[why].http;
	const char *extra = NULL;
	char body[256], text[REASON_MAX];
	int n;

	if (endings[why].flags & E_SECONDS)
		reason_text(why, detail, text, sizeof text);
	else
		snprintf(text, sizeof text, "%s", endings[why].reason);
	n = snprintf(body, sizeof body, "%d %s: %s\n", status, http_reason(status), text);
	if (why == W_UPGRADE_METHOD)
		extra = "Allow: GET\r\n";
	else if (status == HTTP_METHOD)
		extra = "Allow: GET, HEAD\r\n";
	else if (status == HTTP_UPGRADE_REQUIRED)
		extra = "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
	http_answer(c, status, extra, "text/plain; charset=utf-8", body,
		    n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
}

/* Content-Security-Policy for the page: its own inline script and style,
 * WebSocket connections back to where it came from, nothing else. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; " \
	"style-src 'unsafe-inline'; connect-src 'self'; img-src data:; " \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* NAME=VALUE\0 at the end of an environment block of *len bytes (size
 * at most); 0 when it does not fit. */
static int env_append(char *block, size_t *len, size_t size, const char *name, size_t nlen,
		      const char *v, size_t vlen)
{
	if (*len + nlen + vlen + 2 > size)
		return 0;
	memcpy(block + *len, name, nlen);
	block[*len + nlen] = '=';
	memcpy(block + *len + nlen + 1, v, vlen);
	*len += nlen + vlen + 1;
	block[(*len)++] = '\0';
	return 1;
}

/* One NAME=VALUE for the program's environment.  The block is bounded:
 * a request head is at most HEAD_MAX bytes. */
static void env_add(struct core *c, const char *name, size_t nlen, const char *v, size_t vlen)
{
	if (!env_append(c->env, &c->env_len, ENV_MAX, name, nlen, v, vlen))
		c->env_full = 1; /* cannot happen (ENV_MAX): refused all the same */
}

static void env_set(struct core *c, const char *name, struct span v)
{
	env_add(c, name, strlen(name), v.p ? v.p : "", v.p ? v.len : 0);
}

static struct span span_of(const char *s)
{
	return (struct span){ s, strlen(s) };
}

/* HTTP_NAME for a header field: upper case, '-' as '_' (RFC 3875 4.1.18);
 * a repeated field's values are joined with ", ".  A name with '_' would
 * be taken for the one spelt with '-' (X_Forwarded_For past a proxy that
 * removes X-Forwarded-For), and Proxy would become HTTP_PROXY, which
 * programs take for their proxy (httpoxy): neither is passed. */
static void env_header(struct core *c, struct span name, struct span value)
{
	char var[5 + 64];
	size_t i, n = 5 + name.len, at;

	if (name.len > 64 || memchr(name.p, '_', name.len) || span_eq(name, "Proxy"))
		return;
	memcpy(var, "HTTP_", 5);
	for (i = 0; i < name.len; i++)
		var[5 + i] = name.p[i] == '-' ? '_' : (char)toupper((unsigned char)name.p[i]);
	for (at = 0; at < c->env_len; at += strlen(c->env + at) + 1) {
		if (strncmp(c->env + at, var, n) != 0 || c->env[at + n] != '=')
			continue;
		/* a second field of this name: ", value" at the end of the first */
		at += strlen(c->env + at);
		if (c->env_len + value.len + 2 > ENV_MAX) {
			c->env_full = 1;
			return;
		}
		memmove(c->env + at + value.len + 2, c->env + at, c->env_len - at);
		memcpy(c->env + at, ", ", 2);
		memcpy(c->env + at + 2, value.p, value.len);
		c->env_len += value.len + 2;
		return;
	}
	env_add(c, var, n, value.p, value.len);
}

/* The request as CGI/1.1 meta-variables (RFC 3875 4.1) and HTTP_* for
 * every header field, for the program's environment.  The peer comes from
 * the same sources as the log line's. */
static void cgi_env(struct core *c, const char *head, size_t len, const struct hs_request *r)
{
	const char *end = head + len, *line, *eol, *colon, *q;
	struct span host = r->host, port = { NULL, 0 };

	c->env_len = 0;
	c->env_full = 0;
	env_set(c, "GATEWAY_INTERFACE", span_of("CGI/1.1"));
	env_set(c, "SERVER_SOFTWARE", span_of("wsfilter/" VERSION));
	env_set(c, "SERVER_PROTOCOL", span_of(r->minor ? "HTTP/1.1" : "HTTP/1.0"));
	env_set(c, "REQUEST_METHOD", r->method);
	env_set(c, "REQUEST_URI", r->target);
	env_set(c, "SCRIPT_NAME", span_of(""));
	if (c->opt->dir) {
		/* decoded: the waiting child splits it at the program it finds */
		char path[HEAD_MAX];

		path_decode(r->path, path, sizeof path);
		env_set(c, "PATH_INFO", span_of(path));
	} else {
		env_set(c, "PATH_INFO", r->path);
	}
	q = memchr(r->target.p, '?', r->target.len);
	env_set(c, "QUERY_STRING", q ? (struct span){ q + 1, (size_t)(r->target.p + r->target.len - q - 1) }
				     : span_of(""));
	/* Host is "name[:port]" or "[v6]:port" */
	q = host.len && host.p[0] == '[' ? memchr(host.p, ']', host.len) : host.p;
	q = q ? memchr(q, ':', (size_t)(host.p + host.len - q)) : NULL;
	if (q) {
		port = (struct span){ q + 1, (size_t)(host.p + host.len - q - 1) };
		host.len = (size_t)(q - host.p);
	}
	env_set(c, "SERVER_NAME", host);
	env_set(c, "SERVER_PORT", port.len ? port : span_of(c->local_port));
	env_set(c, "REMOTE_ADDR", span_of(c->peer_addr));
	env_set(c, "REMOTE_PORT", span_of(c->peer_port));
	if (c->opt->trust_proxy && span_eq(r->forwarded_proto, "https"))
		env_set(c, "HTTPS", span_of("on"));
	line = line_end(head, end);
	for (line = line < end ? line + 2 : end; line < end; line = eol + 2) {
		eol = line_end(line, end);
		colon = memchr(line, ':', (size_t)(eol - line));
		if (colon)
			env_header(c, (struct span){ line, (size_t)(colon - line) },
				   span_trim(colon + 1, (size_t)(eol - colon - 1)));
	}
}

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* The 101, and the connection is open. */
static void hs_open(struct core *c)
{
	char resp[256 + HEADERS_MAX];
	int n = snprintf(resp, sizeof resp,
		"HTTP/1.1 101 Switching Protocols\r\n"
		"Upgrade: websocket\r\n"
		"Connection: Upgrade\r\n"
		"Sec-WebSocket-Accept: %s\r\n"
		"%s%s%s"
		"%s"
		"\r\n",
		c->accept,
		c->protocol ? "Sec-WebSocket-Protocol: " : "",
		c->protocol ? c->protocol : "",
		c->protocol ? "\r\n" : "",
		c->opt->headers);

	/* a protocol name is an option of at most a few hundred bytes */
	if (n < 0 || (size_t)n >= sizeof resp || out_put(c, resp, (size_t)n) < 0) {
		conn_end(c, W_NO_ROOM, 0);
		return;
	}
	c->http_status = HTTP_SWITCHING;
	c->state = CS_OPEN;
	c->meter.frames_from = c->out_total;
	if (c->opt->ping_interval)
		c->next_ping_ms = c->now + c->opt->ping_interval * 1000;
}

/* The request is a valid upgrade.  Sec-WebSocket-Accept is
 * base64(SHA-1(key + GUID)).  With a program or --check, the 101 waits
 * for the waiting child's report (prog_report): its route, its check,
 * its exec. */
static void hs_accept(struct core *c, const struct hs_request *r, const char *head, size_t len)
{
	unsigned char keybuf[24 + sizeof ws_guid - 1], digest[20];

	memcpy(keybuf, r->key.p, 24);
	memcpy(keybuf + 24, ws_guid, sizeof ws_guid - 1);
	sha1(keybuf, sizeof keybuf, digest);
	base64_encode(digest, sizeof digest, c->accept);
	if (!c->opt->gate) {
		hs_open(c);
		return;
	}
	if (c->prog_errno) {
		conn_end(c, W_PROG_PREPARE, c->prog_errno);
		return;
	}
	cgi_env(c, head, len, r);
	if (c->env_full) {
		conn_end(c, W_ENV_TOO_LARGE, 0);
		return;
	}
	c->prog_go = 1;
	c->state = CS_STARTING;
}

/* A header name wsfilter writes itself, so that neither --header nor a
 * check may: the framing of the answer, its type, its Date, the upgrade's
 * own fields.  (A check's Content-Type is taken apart: its body's.) */
static int header_ours(struct span name)
{
	static const char *const ours[] = {
		"Content-Length", "Connection", "Date", "Upgrade", "Transfer-Encoding",
		"Keep-Alive", "Status", "Remote-User",
	};
	size_t i;

	for (i = 0; i < sizeof ours / sizeof ours[0]; i++)
		if (span_eq(name, ours[i]))
			return 1;
	return span_eq(name, "Content-Type") ||
	       (name.len >= 14 && !strncasecmp(name.p, "Sec-WebSocket-", 14));
}

/* An admission check's output: CGI header lines ("Name: value", LF or
 * CRLF); after a blank line, the body of its refusal.  Returns the number
 * of the first line wsfilter cannot use (from 1), 0 when none. */
static int check_parse(const char *p, size_t n, struct check_answer *a)
{
	const char *end = p + n, *eol, *colon, *q;
	struct span name, value;
	size_t len, i;
	int line = 0, k;

	a->status = a->status_line = 0;
	a->user = (struct span){ NULL, 0 };
	a->body = (struct span){ NULL, 0 };
	a->type = (struct span){ NULL, 0 };
	a->headers_len = 0;
	a->headers[0] = '\0';
	for (; p < end; p = eol < end ? eol + 1 : end) {
		line++;
		eol = memchr(p, '\n', (size_t)(end - p));
		eol = eol ? eol : end;
		len = (size_t)(eol - p) - (eol > p && eol[-1] == '\r');
		if (!len) {
			a->body = (struct span){ eol < end ? eol + 1 : end, (size_t)(end - eol) - (eol < end) };
			return 0;
		}
		colon = memchr(p, ':', len);
		for (q = p; colon && q < colon && is_tchar((unsigned char)*q); q++)
			;
		if (!colon || colon == p || q < colon)
			return line;
		name = (struct span){ p, (size_t)(colon - p) };
		value = span_trim(colon + 1, (size_t)(p + len - colon - 1));
		for (i = 0; i < value.len; i++)
			if (value.p[i] == '\r' || value.p[i] == '\0')
				return line;
		if (span_eq(name, "Status")) {
			if (a->status_line)
				return line; /* one status */
			for (i = 0, k = 0; i < 3 && i < value.len && isdigit((unsigned char)value.p[i]); i++)
				k = k * 10 + value.p[i] - '0';
			if (i < 3 || (value.len > 3 && value.p[3] != ' ') || k < 100)
				return line;
			a->status = k;
			a->status_line = line;
		} else if (span_eq(name, "Remote-User")) {
			if (a->user.len)
				return line; /* one user */
			for (i = 0; i < value.len && value.p[i] > 0x20 && value.p[i] < 0x7f; i++)
				;
			if (!value.len || i < value.len || value.len > USER_MAX)
				return line;
			a->user = value;
		} else if (span_eq(name, "Content-Type")) {
			if (a->type.len || !value.len)
				return line;
			a->type = value;
		} else if (header_ours(name)) {
			return line;
		} else {
			k = snprintf(a->headers + a->headers_len, sizeof a->headers - a->headers_len,
				     "%.*s: %.*s\r\n", (int)name.len, name.p, (int)value.len, value.p);
			if (k < 0 || (size_t)k >= sizeof a->headers - a->headers_len)
				return line;
			a->headers_len += (size_t)k;
		}
	}
	return 0;
}

/* The check's verdict from its wait status (or CHECK_TIMEOUT,
 * CHECK_TOO_BIG) and output: W_NONE admits, W_CHECK_REFUSED refuses with
 * a's status and headers, any other why is its failure, with *detail.
 * The waiting child runs the program on the same verdict. */
static enum why check_judge(int status, const char *out, size_t n, struct check_answer *a,
			    int *detail)
{
	int line;

	*detail = 0;
	if (status == CHECK_TIMEOUT)
		return W_CHECK_SLOW;
	if (status == CHECK_TOO_BIG)
		return W_CHECK_BIG;
	if (WIFSIGNALED(status)) {
		*detail = WTERMSIG(status);
		return W_CHECK_KILLED;
	}
	if (WEXITSTATUS(status) > 1) {
		*detail = WEXITSTATUS(status);
		return W_CHECK_EXIT;
	}
	line = check_parse(out, n, a);
	if (!line && WEXITSTATUS(status) == 1 && a->status && (a->status < 400 || a->status > 499))
		line = a->status_line; /* a refusal is a client error */
	if (line) {
		*detail = line;
		return W_CHECK_OUTPUT;
	}
	return WEXITSTATUS(status) ? W_CHECK_REFUSED : W_NONE;
}

/* The check refused: its status (403 by default), its header lines, and
 * its body or ours. */
static void check_refuse(struct core *c, const struct check_answer *a)
{
	int status = a->status ? a->status : HTTP_FORBIDDEN;
	char body[128];
	char type[CHECK_OUT_MAX + 1];
	int n = snprintf(body, sizeof body, "%d %s\n", status, http_reason(status));

	snprintf(type, sizeof type, "%.*s", (int)a->type.len, a->type.p);
	if (a->body.len)
		http_answer(c, status, a->headers, a->type.len ? type : "text/plain; charset=utf-8",
			    a->body.p, a->body.len);
	else
		http_answer(c, status, a->headers, "text/plain; charset=utf-8", body,
			    n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
	conn_end(c, W_CHECK_REFUSED, status);
}

/* The waiting child's report, whole (its pipe's EOF): records of a route
 * refused, the check's verdict, an exec that failed.  Acts on it while the
 * request waits; returns whether the program runs (or, without one, the
 * check admitted), whatever the state. */
static int prog_report(struct core *c, const unsigned char *p, size_t n)
{
	struct check_answer a;
	struct report h;
	enum why why = W_NONE;
	int detail = 0, checked = 0;

	while (why == W_NONE && n >= sizeof h) {
		memcpy(&h, p, sizeof h);
		if (h.len > n - sizeof h)
			break;
		p += sizeof h;
		n -= sizeof h;
		if (h.kind == REP_CHECK) {
			why = check_judge(h.value, (const char *)p, h.len, &a, &detail);
			checked = 1;
		} else if (h.kind == REP_ROUTE && h.value >= W_PATH_BAD && h.value <= W_ROUTE_OUTSIDE) {
			why = (enum why)h.value;
		} else {
			why = W_PROG_EXEC;
			detail = h.kind == REP_ERRNO && h.value > 0 ? h.value : EIO;
		}
		p += h.len;
		n -= h.len;
	}
	if (why == W_NONE && (n || (c->opt->check && !checked))) {
		why = W_PROG_EXEC; /* cut short: the child died */
		detail = EIO;
	}
	if (c->state != CS_STARTING)
		return why == W_NONE;
	if (why == W_NONE && checked && a.user.len) {
		memcpy(c->user, a.user.p, a.user.len);
		c->user[a.user.len] = '\0';
	}
	if (why == W_NONE)
		hs_open(c);
	else if (why == W_CHECK_REFUSED)
		check_refuse(c, &a);
	else
		conn_end(c, why, why == W_CHECK_SLOW ? (int)c->opt->hs_timeout : detail);
	return why == W_NONE;
}

/* What the log line tells of the request: method and target, HEAD, the
 * kind, and with --trust-proxy the client the proxy names. */
static void hs_note(struct core *c, const struct hs_request *r)
{
	char raw[REQ_MAX];
	int n;

	if (r->method.len) {
		n = snprintf(raw, sizeof raw, "%.*s %.*s", (int)r->method.len, r->method.p,
			     (int)(r->target.len < REQ_MAX ? r->target.len : REQ_MAX), r->target.p);
		sanitize(c->request, sizeof c->request, raw, n < 0 ? 0 : strlen(raw));
	}
	c->head_only = span_is(r->method, "HEAD");
	c->kind = r->upgrade_ws ? HK_WEBSOCKET : HK_HTTP;
	if (c->opt->trust_proxy && r->forwarded.p) {
		size_t l = strlen(c->peer);
		char fwd[PEER_MAX];

		sanitize(fwd, sizeof fwd, r->forwarded.p, r->forwarded.len);
		snprintf(c->peer + l, sizeof c->peer - l, " for %s", fwd);
	}
}

/* The head is complete (len bytes, CRLFCRLF included): answer it. */
static void hs_complete(struct core *c, const char *head, size_t len)
{
	struct hs_request r;
	enum why why = hs_parse(head, len - 2, &r);

	hs_note(c, &r);
	if (why == W_NONE)
		why = hs_policy(c->opt, &r, &c->protocol);
	switch (why) {
	case W_NONE:
		hs_accept(c, &r, head, len - 2);
		return;
	case W_PAGE:
		c->kind = HK_PAGE;
		http_answer(c, HTTP_OK,
			"X-Content-Type-Options: nosniff\r\n"
			"Content-Security-Policy: " PAGE_CSP "\r\n"
			"Cache-Control: no-cache\r\n",
			"text/html; charset=utf-8", web_index, sizeof web_index);
		break;
	case W_HEALTH:
		c->kind = HK_HEALTH;
		http_answer(c, HTTP_OK, "Cache-Control: no-store\r\n",
			"text/plain; charset=utf-8", "ok", 2);
		break;
	default:
		break;
	}
	conn_end(c, why, 0);
}

/* Look for the end of the head in the input; answer it when complete.
 * Returns the bytes consumed (the head) or 0 while it is incomplete. */
static size_t hs_feed(struct core *c)
{
	const char *p = (const char *)c->in + c->in_off;
	size_t n = c->in_len - c->in_off, scan = n < HEAD_MAX ? n : HEAD_MAX;
	const char *end = memmem(p, scan, "\r\n\r\n", 4);

	if (!end) {
		if (n >= HEAD_MAX) {
			c->kind = HK_HTTP;
			conn_end(c, W_HEAD_TOO_LARGE, 0);
		}
		return 0;
	}
	hs_complete(c, p, (size_t)(end - p) + 4);
	return (size_t)(end - p) + 4;
}

/* ==== Frame parser and the filter (RFC 6455 5) ========================== */

/*
 * RFC 6455 5.2 base framing:
 *
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-------+-+-------------+-------------------------------+
 *  |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 *  |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 *  |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 *  | |1|2|3|       |K|             |                               |
 *  +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
 *  |     Extended payload length continued, if payload len == 127  |
 *  + - - - - - - - - - - - - - - - +-------------------------------+
 *  |                               |Masking-key, if MASK set to 1  |
 *  +-------------------------------+-------------------------------+
 *  | Masking-key (continued)       |          Payload Data         |
 *  +-------------------------------- - - - - - - - - - - - - - - - +
 *  :                     Payload Data continued ...                :
 *  + - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
 */

/* Server frames are never masked.  Returns the header's length. */
static size_t frame_head(unsigned char *p, int fin, int opcode, uint64_t len)
{
	p[0] = (unsigned char)((fin ? WSBIT_FIN : 0) | opcode);
	if (len < 126) {
		p[1] = (unsigned char)len;
		return 2;
	}
	if (len <= 0xFFFF) {
		p[1] = 126;
		p[2] = (unsigned char)(len >> 8);
		p[3] = (unsigned char)len;
		return 4;
	}
	p[1] = 127;
	for (int i = 0; i < 8; i++)
		p[2 + i] = (unsigned char)(len >> (56 - 8 * i));
	return 10;
}

static void unmask(unsigned char *dst, const unsigned char *src, size_t n,
		   const uint8_t key[4], uint64_t pos)
{
	unsigned char k[8];
	uint64_t m, v;
	size_t i;

	for (i = 0; i < 8; i++)
		k[i] = key[(pos + i) & 3];
	memcpy(&m, k, 8);
	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&v, src + i, 8);
		v ^= m;
		memcpy(dst + i, &v, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ k[i & 7];
}

/* The client frame header at p, n bytes available (RFC 6455 5.2).
 * Returns 0 while more bytes are needed, -1 with *why set when the header
 * breaks the protocol, or the header's size (mask included).  Each check
 * sits where its field is decoded. */
static int frame_decode(const unsigned char *p, size_t n, struct frame_header *h, enum why *why)
{
	uint64_t len;
	size_t size = 2;
	int i;

	if (n < 2)
		return 0;
	h->fin = (p[0] & WSBIT_FIN) != 0;
	h->opcode = p[0] & 0x0F;
	len = p[1] & 0x7F;
	if (p[0] & WSBIT_RSV)
		*why = W_RSV;
	else if ((h->opcode > OP_BINARY && h->opcode < OP_CLOSE) || h->opcode > OP_PONG)
		*why = W_OPCODE;
	else if (!(p[1] & WSBIT_MASK))
		*why = W_UNMASKED;        /* RFC 6455 5.1: clients MUST mask every frame */
	else if (h->opcode >= OP_CLOSE && !h->fin)
		*why = W_CTRL_FRAGMENTED; /* RFC 6455 5.5: control frames MUST NOT be fragmented */
	else if (h->opcode >= OP_CLOSE && len > CTRL_MAX)
		*why = W_CTRL_TOO_BIG;    /* ... and carry at most 125 bytes */
	else
		*why = W_NONE;
	if (*why != W_NONE)
		return -1;
	if (len == 126) {
		if (n < 4)
			return 0;
		len = (uint64_t)p[2] << 8 | p[3];
		size = 4;
		/* RFC 6455 5.2: the minimal number of bytes MUST be used */
		*why = len < 126 ? W_LEN16 : W_NONE;
	} else if (len == 127) {
		if (n < 10)
			return 0;
		for (len = 0, i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		size = 10;
		*why = p[2] & 0x80 ? W_LEN64_TOP : len <= 0xFFFF ? W_LEN64 : W_NONE;
	}
	if (*why != W_NONE)
		return -1;
	if (n < size + 4)
		return 0;
	memcpy(h->mask, p + size, 4);
	h->len = len;
	h->size = size + 4;
	return (int)h->size;
}

/* RFC 6455 7.4.1: codes a peer may send in a close frame. */
static int close_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

/* A whole control frame with its unmasked payload. */
/* Our close in answer to the client's. */
static void close_answer(struct core *c)
{
	ctrl_frame(c, OP_CLOSE, c->close_echo, c->close_echo_len);
	conn_end(c, W_CLIENT_CLOSE, 0);
}

static void ctrl_handle(struct core *c, int opcode, const unsigned char *p, size_t n)
{
	struct utf8 u;
	size_t bad;
	unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;

	switch (opcode) {
	case OP_PING:
		/* RFC 6455 5.5.2: answered at once with the same payload */
		ctrl_frame(c, OP_PONG, p, n);
		break;
	case OP_PONG:
		/* RFC 6455 5.5.3: unsolicited pongs are ignored; any pong
		 * shows that the client is there */
		c->ping_end = 0;
		c->ping_check = 0;
		c->pong_deadline = 0;
		break;
	case OP_CLOSE:
		utf8_reset(&u);
		if (n == 1)
			conn_end(c, W_CLOSE_1BYTE, 0);
		else if (n && !close_code_valid(code))
			conn_end(c, W_CLOSE_CODE, 0);
		else if (n > 2 && (utf8_run(&u, p + 2, n - 2, &bad) < 0 || u.need))
			conn_end(c, W_CLOSE_UTF8, 0);
		if (c->state != CS_OPEN)
			break;
		/* RFC 6455 5.5.1: answer with a close echoing the code */
		c->close_code = n ? (int)code : CLOSE_NO_STATUS;
		c->close_by = BY_CLIENT;
		memcpy(c->close_echo, p, n ? 2 : 0);
		c->close_echo_len = n ? 2 : 0;
		if (c->opt->runs) {
			/* the program's answers to the messages before the close
			 * go first (5.5.1 lets the close wait for data being
			 * sent): its stdin ends, and the close goes once its
			 * output has (the stop steps bound that) */
			c->peer_closed = 1;
			break;
		}
		close_answer(c);
		break;
	}
}

/* A data frame header: check it against the message in progress, then
 * make it the frame whose payload streams through. */
static enum why msg_start(struct core *c, const struct frame_header *h)
{
	struct message *m = &c->msg;
	uint64_t max = (uint64_t)c->opt->max_message;

	if (h->opcode == OP_CONT && !m->active)
		return W_STRAY_CONT;
	if (h->opcode != OP_CONT && m->active)
		return W_NESTED;
	/* known from the header: fail before the payload */
	if (max && (h->len > max || (m->active ? m->size : 0) + h->len > max))
		return W_TOO_BIG;
	if (!m->active) {
		m->active = 1;
		m->opcode = h->opcode;
		m->out_started = 0;
		m->size = 0;
		utf8_reset(&m->utf8);
	}
	m->size += h->len;
	c->frame.active = 1;
	c->frame.fin = h->fin;
	c->frame.len = h->len;
	c->frame.pos = 0;
	memcpy(c->frame.mask, h->mask, 4);
	return W_NONE;
}

/* chunk bytes of the current frame's payload are through; the frame, and
 * with its last byte the message, may be done. */
static long frame_consumed(struct core *c, size_t chunk, int last)
{
	c->bytes_in += chunk;
	c->frame.pos += chunk;
	if (last) {
		c->frame.active = 0;
		if (c->frame.fin) {
			c->msg.active = 0;
			c->msgs_in++;
		}
	}
	return (long)chunk;
}

/* How much of the current frame's payload moves now: the n bytes at
 * hand, at most the rest of the frame and room.  -1: none fits yet. */
static long frame_chunk(const struct frame *f, size_t n, size_t room)
{
	uint64_t rem = f->len - f->pos;
	size_t chunk = n < rem ? n : (size_t)rem;

	if (chunk > room)
		chunk = room;
	return chunk == 0 && rem > 0 ? -1 : (long)chunk;
}

/* Unmask a chunk of the current frame's payload into dst and check it as
 * text: -1 when it is not UTF-8, and the connection ends with 1007 at
 * once (RFC 6455 8.1).  final: the message ends with it. */
static int payload_take(struct core *c, unsigned char *dst, const unsigned char *p, size_t chunk,
			int final)
{
	struct message *m = &c->msg;
	size_t bad;

	unmask(dst, p, chunk, c->frame.mask, c->frame.pos);
	if (m->opcode == OP_TEXT && (utf8_run(&m->utf8, dst, chunk, &bad) < 0 || (final && m->utf8.need))) {
		conn_end(c, W_UTF8, 0);
		return -1;
	}
	return 0;
}

/* The filter: forward as much of the current frame's payload as is here
 * and fits, as one output frame, unmasked and checked; a message's last
 * frame gets the " - N" suffix.  Returns the bytes consumed, or -1 when
 * nothing can move until more input or more room comes. */
static long msg_forward(struct core *c, const unsigned char *p, size_t n)
{
	struct frame *f = &c->frame;
	struct message *m = &c->msg;
	size_t room = out_room(c), chunk, hlen, slen = 0;
	char suffix[SUFFIX_MAX];
	unsigned char *dst;
	int last, final;
	long k;

	if (room < OUT_FRAME_MIN)
		return -1;
	if ((k = frame_chunk(f, n, room - (CLOSE_RESERVE + 10 + SUFFIX_MAX))) < 0)
		return -1;
	chunk = (size_t)k;
	last = chunk == f->len - f->pos;
	final = last && f->fin;
	if (chunk == 0 && !final) {
		f->active = 0; /* an empty non-final fragment: nothing to forward */
		return 0;
	}
	if (final && !c->opt->echo) {
		memcpy(suffix, " - ", 3);
		slen = 3 + u64_to_dec(suffix + 3, rng_range(c->rng, (uint64_t)c->opt->random_max));
	}
	dst = out_reserve(c, 10 + chunk + slen);
	assert(dst);
	hlen = frame_head(dst, final, m->out_started ? OP_CONT : m->opcode, chunk + slen);
	if (payload_take(c, dst + hlen, p, chunk, final) < 0)
		return (long)chunk; /* the invalid bytes are never queued */
	memcpy(dst + hlen + chunk, suffix, slen);
	out_commit(c, hlen + chunk + slen);
	m->out_started = 1;
	return frame_consumed(c, chunk, last);
}

/* ==== A program per connection: its bytes =============================== */

/* Make room at the tail of a program buffer; returns the free bytes. */
static size_t buf_room(unsigned char *buf, size_t *off, size_t len)
{
	if (*off) {
		memmove(buf, buf + *off, len);
		*off = 0;
	}
	return PIPE_BUF_SIZE - len;
}

/* Client to program: the payload of the current frame into the program's
 * stdin queue, unmasked and checked as the filter does; in text mode a
 * message ends with a newline.  Returns the bytes consumed, or -1 when
 * the queue is full.  Once the program has closed its stdin, its input is
 * dropped. */
static long prog_forward(struct core *c, const unsigned char *p, size_t n)
{
	struct frame *f = &c->frame;
	size_t room = buf_room(c->pin, &c->pin_off, c->pin_len), chunk;
	int nl = !c->opt->binary, last;
	unsigned char *dst = c->pin + c->pin_len;
	long k;

	if (room <= (size_t)nl || (k = frame_chunk(f, n, room - (size_t)nl)) < 0)
		return -1;
	chunk = (size_t)k;
	last = chunk == f->len - f->pos;
	if (payload_take(c, dst, p, chunk, last && f->fin) < 0)
		return (long)chunk;
	if (last && f->fin && nl)
		dst[chunk] = '\n';
	if (!c->pin_closed)
		c->pin_len += chunk + (last && f->fin ? (size_t)nl : 0);
	return frame_consumed(c, chunk, last);
}

/* Copy src to dst as valid UTF-8: a byte that cannot begin or continue a
 * character becomes U+FFFD (EF BF BD), so dst needs 3 bytes for each of
 * src.  A character cut at the end waits for the next call, unless final.
 * Returns the bytes written; *used says how many of src were taken. */
static size_t utf8_clean(unsigned char *dst, const unsigned char *src, size_t n, int final,
			 size_t *used)
{
	struct utf8 u;
	size_t i = 0, o = 0, k, bad;
	int err;

	utf8_reset(&u);
	if (utf8_run(&u, src, n, &bad) == 0 && !u.need) {
		memcpy(dst, src, n); /* the common case */
		*used = n;
		return n;
	}
	while (i < n) {
		/* one character: its lead byte, then the bytes it needs */
		utf8_reset(&u);
		for (err = 0, k = i; k < n; k++) {
			if ((err = utf8_run(&u, src + k, 1, &bad) < 0) || !u.need)
				break;
		}
		if (k == n && !final)
			break; /* cut at the end: wait for the rest */
		if (!err && k < n) {
			memcpy(dst + o, src + i, k - i + 1);
			o += k - i + 1;
			i = k + 1;
			continue;
		}
		memcpy(dst + o, "\xEF\xBF\xBD", 3);
		o += 3;
		/* the byte that broke a character starts afresh */
		i = k == n ? n : k > i ? k : i + 1;
	}
	*used = i;
	return o;
}

/* --binary: what arrived, as one binary message (room: payload bytes
 * that fit).  Returns the bytes taken. */
static size_t prog_frame_bytes(struct core *c, const unsigned char *src, size_t room)
{
	size_t take = c->pout_len < room ? c->pout_len : room;
	unsigned char *dst = out_reserve(c, 10 + take);
	size_t hlen = frame_head(dst, 1, OP_BINARY, take);

	memcpy(dst + hlen, src, take);
	out_commit(c, hlen + take);
	return take;
}

/* Text: the next line as a text message (or its next fragment), made
 * valid UTF-8.  Returns the bytes taken, its newline included, or 0 when
 * the line, or a character of it, is still to come. */
static size_t prog_frame_line(struct core *c, const unsigned char *src, size_t room)
{
	const unsigned char *nl = memchr(src, '\n', c->pout_len);
	size_t take = nl ? (size_t)(nl - src) : c->pout_len, used, k, hlen, bad;
	int eol = nl != NULL, fin;
	unsigned char *dst;
	struct utf8 u;

	if (!nl && c->pout_len < PIPE_BUF_SIZE && !c->prog_eof)
		return 0; /* the rest of the line is still to come */
	if (take > room / 3) {
		take = room / 3;
		eol = 0;
	}
	fin = eol || (c->prog_eof && take == c->pout_len);
	dst = out_reserve(c, 10 + 3 * take);
	assert(dst);
	utf8_reset(&u);
	if (utf8_run(&u, src, take, &bad) == 0 && !u.need) {
		/* valid, the common case: the header, then the line */
		hlen = frame_head(dst, fin, c->pmsg_open ? OP_CONT : OP_TEXT, take);
		memcpy(dst + hlen, src, take);
		k = used = take;
	} else {
		/* the payload first, 10 bytes in; the header once its length
		 * is known */
		k = utf8_clean(dst + 10, src, take, fin, &used);
		if (!fin && used == 0 && take == c->pout_len && c->pout_len < PIPE_BUF_SIZE)
			return 0; /* only a cut character is here */
		hlen = frame_head(dst, fin, c->pmsg_open ? OP_CONT : OP_TEXT, k);
		memmove(dst + hlen, dst + 10, k);
	}
	out_commit(c, hlen + k);
	c->pmsg_open = !fin;
	return used + (eol && used == take ? 1 : 0);
}

/* Program to client: what it wrote, as messages.  In text mode each line
 * is a text message without its newline, made valid UTF-8; a line longer
 * than the buffer goes out as a fragmented message, and a last line
 * without a newline is sent when the program's stdout ends.  With
 * --binary, whatever arrived is one binary message. */
static void prog_frame(struct core *c)
{
	const unsigned char *src;
	size_t room, used;

	while (c->state == CS_OPEN && (c->pout_len || (c->prog_eof && c->pmsg_open)) &&
	       out_room(c) >= OUT_FRAME_MIN) {
		src = c->pout + c->pout_off;
		room = out_room(c) - CLOSE_RESERVE - 10;
		used = c->opt->binary ? prog_frame_bytes(c, src, room) : prog_frame_line(c, src, room);
		if (!used && !(c->prog_eof && c->pmsg_open && !c->pout_len))
			break;
		c->pout_off += used;
		c->pout_len -= used;
		if (!c->pout_len)
			c->pout_off = 0;
	}
}

/* ==== The protocol core ================================================ */

/* Frames from the input, answers into the output.  Returns the bytes
 * consumed.  Stops when input runs out, when the output queue is too full
 * to go on (backpressure), or when the connection ends. */
static size_t ws_feed(struct core *c)
{
	const unsigned char *in = c->in + c->in_off;
	size_t avail = c->in_len - c->in_off, used = 0;
	unsigned char payload[CTRL_MAX];
	struct frame_header h;
	enum why why;
	long moved;
	int got;

	if (c->peer_closed)
		return avail; /* nothing counts after the client's close */
	while (c->state == CS_OPEN && !c->peer_closed) {
		if (c->frame.active) {
			moved = c->opt->runs ? prog_forward(c, in + used, avail - used)
						: msg_forward(c, in + used, avail - used);
			if (moved < 0)
				break;
			used += (size_t)moved;
			continue;
		}
		if (out_room(c) < OUT_FRAME_MIN)
			break;
		got = frame_decode(in + used, avail - used, &h, &why);
		if (got == 0)
			break;
		if (got < 0 || (h.opcode < OP_CLOSE && (why = msg_start(c, &h)) != W_NONE)) {
			conn_end(c, why, 0);
			break;
		}
		if (h.opcode < OP_CLOSE) {
			used += h.size;
			continue;
		}
		/* control frames are handled whole: wait for all of it */
		if (avail - used < h.size + h.len)
			break;
		unmask(payload, in + used + h.size, (size_t)h.len, h.mask, 0);
		used += h.size + (size_t)h.len;
		ctrl_handle(c, h.opcode, payload, (size_t)h.len);
	}
	return used;
}

/* A core ready for its first byte.  The caller seeds c->rng and names
 * c->peer. */
static void core_init(struct core *c, const struct options *o, int64_t now, int64_t wall)
{
	/* the buffers, at the end, stay untouched until used */
	memset(c, 0, offsetof(struct core, in));
	c->opt = o;
	c->state = CS_HANDSHAKE;
	c->now = c->start_ms = c->last_rx_ms = now;
	c->wall_start = wall;
	c->rng[0] = 1;
	strcpy(c->peer, "stdin");
}

/* Consume what can be consumed of c->in, queue the answers in c->out.
 * No I/O, no globals: tests and fuzzers call it directly. */
static size_t conn_process(struct core *c, int64_t now)
{
	size_t used, total = 0;

	c->now = now;
	while (c->state == CS_HANDSHAKE || c->state == CS_OPEN) {
		used = c->state == CS_HANDSHAKE ? hs_feed(c) : ws_feed(c);
		c->in_off += used;
		total += used;
		if (!used)
			break;
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->opt->runs)
		prog_frame(c);
	return total;
}

/* ==== Timers =========================================================== */

static int64_t earliest(int64_t a, int64_t b)
{
	return !a ? b : !b ? a : a < b ? a : b;
}

/* A keepalive ping can be queued: none is out, and there is room (a due
 * ping that finds no room waits for POLLOUT, not for a timer). */
static int ping_possible(const struct core *c)
{
	return c->opt->ping_interval && !c->ping_end && !c->ping_check && !c->pong_deadline &&
	       out_room(c) >= OUT_FRAME_MIN;
}

/* Seconds without a byte written before a client is taken to have stopped
 * reading: the send timeout; the close timeout for one that was sent more
 * than DISCARD_MAX after the end and is no longer read. */
static long long send_limit(const struct core *c)
{
	return c->state == CS_LINGER && c->discarded > DISCARD_MAX ? c->opt->close_timeout
								   : c->opt->send_timeout;
}

/* When the next timer expires, in ms of CLOCK_MONOTONIC; 0: none runs. */
static int64_t conn_deadline(const struct core *c)
{
	const struct options *o = c->opt;
	int64_t t = 0;

	if (c->send_since)
		t = c->send_since + send_limit(c) * 1000;
	switch (c->state) {
	case CS_HANDSHAKE:
	case CS_STARTING:
		t = earliest(t, c->start_ms + o->hs_timeout * 1000);
		break;
	case CS_OPEN:
		if (c->peer_closed)
			break; /* the stop steps bound the wait for its output */
		if (o->idle_timeout)
			t = earliest(t, c->last_rx_ms + o->idle_timeout * 1000);
		if (ping_possible(c))
			t = earliest(t, c->next_ping_ms);
		t = earliest(t, c->ping_check);
		t = earliest(t, c->pong_deadline);
		break;
	case CS_LINGER:
		t = earliest(t, c->linger_deadline);
		break;
	case CS_DONE:
		break;
	}
	return t;
}

/* Whether a timer due by now needs acked_total: what the client has
 * taken of the bytes written, as only the kernel knows. */
static int conn_wants_acked(const struct core *c, int64_t now)
{
	return (c->send_since && now >= c->send_since + send_limit(c) * 1000) ||
	       (c->ping_check && now >= c->ping_check);
}

/* A written ping may still wait in the kernel behind earlier bytes: look
 * every half ping timeout whether it has reached the client.  The pong
 * clock runs from the write when it had by the first look, from the look
 * that saw it arrive when it was on its way; two looks without any
 * progress end the client. */
static void ping_track(struct core *c, int64_t now)
{
	const struct options *o = c->opt;
	int64_t half = o->ping_timeout * 500;

	if (c->ping_end && c->written_total >= c->ping_end && !c->ping_check) {
		/* the ping is written; it may still wait in the
		 * kernel behind earlier bytes: look every half
		 * ping timeout whether it got through */
		c->ping_written = now;
		c->ping_check = now + half;
		c->ping_idle = 0;
		c->acked_mark = c->acked_total;
	}
	if (c->ping_check && now >= c->ping_check) {
		if (c->acked_total >= c->ping_end) {
			/* it reached the client: the pong clock runs from
			 * the write, or from now if it was seen on its way */
			c->pong_deadline = (c->ping_idle < 0 ? now : c->ping_written) +
					   o->ping_timeout * 1000;
			c->ping_end = 0;
			c->ping_check = 0;
		} else if (c->acked_total > c->acked_mark) {
			c->acked_mark = c->acked_total; /* slow, not gone */
			c->ping_check = now + half;
			c->ping_idle = -1;
		} else if (c->ping_idle > 0) {
			conn_end(c, W_STALL, (int)o->ping_timeout);
		} else {
			c->ping_idle = 1; /* one more look: a ping timeout in all */
			c->ping_check = now + half;
		}
	}
}

/* Act on every timer that has expired by now. */
static void conn_expire(struct core *c, int64_t now)
{
	const struct options *o = c->opt;

	c->now = now;
	if (c->send_since && now >= c->send_since + send_limit(c) * 1000) {
		/* bytes written earlier are still reaching the client: it
		 * reads, slowly, and has another send timeout */
		if (c->acked_total > c->acked_mark) {
			c->acked_mark = c->acked_total;
			c->send_since = now;
		} else {
			conn_end(c, W_STALL, (int)send_limit(c));
		}
	}
	switch (c->state) {
	case CS_HANDSHAKE:
		if (now >= c->start_ms + o->hs_timeout * 1000) {
			c->kind = HK_HTTP;
			/* nothing sent at all: a silent close */
			conn_end(c, c->in_len ? W_HEAD_TIMEOUT : W_NO_REQUEST, (int)o->hs_timeout);
		}
		break;
	case CS_STARTING:
		if (now >= c->start_ms + o->hs_timeout * 1000)
			conn_end(c, W_PROG_SLOW, (int)o->hs_timeout);
		break;
	case CS_OPEN:
		if (c->peer_closed)
			break;
		ping_track(c, now);
		if (o->idle_timeout && now >= c->last_rx_ms + o->idle_timeout * 1000)
			conn_end(c, W_IDLE, (int)o->idle_timeout);
		else if (c->pong_deadline && now >= c->pong_deadline)
			conn_end(c, W_NO_PONG, (int)o->ping_timeout);
		else if (ping_possible(c) && now >= c->next_ping_ms) {
			ctrl_frame(c, OP_PING, (const unsigned char *)"wsfilter", 8);
			c->ping_end = c->out_total;
			c->next_ping_ms = now + o->ping_interval * 1000;
		}
		break;
	case CS_LINGER:
		if (c->linger_deadline && now >= c->linger_deadline)
			c->state = CS_DONE;
		break;
	case CS_DONE:
		break;
	}
}

/* ==== A program per connection: its process ============================ */

/* One record of the waiting child's report (struct report).  The pipe
 * is empty and holds the whole of it. */
static void report_send(int ex, int kind, int value, const void *p, size_t n)
{
	struct report h = { kind, value, (unsigned)n };
	struct iovec v[2] = { { &h, sizeof h }, { (void *)p, n } };

	(void)!writev(ex, v, 2);
}

/* The child cannot go on: errno to wsfilter, which answers 500. */
static void prog_child_fail(int ex) __attribute__((noreturn));

static void prog_child_fail(int ex)
{
	report_send(ex, REP_ERRNO, errno, NULL, 0);
	_exit(127);
}

/* The dispositions and mask a program expects, whatever wsfilter set. */
static void child_signals(void)
{
	static const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	sigset_t none;
	size_t i;

	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* A wait(2) status from waitid's siginfo. */
static int status_of(const siginfo_t *si)
{
	return si->si_code == CLD_EXITED ? (si->si_status & 0xff) << 8 : si->si_status & 0x7f;
}

/* Names of wsfilter's own environment that never reach the program:
 * they are the request's to set (RFC 3875 4.1), and one inherited would
 * stand in for a variable the request did not set.  HTTP_PROXY is the
 * exception: a request never sets it (httpoxy), so one in wsfilter's
 * environment is the administrator's. */
static int env_is_request_var(const char *v)
{
	static const char *const cgi[] = {
		"AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "GATEWAY_INTERFACE", "HTTPS",
		"PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_HOST",
		"REMOTE_IDENT", "REMOTE_PORT", "REMOTE_USER", "REQUEST_METHOD", "REQUEST_URI",
		"SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
	};
	size_t i, n = strcspn(v, "=");

	if (n >= 5 && !strncmp(v, "HTTP_", 5))
		return !(n == 10 && !strncmp(v, "HTTP_PROXY", 10));
	for (i = 0; i < sizeof cgi / sizeof cgi[0]; i++)
		if (strlen(cgi[i]) == n && !strncmp(v, cgi[i], n))
			return 1;
	return 0;
}

/* The program's environment: the request's variables (NAME=VALUE\0 each,
 * got bytes of block), then, unless --clear-env, wsfilter's own minus
 * the request's names.  NULL when out of memory. */
static char **prog_environ(const struct options *o, char *block, size_t got)
{
	extern char **environ;
	size_t n = 0, i, nvars = 1;
	char **envp, *p;

	for (i = 0; i < got; i++)
		nvars += block[i] == '\0';
	for (i = 0; environ && environ[i]; i++)
		nvars++;
	envp = calloc(nvars, sizeof *envp);
	if (!envp)
		return NULL;
	for (p = block; p < block + got; p += strlen(p) + 1)
		envp[n++] = p;
	for (i = 0; !o->clear_env && environ && environ[i]; i++)
		if (!env_is_request_var(environ[i]))
			envp[n++] = environ[i];
	envp[n] = NULL;
	return envp;
}

/* NAME's entry in an environment block of got bytes, or NULL. */
static char *env_find(char *block, size_t got, const char *name)
{
	size_t n = strlen(name);
	char *p;

	for (p = block; p < block + got; p += strlen(p) + 1)
		if (!strncmp(p, name, n) && p[n] == '=')
			return p;
	return NULL;
}

/* The block without NAME's entry: its new length. */
static size_t env_drop(char *block, size_t got, const char *name)
{
	char *p = env_find(block, got, name);
	size_t n;

	if (!p)
		return got;
	n = strlen(p) + 1;
	memmove(p, p + n, (size_t)(block + got - p) - n);
	return got - n;
}

/* --dir: the program a decoded path names under dir (a real path), by
 * whole segments: a directory goes on to the next segment, the first
 * executable regular file is the program (its real path into file) and
 * *split is where the rest of the path, PATH_INFO, starts.  Everything
 * looked at must lie inside dir, symlinks resolved. */
static enum why route_find(const char *dir, const char *path, char *file, size_t size,
			   size_t *split)
{
	size_t dlen = strlen(dir), at = 0, seg;
	char real[PATH_MAX];
	struct stat st;
	int n;

	while (path[at] == '/' && path[at + 1]) {
		seg = 1 + strcspn(path + at + 1, "/");
		n = snprintf(file, size, "%s%.*s", dir, (int)(at + seg), path);
		if (n < 0 || (size_t)n >= size || !realpath(file, real) || stat(real, &st) < 0)
			return W_ROUTE_NONE;
		if (dlen > 1 && (strncmp(real, dir, dlen) || real[dlen] != '/'))
			return W_ROUTE_OUTSIDE;
		at += seg;
		if (S_ISDIR(st.st_mode))
			continue;
		if (!S_ISREG(st.st_mode))
			return W_ROUTE_NONE;
		if (access(real, X_OK) < 0)
			return W_ROUTE_NOEXEC;
		if (strlen(real) >= size)
			return W_ROUTE_NONE;
		strcpy(file, real);
		*split = at;
		return W_NONE;
	}
	return at ? W_ROUTE_DIR : W_ROUTE_NONE;
}

/* The check's process: its own group, stdin /dev/null, stdout out,
 * stderr the log's pipe, no argument. */
static void check_exec(const char *check, char **envp, int out, int err) __attribute__((noreturn));

static void check_exec(const char *check, char **envp, int out, int err)
{
	char *argv[2] = { (char *)check, NULL };
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

	(void)setpgid(0, 0);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	child_signals();
	if (nul < 0 || dup2(nul, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	closefrom(3);
	execvpe(check, argv, envp);
	dprintf(2, "cannot run the admission check %s: %s\n", check, strerrordesc_np(errno));
	_exit(127);
}

/* Read what the check writes: up to CHECK_OUT_MAX into out; a byte more
 * sets *big.  0 once its stdout has ended or *big is set. */
static int check_read(int fd, char *out, size_t *len, int *big)
{
	char junk[512];
	ssize_t r;

	for (;;) {
		if (*len < CHECK_OUT_MAX)
			r = read(fd, out + *len, CHECK_OUT_MAX - *len);
		else
			r = read(fd, junk, sizeof junk);
		if (r > 0 && *len < CHECK_OUT_MAX)
			*len += (size_t)r;
		else if (r > 0)
			return !(*big = 1); /* one byte too many: done */
		else
			return r < 0 && (errno == EAGAIN || errno == EINTR);
	}
}

/* --check: run it with envp and wait, reading its stdout, until it has
 * exited and its stdout is read, the deadline (ms), or the report pipe
 * ex breaks (wsfilter has given up).  Its whole group is killed before
 * this returns: its wait status, CHECK_TIMEOUT or CHECK_TOO_BIG. */
static int check_run(const char *check, char **envp, int err, int ex, int64_t deadline,
		     char *out, size_t *len)
{
	int p[2], st = CHECK_TIMEOUT, big = 0, exited = 0, open_out = 1, pidfd;
	struct pollfd pfd[3];
	siginfo_t si;
	int64_t left;
	nfds_t n;
	pid_t pid;

	/* only wsfilter's end is non-blocking: the check writes as usual */
	if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0 ||
	    (pid = fork()) < 0)
		prog_child_fail(ex);
	if (pid == 0)
		check_exec(check, envp, p[1], err);
	(void)setpgid(pid, pid);
	close(p[1]);
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	*len = 0;
	while ((!exited || open_out) && !big && (left = deadline - now_ms()) > 0) {
		n = 0;
		pfd[n++] = (struct pollfd){ ex, 0, 0 }; /* POLLERR: no reader left */
		if (open_out)
			pfd[n++] = (struct pollfd){ p[0], POLLIN, 0 };
		if (!exited && pidfd >= 0)
			pfd[n++] = (struct pollfd){ pidfd, POLLIN, 0 };
		if (poll(pfd, n, (int)(pidfd < 0 && left > 20 ? 20 : left)) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		memset(&si, 0, sizeof si);
		if (!exited && waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid) {
			exited = 1;
			st = status_of(&si);
		}
		/* once it has exited, what its stdout holds is all there is */
		open_out = open_out && check_read(p[0], out, len, &big) && !exited;
	}
	(void)kill(-pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	close(p[0]);
	if (pidfd >= 0)
		close(pidfd);
	return big ? CHECK_TOO_BIG : !exited ? CHECK_TIMEOUT : st;
}

/* --dir: the route of the request's PATH_INFO, into file; its split into
 * SCRIPT_NAME and PATH_INFO in the block.  A refusal is reported. */
static size_t prog_route(const struct options *o, char *block, size_t got, size_t size,
			 char *file, size_t fsize, int ex)
{
	char path[HEAD_MAX], *pi = env_find(block, got, "PATH_INFO");
	size_t split = 0;
	enum why why;

	snprintf(path, sizeof path, "%s", pi ? pi + strlen("PATH_INFO=") : "/");
	why = route_find(o->dir, path, file, fsize, &split);
	if (why != W_NONE) {
		report_send(ex, REP_ROUTE, why, NULL, 0);
		_exit(EXIT_CLEAN);
	}
	got = env_drop(block, got, "SCRIPT_NAME");
	got = env_drop(block, got, "PATH_INFO");
	if (!env_append(block, &got, size, "SCRIPT_NAME", 11, path, split) ||
	    !env_append(block, &got, size, "PATH_INFO", 9, path + split, strlen(path + split))) {
		errno = E2BIG;
		prog_child_fail(ex);
	}
	return got;
}

/* --check, with the variables the program would get: its verdict is
 * reported; the child goes on only when it admits, with REMOTE_USER. */
static size_t prog_check(const struct options *o, char *block, size_t got, size_t size,
			 int err, int ex, int64_t deadline)
{
	char out[CHECK_OUT_MAX];
	struct check_answer a;
	size_t len = 0;
	char **envp = prog_environ(o, block, got);
	int st, detail;

	if (!envp)
		prog_child_fail(ex);
	st = check_run(o->check, envp, err, ex, deadline, out, &len);
	free(envp);
	report_send(ex, REP_CHECK, st, out, len);
	if (check_judge(st, out, len, &a, &detail) != W_NONE)
		_exit(EXIT_CLEAN);
	if (a.user.len && !env_append(block, &got, size, "REMOTE_USER", 11, a.user.p, a.user.len)) {
		errno = E2BIG;
		prog_child_fail(ex);
	}
	return got;
}

/* The child, forked before the sandbox and not under it, in its own
 * process group from the fork on: it waits for the check's deadline and
 * the request's environment (EOF before them: no handshake, no program;
 * a spare's child waits from before its connection), finds the --dir
 * route, runs
 * the --check, then runs the program, stdin, stdout and stderr on the
 * pipes, every other descriptor closed but fd 3, the report pipe (close
 * on exec: its EOF after the report tells wsfilter that the exec
 * succeeded).  It dies with wsfilter (SIGKILL), however wsfilter ends. */
static void prog_child(const struct options *o, const int fds[5], pid_t parent)
	__attribute__((noreturn));

static void prog_child(const struct options *o, const int fds[5], pid_t parent)
{
	static char block[ENV_MAX + 512], file[PATH_MAX];
	extern char **environ;
	int in = fds[0], out = fds[1], err = fds[2], ctl = fds[3], ex = fds[4];
	char **envp, *argv[2] = { file, NULL };
	int64_t deadline;
	size_t got = 0;
	ssize_t r;

	(void)setpgid(0, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(EXIT_INTERNAL);
	/* the check's deadline first, then the environment */
	while (got < sizeof deadline && (r = read(ctl, block + got, sizeof deadline - got)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			prog_child_fail(ex);
		got += (size_t)r;
	}
	if (got < sizeof deadline)
		_exit(EXIT_CLEAN);
	memcpy(&deadline, block, sizeof deadline);
	got = 0;
	while (got < ENV_MAX && (r = read(ctl, block + got, ENV_MAX - got)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			prog_child_fail(ex);
		got += (size_t)r;
	}
	if (got == 0)
		_exit(EXIT_CLEAN);
	if (o->dir)
		got = prog_route(o, block, got, sizeof block, file, sizeof file, ex);
	if (o->check)
		got = prog_check(o, block, got, sizeof block, err, ex, deadline);
	if (!o->runs)
		_exit(EXIT_CLEAN); /* the check admitted: the built-in filter serves */
	/* above 2, so that the dup2()s below leave it alone */
	if ((r = fcntl(ex, F_DUPFD_CLOEXEC, 3)) < 0)
		prog_child_fail(ex);
	ex = (int)r;
	child_signals();
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 ||
	    (ex != 3 && dup3(ex, 3, O_CLOEXEC) < 0))
		prog_child_fail(ex);
	closefrom(4);
	ex = 3;
	if (!(envp = prog_environ(o, block, got)))
		prog_child_fail(ex);
	environ = envp;
	if (o->dir)
		execv(file, argv);
	else
		execvp(o->program[0], o->program);
	prog_child_fail(ex);
}

static void fd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Before the sandbox: the pipes and the waiting child, in its own
 * process group (recorded in *pgid_slot, when there is one).  drop: a
 * descriptor of ours the child must not keep, or -1.  On failure (out of
 * descriptors or processes) w->err says why, and the request gets 503
 * once it asks for the program. */
static void prog_prepare(struct waiter *w, const struct options *o, pid_t *pgid_slot, int drop)
{
	int p[5][2], i, made;
	pid_t pid, self = getpid();

	memset(w, 0, sizeof *w);
	/* stdin, stdout, stderr, the environment, the exec report */
	for (made = 0; made < 5 && pipe2(p[made], O_CLOEXEC) == 0; made++)
		;
	pid = made == 5 ? fork() : -1;
	if (pid < 0) {
		w->err = errno;
		for (i = 0; i < made; i++) {
			close(p[i][0]);
			close(p[i][1]);
		}
		return;
	}
	if (pid == 0) {
		/* only the parent may write: EOF must come when it closes */
		close(p[0][1]);
		close(p[1][0]);
		close(p[2][0]);
		close(p[3][1]);
		close(p[4][0]);
		if (drop >= 0)
			close(drop);
		int fds[5] = { p[0][0], p[1][1], p[2][1], p[3][0], p[4][1] };

		prog_child(o, fds, self);
	}
	/* its own group from here on, whichever of the two runs first */
	(void)setpgid(pid, pid);
	if (pgid_slot)
		*pgid_slot = pid;
	close(p[0][0]);
	close(p[1][1]);
	close(p[2][1]);
	close(p[3][0]);
	close(p[4][1]);
	w->pid = pid;
	w->ctl = p[3][1];
	w->in = p[0][1];
	w->out = p[1][0];
	w->err_fd = p[2][0];
	w->exec = p[4][0];
}

/* The waiting child's ends, made the connection's. */
static void prog_attach(struct conn *c, const struct waiter *w)
{
	int i;

	if (!w->pid) {
		c->k.prog_errno = w->err;
		return;
	}
	c->prog_pid = (int)w->pid;
	c->prog_ctl = w->ctl;
	c->ep[EP_PROG_IN].fd = w->in;
	c->ep[EP_PROG_OUT].fd = w->out;
	c->ep[EP_PROG_ERR].fd = w->err_fd;
	c->ep[EP_PROG_EXEC].fd = w->exec;
	for (i = EP_PROG_EXEC; i <= EP_PROG_ERR; i++)
		fd_nonblock(c->ep[i].fd);
}

/* The request is accepted: hand the child the check's deadline (before
 * the 101's) and the environment; EOF starts it. */
static void prog_start(struct conn *c)
{
	int64_t hs = c->k.opt->hs_timeout * 1000;
	int64_t deadline = c->k.start_ms + hs - (hs / 4 < 250 ? hs / 4 : 250);

	if (c->prog_ctl < 0 || !c->k.prog_go)
		return;
	(void)!write(c->prog_ctl, &deadline, sizeof deadline);
	(void)!write(c->prog_ctl, c->k.env, c->k.env_len);
	close(c->prog_ctl);
	c->prog_ctl = -1;
}

static void ep_close(struct conn *c, int i)
{
	if (c->ep[i].fd >= 0)
		close(c->ep[i].fd);
	c->ep[i].fd = -1;
	if (i == EP_PROG_IN)
		c->k.pin_closed = 1; /* the core drops its input from now on */
}

/* What became of the request in the waiting child: its report, then EOF. */
static void prog_exec_read(struct conn *c)
{
	ssize_t n = read(c->ep[EP_PROG_EXEC].fd, c->rep + c->rep_len, sizeof c->rep - c->rep_len);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && c->rep_len + (size_t)n < sizeof c->rep) {
		c->rep_len += (size_t)n;
		return;
	}
	ep_close(c, EP_PROG_EXEC);
	if (n != 0) { /* more than a report holds, or a broken pipe */
		if (c->k.state == CS_STARTING)
			conn_end(&c->k, W_PROG_EXEC, EIO);
		return;
	}
	c->prog_ran = prog_report(&c->k, c->rep, c->rep_len) && c->k.opt->runs;
	if (!c->k.opt->runs) { /* only the check ran: its stderr may still come */
		ep_close(c, EP_PROG_IN);
		ep_close(c, EP_PROG_OUT);
	}
}

/* Write what is queued for its stdin; returns the bytes written. */
static size_t prog_write(struct conn *c)
{
	ssize_t n;

	if (c->ep[EP_PROG_IN].fd < 0 || !c->k.pin_len)
		return 0;
	n = write(c->ep[EP_PROG_IN].fd, c->k.pin + c->k.pin_off, c->k.pin_len);
	if (n > 0) {
		c->k.pin_off += (size_t)n;
		c->k.pin_len -= (size_t)n;
		if (!c->k.pin_len)
			c->k.pin_off = 0;
		return (size_t)n;
	}
	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		ep_close(c, EP_PROG_IN); /* it closed its stdin: drop its input */
		c->k.pin_off = c->k.pin_len = 0;
	}
	return 0;
}

/* Read its stdout into the buffer the core frames from.  Once nothing
 * more can be sent (the connection's end is decided), what it writes is
 * read and dropped.  After the cut, only what the pipe held then. */
static void prog_read(struct conn *c)
{
	size_t room;
	ssize_t n;

	if (c->k.state != CS_OPEN)
		c->k.pout_off = c->k.pout_len = 0;
	room = buf_room(c->k.pout, &c->k.pout_off, c->k.pout_len);
	if (c->pout_cap >= 0 && (long long)room > c->pout_cap)
		room = (size_t)c->pout_cap;
	n = room ? read(c->ep[EP_PROG_OUT].fd, c->k.pout + c->k.pout_len, room) : 0;
	if (n > 0) {
		if (c->k.state == CS_OPEN)
			c->k.pout_len += (size_t)n;
		if (c->pout_cap >= 0)
			c->pout_cap -= n;
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || !c->pout_cap) {
		ep_close(c, EP_PROG_OUT);
		c->k.prog_eof = 1;
	}
}

/* Each line of its stderr becomes a log line, never client bytes. */
static void prog_err_read(struct conn *c)
{
	char line[ERR_LINE_MAX];
	ssize_t n = read(c->ep[EP_PROG_ERR].fd, c->perr + c->perr_len,
			 sizeof c->perr - 1 - c->perr_len);
	char *nl;
	size_t k;

	if (n > 0)
		c->perr_len += (size_t)n;
	else if (n == 0 || (errno != EAGAIN && errno != EINTR))
		ep_close(c, EP_PROG_ERR);
	while (c->perr_len) {
		nl = memchr(c->perr, '\n', c->perr_len);
		if (!nl && c->perr_len < sizeof c->perr - 1 && c->ep[EP_PROG_ERR].fd >= 0)
			break;
		k = nl ? (size_t)(nl - c->perr) : c->perr_len;
		sanitize(line, sizeof line, c->perr, k);
		log_line("%s program: %s", c->k.peer, line);
		k += nl ? 1 : 0;
		memmove(c->perr, c->perr + k, c->perr_len - k);
		c->perr_len -= k;
	}
}

/* Whether it has exited, without reaping it: while its zombie stands,
 * no other process group can take its group's id, so that prog_end
 * signals nothing but what is left of its own. */
static void prog_poll_exit(struct conn *c)
{
	siginfo_t si;

	if (!c->prog_pid || c->prog_exited)
		return;
	memset(&si, 0, sizeof si);
	if (waitid(P_PID, (id_t)c->prog_pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || !si.si_pid)
		return;
	c->prog_exited = 1;
	c->prog_status = status_of(&si);
}

/* Its side is done: it exited, and its stdout and stderr have ended.  A
 * program that never ran has nothing to wait for. */
static int prog_finished(const struct conn *c)
{
	if (!c->prog_pid || !c->prog_ran)
		return 1;
	return c->prog_exited && c->ep[EP_PROG_OUT].fd < 0 && c->ep[EP_PROG_ERR].fd < 0;
}

/* The bytes its pipe holds now: all that is still read of it. */
static long long pipe_held(int fd)
{
	int n = 0;

	return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0 ? n : 0;
}

/* Its input's end, and the stop steps that bound the rest.  The input
 * ends with the client's close or EOF, a stop signal, the connection's
 * end, or its own exit; its stdin closes once what is queued for it is
 * written (or at the first step).  Then, --grace apart, while its side is
 * not finished: SIGTERM to its group, SIGKILL, and the cut: its stdout
 * and stderr are read up to what they hold and closed (a process outside
 * the group may still hold them). */
static void prog_tend(struct conn *c, int64_t now)
{
	int64_t grace = c->k.opt->grace * 1000;

	if (!c->prog_pid)
		return;
	if (c->k.state >= CS_LINGER && c->prog_ctl >= 0) {
		close(c->prog_ctl); /* never started: the child exits */
		c->prog_ctl = -1;
	}
	if (!c->prog_ran)
		return;
	if (!c->input_end && (c->k.peer_closed || c->k.stopping || c->k.state >= CS_LINGER ||
			      c->prog_exited || c->ep[EP_CLIENT_IN].fd < 0)) {
		c->input_end = now;
		c->stop_at = now + grace;
	}
	if (!c->input_end)
		return;
	if (!c->k.pin_len || c->stop_step)
		ep_close(c, EP_PROG_IN);
	if (prog_finished(c)) {
		c->stop_at = 0;
		return;
	}
	while (c->stop_at && now >= c->stop_at) {
		c->stop_step++;
		c->stop_at = c->stop_step < 3 ? c->stop_at + grace : 0;
		if (c->stop_step < 3) {
			(void)kill(-c->prog_pid, c->stop_step == 1 ? SIGTERM : SIGKILL);
			continue;
		}
		c->pout_cap = pipe_held(c->ep[EP_PROG_OUT].fd);
		if (!c->pout_cap)
			ep_close(c, EP_PROG_OUT);
		c->k.prog_eof = c->ep[EP_PROG_OUT].fd < 0;
		if (c->ep[EP_PROG_ERR].fd >= 0)
			prog_err_read(c);
		ep_close(c, EP_PROG_ERR);
	}
}

/* The connection is over: SIGKILL to whatever is left of its group,
 * then reap it.  A child whose report never came may be waiting for its
 * check: the report pipe's end tells it to kill the check's group, which
 * it does at once; it has up to half a second before its own SIGKILL. */
static void prog_end(struct conn *c)
{
	struct timespec tick = { 0, 10 * 1000000 };
	siginfo_t si;
	int i;

	if (!c->prog_pid)
		return;
	if (c->ep[EP_PROG_EXEC].fd >= 0 && c->k.opt->check) {
		ep_close(c, EP_PROG_EXEC);
		for (i = 0; i < 50; i++) {
			memset(&si, 0, sizeof si);
			if (waitid(P_PID, (id_t)c->prog_pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid)
				break;
			(void)ppoll(NULL, 0, &tick, NULL);
		}
	}
	(void)kill(-c->prog_pid, SIGKILL);
	while (waitid(P_PID, (id_t)c->prog_pid, &si, WEXITED) < 0 && errno == EINTR)
		;
	if (c->pgid_slot)
		*c->pgid_slot = 0;
	c->prog_pid = 0;
}

/* How the program's end ends the connection. */
static enum why prog_why(int status, int *detail)
{
	if (WIFSIGNALED(status)) {
		*detail = WTERMSIG(status);
		return W_PROG_KILLED;
	}
	*detail = WEXITSTATUS(status);
	return *detail ? W_PROG_EXIT : W_PROG_DONE;
}

/* ==== I/O loop ========================================================= */

static void client_read(struct conn *c, int64_t now)
{
	struct endpoint *ep = &c->ep[EP_CLIENT_IN];
	ssize_t n;

	if (c->k.state == CS_LINGER) {
		c->k.in_off = c->k.in_len = 0; /* past the end: input is dropped */
	} else if (c->k.in_off) {
		memmove(c->k.in, c->k.in + c->k.in_off, c->k.in_len - c->k.in_off);
		c->k.in_len -= c->k.in_off;
		c->k.in_off = 0;
	}
	n = read(ep->fd, c->k.in + c->k.in_len, IN_BUF_SIZE - c->k.in_len);
	if (n > 0 && c->k.state == CS_LINGER) {
		/* read only so that closing does not reset the connection
		 * and destroy our last bytes, and so that a client blocked
		 * sending gets to read them.  One that keeps sending gets
		 * no more of our time: past DISCARD_MAX it is no longer
		 * read, and has the close timeout to take what is queued
		 * (send_limit) */
		c->k.discarded += (size_t)n;
		if (c->k.discarded > DISCARD_MAX && !c->k.out_len)
			c->k.state = CS_DONE;
	} else if (n > 0) {
		c->k.in_len += (size_t)n;
		c->k.last_rx_ms = now;
	} else if (n == 0) {
		ep->fd = -1;
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		/* reset: nothing more can be read or written; conn_settle
		 * says what it means */
		ep->fd = -1;
		c->ep[EP_CLIENT_OUT].fd = -1;
	}
}

/* How a client that is gone without a close left. */
static enum why left_why(const struct core *c)
{
	if (c->state == CS_HANDSHAKE)
		return c->in_len ? W_LEFT_IN_HEAD : W_LEFT_EARLY;
	return c->frame.active ? W_LEFT_MID_PAYLOAD : c->in_len > c->in_off ? W_LEFT_MID_FRAME : W_LEFT;
}

/* Write what is queued; returns the bytes written. */
static size_t client_write(struct conn *c, int64_t now)
{
	struct endpoint *ep = &c->ep[EP_CLIENT_OUT];
	ssize_t n;

	if (ep->fd < 0 || !c->k.out_len)
		return 0;
	n = write(ep->fd, c->k.out + c->k.out_off, c->k.out_len);
	if (n > 0) {
		out_consume(&c->k, (size_t)n);
		c->k.send_since = c->k.out_len ? now : 0;
		if (!c->out_socket) /* a pipe: what is written is taken */
			c->k.acked_total = c->k.acked_mark = c->k.written_total;
		return (size_t)n;
	}
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		ep->fd = -1; /* the client is gone: conn_settle says how */
	return 0;
}

/* What the client has taken of what was written: written bytes minus
 * those still in the socket's send queue (SIOCOUTQ; all of them for a
 * pipe, where nothing else can be known). */
static void client_acked(struct conn *c)
{
	int fd = c->ep[EP_CLIENT_OUT].fd, q = 0;

	if (fd < 0 || !c->out_socket || ioctl(fd, SIOCOUTQ, &q) < 0 || q < 0)
		q = 0;
	c->k.acked_total = c->k.written_total - ((uint64_t)q < c->k.written_total ? (uint64_t)q : c->k.written_total);
}

/* Test builds only, once the 101 is queued and before it is written: a
 * call outside the allow-list proves the kill (WSFILTER_TEST_FORBIDDEN); a
 * _FORTIFY_SOURCE failure (the peer's name into 4 bytes) must die by
 * SIGABRT with its message logged (WSFILTER_TEST_ABORT). */
static void test_hooks(struct conn *c)
{
#if defined(WSFILTER_TEST_FORBIDDEN) || defined(WSFILTER_TEST_ABORT)
	static int done;

	if (done || c->k.state != CS_OPEN)
		return;
	done = 1;
#ifdef WSFILTER_TEST_FORBIDDEN
	(void)!open("/dev/null", O_RDONLY);
#endif
#ifdef WSFILTER_TEST_ABORT
	{
		char small[4];
		const char *volatile src = c->k.peer;

		strcpy(small, src);
		c->k.peer[0] = small[0];
	}
#endif
#else
	(void)c;
#endif
}

/* Feed the core and write what it queues until neither moves.  Never
 * wait in poll while input that could be processed is buffered: no new
 * byte may ever come to wake us. */
static void conn_pump(struct conn *c, int64_t now)
{
	for (;;) {
		if (c->k.state == CS_HANDSHAKE || c->k.state == CS_OPEN)
			conn_process(&c->k, now);
		test_hooks(c);
		if (!(client_write(c, now) + prog_write(c)) ||
		    (c->k.in_off == c->k.in_len && !c->k.pout_len) ||
		    (c->k.state != CS_HANDSHAKE && c->k.state != CS_OPEN))
			break;
	}
}

/* The program's output has ended and is queued: the answer to the
 * client's close, the 1001 of a stop, or the close its exit earned (once
 * it has exited). */
static void prog_settle(struct conn *c)
{
	enum why why;
	int detail;

	if (c->k.state != CS_OPEN || !c->prog_ran || !c->k.prog_eof || c->k.pout_len ||
	    c->k.pmsg_open)
		return;
	why = prog_why(c->prog_status, &detail);
	if (c->k.peer_closed)
		close_answer(&c->k);
	else if (c->k.stopping)
		conn_end(&c->k, W_SIGNAL, 0);
	else if (c->prog_exited)
		conn_end(&c->k, why, detail);
}

/* What the ends of the streams mean.  The client's EOF with room to spare
 * leaves an incomplete head or frame that will never be completed; output
 * that can no longer be written means a reset.  Once the end is decided
 * and the last byte written, our side is shut down (RFC 6455 7.1.1: the
 * server closes the TCP connection first) and the close timeout runs
 * until the client's EOF. */
static void conn_settle(struct conn *c, int64_t now)
{
	struct endpoint *in = &c->ep[EP_CLIENT_IN], *out = &c->ep[EP_CLIENT_OUT];

	if (c->k.state == CS_HANDSHAKE || c->k.state == CS_STARTING || c->k.state == CS_OPEN) {
		/* after its close, the client may shut its side down; what
		 * it sent before its EOF waits for the program's exec */
		if (in->fd < 0 && out_room(&c->k) >= OUT_FRAME_MIN && !c->k.peer_closed &&
		    c->k.state != CS_STARTING)
			conn_end(&c->k, left_why(&c->k), 0);
		else if (out->fd < 0)
			conn_end(&c->k, W_RESET, 0);
	}
	if (c->k.state == CS_LINGER && out->fd < 0 && c->k.out_len)
		c->k.state = CS_DONE; /* a write failed: nothing more will go out */
	if (c->k.state == CS_LINGER && !c->k.linger_deadline && (!c->k.out_len || out->fd < 0)) {
		if (out->fd >= 0 && shutdown(out->fd, SHUT_WR) < 0 && !c->shared)
			close(out->fd); /* a pipe: closing it is the EOF */
		out->fd = -1;
		c->k.linger_deadline = now + c->k.opt->close_timeout * 1000;
		c->k.discarded = 0; /* a budget again while waiting for EOF */
	}
	if (c->k.state == CS_LINGER && in->fd < 0 && out->fd < 0)
		c->k.state = CS_DONE;
	/* the send clock runs while output waits */
	if (!c->k.out_len || out->fd < 0)
		c->k.send_since = 0;
	else if (!c->k.send_since)
		c->k.send_since = now;
}

/* The poll set: every endpoint still open that waits for something.
 * which[k] says whose pfd[k] is. */
static nfds_t conn_pollset(struct conn *c, struct pollfd *pfd, int *which)
{
	nfds_t n = 0;
	int i;

	c->ep[EP_CLIENT_IN].events = (c->k.state == CS_LINGER ? c->k.discarded <= DISCARD_MAX :
				      c->k.in_len < IN_BUF_SIZE || c->k.in_off) ? POLLIN : 0;
	c->ep[EP_CLIENT_OUT].events = c->k.out_len ? POLLOUT : 0;
	c->ep[EP_PROG_IN].events = c->k.pin_len ? POLLOUT : 0;
	/* its output waits in the pipe until the 101 is queued */
	c->ep[EP_PROG_OUT].events = c->k.state == CS_STARTING ? 0 :
				    c->k.pout_len < PIPE_BUF_SIZE || c->k.state != CS_OPEN ? POLLIN : 0;
	c->ep[EP_PROG_EXEC].events = POLLIN;
	c->ep[EP_PROG_ERR].events = POLLIN;
	c->ep[EP_PARENT].events = POLLIN;
	if (c->k.state == CS_DONE) /* only the program is left to wait for */
		c->ep[EP_CLIENT_IN].events = c->ep[EP_CLIENT_OUT].events = 0;
	for (i = 0; i < EP_COUNT; i++) {
		if (c->ep[i].fd < 0 || !c->ep[i].events)
			continue;
		pfd[n] = (struct pollfd){ c->ep[i].fd, c->ep[i].events, 0 };
		which[n++] = i;
	}
	return n;
}

/* The acceptor is gone (killed, or it crashed): end as on a stop signal.
 * Nothing is ever written to that pipe; its EOF is the news. */
static void parent_gone(struct conn *c)
{
	ep_close(c, EP_PARENT);
	stop_signal++;
}

/* An endpoint poll reported: move its bytes.  POLLHUP and POLLERR are
 * found out by the read or write itself; POLLNVAL is a bug. */
static void ep_ready(struct conn *c, int ep, short revents, int64_t now)
{
	if (revents & POLLNVAL) {
		conn_end(&c->k, W_BAD_FD, 0);
		return;
	}
	switch (ep) {
	case EP_CLIENT_IN:  client_read(c, now); break;
	case EP_CLIENT_OUT: client_write(c, now); break;
	case EP_PROG_EXEC:  prog_exec_read(c); break;
	case EP_PROG_IN:    prog_write(c); break;
	case EP_PROG_OUT:   prog_read(c); break;
	case EP_PROG_ERR:   prog_err_read(c); break;
	case EP_PARENT:     parent_gone(c); break;
	}
}

/* A stop signal.  The first: what is already decided stands (an ending
 * under way still writes what it queued); else the replies already
 * produced go first, then close 1001: with a program, once its output
 * has ended (its stdin ends now).  Before the 101, a request waiting
 * for its program gets 503; before a request, wsfilter goes at once.
 * Any further signal: go now, and the program's group with it. */
static void conn_stop(struct conn *c, int first)
{
	if (!first) {
		conn_end(&c->k, W_SIGNAL_EARLY, 0);
		if (c->prog_ran && c->stop_step < 2) {
			(void)kill(-c->prog_pid, SIGKILL);
			c->input_end = c->input_end ? c->input_end : c->k.now;
			c->stop_step = 2;
			c->stop_at = c->k.now;
		}
		return;
	}
	switch (c->k.state) {
	case CS_HANDSHAKE:
		conn_end(&c->k, W_SIGNAL_EARLY, 0);
		break;
	case CS_STARTING:
		conn_end(&c->k, W_SIGNAL_STARTING, 0);
		break;
	case CS_OPEN:
		if (c->prog_ran)
			c->k.stopping = 1;
		else
			conn_end(&c->k, W_SIGNAL, 0);
		break;
	case CS_LINGER:
	case CS_DONE:
		break;
	}
}

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		child_signal = 1;
	else
		stop_signal++;
}

/* One step of a connection between waits: signals, timers, the ends of
 * the streams, the program.  Returns 1 when the connection is done. */
static int conn_step(struct conn *c, int64_t now, int *handled)
{
	c->k.now = now;
	if (stop_signal != *handled) {
		conn_stop(c, *handled == 0);
		*handled = stop_signal;
	}
	if (child_signal) {
		child_signal = 0;
		prog_poll_exit(c);
	}
	if (conn_wants_acked(&c->k, now))
		client_acked(c);
	conn_expire(&c->k, now);
	prog_settle(c);
	conn_settle(c, now);
	prog_start(c);
	prog_tend(c, now);
	/* the one rule: the client's side is done, and the program's */
	if (c->k.state != CS_DONE || !prog_finished(c))
		return 0;
	prog_end(c);
	return 1;
}

/* ppoll until an endpoint is ready, a signal comes, or the deadline next
 * (ms of CLOCK_MONOTONIC; 0: none); signals are let in only here.  A
 * deadline already due polls with a zero timeout. */
static int wait_for(struct pollfd *pfd, nfds_t n, int64_t now, int64_t next,
		    const sigset_t *run_mask)
{
	int64_t wait = next > now ? next - now : 0;
	struct timespec ts = { (time_t)(wait / 1000), (long)(wait % 1000) * 1000000 };

	return ppoll(pfd, n, next ? &ts : NULL, run_mask);
}

/* The loop of one connection: act on signals and timers, wait for the
 * endpoints, move bytes.  Returns when the connection is done. */
static void conn_run(struct conn *c, const sigset_t *run_mask)
{
	struct pollfd pfd[EP_COUNT];
	int which[EP_COUNT], handled = 0;
	int64_t now, next;
	nfds_t n, k;

	for (;;) {
		now = now_ms();
		if (conn_step(c, now, &handled))
			break;
		n = conn_pollset(c, pfd, which);
		next = earliest(conn_deadline(&c->k), c->stop_at);
		/* an endpoint or a timer always remains: the handshake, send,
		 * close and keepalive timers cover every state; else the
		 * program is left, whose end is a signal */
		assert(n > 0 || next > 0 || (c->prog_pid && !c->prog_exited));
		if (wait_for(pfd, n, now, next, run_mask) < 0) {
			if (errno != EINTR && errno != EAGAIN)
				conn_end(&c->k, W_POLL, 0);
			continue;
		}
		now = now_ms();
		for (k = 0; k < n; k++)
			if (pfd[k].revents)
				ep_ready(c, which[k], pfd[k].revents, now);
		conn_pump(c, now);
	}
}

/* ==== The acceptor's gate ============================================= */

/* The acceptor's parent accepts, forks, reaps and signals; its children
 * must do none of that, and each used to install a filter of its own over
 * the parent's to forbid it.  Installing a filter costs a connection more
 * than anything else it does after the fork (the kernel compiles it, and
 * frees it at the exit).  The gate forbids it without a second filter.
 *
 * The parent makes those calls (accept4, clone, wait4, kill, getrandom,
 * socketpair, sendmsg)
 * through one syscall instruction, the last of a page of wsfilter's code
 * that is given to no child (MADV_DONTFORK); the instruction after it, a
 * ret, begins the next page.  The parent's filter allows those calls only
 * when the instruction pointer the kernel reports (the address after the
 * syscall) is that page boundary.  A child has the page after it but not
 * the page with the syscall, and nothing that could put code there (no
 * mmap, mprotect, mremap, ptrace or open in its filter), so it cannot
 * make the calls from there or anywhere else: it runs under the parent's
 * filter alone, which is then exactly the connection's.  A child's clone
 * returns at the boundary too: to the ret, in the page it does have.
 *
 * A spare (a child forked ahead of its connection: see the acceptor)
 * takes its connection's socket from the parent with recvmsg, which no
 * connection may make.  It makes it through a second gate, the same stub
 * ending the page that the first gate's ret begins, and then unmaps that
 * page through that gate, before it reads a byte of its client: from then
 * on it has neither.  The filter allows recvmsg, and munmap of that page,
 * from the second gate alone.  The parent has that page too and could
 * make those two calls through it; it never does, and they give it
 * nothing its own gate does not.
 *
 * x86_64 only; elsewhere, or when the page cannot be withheld, each child
 * installs the connection's filter over its parent's as before. */
#if defined(__x86_64__) && !defined(__ILP32__) && defined(__linux__)
#define GATE_PAGE 4096
/* long gate(nr, a, b, c, d, e): the arguments moved to the kernel's
 * registers, then the syscall at END, whose 2 bytes end the page: a
 * shorter stub slides to it on NOPs, a longer one does not assemble */
#define GATE_STUB(end) \
	"endbr64\n" \
	"mov %rdi, %rax\n" \
	"mov %rsi, %rdi\n" \
	"mov %rdx, %rsi\n" \
	"mov %rcx, %rdx\n" \
	"mov %r8, %r10\n" \
	"mov %r9, %r8\n" \
	".org " end " - 2, 0x90\n" \
	"syscall\n"
__asm__(".pushsection .text.wsfilter_gate, \"ax\", @progbits\n"
	".balign 4096\n"
	".globl wsfilter_gate_page, wsfilter_gate, wsfilter_gate_end\n"
	".hidden wsfilter_gate_page, wsfilter_gate, wsfilter_gate_end\n"
	"wsfilter_gate_page:\n"
	".fill 4096 - 24, 1, 0xcc\n"          /* int3: nothing else lives here */
	"wsfilter_gate:\n"
	GATE_STUB("wsfilter_gate_page + 4096")
	"wsfilter_gate_end:\n"                  /* the next page */
	"ret\n"
	/* the spare's gate, the same stub at the end of that page */
	".globl wsfilter_spare_gate, wsfilter_spare_gate_end\n"
	".hidden wsfilter_spare_gate, wsfilter_spare_gate_end\n"
	".fill 4096 - 1 - 24, 1, 0xcc\n"
	"wsfilter_spare_gate:\n"
	GATE_STUB("wsfilter_gate_page + 2 * 4096")
	"wsfilter_spare_gate_end:\n"            /* the third page */
	"ret\n"
	".popsection\n");
extern const char wsfilter_gate_page[], wsfilter_gate[], wsfilter_gate_end[];
extern const char wsfilter_spare_gate[], wsfilter_spare_gate_end[];
#endif

static long (*gate_fn)(long, long, long, long, long, long);
static uintptr_t gate_ip;      /* the address the kernel reports for it; 0: none */
static long (*spare_gate_fn)(long, long, long, long, long, long);
static uintptr_t spare_gate_ip; /* the same for the spare's gate */
static uintptr_t spare_gate_page; /* its page, which a spare unmaps */

/* Set up the gate: 0, or -1 when this build or system has none. */
static int gate_open(void)
{
#if defined(GATE_PAGE) && !defined(WSFILTER_TEST_NO_GATE)
	uintptr_t page = (uintptr_t)wsfilter_gate_page, end = (uintptr_t)wsfilter_gate_end;

	if (page % GATE_PAGE || end != page + GATE_PAGE ||
	    (uintptr_t)wsfilter_spare_gate_end != end + GATE_PAGE ||
	    sysconf(_SC_PAGESIZE) != GATE_PAGE ||
	    madvise((void *)page, GATE_PAGE, MADV_DONTFORK) < 0)
		return -1;
	gate_fn = (long (*)(long, long, long, long, long, long))(uintptr_t)wsfilter_gate;
	gate_ip = end;
	spare_gate_fn = (long (*)(long, long, long, long, long, long))(uintptr_t)wsfilter_spare_gate;
	spare_gate_ip = end + GATE_PAGE;
	spare_gate_page = end;
	return 0;
#else
	return -1;
#endif
}

/* A call through a gate fn when it is open, else as libc makes it.
 * -1 and errno on failure, as syscall(2). */
static long gate_through(long (*fn)(long, long, long, long, long, long),
			 long nr, long a, long b, long c, long d, long e)
{
	long r;

	if (!fn)
		return syscall(nr, a, b, c, d, e);
	r = fn(nr, a, b, c, d, e);
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

/* One of the acceptor's own calls (a child that tries its gate dies by
 * SIGSEGV: the page is not there). */
static long acc_call(long nr, long a, long b, long c, long d, long e)
{
	return gate_through(gate_fn, nr, a, b, c, d, e);
}

/* A spare's call, before it serves its connection: a child that tries
 * it later dies by SIGSEGV too. */
static long spare_call(long nr, long a, long b, long c, long d, long e)
{
	return gate_through(spare_gate_fn, nr, a, b, c, d, e);
}

/* ==== Sandbox ========================================================== */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif
#ifndef SANITIZER_BUILD
#define SANITIZER_BUILD 0
#endif

#if defined(__linux__) && defined(SECCOMP_MODE_FILTER)
#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define SECCOMP_ARCH AUDIT_ARCH_I386
#endif
#endif

#ifdef SECCOMP_ARCH
#define SC_RET(v)        BPF_STMT(BPF_RET | BPF_K, (v))
#define SC_LD(off)       BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define SC_JEQ(v, t, f)  BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f))
/* the low and high halves of argument i (seccomp_data is little-endian
 * on every architecture listed above) */
#define SC_ARG(i, hi)    (offsetof(struct seccomp_data, args) + 8 * (i) + 4 * (hi))
#define SC_ALLOW(nr)     SC_JEQ((nr), 0, 1), SC_RET(SECCOMP_RET_ALLOW)
/* nr allowed only with argument i equal to v; else ret */
#define SC_ALLOW_IF(nr, i, v, ret) \
	SC_JEQ((nr), 0, 4), SC_LD(SC_ARG(i, 0)), SC_JEQ((v), 0, 1), \
	SC_RET(SECCOMP_RET_ALLOW), SC_RET(ret)
#define SC_KILL          SECCOMP_RET_KILL_PROCESS
#define SC_JGE(v, t, f)  BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (v), (t), (f))
#define SC_JGT(v, t, f)  BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, (v), (t), (f))
#define SC_NR            offsetof(struct seccomp_data, nr)
#define SC_IP            offsetof(struct seccomp_data, instruction_pointer)
#define SC_LEN(a)        (sizeof (a) / sizeof (a)[0])
#define SC_OFF           (~0u)  /* the value of an entry switched off */
#define SC_MAX           160    /* instructions in the table, at most */

/* the filter's parts, in order, each there or not */
struct sc_part {
	const struct sock_filter *f;
	size_t len;
	int on;
};

/* The table less its entries switched off.  An entry switched off
 * compares with SC_OFF (~0u) and on a match falls into a RET that a miss
 * skips.  Left in, it would match the one value it was meant never to
 * see: -1, a system call number that does not exist, or an argument
 * such as kill(-1, ...), which signals every process there is.  Each
 * such pair goes, unless a jump lands on its RET, and every jump over it
 * is shortened; a jump to it lands where its miss went.  The kernel then
 * also has fewer instructions to take in, check, compile and run.
 * Returns the new length. */
static unsigned short sc_compact(struct sock_filter *f, unsigned short n)
{
	unsigned short target[SC_MAX + 1] = { 0 }, at[SC_MAX + 1], i, k;
	unsigned char gone[SC_MAX + 1] = { 0 };

	/* every jump of the table is forward and lands in it (checked by
	 * the kernel too); one that would not is left alone here */
	for (i = 0; i < n; i++) {
		if (f[i].code == (BPF_JMP | BPF_JA)) {
			if (f[i].k >= (unsigned)(n - i))
				return n;
			target[i + 1 + f[i].k]++;
		} else if (BPF_CLASS(f[i].code) == BPF_JMP) {
			if (f[i].jt < n - i && f[i].jf < n - i)
				target[i + 1 + f[i].jt]++, target[i + 1 + f[i].jf]++;
			else
				return n;
		}
	}
	/* the RET is the pair's own match: no other jump may land there */
	for (i = 0; i + 1 < n; i++)
		if (f[i].code == (BPF_JMP | BPF_JEQ | BPF_K) && f[i].k == SC_OFF &&
		    f[i].jt == 0 && f[i].jf == 1 && BPF_CLASS(f[i + 1].code) == BPF_RET &&
		    target[i + 1] == 1)
			gone[i] = gone[i + 1] = 1, i++;
	/* at[i]: where instruction i (or, gone, the next one kept) lands */
	for (i = 0, k = 0; i <= n; i++) {
		at[i] = k;
		k += i < n && !gone[i];
	}
	for (i = 0; i < n; i++) {
		struct sock_filter x = f[i];

		if (gone[i])
			continue;
		if (x.code == (BPF_JMP | BPF_JA)) {
			x.k = at[i + 1 + x.k] - at[i] - 1;
		} else if (BPF_CLASS(x.code) == BPF_JMP) {
			x.jt = (unsigned char)(at[i + 1 + x.jt] - at[i] - 1);
			x.jf = (unsigned char)(at[i + 1 + x.jf] - at[i] - 1);
		}
		f[at[i]] = x;
	}
	return at[n];
}
#endif

/* The tight filter, in force whenever the loop runs: the loop's calls and
 * nothing else, so a bug exploited by a client cannot open files, sockets
 * or processes.  glibc's fatal paths (abort(), a _FORTIFY_SOURCE failure)
 * may still write their message to stderr when stderr is the log, and die
 * by SIGABRT rather than SIGSYS.  send(2) only on the syslog socket.
 *
 * The acceptor's parent has its own filter: the same calls, plus
 * accepting, forking, reaping and signalling its children (each alone:
 * no group, no -1), drawing their seeds and handing each its connection
 * (a Unix socket pair per spare, sendmsg).  With a gate (gate: the
 * address the kernel reports for its calls), those come from the gate
 * alone, a spare's recvmsg and munmap of its gate's page from the spare's
 * gate alone, and the children run under this filter as it is; without
 * one, from anywhere, and with prctl for a child to install the tight
 * filter over this one.  No open, no exec, no socket but a pair.
 * Returns 0 when the filter is on, -1 when this system cannot have it. */
static int sandbox_enter(int log_fd, int stderr_is_log, int child, int acceptor, uintptr_t gate)
{
#ifdef SECCOMP_ARCH
	/* a call from another architecture's table: kill */
	static const struct sock_filter arch[] = {
		SC_LD(offsetof(struct seccomp_data, arch)),
		SC_JEQ(SECCOMP_ARCH, 1, 0),
		SC_RET(SC_KILL),
	};
	/* the acceptor's own calls: its children, and their seeds */
	static const struct sock_filter own[] = {
		SC_ALLOW(__NR_accept4),
		SC_ALLOW(__NR_clone),           /* acceptor_fork: no clone3 */
		SC_ALLOW(__NR_wait4),
		/* one child at a time: pid in 1..INT32_MAX (the low half
		 * is the pid_t), never a group, 0 or -1 */
		SC_JEQ(__NR_kill, 0, 5), SC_LD(SC_ARG(0, 0)),
		SC_JGE(1, 0, 2), SC_JGT(INT32_MAX, 1, 0),
		SC_RET(SECCOMP_RET_ALLOW), SC_RET(SC_KILL),
		SC_ALLOW(__NR_getrandom),       /* each child's seed */
		/* a spare's socket, and its connection sent on it */
		SC_ALLOW_IF(__NR_socketpair, 0, AF_UNIX, SC_KILL),
		SC_ALLOW(__NR_sendmsg),
	};
	/* ... from the gate alone: the instruction pointer is the gate's,
	 * both halves, else on to the table */
	const struct sock_filter from_gate[] = {
		SC_LD(SC_IP), SC_JEQ((uint32_t)gate, 0, 3 + SC_LEN(own)),
		SC_LD(SC_IP + 4), SC_JEQ((uint32_t)((uint64_t)gate >> 32), 0, 1 + SC_LEN(own)),
		SC_LD(SC_NR),
	};
	/* ... or, without a gate, from anywhere, and prctl for a child to
	 * install the tight filter over this one, and recvmsg for a spare
	 * to take its connection before it does */
	static const struct sock_filter from_anywhere[] = {
		SC_LD(SC_NR),
		SC_ALLOW(__NR_prctl),
		SC_ALLOW(__NR_recvmsg),
	};
	/* a spare's calls, from the spare's gate alone: its connection,
	 * then the end of that gate (its page) */
	const struct sock_filter spare_own[] = {
		SC_ALLOW(__NR_recvmsg),
		SC_ALLOW_IF(__NR_munmap, 0, (uint32_t)spare_gate_page, SC_KILL),
	};
	const struct sock_filter from_spare_gate[] = {
		SC_LD(SC_IP), SC_JEQ((uint32_t)spare_gate_ip, 0, 3 + SC_LEN(spare_own)),
		SC_LD(SC_IP + 4), SC_JEQ((uint32_t)((uint64_t)spare_gate_ip >> 32), 0,
					 1 + SC_LEN(spare_own)),
		SC_LD(SC_NR),
	};
	/* one table, read whole: the allow-list is the point */
	struct sock_filter f[] = {
		SC_LD(SC_NR),
		SC_ALLOW(__NR_read),            /* the client's bytes */
		SC_ALLOW(__NR_write),           /* replies; log lines to stderr */
		SC_ALLOW(__NR_ppoll),           /* the loop's one wait */
#ifdef __NR_poll
		SC_ALLOW(__NR_poll),            /* libc may route poll here */
#endif
		SC_ALLOW(__NR_shutdown),        /* our side done: FIN to the client */
		SC_ALLOW(__NR_close),           /* the same for a pipe */
		SC_ALLOW(__NR_clock_gettime),   /* timers, when the vDSO falls back */
		/* what the client has taken of our bytes (SIOCOUTQ); with a
		 * PROGRAM, what its pipes hold at the last stop step (FIONREAD) */
		SC_JEQ(__NR_ioctl, 0, 5), SC_LD(SC_ARG(1, 0)),
		SC_JEQ(SIOCOUTQ, 2, 0), SC_JEQ(child ? (uint32_t)FIONREAD : SIOCOUTQ, 1, 0),
		SC_RET(SC_KILL), SC_RET(SECCOMP_RET_ALLOW),
		/* a PROGRAM: its process group is signalled, its exit
		 * looked at and reaped (waitid on its pid alone),
		 * nothing else (no execve, no open: it was forked before) */
		SC_ALLOW_IF(__NR_kill, 0, child ? (uint32_t)-child : SC_OFF, SC_KILL),
		SC_ALLOW_IF(__NR_waitid, 1, child ? (uint32_t)child : SC_OFF, SC_KILL),
		SC_ALLOW(__NR_rt_sigreturn),    /* return from the stop-signal handler */
		SC_ALLOW(__NR_exit_group),      /* the end */
		SC_ALLOW(__NR_exit),
		/* abort(): unblock SIGABRT, then send it to ourselves */
		SC_ALLOW(__NR_rt_sigprocmask),
		SC_ALLOW(__NR_getpid),
		SC_ALLOW(__NR_gettid),
		SC_ALLOW_IF(__NR_tgkill, 2, SIGABRT, SC_KILL),
		/* glibc's "*** ... ***: terminated" message, and the page it
		 * would keep it in (it copes with ENOMEM) */
		SC_ALLOW_IF(__NR_writev, 0, stderr_is_log ? 2u : SC_OFF,
			    SECCOMP_RET_ERRNO | EPERM),
#ifdef __NR_mmap2
		SC_JEQ(__NR_mmap2, 0, 1), SC_RET(SECCOMP_RET_ERRNO | ENOMEM),
#else
		SC_JEQ(__NR_mmap, 0, 1), SC_RET(SECCOMP_RET_ERRNO | ENOMEM),
#endif
	};
	/* with a syslog socket: send(fd, buf, len, flags) on it, which is
	 * sendto(..., NULL, 0) */
	const struct sock_filter syslog_send[] = {
		SC_JEQ(__NR_sendto, 0, 8),
		SC_LD(SC_ARG(0, 0)), SC_JEQ((uint32_t)log_fd, 0, 5),
		SC_LD(SC_ARG(4, 0)), SC_JEQ(0, 0, 3),
		SC_LD(SC_ARG(4, 1)), SC_JEQ(0, 0, 1),
		SC_RET(SECCOMP_RET_ALLOW),
		SC_RET(SC_KILL),
	};
	static const struct sock_filter end[] = { SC_RET(SC_KILL) };
	const struct sc_part parts[] = {
		{ arch, SC_LEN(arch), 1 },
		{ from_gate, SC_LEN(from_gate), acceptor && gate },
		{ from_anywhere, SC_LEN(from_anywhere), acceptor && !gate },
		{ own, SC_LEN(own), acceptor },
		{ from_spare_gate, SC_LEN(from_spare_gate), acceptor && gate && spare_gate_ip },
		{ spare_own, SC_LEN(spare_own), acceptor && gate && spare_gate_ip },
		{ f, SC_LEN(f), 1 },
		{ syslog_send, SC_LEN(syslog_send), log_fd >= 0 },
		{ end, SC_LEN(end), 1 },
	};
	struct sock_filter all[SC_MAX];
	struct sock_fprog prog = { .filter = all };
	size_t i, n = 0;

	static_assert(sizeof arch + sizeof from_gate + sizeof from_anywhere + sizeof own +
		      sizeof from_spare_gate + sizeof spare_own +
		      sizeof f + sizeof syslog_send + sizeof end <= sizeof all,
		      "the filter is over SC_MAX");
	for (i = 0; i < SC_LEN(parts); i++) {
		if (!parts[i].on)
			continue;
		memcpy(all + n, parts[i].f, parts[i].len * sizeof *all);
		n += parts[i].len;
	}
	prog.len = sc_compact(all, (unsigned short)n);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -1;
	return 0;
#else
	(void)log_fd;
	(void)stderr_is_log;
	(void)child;
	(void)acceptor;
	(void)gate;
	errno = ENOSYS;
	return -1;
#endif
}

/* ==== Options and main ================================================= */

static const char usage_text[] =
	"usage: wsfilter [--echo] [--random-max N] [--origin ORIGIN]... [--protocol NAME]...\n"
	"                [--max-message BYTES] [--handshake-timeout S] [--idle-timeout S]\n"
	"                [--close-timeout S] [--ping-interval S] [--ping-timeout S]\n"
	"                [--send-timeout S] [--trust-proxy] [--log=auto|stderr|syslog|none]\n"
	"                [-q] [--sandbox=on|off|required] [--no-sandbox] [-h] [-V]\n"
	"                [--binary] [--clear-env] [--grace S] [--max-connections N]\n"
	"                [--max-per-source N] [--spares N] [--stop-timeout S]\n"
	"                [--idle-exit S]\n"
	"                [--dir DIR] [--check PROGRAM] [--sameorigin]\n"
	"                [--header 'NAME: VALUE']... [--] [PROGRAM [ARG...]]\n";

static const char help_text[] =
	"WebSocket (RFC 6455) server for one connection on stdin/stdout, started by a\n"
	"launcher (systemd Accept=yes, inetd, xinetd, tcpserver, socat ... EXEC:).\n"
	"Every message comes back followed by \" - N\" (N random); GET / serves a test page.\n"
	"With PROGRAM, each connection runs it: messages in are lines on its stdin, lines\n"
	"it writes are messages out, its stderr goes to the log.\n"
	"\n"
	"  --echo                 return every message unchanged\n"
	"  --random-max N         N is drawn from 1..N (default 1000)\n"
	"  --origin ORIGIN        accept only this Origin (repeatable; default: any)\n"
	"  --protocol NAME        accept this subprotocol (repeatable; client's order wins)\n"
	"  --max-message BYTES    close with 1009 above this size (default 0: unlimited)\n"
	"  --handshake-timeout S  seconds to receive the request head (default 10)\n"
	"  --idle-timeout S       close after S seconds without input (default 0: off)\n"
	"  --close-timeout S      seconds to wait for the client's EOF after our last\n"
	"                         byte is written (default 2)\n"
	"  --ping-interval S      keepalive ping every S seconds (default 20; 0: off)\n"
	"  --ping-timeout S       close with 1011 when no pong comes (default: interval)\n"
	"  --send-timeout S       a client that takes no byte of pending output for S\n"
	"                         seconds is gone (default: the ping timeout, or 20)\n"
	"  --trust-proxy          log X-Forwarded-For (only behind a proxy you run)\n"
	"  --log=WHERE            auto (default), stderr, syslog or none\n"
	"  -q, --quiet            same as --log=none\n"
	"  --sandbox=MODE         on (default: seccomp filter if the system has it),\n"
	"                         off, or required (refuse to run without it)\n"
	"  --no-sandbox           same as --sandbox=off\n"
	"  --binary               with PROGRAM: payloads to stdin as they are, its output\n"
	"                         as binary messages as it comes (no lines)\n"
	"  --clear-env            with PROGRAM: only the request's CGI variables in its\n"
	"                         environment, not wsfilter's\n"
	"  --grace S              with PROGRAM: once its input has ended, S seconds to\n"
	"                         end before SIGTERM to its group, S more before\n"
	"                         SIGKILL, S more for its output (default 2)\n"
	"  --dir DIR              instead of PROGRAM: the upgrade's path names the\n"
	"                         program, an executable file in DIR (longest match by\n"
	"                         whole segments; the rest is PATH_INFO); else 404\n"
	"  --check PROGRAM        before each 101, run PROGRAM with the request's CGI\n"
	"                         variables: exit 0 admits (\"Remote-User: NAME\" sets\n"
	"                         REMOTE_USER), 1 refuses (403, or its \"Status: 4NN\"\n"
	"                         and header lines), anything else is a 500\n"
	"  --sameorigin           refuse (403) an upgrade whose Origin is not the Host\n"
	"  --header 'NAME: VALUE' add this header to every answer (repeatable)\n"
	"Given a listening socket (systemd Accept=no, inetd wait), wsfilter accepts\n"
	"and forks one process per connection itself:\n"
	"  --max-connections N    at most N at once; more wait in the backlog (4096)\n"
	"  --spares N             processes forked ahead of their connection (default 1;\n"
	"                         0 with a PROGRAM, --dir or --check)\n"
	"  --max-per-source N     at most N from one address; more get 429 (0: off)\n"
	"  --stop-timeout S       on SIGTERM, wait S seconds for them, then kill (10)\n"
	"  --idle-exit S          exit after S seconds without one (0: never; the\n"
	"                         default, or 60 under inetd wait)\n"
	"  -h, --help             this help\n"
	"  -V, --version          the version\n"
	"\n"
	"Exit status: 0 clean close or page served, 1 internal error, 2 usage,\n"
	"3 client broke the protocol, 4 client left without a close, 5 timeout,\n"
	"6 the program could not be run, exited non-zero or was killed, or the\n"
	"admission check failed.\n";

enum {
	OPT_ECHO = 256, OPT_ORIGIN, OPT_PROTOCOL, OPT_TRUST_PROXY, OPT_LOG,
	OPT_NO_SANDBOX, OPT_SANDBOX, OPT_BINARY, OPT_CLEAR_ENV,
	OPT_DIR, OPT_CHECK, OPT_SAMEORIGIN, OPT_HEADER,
	OPT_NUMBER, /* a numeric option, from the table */
};

/* The numeric options: name, range, and where the value goes. */
static const struct numopt {
	const char *name;
	long long min, max;
	size_t off;
} numopts[] = {
	{ "random-max",        1, 1000000000000LL, offsetof(struct options, random_max) },
	{ "max-message",       0, 1LL << 62,       offsetof(struct options, max_message) },
	{ "handshake-timeout", 1, 86400,           offsetof(struct options, hs_timeout) },
	{ "idle-timeout",      0, 86400 * 365,     offsetof(struct options, idle_timeout) },
	{ "close-timeout",     0, 3600,            offsetof(struct options, close_timeout) },
	{ "ping-interval",     0, 86400,           offsetof(struct options, ping_interval) },
	{ "ping-timeout",      1, 86400,           offsetof(struct options, ping_timeout) },
	{ "send-timeout",      1, 86400,           offsetof(struct options, send_timeout) },
	{ "max-connections",   1, 1000000,         offsetof(struct options, max_conn) },
	{ "spares",            0, SPARES_MAX,      offsetof(struct options, spares) },
	{ "max-per-source",    0, 1000000,         offsetof(struct options, max_per_source) },
	{ "stop-timeout",      0, 3600,            offsetof(struct options, stop_timeout) },
	{ "grace",             0, 3600,            offsetof(struct options, grace) },
	{ "idle-exit",         0, 86400 * 365,     offsetof(struct options, idle_exit) },
};
#define NUMOPTS (sizeof numopts / sizeof numopts[0])

static const struct option flagopts[] = {
	{ "echo",        no_argument,       NULL, OPT_ECHO },
	{ "origin",      required_argument, NULL, OPT_ORIGIN },
	{ "protocol",    required_argument, NULL, OPT_PROTOCOL },
	{ "trust-proxy", no_argument,       NULL, OPT_TRUST_PROXY },
	{ "log",         required_argument, NULL, OPT_LOG },
	{ "quiet",       no_argument,       NULL, 'q' },
	{ "no-sandbox",  no_argument,       NULL, OPT_NO_SANDBOX },
	{ "sandbox",     required_argument, NULL, OPT_SANDBOX },
	{ "binary",      no_argument,       NULL, OPT_BINARY },
	{ "clear-env",   no_argument,       NULL, OPT_CLEAR_ENV },
	{ "dir",         required_argument, NULL, OPT_DIR },
	{ "check",       required_argument, NULL, OPT_CHECK },
	{ "sameorigin",  no_argument,       NULL, OPT_SAMEORIGIN },
	{ "header",      required_argument, NULL, OPT_HEADER },
	{ "help",        no_argument,       NULL, 'h' },
	{ "version",     no_argument,       NULL, 'V' },
};
#define FLAGOPTS (sizeof flagopts / sizeof flagopts[0])

static void options_init(struct options *o)
{
	memset(o, 0, sizeof *o);
	o->random_max = DEF_RANDOM_MAX;
	o->hs_timeout = DEF_HS_TIMEOUT;
	o->close_timeout = DEF_CLOSE_TIMEOUT;
	o->ping_interval = DEF_PING_INTERVAL;
	o->log = LOG_AUTO;
	o->sandbox = SANDBOX_ON;
	o->max_conn = DEF_MAX_CONN;
	o->spares = -1;                  /* DEF_SPARES, or 0 with a program */
	o->stop_timeout = DEF_STOP_TIMEOUT;
	o->grace = DEF_GRACE;
	o->idle_exit = -1;
}

/* A diagnostic before the connection's own log line: on stderr with the
 * usage text, or, when stderr is the client, to the log alone. */
static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	char msg[LOG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (log_to == LOG_STDERR)
		fprintf(stderr, "wsfilter: %s\n%s", msg, usage_text);
	else
		log_line("%s", msg);
	exit(EXIT_USAGE);
}

/* A number from the command line: decimal digits only, in [min, max]. */
static long long parse_num(const char *s, const struct numopt *n)
{
	long long v = 0;
	const char *p;

	for (p = s; *p >= '0' && *p <= '9' && p - s < 19; p++)
		v = v * 10 + (*p - '0');
	if (p == s || *p || v < n->min || v > n->max)
		usage_error("--%s: '%s' is not a number from %lld to %lld", n->name, s, n->min, n->max);
	return v;
}

/* --origin and --protocol: up to LIST_MAX values each. */
static void list_add(const char **list, int *count, const char *name, const char *v)
{
	size_t i;

	if (*count == LIST_MAX)
		usage_error("too many %s options", name);
	if (!*v)
		usage_error("%s needs a value", name);
	if (!strcmp(name, "--protocol")) {
		for (i = 0; v[i]; i++)
			if (!is_tchar((unsigned char)v[i]) || i >= 64)
				usage_error("--protocol '%s' is not an HTTP token of at most 64 characters", v);
	}
	list[(*count)++] = v;
}

/* --header 'Name: value': a token name, a value without CR, LF or NUL
 * (argv has none of the last), kept as "Name: value\r\n". */
static void header_add(struct options *o, const char *v)
{
	const char *colon = strchr(v, ':'), *p;
	struct span value;
	int n;

	for (p = v; colon && p < colon; p++)
		if (!is_tchar((unsigned char)*p))
			break;
	if (!colon || colon == v || p < colon || strpbrk(v, "\r\n"))
		usage_error("--header '%s' is not 'Name: value' with a token name and one line", v);
	if (header_ours((struct span){ v, (size_t)(colon - v) }))
		usage_error("--header '%.*s': wsfilter writes that header itself", (int)(colon - v), v);
	value = span_trim(colon + 1, strlen(colon + 1));
	n = snprintf(o->headers + o->headers_len, sizeof o->headers - o->headers_len,
		     "%.*s: %.*s\r\n", (int)(colon - v), v, (int)value.len, value.p);
	if (n < 0 || (size_t)n >= sizeof o->headers - o->headers_len)
		usage_error("--header: more than %d bytes of headers in all", HEADERS_MAX - 1);
	o->headers_len += (size_t)n;
}

/* --dir: an existing directory, kept as its real path. */
static const char *dir_real(const char *v)
{
	struct stat st;
	char *real = realpath(v, NULL);

	if (!real || stat(real, &st) < 0 || !S_ISDIR(st.st_mode))
		usage_error("--dir '%s' is not a directory", v);
	return real;
}

/* The index of v among an option's n values, or a usage error. */
static int pick(const char *v, const char *const *names, int n, const char *opt,
		const char *values)
{
	int i;

	for (i = 0; i < n; i++)
		if (!strcmp(v, names[i]))
			return i;
	usage_error("%s: '%s' is not %s", opt, v, values);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	static const char *const logs[] = { "auto", "stderr", "syslog", "none" };
	static const char *const sandboxes[] = { "off", "on", "required" };
	struct option longopts[NUMOPTS + FLAGOPTS + 1];
	int ch, idx;
	size_t i;

	for (i = 0; i < NUMOPTS; i++)
		longopts[i] = (struct option){ numopts[i].name, required_argument, NULL, OPT_NUMBER };
	memcpy(longopts + NUMOPTS, flagopts, sizeof flagopts);
	memset(&longopts[NUMOPTS + FLAGOPTS], 0, sizeof longopts[0]);
	opterr = 0;
	/* "+": options end at PROGRAM, whose own options are its own */
	while ((ch = getopt_long(argc, argv, "+:qhV", longopts, &idx)) != -1) {
		switch (ch) {
		case OPT_NUMBER:
			*(long long *)((char *)o + numopts[idx].off) = parse_num(optarg, &numopts[idx]);
			break;
		case OPT_ECHO:        o->echo = 1; break;
		case OPT_TRUST_PROXY: o->trust_proxy = 1; break;
		case OPT_ORIGIN:      list_add(o->origins, &o->norigins, "--origin", optarg); break;
		case OPT_PROTOCOL:    list_add(o->protocols, &o->nprotocols, "--protocol", optarg); break;
		case OPT_LOG:         o->log = (enum log_mode)pick(optarg, logs, 4, "--log", "auto, stderr, syslog or none"); break;
		case 'q':             o->log = LOG_NONE; break;
		case OPT_NO_SANDBOX:  o->sandbox = SANDBOX_OFF; break;
		case OPT_BINARY:      o->binary = 1; break;
		case OPT_CLEAR_ENV:   o->clear_env = 1; break;
		case OPT_DIR:         o->dir = dir_real(optarg); break;
		case OPT_CHECK:       o->check = optarg; break;
		case OPT_SAMEORIGIN:  o->sameorigin = 1; break;
		case OPT_HEADER:      header_add(o, optarg); break;
		case OPT_SANDBOX:     o->sandbox = (enum sandbox_mode)pick(optarg, sandboxes, 3, "--sandbox", "on, off or required"); break;
		case 'h':
			printf("%s\n%s", usage_text, help_text);
			exit(EXIT_CLEAN);
		case 'V':
			printf("wsfilter %s\n", VERSION);
			exit(EXIT_CLEAN);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		o->program = argv + optind;
	if (o->program && o->dir)
		usage_error("--dir names the programs: not with a PROGRAM");
	if (o->check && !*o->check)
		usage_error("--check needs a program");
	o->runs = o->program || o->dir;
	o->gate = o->runs || o->check;
	if (!o->runs && (o->binary || o->clear_env))
		usage_error("--binary and --clear-env need a PROGRAM or --dir");
	if (o->runs && o->echo)
		usage_error("--echo is the built-in filter: not with a PROGRAM or --dir");
	if (!o->ping_interval && o->ping_timeout)
		usage_error("--ping-timeout needs keepalive pings (--ping-interval above 0)");
	if (!o->ping_timeout)
		o->ping_timeout = o->ping_interval;
	if (!o->send_timeout)
		o->send_timeout = o->ping_interval ? o->ping_timeout : DEF_SEND_TIMEOUT;
}

static int is_listening(int fd)
{
	int one = 0;
	socklen_t len = sizeof one;

	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &one, &len) == 0 && one;
}

/* systemd's LISTEN_FDS protocol, as sd_listen_fds(3) reads it: the
 * connection is fd 3 when LISTEN_PID is ours.  Sets fds (0 and 1 when the
 * variables are not for us); returns why they cannot be used, or NULL.
 * A listening socket instead of a connection (systemd Accept=no on fd 3,
 * inetd wait on fd 0) goes to *listen_fd, else -1: wsfilter accepts. */
static const char *client_fds(int fds[2], int *listen_fd)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	static char why[96];
	char *end;
	int mine;

	fds[0] = 0, fds[1] = 1;
	*listen_fd = -1;
	if (!pid || !nfds) {
		if (is_listening(0))
			*listen_fd = 0;
		return NULL;
	}
	errno = 0;
	mine = strtol(pid, &end, 10) == (long)getpid() && !errno && !*end && end != pid;
	/* as sd_listen_fds(3) with unset_environment: whoever they were for,
	 * they are not passed on (a PROGRAM must not take them for its own) */
	nfds = strdupa(nfds);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (!mine)
		return NULL;
	fds[0] = fds[1] = 3;
	if (strcmp(nfds, "1") != 0)
		snprintf(why, sizeof why, "LISTEN_FDS=%.16s: expected one socket", nfds);
	else if (fcntl(3, F_GETFD) < 0)
		snprintf(why, sizeof why, "LISTEN_FDS=1 but descriptor 3 is not open");
	else if (is_listening(3))
		*listen_fd = 3;
	else
		return NULL;
	return *listen_fd >= 0 ? NULL : why;
}

static int is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Whether descriptor a is the socket b (inetd: fds 0, 1 and 2).  A
 * terminal or a file shared by stdout and stderr is not the client. */
static int same_socket(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && S_ISSOCK(sb.st_mode) &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Where log lines go.  Under inetd and xinetd fd 2 is the client's
 * socket, and a line written there would land in the client's stream:
 * then stderr is never written, whatever --log says. */
static void log_setup(enum log_mode want, const int fds[2])
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };
	int stderr_bad = same_socket(2, fds[0]) || same_socket(2, fds[1]);

	log_to = want;
	if (want == LOG_AUTO)
		log_to = fcntl(2, F_GETFD) < 0 ? LOG_NONE : LOG_STDERR;
	if (log_to == LOG_STDERR && stderr_bad)
		log_to = LOG_SYSLOG;
	if (log_to == LOG_SYSLOG && syslog_fd < 0) {
		syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (syslog_fd >= 0 && connect(syslog_fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
			close(syslog_fd);
			syslog_fd = -1;
		}
	}
}

/* The address as a 16-byte key, and its port. */
static unsigned source_of(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		key[10] = key[11] = 0xff;
		memcpy(key + 12, &s4->sin_addr, 4);
		return ntohs(s4->sin_port);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		memcpy(key, &s6->sin6_addr, 16);
		return ntohs(s6->sin6_port);
	}
	return 0;
}

/* The address of a 16-byte key (IPv4 as ::ffff:a.b.c.d) as text. */
static void key_addr(const unsigned char key[16], char *addr, size_t size)
{
	static const unsigned char v4[12] = { [10] = 0xff, [11] = 0xff };

	if (!inet_ntop(memcmp(key, v4, sizeof v4) ? AF_INET6 : AF_INET,
		       memcmp(key, v4, sizeof v4) ? key : key + 12, addr, (socklen_t)size))
		snprintf(addr, size, "?");
}

/* The client's address and port for the program's REMOTE_ADDR and
 * REMOTE_PORT, and as the log line's peer ("a.b.c.d:port",
 * "[v6]:port"), capped and sanitized: it may come from the environment. */
static void peer_set(struct core *c, const char *a, const char *port)
{
	char raw[2 * PEER_MAX + 8];

	snprintf(c->peer_addr, sizeof c->peer_addr, "%s", a);
	snprintf(c->peer_port, sizeof c->peer_port, "%s", port ? port : "");
	snprintf(raw, sizeof raw, port && strchr(a, ':') ? "[%.*s]:%.8s" : port ? "%.*s:%.8s" : "%.*s",
		 PEER_MAX, a, port ? port : "");
	sanitize(c->peer, sizeof c->peer, raw, strlen(raw));
}

/* Who the client is, in the launchers' own words, else as the socket
 * says; and the local port, for SERVER_PORT. */
static void peer_name(struct conn *c, int fd, int from_env)
{
	static const char *const vars[][2] = {
		{ "REMOTE_ADDR", "REMOTE_PORT" },       /* systemd Accept=yes */
		{ "TCPREMOTEIP", "TCPREMOTEPORT" },     /* tcpserver */
		{ "SOCAT_PEERADDR", "SOCAT_PEERPORT" }, /* socat */
	};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char addr[INET6_ADDRSTRLEN], portbuf[8];
	const char *a = NULL, *port = NULL;
	unsigned char key[16];
	size_t i;

	for (i = 0; i < sizeof vars / sizeof vars[0] && !a && from_env; i++) {
		a = getenv(vars[i][0]);
		port = getenv(vars[i][1]);
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
		snprintf(c->k.local_port, sizeof c->k.local_port, "%u", source_of(&ss, key));
	sl = sizeof ss;
	if (!a && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
			snprintf(portbuf, sizeof portbuf, "%u", source_of(&ss, key));
			key_addr(key, addr, sizeof addr);
			a = addr;
			port = portbuf;
		} else if (ss.ss_family == AF_UNIX) {
			a = "unix";
		}
	}
	if (a)
		peer_set(&c->k, a, port);
}

/* No delayed ACKs and little unsent data in the kernel, on TCP.  Set on
 * a listening socket, they are every accepted socket's. */
static void tcp_setup(int fd)
{
	int one = 1, lowat = NOTSENT_LOWAT;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
}

/* Set up a client descriptor: tcp_setup, and non-blocking I/O so that
 * one poll loop drives both directions.  A terminal is left as it is
 * (others share it). */
static void fd_setup(int fd)
{
	tcp_setup(fd);
	if (!is_socket(fd) && isatty(fd))
		return;
	fd_nonblock(fd);
}

static const char *const kind_names[] = {
	[HK_NONE] = "", [HK_HTTP] = "", [HK_PAGE] = " page", [HK_HEALTH] = " health check",
	[HK_WEBSOCKET] = "",
};

/* The connection's one log line. */
static void log_summary(const struct conn *c, int64_t now)
{
	int64_t ms = now - c->k.start_ms;
	char close_txt[64] = "", reason[REASON_MAX + 8] = "", text[REASON_MAX], unsent[48] = "";
	char prog[64] = "";

	if (c->k.why != W_NONE && reason_text(c->k.why, c->k.why_detail, text, sizeof text))
		snprintf(reason, sizeof reason, " (%s)", text);
	if (c->k.http_status == HTTP_SWITCHING) {
		if (c->k.close_code)
			snprintf(close_txt, sizeof close_txt, ", close %d by %s", c->k.close_code,
				 c->k.close_by == BY_CLIENT ? "client" : "server");
		if (c->k.out_total > c->k.written_total)
			snprintf(unsent, sizeof unsent, ", %llu B unsent",
				 (unsigned long long)(c->k.out_total - c->k.written_total));
		if (c->prog_exited && c->prog_ran && c->k.why != W_PROG_EXIT && c->k.why != W_PROG_KILLED) {
			int detail;
			enum why pw = prog_why(c->prog_status, &detail);

			snprintf(prog, sizeof prog, ", %s", pw == W_PROG_DONE ? "program exited 0" : "");
			if (pw != W_PROG_DONE)
				reason_text(pw, detail, prog + 2, sizeof prog - 2);
		}
		log_line("%s%s%s websocket%s%s %lld.%03llds, in %llu msg %llu B, out %llu msg %llu B%s%s%s%s, exit %d",
			 c->k.peer, c->k.user[0] ? " user " : "", c->k.user,
			 c->k.protocol ? " " : "", c->k.protocol ? c->k.protocol : "",
			 (long long)(ms / 1000), (long long)(ms % 1000),
			 (unsigned long long)c->k.msgs_in, (unsigned long long)c->k.bytes_in,
			 (unsigned long long)c->k.meter.msgs, (unsigned long long)c->k.meter.bytes,
			 unsent, close_txt, reason, prog, c->k.status);
	} else if (c->k.http_status) {
		log_line("%s http %d%s \"%s\" %lld.%03llds%s, exit %d", c->k.peer, c->k.http_status,
			 kind_names[c->k.kind], c->k.request, (long long)(ms / 1000),
			 (long long)(ms % 1000), reason, c->k.status);
	} else {
		log_line("%s no request %lld.%03llds%s, exit %d", c->k.peer, (long long)(ms / 1000),
			 (long long)(ms % 1000), reason, c->k.status);
	}
}

/* Signals only set a flag; they are let in during ppoll alone.  Fills
 * run_mask with the mask for ppoll. */
static void signals_setup(sigset_t *run_mask)
{
	static const int stops[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	struct sigaction sa;
	sigset_t block;
	size_t i;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_NOCLDSTOP;
	sigemptyset(&block);
	for (i = 0; i < sizeof stops / sizeof stops[0]; i++) {
		sigaction(stops[i], &sa, NULL);
		sigaddset(&block, stops[i]);
	}
	sigprocmask(SIG_BLOCK, &block, run_mask);
	for (i = 0; i < sizeof stops / sizeof stops[0]; i++)
		sigdelset(run_mask, stops[i]);
}

/* The filter as --sandbox asks (the acceptor's with its gate, if open):
 * 1 when it is on, 0 when off, -1 when it is required and cannot be had. */
static int sandbox_start(const struct options *o, int child, int acceptor)
{
	if (o->sandbox == SANDBOX_OFF || SANITIZER_BUILD)
		return 0;
	if (sandbox_enter(syslog_fd, log_to == LOG_STDERR, child, acceptor,
			  acceptor ? gate_ip : 0) == 0)
		return 1;
	if (o->sandbox == SANDBOX_REQUIRED) {
		log_line("cannot install the seccomp filter: %s", strerror(errno));
		return -1;
	}
	log_line("warning: running without the seccomp filter: %s", strerror(errno));
	return 0;
}

/* A connection ready for its first byte: fds[0] and fds[1] are the
 * client's input and output, the same socket or two pipes. */
static void conn_init(struct conn *c, const struct options *o, const int fds[2],
		      int64_t now, int64_t wall)
{
	core_init(&c->k, o, now, wall);
	memset((char *)c + offsetof(struct conn, ep), 0,
	       offsetof(struct conn, perr) - offsetof(struct conn, ep));
	c->ep[EP_CLIENT_IN].fd = fds[0];
	c->ep[EP_CLIENT_OUT].fd = fds[1];
	c->ep[EP_PROG_EXEC].fd = c->ep[EP_PROG_IN].fd = c->ep[EP_PROG_OUT].fd = -1;
	c->ep[EP_PROG_ERR].fd = c->ep[EP_PARENT].fd = -1;
	c->prog_ctl = -1;
	c->pout_cap = -1;
	c->shared = fds[0] == fds[1];
}

/* What the acceptor learnt of a connection from accept(2) and from its
 * listening socket, handed to the child so that it asks the kernel for
 * none of it again: the socket is a non-blocking TCP socket (accept4)
 * with tcp_setup's options (the listening socket's), and these are its
 * ends.  With them, the seed of its generator and the read end of a pipe
 * whose only writer is the parent: the child makes no system call to
 * learn of its parent's death (no death signal, no getppid) and none
 * for randomness. */
struct accepted {
	char addr[INET6_ADDRSTRLEN];  /* the client's address, "" when unknown */
	char port[8];                 /* and its port, "" when it has none */
	char local_port[8];           /* the listening socket's port, or "" */
	uint64_t seed[4];             /* drawn by the parent, for the child alone */
	int parent_fd;                /* EOF once the parent is gone */
	int confined;                 /* the parent's filter is the connection's */
};

/* One connection on fds, handed over by a launcher or by the acceptor
 * (ac: what the acceptor knows of it; the peer then comes from accept(2)
 * alone, not from a launcher's variables; w: its program's waiting
 * child, made by a spare before, or NULL): set it up, confine the
 * process, run the loop, write the log line and end the process with the
 * connection's exit status. */
static void serve(struct conn *c, const struct options *o, const int fds[2],
		  const sigset_t *run_mask, const struct accepted *ac, pid_t *pgid_slot,
		  const struct waiter *w) __attribute__((noreturn));

static void serve(struct conn *c, const struct options *o, const int fds[2],
		  const sigset_t *run_mask, const struct accepted *ac, pid_t *pgid_slot,
		  const struct waiter *w)
{
	struct waiter made;
	struct timespec wall;

	clock_gettime(CLOCK_REALTIME, &wall);
	conn_init(c, o, fds, now_ms(), (int64_t)wall.tv_sec);
	if (ac) {
		if (ac->addr[0])
			peer_set(&c->k, ac->addr, ac->port[0] ? ac->port : NULL);
		snprintf(c->k.local_port, sizeof c->k.local_port, "%s", ac->local_port);
		c->out_socket = 1;
		memcpy(c->k.rng, ac->seed, sizeof c->k.rng);
		c->ep[EP_PARENT].fd = ac->parent_fd;
	} else {
		peer_name(c, fds[0], 1);
		c->out_socket = is_socket(fds[1]);
		fd_setup(fds[0]);
		if (fds[1] != fds[0])
			fd_setup(fds[1]);
		rng_seed(c->k.rng);
	}
	c->pgid_slot = pgid_slot;
	if (o->gate && !w) {
		prog_prepare(&made, o, pgid_slot, -1);
		w = &made;
	}
	if (o->gate)
		prog_attach(c, w);
	/* an acceptor's child under its parent's gated filter has the
	 * connection's already (no program: prog_pid is 0) */
	assert(!(ac && ac->confined && c->prog_pid));
	if (!(ac && ac->confined) && sandbox_start(o, c->prog_pid, 0) < 0)
		_exit(EXIT_INTERNAL);
	conn_run(c, run_mask);
	log_summary(c, now_ms());
	/* _exit, not exit: every line went out with write(2), nothing is
	 * left to flush, and no exit handler (the loader's, stdio's) has
	 * anything to do.  Run, they would only write pages: in a child of
	 * the acceptor, copies of pages it shares with the parent. */
	_exit(c->k.status);
}

/* ==== The acceptor ===================================================== */

/* Given the listening socket (systemd Accept=no on fd 3, inetd wait on
 * fd 0), wsfilter accepts the connections itself and forks a child for
 * each, which serves it exactly as a launched wsfilter serves its one
 * connection: serve(), with its own filter, timers and log line, and no
 * exec.  The parent has a short loop of its own, apart from the
 * connection's (as sshd's accept loop is apart from its sessions): it
 * waits on the listening socket, accepts, forks, reaps, signals and
 * limits, and never touches a connection's state.
 *
 * The fork is made ahead of the connection: --spares children (a spare
 * each) wait, forked and set up (with a PROGRAM, their program's waiting
 * child made too), for the parent to hand them a connection, its socket
 * and what accept(2) told, over a Unix socket pair of their own.  The
 * next fork then runs while that connection is served.  A spare takes
 * nothing else: EOF on its pair (the parent gone, or stopping) ends it
 * quietly.  With no spare left the parent forks one for the connection.
 *
 * At --max-connections the parent stops accepting: new connections wait
 * in the kernel's backlog.  Above --max-per-source a connection gets 429
 * from the parent and is closed.  A stop signal closes the listening
 * socket and the spares' pairs and passes SIGTERM on to every child (each
 * sends close 1001 after what it has queued); after --stop-timeout,
 * SIGKILL. */

struct child {
	pid_t pid;
	int slot;                    /* its entry in pgids, or -1 */
	int spare;                   /* no connection: a spare (or one that was) */
	int sock;                    /* a spare's pair, our end; -1 once closed */
	unsigned short port;         /* the client's, for the log */
	unsigned char src[16];       /* source address; IPv4 as ::ffff:a.b.c.d */
};

struct acceptor {
	const struct options *opt;
	int lfd;                     /* the listening socket; -1 once stopping */
	short events;                /* what the loop waits for on it */
	struct conn *conn;           /* for a child to serve its connection in */
	struct child *kids;          /* the children: kids[0, nkids) */
	long long nkids;
	long long cap;               /* room in kids (and pgids) */
	long long live;              /* of them, serving a connection */
	long long spares;            /* of them, spares with a pair open */
	long long idle_exit;         /* seconds without a child, 0: never */
	int stopping;                /* no more accepts; waiting for the children */
	int idle;                    /* stopping at --idle-exit: the spares alone */
	int killed;                  /* the stop timeout sent SIGKILL */
	int full;                    /* at --max-connections (logged once) */
	int status;                  /* the parent's exit status */
	int64_t stop_deadline;       /* stopping: SIGKILL what is left; 0: sent */
	int64_t idle_since;          /* when the last child went, 0: some live */
	int64_t retry_at;            /* accept(2) or fork(2) failed: not before */
	const char *failed;          /* what a spawn or a hand-over failed at */
	const sigset_t *run_mask;    /* the children's, for their loop */
	/* With a PROGRAM: each child writes its program's process group
	 * to its entry (shared), and clears it once that group is gone.
	 * A child that dies with its entry set (a signal, the stop
	 * timeout's SIGKILL) leaves the parent to kill the group. */
	pid_t *pgids;
	int *free_slots;             /* entries of pgids not in use */
	long long nfree;
	int alive[2];                /* the pipe a child reads EOF from when we are gone */
	int confined;                /* our filter, gated, is the children's */
	int64_t accept_err_at;       /* accept(2) failures: the last logged */
	long long accept_errs;       /* and those since, not logged */
	char local_port[8];          /* the listening socket's, for SERVER_PORT */
};

/* A source as log text: "a.b.c.d:port" or "[::1]:port". */
static void source_text(const unsigned char key[16], unsigned port, char *text, size_t size)
{
	char addr[INET6_ADDRSTRLEN];

	key_addr(key, addr, sizeof addr);
	snprintf(text, size, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr, port);
}

/* At --max-connections: accept nothing more until a child ends. */
static int acceptor_full(const struct acceptor *a, const struct options *o)
{
	return a->live >= o->max_conn;
}

static long long per_source(const struct acceptor *a, const unsigned char key[16])
{
	long long i, n = 0;

	for (i = 0; i < a->nkids; i++)
		n += !a->kids[i].spare && !memcmp(a->kids[i].src, key, 16);
	return n;
}

/* Over --max-per-source: 429 (RFC 6585 4), then close.  The request, if
 * it is there, is read first so that the close is a FIN, not a reset. */
static void acceptor_refuse(int fd, const char *who, long long n, const struct options *o)
{
	static const char body[] = "too many connections from this address\n";
	char junk[HEAD_MAX], date[40], head[512 + HEADERS_MAX];
	struct timespec ts;
	char *at;
	int len;

	(void)!read(fd, junk, sizeof junk);
	/* RFC 9110 6.6.1: an origin server with a clock sends Date */
	clock_gettime(CLOCK_REALTIME, &ts);
	http_date((int64_t)ts.tv_sec, date);
	len = snprintf(head, sizeof head,
		       "HTTP/1.1 429 Too Many Requests\r\n"
		       "Date: %s\r\n"
		       "Content-Type: text/plain; charset=utf-8\r\n"
		       "Content-Length: %zu\r\n"
		       "Retry-After: 1\r\n"
		       "%s"
		       "Connection: close\r\n\r\n%s",
		       date, sizeof body - 1, o->headers, body);
	if (len > 0 && (size_t)len < sizeof head)
		(void)!write(fd, head, (size_t)len);
	(void)shutdown(fd, SHUT_WR);
	close(fd);
	at = strrchr(who, ':');
	log_line("%s http 429 refused: %lld connection%s from %.*s (--max-per-source %lld)", who, n,
		 n == 1 ? "" : "s", at ? (int)(at - who) : (int)strlen(who), who, o->max_per_source);
}

static void acceptor_signal(struct acceptor *a, int sig)
{
	long long i;

	for (i = 0; i < a->nkids; i++)
		(void)acc_call(__NR_kill, a->kids[i].pid, sig, 0, 0, 0);
}

static void acceptor_reap(struct acceptor *a, int64_t now)
{
	long long i;
	pid_t pid;
	int st;

	while ((pid = (pid_t)acc_call(__NR_wait4, -1, (long)&st, WNOHANG, 0, 0)) > 0) {
		for (i = 0; i < a->nkids && a->kids[i].pid != pid; i++)
			;
		if (i == a->nkids)
			continue;
		if (a->kids[i].slot >= 0) {
			/* its program's group, if it died before ending it */
			if (a->pgids[a->kids[i].slot] > 0)
				(void)acc_call(__NR_kill, -a->pgids[a->kids[i].slot], SIGKILL, 0, 0, 0);
			a->pgids[a->kids[i].slot] = 0;
			a->free_slots[a->nfree++] = a->kids[i].slot;
		}
		if (a->kids[i].spare) {
			/* one that went before its connection: killed, or its
			 * pair closed by us (then it exits 0) */
			if (a->kids[i].sock >= 0) {
				close(a->kids[i].sock);
				a->spares--;
			}
			if (WIFSIGNALED(st) && !a->stopping)
				log_line("spare %d killed by SIG%s", (int)pid,
					 sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
		} else {
			if (WIFSIGNALED(st) && !(a->killed && WTERMSIG(st) == SIGKILL)) {
				char who[INET6_ADDRSTRLEN + 16];

				source_text(a->kids[i].src, a->kids[i].port, who, sizeof who);
				log_line("%s connection %d killed by SIG%s", who, (int)pid,
					 sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
			}
			a->live--;
		}
		a->kids[i] = a->kids[--a->nkids];
	}
	if (!a->live && !a->idle_since)
		a->idle_since = now;
}

/* The spares' pairs closed: each ends (EOF) and is reaped. */
static void acceptor_close_spares(struct acceptor *a)
{
	long long i;

	for (i = 0; i < a->nkids; i++)
		if (a->kids[i].sock >= 0) {
			close(a->kids[i].sock);
			a->kids[i].sock = -1;
			a->spares--;
		}
}

/* A stop signal, or the loop cannot go on (status 1). */
/* No more accepts: the listening socket and the spares' pairs closed,
 * the children given until the stop timeout. */
static void acceptor_wind_down(struct acceptor *a, int64_t now)
{
	a->stopping = 1;
	if (a->lfd >= 0)
		close(a->lfd);
	a->lfd = -1;
	acceptor_close_spares(a);
	a->stop_deadline = now + a->opt->stop_timeout * 1000;
}

static void acceptor_stop(struct acceptor *a, int64_t now, int status)
{
	if (status > a->status)
		a->status = status;
	if (!a->stopping) {
		log_line("stopping: %lld connection%s", a->live, a->live == 1 ? "" : "s");
		acceptor_wind_down(a, now);
	}
	/* a second signal: once more, and a child that is closing goes now */
	acceptor_signal(a, SIGTERM);
}

/* fork(2) as the system call alone.  glibc's fork() also resets, in the
 * child, the locks of the loader, malloc and stdio, and so writes (and
 * copies) pages of their data in every child.  A child of the acceptor
 * is single-threaded and takes none of those locks; glibc itself asks the
 * kernel for the thread id where it needs it (raise, abort).  Measured:
 * three to four pages less per connection.  Through the gate: the child
 * returns to its ret, in the page after the one the child lacks. */
static pid_t acceptor_fork(void)
{
	return (pid_t)acc_call(__NR_clone, SIGCHLD, 0, 0, 0, 0);
}

/* What a child takes with it, copied from the parent's state before the
 * fork: that state is wiped in a child (acceptor_private). */
struct child_start {
	struct conn *conn;
	const struct options *opt;
	const sigset_t *run_mask;
	int lfd;
	int alive_w;                 /* the parent's end of that pipe: closed */
	int alive_r;                 /* its read end: ac.parent_fd */
	int confined;                /* ac.confined */
	int sock;                    /* its end of its pair */
	pid_t *pgid_slot;            /* its entry in pgids, or NULL */
	int others[SPARES_MAX + 1];  /* the parent's ends of the pairs: closed */
	int nothers;
};

/* A spare: set up, wait for the connection, then serve it, as if a
 * launcher had started the process with it. */
static void spare_run(const struct child_start *cs) __attribute__((noreturn));

static void spare_run(const struct child_start *cs)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct accepted ac;
	struct iovec v = { &ac, sizeof ac };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1,
			    .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
	struct cmsghdr *h;
	struct waiter w;
	int i, fds[2] = { -1, -1 };
	long n;

	close(cs->lfd);
	/* from now on the parent alone holds the pipe's write end (its
	 * death, even before this line, is an EOF on alive_r) and the
	 * other ends of the pairs (its death is EOF on ours) */
	close(cs->alive_w);
	for (i = 0; i < cs->nothers; i++)
		close(cs->others[i]);
	/* written only when set: every page a child writes is its own copy */
	if (stop_signal)
		stop_signal = 0;
	if (child_signal)
		child_signal = 0;
	if (cs->opt->gate)
		prog_prepare(&w, cs->opt, cs->pgid_slot, cs->sock);
	do
		n = spare_call(__NR_recvmsg, cs->sock, (long)&m, MSG_CMSG_CLOEXEC, 0, 0);
	while (n < 0 && errno == EINTR);
	/* the spare's gate goes before a byte of the client is read */
	if (spare_gate_page &&
	    spare_call(__NR_munmap, (long)spare_gate_page, GATE_PAGE, 0, 0, 0) < 0)
		_exit(EXIT_INTERNAL);
	close(cs->sock);
	h = n == (long)sizeof ac ? CMSG_FIRSTHDR(&m) : NULL;
	if (h && h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS &&
	    h->cmsg_len == CMSG_LEN(sizeof(int)) && !(m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		memcpy(&fds[0], CMSG_DATA(h), sizeof(int));
	if (fds[0] < 0)
		_exit(n == 0 ? EXIT_CLEAN : EXIT_INTERNAL); /* EOF: no connection */
	fds[1] = fds[0];
	ac.parent_fd = cs->alive_r;
	ac.confined = cs->confined;
	serve(cs->conn, cs->opt, fds, cs->run_mask, &ac, cs->pgid_slot,
	      cs->opt->gate ? &w : NULL);
}

/* Fork a spare.  Returns its index in kids, or -1 (errno, and a->failed
 * says at what). */
static long long acceptor_spawn(struct acceptor *a)
{
	struct child_start cs = { .conn = a->conn, .opt = a->opt, .run_mask = a->run_mask,
				  .lfd = a->lfd, .alive_w = a->alive[1], .alive_r = a->alive[0],
				  .confined = a->confined };
	long long i;
	int sv[2], slot, err;
	pid_t pid;

	a->failed = "cannot fork";
	if (a->nkids >= a->cap) {
		errno = EAGAIN;
		return -1;
	}
	if (acc_call(__NR_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, (long)sv, 0) < 0) {
		a->failed = "cannot make a spare's socket pair";
		return -1;
	}
	for (i = 0; i < a->nkids; i++)
		if (a->kids[i].sock >= 0)
			cs.others[cs.nothers++] = a->kids[i].sock;
	cs.others[cs.nothers++] = sv[0];
	cs.sock = sv[1];
	slot = a->pgids ? a->free_slots[--a->nfree] : -1;
	cs.pgid_slot = slot >= 0 ? &a->pgids[slot] : NULL;
	pid = acceptor_fork();
	if (pid == 0)
		spare_run(&cs);     /* *a is wiped there: cs only */
	err = errno;
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		if (slot >= 0)
			a->free_slots[a->nfree++] = slot;
		errno = err;
		return -1;
	}
	a->kids[a->nkids] = (struct child){ .pid = pid, .slot = slot, .spare = 1, .sock = sv[0] };
	a->spares++;
	return a->nkids++;
}

/* Up to --spares, unless stopping or failing to. */
static void acceptor_refill(struct acceptor *a)
{
	while (!a->stopping && !a->retry_at && a->spares < a->opt->spares &&
	       acceptor_spawn(a) >= 0)
		;
}

/* Hand a spare (forked now if there is none) the connection fd, with
 * what the acceptor learnt of it.  0, or -1 (errno, and a->failed says
 * at what): fd is the caller's to close either way. */
static int acceptor_hand(struct acceptor *a, int fd, const struct accepted *ac,
			 const unsigned char key[16], unsigned port)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec v = { (void *)ac, sizeof *ac };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1,
			    .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	long long i, tries;
	long r;

	memset(&ctl, 0, sizeof ctl);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(int));
	/* a spare that has gone (killed) refuses it: then another */
	for (tries = 0; tries < 2; tries++) {
		for (i = a->nkids - 1; i >= 0 && a->kids[i].sock < 0; i--)
			;
		if (i < 0 && (i = acceptor_spawn(a)) < 0)
			return -1;
		r = acc_call(__NR_sendmsg, a->kids[i].sock, (long)&m, MSG_NOSIGNAL, 0, 0);
		close(a->kids[i].sock);
		a->kids[i].sock = -1;
		a->spares--;
		if (r == (long)sizeof *ac) {
			a->kids[i].spare = 0;
			a->kids[i].port = (unsigned short)port;
			memcpy(a->kids[i].src, key, 16);
			a->live++;
			a->idle_since = 0;
			return 0;
		}
	}
	a->failed = "cannot hand it to a spare";
	errno = r < 0 ? errno : EPIPE;
	return -1;
}

static void acceptor_accept_failed(struct acceptor *a, int64_t now, int err)
{
	a->retry_at = now + ACCEPT_RETRY_MS;
	if (a->accept_err_at && now < a->accept_err_at + 1000) {
		a->accept_errs++;
		return;
	}
	if (a->accept_errs)
		log_line("cannot accept: %s (%lld more time%s)", strerror(err), a->accept_errs,
			 a->accept_errs == 1 ? "" : "s");
	else
		log_line("cannot accept: %s", strerror(err));
	a->accept_err_at = now;
	a->accept_errs = 0;
}

static void acceptor_accept(struct acceptor *a, int64_t now)
{
	const struct options *o = a->opt;
	struct accepted ac;
	struct sockaddr_storage ss;
	unsigned char key[16];
	char who[INET6_ADDRSTRLEN + 16];
	socklen_t sl;
	long long n;
	unsigned port;
	int i, fd, r;

	for (i = 0; i < ACCEPT_BATCH && !acceptor_full(a, o); i++) {
		sl = sizeof ss;
		fd = (int)acc_call(__NR_accept4, a->lfd, (long)&ss, (long)&sl,
				   SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED || errno == EPROTO))
			continue;
		if (fd < 0) {
			/* out of descriptors or memory: the backlog holds them;
			 * logged once a second at most, with the count */
			acceptor_accept_failed(a, now, errno);
			break;
		}
		port = source_of(&ss, key);
		if (o->max_per_source && (n = per_source(a, key)) >= o->max_per_source) {
			source_text(key, port, who, sizeof who);
			acceptor_refuse(fd, who, n, o);
			continue;
		}
		/* the peer as the child would have read it with getpeername */
		memset(&ac, 0, sizeof ac);
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
			key_addr(key, ac.addr, sizeof ac.addr);
			snprintf(ac.port, sizeof ac.port, "%u", port);
		} else if (ss.ss_family == AF_UNIX) {
			snprintf(ac.addr, sizeof ac.addr, "unix");
		}
		memcpy(ac.local_port, a->local_port, sizeof ac.local_port);
		rng_seed(ac.seed);
		r = acceptor_hand(a, fd, &ac, key, port);
		close(fd);
		if (r < 0) {
			source_text(key, port, who, sizeof who);
			log_line("%s closed: %s: %s", who, a->failed, strerror(errno));
			a->retry_at = now + ACCEPT_RETRY_MS;
			break;
		}
	}
	/* the next connections' forks, while these are served */
	acceptor_refill(a);
}

/* The parent's step between waits.  Returns 1 when it is done. */
static int acceptor_step(struct acceptor *a, int64_t now, int *handled)
{
	const struct options *o = a->opt;

	if (child_signal) {
		child_signal = 0;
		acceptor_reap(a, now);
	}
	if (stop_signal != *handled) {
		*handled = stop_signal;
		acceptor_stop(a, now, EXIT_CLEAN);
	}
	if (a->stopping) {
		if (a->stop_deadline && now >= a->stop_deadline && a->nkids) {
			log_line("stop timeout: killing %lld connection%s", a->live, a->live == 1 ? "" : "s");
			a->killed = 1;
			acceptor_signal(a, SIGKILL);
			a->stop_deadline = 0;
		}
		if (a->nkids)
			return 0;
		if (!a->idle)
			log_line("stopped");
		return 1;
	}
	if (a->idle_exit && a->idle_since && now >= a->idle_since + a->idle_exit * 1000) {
		/* the spares go first: then nothing of ours is left */
		log_line("idle for %lld s: exiting", a->idle_exit);
		a->idle = 1;
		acceptor_wind_down(a, now);
		return 0;
	}
	if (acceptor_full(a, o) && !a->full)
		log_line("at --max-connections %lld: new connections wait", o->max_conn);
	a->full = acceptor_full(a, o);
	if (a->retry_at && now >= a->retry_at)
		a->retry_at = 0;
	a->events = a->full || a->retry_at ? 0 : POLLIN;
	return 0;
}

static int64_t acceptor_deadline(const struct acceptor *a)
{
	if (a->stopping)
		return a->stop_deadline;
	return earliest(a->retry_at, a->idle_exit && a->idle_since
			? a->idle_since + a->idle_exit * 1000 : 0);
}

/* The acceptor's loop: signals, timers, and accepting while there is
 * room.  Returns when it has stopped. */
static void acceptor_loop(struct acceptor *a)
{
	struct pollfd pfd;
	int handled = 0;
	int64_t now;
	nfds_t n;

	for (;;) {
		now = now_ms();
		if (acceptor_step(a, now, &handled))
			break;
		pfd = (struct pollfd){ a->lfd, a->events, 0 };
		n = a->lfd >= 0 && a->events;
		if (wait_for(&pfd, n, now, acceptor_deadline(a), a->run_mask) < 0) {
			if (errno != EINTR && errno != EAGAIN)
				acceptor_stop(a, now, EXIT_INTERNAL);
			continue;
		}
		if (n && (pfd.revents & POLLNVAL))
			acceptor_stop(a, now, EXIT_INTERNAL);
		else if (n && pfd.revents)
			acceptor_accept(a, now_ms());
	}
}

/* inetd wait: the listening socket is fds 0, 1 and 2.  The children get
 * /dev/null there, and the socket stays in the parent alone, above 2.
 * Returns it, or -1. */
static int acceptor_inetd(struct options *o)
{
	int lfd = fcntl(0, F_DUPFD_CLOEXEC, 3), nul = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (lfd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0 || dup2(nul, 2) < 0) {
		log_line("cannot set up the inetd socket: %s", strerror(errno));
		return -1;
	}
	close(nul);
	if (o->idle_exit < 0)
		o->idle_exit = DEF_IDLE_INETD;
	return lfd;
}

/* Memory for the parent alone, zeroed, NULL when there is none.  A child
 * gets it wiped (MADV_WIPEONFORK): the pages the parent writes after a
 * fork then stay its own, instead of being shared until the parent's
 * next write, which copies them and flushes the TLB each time. */
static void *acceptor_private(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_WIPEONFORK
	(void)madvise(p, size, MADV_WIPEONFORK);
#endif
	return p;
}

/* The tables: the children (the parent's alone); with a PROGRAM, the
 * program groups (shared with the children) and their free entries.
 * -1 when out of memory. */
static int acceptor_tables(struct acceptor *a, long long max)
{
	long long i;

	a->kids = acceptor_private((size_t)max * sizeof *a->kids);
	if (!a->kids)
		return -1;
	if (!a->opt->gate)
		return 0;
	a->pgids = mmap(NULL, (size_t)max * sizeof *a->pgids, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	a->free_slots = acceptor_private((size_t)max * sizeof *a->free_slots);
	if (a->pgids == MAP_FAILED || !a->free_slots)
		return -1;
	for (i = 0; i < max; i++)
		a->free_slots[i] = (int)(max - 1 - i);
	a->nfree = max;
	return 0;
}

/* The parent: set up, confine, loop until stopped.  The connection
 * struct c is left untouched for the children to serve in.  Returns its
 * exit status. */
static int acceptor_run(struct conn *c, struct options *o, int lfd, const sigset_t *run_mask)
{
	struct acceptor *a = acceptor_private(sizeof *a);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	unsigned char key[16];
	char where[INET6_ADDRSTRLEN + 16] = "?";

	if (lfd == 0 && (lfd = acceptor_inetd(o)) < 0)
		return EXIT_INTERNAL;
	if (o->idle_exit < 0)
		o->idle_exit = 0;
	/* with a program the spares gained nothing measurable here and cost
	 * CPU (BENCHMARKS.md): none unless asked for */
	if (o->spares < 0)
		o->spares = o->gate ? 0 : DEF_SPARES;
	if (!a) {
		log_line("cannot allocate the acceptor's state");
		return EXIT_INTERNAL;
	}
	a->opt = o;
	/* the connections, the spares, and as many again for spares gone
	 * (killed) but not reaped yet; acceptor_spawn never goes beyond */
	a->cap = o->max_conn + 2 * o->spares + 2;
	if (acceptor_tables(a, a->cap) < 0) {
		log_line("cannot allocate the table of %lld connections", o->max_conn);
		return EXIT_INTERNAL;
	}
	if (pipe2(a->alive, O_CLOEXEC) < 0) {
		log_line("cannot make a pipe: %s", strerror(errno));
		return EXIT_INTERNAL;
	}
	fd_nonblock(lfd);
	a->lfd = lfd;
	a->conn = c;
	a->idle_exit = o->idle_exit;
	a->run_mask = run_mask;
	a->idle_since = now_ms();
	if (getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0) {
		source_text(key, source_of(&ss, key), where, sizeof where);
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
			snprintf(a->local_port, sizeof a->local_port, "%u", source_of(&ss, key));
	}
	/* each child's socket gets these from the listening socket, and
	 * the child makes no system call for them */
	tcp_setup(lfd);
	log_line("accepting on %s, at most %lld connection%s", where, o->max_conn,
		 o->max_conn == 1 ? "" : "s");
	/* a PROGRAM must start outside any filter of wsfilter's, and the
	 * children fork it: then only they are confined.  Else the gate,
	 * and the filter: with both, the children are confined by it. */
	if (!o->gate) {
		int on;

		(void)gate_open();
		if ((on = sandbox_start(o, 0, 1)) < 0)
			return EXIT_INTERNAL;
		a->confined = on && gate_ip;
	}
	acceptor_refill(a);
	acceptor_loop(a);
	return a->status;
}

#ifndef WSFILTER_NO_MAIN
int main(int argc, char **argv)
{
	static struct conn conn;  /* static: its buffers' pages stay untouched until used */
	static struct options opt;
	sigset_t run_mask;
	const char *fd_error;
	int fds[2], lfd;

	/* decide where diagnostics go before the first one is written */
	fd_error = client_fds(fds, &lfd);
	log_setup(LOG_AUTO, fds);
	options_init(&opt);
	parse_options(argc, argv, &opt);
	if (fd_error)
		usage_error("%s", fd_error);
	log_setup(opt.log, fds);
	signals_setup(&run_mask);
	if (lfd >= 0)
		return acceptor_run(&conn, &opt, lfd, &run_mask);
	serve(&conn, &opt, fds, &run_mask, NULL, NULL, NULL);
}
#endif
