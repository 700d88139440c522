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
 * reading too.
 */

#define _GNU_SOURCE
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

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
#define REASON_MAX        100          /* our own close reasons */
#define LIST_MAX          16           /* --origin and --protocol entries */
#define PEER_MAX          80           /* sanitized peer text in log lines */
#define LOG_MAX           512          /* one log line */
#define DISCARD_MAX       (256 * 1024) /* input read and dropped after the end */

#define DEF_RANDOM_MAX    1000
#define DEF_HS_TIMEOUT    10
#define DEF_CLOSE_TIMEOUT 2

/* Exit status, documented in README.md and wsfilter.1. */
enum {
	EXIT_CLEAN    = 0, /* close handshake done, page served, stopped by signal */
	EXIT_INTERNAL = 1, /* internal error */
	EXIT_USAGE    = 2, /* bad command line or environment */
	EXIT_PROTOCOL = 3, /* the client broke the protocol (HTTP 4xx, close 1002/1007/1009) */
	EXIT_GONE     = 4, /* the client vanished without a close */
	EXIT_TIMEOUT  = 5, /* handshake, idle or ping timeout */
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
	CLOSE_INVALID_DATA = 1007, CLOSE_TOO_BIG = 1009, CLOSE_INTERNAL = 1011,
};

/* ==== Types ============================================================ */

enum conn_state {
	CS_HANDSHAKE, /* reading the request head */
	CS_OPEN,      /* exchanging frames */
	CS_LINGER,    /* final bytes queued: flush, shut down, wait for EOF */
	CS_DONE,      /* exit now */
};

enum log_mode { LOG_AUTO, LOG_STDERR, LOG_SYSLOG, LOG_NONE };

/* Incremental UTF-8 validator: bytes still expected, and the range the next
 * continuation byte must fall in (narrower after E0, ED, F0 and F4). */
struct utf8 {
	uint8_t need, lo, hi;
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

struct options {
	int echo;
	uint64_t random_max;
	const char *origins[LIST_MAX];
	int norigins;
	const char *protocols[LIST_MAX];
	int nprotocols;
	uint64_t max_message;        /* 0: unlimited */
	int hs_timeout;              /* seconds */
	int idle_timeout;            /* seconds, 0: off */
	int close_timeout;           /* seconds */
	int ping_interval;           /* seconds, 0: off */
	int ping_timeout;            /* seconds, 0: same as the interval */
	int trust_proxy;
	enum log_mode log;
	int sandbox;                 /* 0 off, 1 on if possible, 2 required */
};

/* Everything one connection needs.  Buffers are fixed: nothing grows with
 * what the client sends. */
struct conn {
	int in_fd, out_fd;           /* the client: fd 0/1, or fd 3 for both */
	enum conn_state state;
	int status;                  /* exit status once decided */
	int in_eof;                  /* the client will send nothing more */
	int wr_shut;                 /* our write side is shut down */
	int wr_err;                  /* writing failed: the client is gone */
	size_t discarded;            /* input dropped while lingering */

	unsigned char in[IN_BUF_SIZE];
	size_t in_off, in_len;       /* unconsumed input is in[in_off, in_len) */
	unsigned char out[OUT_BUF_SIZE];
	size_t out_off, out_len;     /* queued output is out[out_off, out_off + out_len) */
	uint64_t out_total;          /* bytes ever queued */
	uint64_t written_total;      /* bytes ever written */

	struct frame frame;
	struct message msg;
	const char *protocol;        /* selected subprotocol, or NULL */

	/* timers, in milliseconds of CLOCK_MONOTONIC */
	int64_t start_ms;
	int64_t last_rx_ms;          /* last byte from the client */
	int64_t linger_deadline;
	int64_t next_ping_ms;        /* when to queue the next keepalive ping */
	uint64_t ping_end;           /* out_total once the ping is queued; 0: none */
	int64_t pong_deadline;       /* 0: no pong awaited */

	/* what the log line reports */
	char peer[PEER_MAX];
	int http_status;             /* HTTP answer, 0 before the head is parsed */
	const char *http_what;       /* "page", "health check", ... */
	uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
	int close_code;              /* close code sent or received, 0: none */
	const char *close_by;        /* "client" or "server" */
	char reason[REASON_MAX + 1]; /* why the connection failed */

	uint64_t rng[4];             /* xoshiro256** state */
};

static struct options opt = {
	.random_max = DEF_RANDOM_MAX,
	.hs_timeout = DEF_HS_TIMEOUT,
	.close_timeout = DEF_CLOSE_TIMEOUT,
	.log = LOG_AUTO,
	.sandbox = 1,
};

static struct conn conn;
static volatile sig_atomic_t stop_signal;
static int log_to = LOG_STDERR;     /* resolved log mode */
static int syslog_fd = -1;
static pid_t self_pid;

/* The browser page, built from web/index.html by the Makefile. */
static const unsigned char web_index[] = {
#include "web_index.h"
};

/* ==== Prototypes ======================================================= */

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void conn_fail(struct conn *c, int code, int status, const char *reason, int64_t now);
static void conn_close_frame(struct conn *c, int code, const char *reason);
static void conn_linger(struct conn *c, int status, int64_t now);
static size_t conn_process(struct conn *c, int64_t now);
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
			while (i + 8 <= n) {
				uint64_t v;
				memcpy(&v, p + i, 8);
				if (v & 0x8080808080808080ull)
					break;
				i += 8;
			}
			if (i == n)
				break;
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

/* xoshiro256**: seeded once from getrandom(2) before the loop, so a reply
 * costs no system call. */
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
		r = getrandom((char *)s + got, 32 - got, 0);
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

/* ==== Logging ========================================================== */

/* Every diagnostic goes through here: to stderr, to syslog when stderr is
 * the client's socket (inetd, xinetd), or nowhere. */
static void log_line(const char *fmt, ...)
{
	char buf[LOG_MAX];
	va_list ap;
	int n, h;

	if (log_to == LOG_NONE)
		return;
	if (log_to == LOG_SYSLOG) {
		/* RFC 3164 without timestamp: the syslog daemon adds one.
		 * <30> is LOG_DAEMON | LOG_INFO. */
		h = snprintf(buf, sizeof buf, "<30>wsfilter[%ld]: ", (long)self_pid);
	} else {
		h = snprintf(buf, sizeof buf, "wsfilter: ");
	}
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
static unsigned char *out_reserve(struct conn *c, size_t n)
{
	if (OUT_BUF_SIZE - c->out_off - c->out_len < n && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len);
		c->out_off = 0;
	}
	if (OUT_BUF_SIZE - c->out_off - c->out_len < n)
		return NULL;
	return c->out + c->out_off + c->out_len;
}

static size_t out_room(const struct conn *c)
{
	return OUT_BUF_SIZE - c->out_len;
}

static void out_commit(struct conn *c, size_t n)
{
	c->out_len += n;
	c->out_total += n;
}

/* Queue bytes that must go out whole (HTTP answers, control frames). */
static int out_put(struct conn *c, const void *p, size_t n)
{
	unsigned char *dst = out_reserve(c, n);

	if (!dst)
		return -1;
	memcpy(dst, p, n);
	out_commit(c, n);
	return 0;
}

/* ==== Opening handshake (RFC 6455 4.2) ================================= */

enum http_status {
	HS_OK = 101, HTTP_OK = 200, HTTP_BAD_REQUEST = 400, HTTP_FORBIDDEN = 403,
	HTTP_NOT_FOUND = 404, HTTP_METHOD = 405, HTTP_TIMEOUT = 408,
	HTTP_UPGRADE_REQUIRED = 426, HTTP_TOO_LARGE = 431,
};

static const char *http_reason(int status)
{
	switch (status) {
	case HTTP_OK:               return "OK";
	case HTTP_BAD_REQUEST:      return "Bad Request";
	case HTTP_FORBIDDEN:        return "Forbidden";
	case HTTP_NOT_FOUND:        return "Not Found";
	case HTTP_METHOD:           return "Method Not Allowed";
	case HTTP_TIMEOUT:          return "Request Timeout";
	case HTTP_UPGRADE_REQUIRED: return "Upgrade Required";
	case HTTP_TOO_LARGE:        return "Request Header Fields Too Large";
	}
	return "Error";
}

/* A string inside the request head. */
struct span {
	const char *p;
	size_t len;
};

/* What the parser takes from the request head. */
struct hs_request {
	struct span method, target, version;
	struct span key, ws_version, origin, forwarded;
	int host, upgrade_ws, connection_upgrade, key_count;
	const char *protocol;   /* first offered protocol we know */
	const char *error;      /* why the request is refused */
};

static int span_eq(struct span s, const char *lit)
{
	return s.len == strlen(lit) && strncasecmp(s.p, lit, s.len) == 0;
}

static struct span span_trim(const char *p, size_t len)
{
	while (len && (*p == ' ' || *p == '\t'))
		p++, len--;
	while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	return (struct span){ p, len };
}

/* Calls fn for every comma-separated token of a header value. */
static void tokens_each(struct span v, void (*fn)(struct span, struct hs_request *),
			struct hs_request *r)
{
	const char *end = v.p + v.len, *p = v.p, *q;

	while (p < end) {
		q = memchr(p, ',', (size_t)(end - p));
		if (!q)
			q = end;
		fn(span_trim(p, (size_t)(q - p)), r);
		p = q + 1;
	}
}

static void tok_upgrade(struct span t, struct hs_request *r)
{
	if (span_eq(t, "websocket"))
		r->upgrade_ws = 1;
}

static void tok_connection(struct span t, struct hs_request *r)
{
	if (span_eq(t, "upgrade"))
		r->connection_upgrade = 1;
}

static void tok_protocol(struct span t, struct hs_request *r)
{
	int i;

	for (i = 0; i < opt.nprotocols && !r->protocol; i++)
		if (t.len == strlen(opt.protocols[i]) &&
		    memcmp(t.p, opt.protocols[i], t.len) == 0)
			r->protocol = opt.protocols[i];
}

static int is_tchar(unsigned char ch)
{
	return ch > 0x20 && ch < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Pure parser: the head (request line and header lines, each ending in
 * CRLF, without the final empty line) into r.  Returns 0 or an HTTP
 * status; r->error says why. */
static int hs_parse(const char *head, size_t len, struct hs_request *r)
{
	const char *end = head + len, *line = head, *eol, *colon, *sp1, *sp2;
	struct span name, value;
	size_t i;

	memset(r, 0, sizeof *r);
	eol = memmem(line, len, "\r\n", 2);
	if (!eol)
		eol = end;
	sp1 = memchr(line, ' ', (size_t)(eol - line));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || sp2 + 1 == eol) {
		r->error = "malformed request line";
		return HTTP_BAD_REQUEST;
	}
	r->method = (struct span){ line, (size_t)(sp1 - line) };
	r->target = (struct span){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
	r->version = (struct span){ sp2 + 1, (size_t)(eol - sp2 - 1) };
	for (i = 0; i < r->method.len; i++)
		if (!is_tchar((unsigned char)r->method.p[i])) {
			r->error = "malformed request line";
			return HTTP_BAD_REQUEST;
		}
	if (r->target.p[0] != '/' || memchr(r->target.p, ' ', r->target.len)) {
		r->error = "malformed request target";
		return HTTP_BAD_REQUEST;
	}
	if (r->version.len != 8 || strncmp(r->version.p, "HTTP/1.", 7) != 0 ||
	    r->version.p[7] < '0' || r->version.p[7] > '9') {
		r->error = "unsupported HTTP version";
		return HTTP_BAD_REQUEST;
	}

	for (line = eol + 2; line < end; line = eol + 2) {
		eol = memmem(line, (size_t)(end - line), "\r\n", 2);
		if (!eol)
			eol = end;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon || colon == line) {
			r->error = "malformed header line";
			return HTTP_BAD_REQUEST;
		}
		for (i = 0; line + i < colon; i++)
			if (!is_tchar((unsigned char)line[i])) {
				/* also catches obsolete line folding */
				r->error = "malformed header name";
				return HTTP_BAD_REQUEST;
			}
		name = (struct span){ line, (size_t)(colon - line) };
		value = span_trim(colon + 1, (size_t)(eol - colon - 1));
		for (i = 0; i < value.len; i++)
			if ((unsigned char)value.p[i] < 0x20 && value.p[i] != '\t') {
				r->error = "control character in header value";
				return HTTP_BAD_REQUEST;
			}
		if (span_eq(name, "Host")) {
			if (r->host++) {
				r->error = "more than one Host header";
				return HTTP_BAD_REQUEST;
			}
		} else if (span_eq(name, "Upgrade")) {
			tokens_each(value, tok_upgrade, r);
		} else if (span_eq(name, "Connection")) {
			tokens_each(value, tok_connection, r);
		} else if (span_eq(name, "Sec-WebSocket-Key")) {
			r->key = value;
			r->key_count++;
		} else if (span_eq(name, "Sec-WebSocket-Version")) {
			r->ws_version = value;
		} else if (span_eq(name, "Origin")) {
			r->origin = value;
		} else if (span_eq(name, "Sec-WebSocket-Protocol")) {
			tokens_each(value, tok_protocol, r);
		} else if (span_eq(name, "X-Forwarded-For") && !r->forwarded.p) {
			r->forwarded = value;
		}
	}

	if (!r->upgrade_ws) {
		/* plain HTTP: the page and the health check */
		if (!span_eq(r->method, "GET") && !span_eq(r->method, "HEAD")) {
			r->error = "method not allowed";
			return HTTP_METHOD;
		}
		return 0;
	}
	if (!span_eq(r->method, "GET")) {
		r->error = "WebSocket upgrade needs GET";
		return HTTP_METHOD;
	}
	if (r->version.p[7] < '1') {
		r->error = "WebSocket upgrade needs HTTP/1.1";
		return HTTP_BAD_REQUEST;
	}
	if (!r->host) {
		r->error = "missing Host";
		return HTTP_BAD_REQUEST;
	}
	if (!r->connection_upgrade) {
		r->error = "Connection header lacks Upgrade";
		return HTTP_BAD_REQUEST;
	}
	if (r->key_count != 1 || !ws_key_valid(r->key.p, r->key.len)) {
		r->error = r->key_count == 0 ? "missing Sec-WebSocket-Key"
		         : r->key_count > 1  ? "more than one Sec-WebSocket-Key"
		                             : "invalid Sec-WebSocket-Key";
		return HTTP_BAD_REQUEST;
	}
	if (!r->ws_version.p) {
		r->error = "missing Sec-WebSocket-Version";
		return HTTP_BAD_REQUEST;
	}
	if (!span_eq(r->ws_version, "13")) {
		r->error = "unsupported Sec-WebSocket-Version";
		return HTTP_UPGRADE_REQUIRED;
	}
	if (opt.norigins) {
		int ok = 0;

		for (i = 0; i < (size_t)opt.norigins && !ok; i++)
			ok = r->origin.p && span_eq(r->origin, opt.origins[i]);
		if (!ok) {
			r->error = r->origin.p ? "Origin not allowed" : "missing Origin";
			return HTTP_FORBIDDEN;
		}
	}
	return HS_OK;
}

/* Queue an HTTP answer with a plain-text or given body. */
static void http_answer(struct conn *c, int status, const char *extra,
			const char *ctype, const void *body, size_t blen, int head_only)
{
	char hdr[1024];
	int n;

	n = snprintf(hdr, sizeof hdr,
		"HTTP/1.1 %d %s\r\n"
		"Content-Type: %s\r\n"
		"Content-Length: %zu\r\n"
		"%s"
		"Connection: close\r\n\r\n",
		status, http_reason(status), ctype, blen, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof hdr || out_put(c, hdr, (size_t)n) < 0 ||
	    (!head_only && out_put(c, body, blen) < 0)) {
		/* cannot happen: the queue is empty and larger than any answer */
		c->out_len = 0;
	}
	c->http_status = status;
}

static void http_error(struct conn *c, int status, const char *why, int64_t now)
{
	char body[256];
	int n;
	const char *extra = NULL;

	n = snprintf(body, sizeof body, "%d %s: %s\n", status, http_reason(status), why);
	if (n < 0 || (size_t)n >= sizeof body)
		n = 0;
	if (status == HTTP_METHOD)
		extra = c->http_what && strcmp(c->http_what, "websocket") == 0
			? "Allow: GET\r\n" : "Allow: GET, HEAD\r\n";
	else if (status == HTTP_UPGRADE_REQUIRED)
		extra = "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
	http_answer(c, status, extra, "text/plain; charset=utf-8", body, (size_t)n, 0);
	snprintf(c->reason, sizeof c->reason, "%s", why);
	conn_linger(c, status == HTTP_TIMEOUT ? EXIT_TIMEOUT : EXIT_PROTOCOL, now);
}

/* Content-Security-Policy for the page: its own inline script and style,
 * WebSocket connections back to where it came from, nothing else. */
#define PAGE_CSP "default-src 'none'; script-src 'unsafe-inline'; " \
	"style-src 'unsafe-inline'; connect-src 'self'; img-src data:; " \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* Plain HTTP: GET or HEAD of the page or the health check. */
static void http_serve(struct conn *c, const struct hs_request *r, int64_t now)
{
	int head_only = span_eq(r->method, "HEAD");
	size_t plen = r->target.len;
	const char *q = memchr(r->target.p, '?', r->target.len);

	if (q)
		plen = (size_t)(q - r->target.p);
	if ((plen == 1) || (plen == 11 && memcmp(r->target.p, "/index.html", 11) == 0)) {
		c->http_what = "page";
		http_answer(c, HTTP_OK,
			"X-Content-Type-Options: nosniff\r\n"
			"Content-Security-Policy: " PAGE_CSP "\r\n"
			"Cache-Control: no-cache\r\n",
			"text/html; charset=utf-8", web_index, sizeof web_index, head_only);
	} else if (plen == 8 && memcmp(r->target.p, "/healthz", 8) == 0) {
		c->http_what = "health check";
		http_answer(c, HTTP_OK, "Cache-Control: no-store\r\n",
			"text/plain; charset=utf-8", "ok", 2, head_only);
	} else {
		c->http_what = "http";
		http_error(c, HTTP_NOT_FOUND, "no such page", now);
		return;
	}
	conn_linger(c, EXIT_CLEAN, now);
}

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* The head is complete (ending at head + len, CRLFCRLF included): answer it. */
static void hs_complete(struct conn *c, const char *head, size_t len, int64_t now)
{
	struct hs_request r;
	unsigned char keybuf[24 + sizeof ws_guid - 1], digest[20];
	char accept[29], resp[256];
	int status, n;

	status = hs_parse(head, len - 2, &r);
	c->http_what = r.upgrade_ws ? "websocket" : "http";
	if (opt.trust_proxy && r.forwarded.p) {
		size_t l = strlen(c->peer);
		char fwd[PEER_MAX];

		sanitize(fwd, sizeof fwd, r.forwarded.p, r.forwarded.len);
		snprintf(c->peer + l, sizeof c->peer - l, " for %s", fwd);
	}
	if (status == 0) {
		http_serve(c, &r, now);
		return;
	}
	if (status != HS_OK) {
		http_error(c, status, r.error, now);
		return;
	}
	memcpy(keybuf, r.key.p, 24);
	memcpy(keybuf + 24, ws_guid, sizeof ws_guid - 1);
	sha1(keybuf, sizeof keybuf, digest);
	base64_encode(digest, sizeof digest, accept);
	c->protocol = r.protocol;
	n = snprintf(resp, sizeof resp,
		"HTTP/1.1 101 Switching Protocols\r\n"
		"Upgrade: websocket\r\n"
		"Connection: Upgrade\r\n"
		"Sec-WebSocket-Accept: %s\r\n"
		"%s%s%s"
		"\r\n",
		accept,
		r.protocol ? "Sec-WebSocket-Protocol: " : "",
		r.protocol ? r.protocol : "",
		r.protocol ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof resp || out_put(c, resp, (size_t)n) < 0) {
		conn_fail(c, CLOSE_INTERNAL, EXIT_INTERNAL, "handshake answer too long", now);
		return;
	}
	c->http_status = 101;
	c->state = CS_OPEN;
#ifdef WSFILTER_TEST_FORBIDDEN
	/* test builds only: a call outside the allow-list proves the kill */
	(void)!open("/dev/null", O_RDONLY);
#endif
	if (opt.ping_interval)
		c->next_ping_ms = now + (int64_t)opt.ping_interval * 1000;
}

/* Look for the end of the head in the input; answer it when complete.
 * Returns the bytes consumed (the head) or 0 while it is incomplete. */
static size_t hs_feed(struct conn *c, int64_t now)
{
	const char *p = (const char *)c->in + c->in_off;
	size_t n = c->in_len - c->in_off, scan = n < HEAD_MAX ? n : HEAD_MAX;
	const char *end = memmem(p, scan, "\r\n\r\n", 4);

	if (!end) {
		if (n >= HEAD_MAX) {
			c->http_what = "http";
			http_error(c, HTTP_TOO_LARGE, "request head over 8 KiB", now);
		}
		return 0;
	}
	hs_complete(c, p, (size_t)(end - p) + 4, now);
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

/* XOR n bytes with the masking key, starting at payload offset pos, a
 * machine word at a time with the key rotated to that offset. */
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

/* Queue a control frame (payload at most 125 bytes). */
static void ctrl_frame(struct conn *c, int opcode, const unsigned char *p, size_t n)
{
	unsigned char f[2 + CTRL_MAX];

	f[0] = (unsigned char)(WSBIT_FIN | opcode);
	f[1] = (unsigned char)n;
	memcpy(f + 2, p, n);
	/* cannot fail: frames start only with OUT_FRAME_MIN free, and
	 * CLOSE_RESERVE stays free for the close */
	(void)out_put(c, f, 2 + n);
}

static void conn_close_frame(struct conn *c, int code, const char *reason)
{
	unsigned char p[CTRL_MAX];
	size_t n = 0;

	if (code) {
		p[0] = (unsigned char)(code >> 8);
		p[1] = (unsigned char)code;
		n = strlen(reason);
		if (n > CTRL_MAX - 2)
			n = CTRL_MAX - 2;
		memcpy(p + 2, reason, n);
		n += 2;
	}
	ctrl_frame(c, OP_CLOSE, p, n);
	c->close_code = code;
}

/* Everything queued is the last the client gets: flush it, shut down our
 * side, and wait up to the close timeout for the client to go. */
static void conn_linger(struct conn *c, int status, int64_t now)
{
	c->state = CS_LINGER;
	c->status = status;
	c->linger_deadline = now + (int64_t)opt.close_timeout * 1000;
	c->pong_deadline = 0;
}

/* RFC 6455 7.1.7 "Fail the WebSocket Connection": send the close code,
 * stop processing input, log why. */
static void conn_fail(struct conn *c, int code, int status, const char *reason, int64_t now)
{
	if (c->state == CS_OPEN) {
		conn_close_frame(c, code, reason);
		c->close_by = "server";
	}
	snprintf(c->reason, sizeof c->reason, "%s", reason);
	conn_linger(c, status, now);
}

/* RFC 6455 7.4.1: codes a peer may send in a close frame. */
static int close_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

/* A whole control frame with its unmasked payload. */
static void ctrl_handle(struct conn *c, int opcode, unsigned char *p, size_t n, int64_t now)
{
	struct utf8 u;
	size_t bad;
	unsigned code;

	switch (opcode) {
	case OP_PING:
		/* RFC 6455 5.5.2: answered at once with the same payload */
		ctrl_frame(c, OP_PONG, p, n);
		break;
	case OP_PONG:
		/* RFC 6455 5.5.3: unsolicited pongs are ignored */
		c->pong_deadline = 0;
		break;
	case OP_CLOSE:
		if (n == 1) {
			conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "close frame with a 1-byte payload", now);
			return;
		}
		code = n ? (unsigned)p[0] << 8 | p[1] : 0;
		if (n && !close_code_valid(code)) {
			conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "invalid close code", now);
			return;
		}
		utf8_reset(&u);
		if (n > 2 && (utf8_run(&u, p + 2, n - 2, &bad) < 0 || u.need)) {
			conn_fail(c, CLOSE_INVALID_DATA, EXIT_PROTOCOL, "close reason is not UTF-8", now);
			return;
		}
		/* RFC 6455 5.5.1: answer with a close echoing the code */
		ctrl_frame(c, OP_CLOSE, p, n ? 2 : 0);
		c->close_code = (int)code;
		c->close_by = "client";
		conn_linger(c, EXIT_CLEAN, now);
		break;
	}
}

/* Parse frames from the input and queue the answers.  Returns bytes
 * consumed.  Stops when input runs out, when the output queue is too full
 * to go on (backpressure), or when the connection fails or closes. */
static size_t frame_feed(struct conn *c, int64_t now)
{
	const unsigned char *in = c->in + c->in_off, *p;
	size_t avail = c->in_len - c->in_off, used = 0;
	struct frame *f = &c->frame;
	struct message *m = &c->msg;

	while (c->state == CS_OPEN) {
		p = in + used;
		if (!f->active) {
			size_t hlen = 2;
			uint64_t len;
			int opcode, fin, i;

			if (avail - used < 2 || out_room(c) < OUT_FRAME_MIN)
				break;
			fin = p[0] & WSBIT_FIN;
			opcode = p[0] & 0x0F;
			len = p[1] & 0x7F;
			/* each check where its field is decoded */
			if (p[0] & WSBIT_RSV) {
				conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "RSV bits set without an extension", now);
				break;
			}
			if ((opcode > OP_BINARY && opcode < OP_CLOSE) || opcode > OP_PONG) {
				conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "reserved opcode", now);
				break;
			}
			if (!(p[1] & WSBIT_MASK)) {
				/* RFC 6455 5.1: clients MUST mask every frame */
				conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "unmasked client frame", now);
				break;
			}
			if (opcode >= OP_CLOSE) {
				/* RFC 6455 5.5: control frames MUST NOT be fragmented
				 * and carry at most 125 bytes */
				if (!fin) {
					conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "fragmented control frame", now);
					break;
				}
				if (len > CTRL_MAX) {
					conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "control frame over 125 bytes", now);
					break;
				}
			} else if (opcode == OP_CONT && !m->active) {
				conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "continuation without a message in progress", now);
				break;
			} else if (opcode != OP_CONT && m->active) {
				conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "new message while a fragmented one is in progress", now);
				break;
			}
			if (len == 126) {
				if (avail - used < 4)
					break;
				len = (uint64_t)p[2] << 8 | p[3];
				hlen = 4;
				if (len < 126) {
					/* RFC 6455 5.2: the minimal number of bytes MUST be used */
					conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "non-minimal 16-bit length", now);
					break;
				}
			} else if (len == 127) {
				if (avail - used < 10)
					break;
				if (p[2] & 0x80) {
					conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "64-bit length with the top bit set", now);
					break;
				}
				for (len = 0, i = 0; i < 8; i++)
					len = len << 8 | p[2 + i];
				hlen = 10;
				if (len <= 0xFFFF) {
					conn_fail(c, CLOSE_PROTOCOL, EXIT_PROTOCOL, "non-minimal 64-bit length", now);
					break;
				}
			}
			if (avail - used < hlen + 4)
				break;
			if (opcode >= OP_CLOSE) {
				unsigned char payload[CTRL_MAX];

				/* control frames are handled whole: wait for all of it */
				if (avail - used < hlen + 4 + len)
					break;
				unmask(payload, p + hlen + 4, (size_t)len, p + hlen, 0);
				used += hlen + 4 + (size_t)len;
				ctrl_handle(c, opcode, payload, (size_t)len, now);
				continue;
			}
			if (opt.max_message && (len > opt.max_message ||
						(m->active ? m->size : 0) + len > opt.max_message)) {
				/* known from the header: fail before the payload */
				conn_fail(c, CLOSE_TOO_BIG, EXIT_PROTOCOL, "message over --max-message", now);
				break;
			}
			if (!m->active) {
				m->active = 1;
				m->opcode = opcode;
				m->out_started = 0;
				m->size = 0;
				utf8_reset(&m->utf8);
			}
			m->size += len;
			f->active = 1;
			f->fin = fin;
			f->len = len;
			f->pos = 0;
			memcpy(f->mask, p + hlen, 4);
			used += hlen + 4;
			p = in + used;
		}

		/* payload: as much as is here and fits, as one output frame */
		{
			uint64_t rem = f->len - f->pos;
			size_t room = out_room(c), chunk, hlen, slen = 0, bad;
			int last, final;
			char suffix[SUFFIX_MAX];
			unsigned char *dst;

			if (room < OUT_FRAME_MIN)
				break;
			room -= CLOSE_RESERVE + 10 + SUFFIX_MAX;
			chunk = avail - used;
			if (chunk > rem)
				chunk = (size_t)rem;
			if (chunk > room)
				chunk = room;
			if (chunk == 0 && rem > 0)
				break;
			last = chunk == rem;
			final = last && f->fin;
			if (chunk == 0 && !final) {
				/* an empty non-final fragment: nothing to forward */
				f->active = 0;
				continue;
			}
			if (final && !opt.echo) {
				memcpy(suffix, " - ", 3);
				slen = 3 + u64_to_dec(suffix + 3, rng_range(c->rng, opt.random_max));
			}
			dst = out_reserve(c, 10 + chunk + slen);
			hlen = frame_head(dst, final, m->out_started ? OP_CONT : m->opcode,
					  chunk + slen);
			unmask(dst + hlen, p, chunk, f->mask, f->pos);
			if (m->opcode == OP_TEXT &&
			    (utf8_run(&m->utf8, dst + hlen, chunk, &bad) < 0 ||
			     (final && m->utf8.need))) {
				/* RFC 6455 8.1: fail at once; the invalid bytes
				 * are never queued */
				used += chunk;
				conn_fail(c, CLOSE_INVALID_DATA, EXIT_PROTOCOL, "invalid UTF-8 in a text message", now);
				break;
			}
			memcpy(dst + hlen + chunk, suffix, slen);
			out_commit(c, hlen + chunk + slen);
			m->out_started = 1;
			c->bytes_in += chunk;
			c->bytes_out += chunk + slen;
			used += chunk;
			f->pos += chunk;
			if (last) {
				f->active = 0;
				if (f->fin) {
					m->active = 0;
					c->msgs_in++;
					c->msgs_out++;
				}
			}
		}
	}
	return used;
}

/* The protocol core: consume what it can of c->in, queue the answers in
 * c->out.  No I/O here, so tests and fuzzers call it directly. */
static size_t conn_process(struct conn *c, int64_t now)
{
	size_t used, total = 0;

	while (c->state == CS_HANDSHAKE || c->state == CS_OPEN) {
		used = c->state == CS_HANDSHAKE ? hs_feed(c, now) : frame_feed(c, now);
		c->in_off += used;
		total += used;
		if (!used)
			break;
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	return total;
}

/* ==== Timers and signals =============================================== */

static void on_signal(int sig)
{
	(void)sig;
	stop_signal++;
}

/* Act on expired timers; returns the next deadline, or -1 for none. */
static int64_t conn_timers(struct conn *c, int64_t now)
{
	int64_t next = -1, t;

#define NEXT(d) do { if ((d) > 0 && (next < 0 || (d) < next)) next = (d); } while (0)
	switch (c->state) {
	case CS_HANDSHAKE:
		t = c->start_ms + (int64_t)opt.hs_timeout * 1000;
		if (now >= t) {
			c->http_what = "http";
			if (c->in_len == 0) {
				/* nothing sent at all: a silent close */
				snprintf(c->reason, sizeof c->reason, "no request within %d s", opt.hs_timeout);
				conn_linger(c, EXIT_TIMEOUT, now);
			} else {
				http_error(c, HTTP_TIMEOUT, "request head incomplete at the handshake timeout", now);
			}
			break;
		}
		NEXT(t);
		break;
	case CS_OPEN:
		if (opt.idle_timeout) {
			t = c->last_rx_ms + (int64_t)opt.idle_timeout * 1000;
			if (now >= t) {
				conn_close_frame(c, CLOSE_GOING_AWAY, "idle timeout");
				c->close_by = "server";
				snprintf(c->reason, sizeof c->reason, "idle for %d s", opt.idle_timeout);
				conn_linger(c, EXIT_TIMEOUT, now);
				break;
			}
			NEXT(t);
		}
		if (opt.ping_interval) {
			if (c->ping_end && c->written_total >= c->ping_end) {
				/* the ping is on the wire: now the clock runs */
				c->ping_end = 0;
				c->pong_deadline = now + (int64_t)opt.ping_timeout * 1000;
			}
			if (c->pong_deadline && now >= c->pong_deadline) {
				char why[64];

				snprintf(why, sizeof why, "no pong within %d s", opt.ping_timeout);
				conn_fail(c, CLOSE_INTERNAL, EXIT_TIMEOUT, why, now);
				break;
			}
			if (!c->ping_end && !c->pong_deadline && now >= c->next_ping_ms &&
			    out_room(c) >= OUT_FRAME_MIN) {
				ctrl_frame(c, OP_PING, (const unsigned char *)"wsfilter", 8);
				c->ping_end = c->out_total;
				c->next_ping_ms = now + (int64_t)opt.ping_interval * 1000;
			}
			/* a ping that is due but finds no room waits for
			 * POLLOUT, not for a timer */
			if (!c->ping_end && !c->pong_deadline && c->next_ping_ms > now)
				NEXT(c->next_ping_ms);
			NEXT(c->pong_deadline);
		}
		break;
	case CS_LINGER:
		if (now >= c->linger_deadline) {
			c->state = CS_DONE;
			break;
		}
		NEXT(c->linger_deadline);
		break;
	case CS_DONE:
		break;
	}
#undef NEXT
	return next;
}

static void conn_on_signal(struct conn *c, int64_t now)
{
	switch (c->state) {
	case CS_HANDSHAKE:
		snprintf(c->reason, sizeof c->reason, "stopped by a signal");
		c->status = EXIT_CLEAN;
		c->state = CS_DONE;
		break;
	case CS_OPEN:
		/* the replies already queued go first, then close 1001 */
		conn_close_frame(c, CLOSE_GOING_AWAY, "server shutting down");
		c->close_by = "server";
		snprintf(c->reason, sizeof c->reason, "stopped by a signal");
		conn_linger(c, EXIT_CLEAN, now);
		break;
	case CS_LINGER:
	case CS_DONE:
		/* a second signal while closing: go now */
		c->state = CS_DONE;
		break;
	}
}

/* ==== I/O loop ========================================================= */

static void conn_read(struct conn *c, int64_t now)
{
	ssize_t n;

	if (c->state == CS_LINGER) {
		c->in_off = c->in_len = 0; /* past the end: input is dropped */
	} else if (c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	n = read(c->in_fd, c->in + c->in_len, IN_BUF_SIZE - c->in_len);
	if (n > 0 && c->state == CS_LINGER) {
		/* read only so that closing does not reset the connection
		 * and destroy our last bytes; a client that keeps sending
		 * gets no more of our time */
		c->discarded += (size_t)n;
		if (c->discarded > DISCARD_MAX)
			c->state = CS_DONE;
	} else if (n > 0) {
		c->in_len += (size_t)n;
		c->last_rx_ms = now;
	} else if (n == 0) {
		c->in_eof = 1;
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		/* reset: nothing more can be read or written */
		c->in_eof = 1;
		c->wr_err = 1;
	}
}

static void conn_write(struct conn *c)
{
	ssize_t n;

	if (!c->out_len || c->wr_err)
		return;
	n = write(c->out_fd, c->out + c->out_off, c->out_len);
	if (n > 0) {
		c->out_off += (size_t)n;
		c->out_len -= (size_t)n;
		c->written_total += (uint64_t)n;
		if (!c->out_len)
			c->out_off = 0;
	} else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		c->wr_err = 1;
	}
}

/* Our last byte is written: tell the client (RFC 6455 7.1.1: the server
 * closes the TCP connection first). */
static void conn_shut_write(struct conn *c)
{
	c->wr_shut = 1;
	if (shutdown(c->out_fd, SHUT_WR) < 0 && c->out_fd != c->in_fd)
		close(c->out_fd); /* a pipe: closing it is the EOF */
}

/* The client is gone or done: settle why, once. */
static void conn_eof(struct conn *c, int64_t now)
{
	if (c->state == CS_HANDSHAKE) {
		snprintf(c->reason, sizeof c->reason, "%s",
			 c->in_len ? "client left during the handshake" : "client left before a request");
		conn_linger(c, EXIT_GONE, now);
	} else if (c->state == CS_OPEN) {
		snprintf(c->reason, sizeof c->reason, "client left without a close%s",
			 c->frame.active ? ", mid-payload"
			 : c->in_len > c->in_off ? ", mid-frame" : "");
		conn_linger(c, EXIT_GONE, now);
	}
}

/* Process and write until the input is used up or the output backs up.
 * Never wait in poll while input that could be processed is buffered: no
 * new byte may ever come to wake us. */
static void conn_pump(struct conn *c, int64_t now)
{
	int blocked;
	size_t used;

	for (;;) {
		blocked = out_room(c) < OUT_FRAME_MIN;
		used = 0;
		if (c->state == CS_HANDSHAKE || c->state == CS_OPEN)
			used = conn_process(c, now);
		conn_write(c);
		if ((c->state != CS_HANDSHAKE && c->state != CS_OPEN) ||
		    out_room(c) < OUT_FRAME_MIN || (!used && !blocked))
			break;
	}
}

static void conn_run(struct conn *c, const sigset_t *run_mask)
{
	struct pollfd pfd[2];
	struct timespec ts;
	int64_t now, next;
	int handled = 0, npfd, rd, wr;
	short ev_in, ev_out;

	for (;;) {
		now = now_ms();
		if (stop_signal != handled) {
			handled = stop_signal;
			conn_on_signal(c, now);
		}
		if (c->wr_err && c->state != CS_DONE) {
			if (c->state != CS_LINGER) {
				c->status = EXIT_GONE;
				if (!c->reason[0])
					snprintf(c->reason, sizeof c->reason, "client reset the connection");
			}
			c->state = CS_DONE;
		}
		next = conn_timers(c, now);
		if (c->state == CS_DONE)
			break;
		if (c->state == CS_LINGER && !c->out_len) {
			if (!c->wr_shut)
				conn_shut_write(c);
			if (c->in_eof)
				break;
		}

		ev_in = !c->in_eof && (c->state == CS_LINGER || c->in_len < IN_BUF_SIZE ||
				       c->in_off) ? POLLIN : 0;
		ev_out = c->out_len ? POLLOUT : 0;
		if (c->in_fd == c->out_fd) {
			pfd[0] = (struct pollfd){ c->in_fd, (short)(ev_in | ev_out), 0 };
			npfd = 1;
		} else {
			pfd[0] = (struct pollfd){ c->in_fd, ev_in, 0 };
			pfd[1] = (struct pollfd){ c->out_fd, ev_out, 0 };
			npfd = 2;
		}
		if (next >= 0) {
			next = next > now ? next - now : 0;
			ts.tv_sec = next / 1000;
			ts.tv_nsec = (long)(next % 1000) * 1000000;
		}
		if (ppoll(pfd, (nfds_t)npfd, next >= 0 ? &ts : NULL, run_mask) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(c->reason, sizeof c->reason, "poll failed");
			c->status = EXIT_INTERNAL;
			break;
		}
		rd = ev_in && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR));
		wr = ev_out && (pfd[npfd - 1].revents & (POLLOUT | POLLHUP | POLLERR));
		now = now_ms();
		if (wr)
			conn_write(c);
		if (rd)
			conn_read(c, now);
		conn_pump(c, now);
		/* with room to spare, what is left is an incomplete head or
		 * frame that will never be completed */
		if (c->in_eof && out_room(c) >= OUT_FRAME_MIN &&
		    (c->state == CS_HANDSHAKE || c->state == CS_OPEN))
			conn_eof(c, now);
	}
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
#define SC_ALLOW(nr) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

/* Everything the connection loop calls once it runs; anything else kills
 * the process, so a bug exploited by a client cannot open files, sockets
 * or processes. */
static const struct sock_filter sandbox_filter[] = {
	/* a call from another architecture's table: kill */
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	SC_ALLOW(__NR_read),            /* the client's bytes */
	SC_ALLOW(__NR_write),           /* replies; log lines to stderr */
	SC_ALLOW(__NR_ppoll),           /* the loop's one wait */
#ifdef __NR_poll
	SC_ALLOW(__NR_poll),            /* libc may route poll here */
#endif
	SC_ALLOW(__NR_shutdown),        /* our side done: FIN to the client */
	SC_ALLOW(__NR_close),           /* the same for a pipe */
	SC_ALLOW(__NR_clock_gettime),   /* timers, when the vDSO falls back */
	SC_ALLOW(__NR_sendto),          /* log lines to syslog (send) */
	SC_ALLOW(__NR_rt_sigreturn),    /* return from the stop-signal handler */
	SC_ALLOW(__NR_exit_group),      /* the end */
	SC_ALLOW(__NR_exit),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
};
#endif

/* Returns 0 when the filter is on, -1 when this system cannot have it. */
static int sandbox_enter(void)
{
#ifdef SECCOMP_ARCH
	struct sock_fprog prog = {
		.len = (unsigned short)(sizeof sandbox_filter / sizeof sandbox_filter[0]),
		.filter = (struct sock_filter *)sandbox_filter,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -1;
	return 0;
#else
	errno = ENOSYS;
	return -1;
#endif
}

/* ==== Options and main ================================================= */

static const char usage_text[] =
	"usage: wsfilter [--echo] [--random-max N] [--origin ORIGIN]... [--protocol NAME]...\n"
	"                [--max-message BYTES] [--handshake-timeout S] [--idle-timeout S]\n"
	"                [--close-timeout S] [--ping-interval S] [--ping-timeout S]\n"
	"                [--trust-proxy] [--log=auto|stderr|syslog|none] [-q]\n"
	"                [--no-sandbox | --sandbox=required] [-h] [-V]\n";

static const char help_text[] =
	"WebSocket (RFC 6455) server for one connection on stdin/stdout, started by a\n"
	"launcher (systemd Accept=yes, inetd, xinetd, tcpserver, socat ... EXEC:).\n"
	"Every message comes back followed by \" - N\" (N random); GET / serves a test page.\n"
	"\n"
	"  --echo                 return every message unchanged\n"
	"  --random-max N         N is drawn from 1..N (default 1000)\n"
	"  --origin ORIGIN        accept only this Origin (repeatable; default: any)\n"
	"  --protocol NAME        accept this subprotocol (repeatable; client's order wins)\n"
	"  --max-message BYTES    close with 1009 above this size (default 0: unlimited)\n"
	"  --handshake-timeout S  seconds to receive the request head (default 10)\n"
	"  --idle-timeout S       close after S seconds without input (default 0: off)\n"
	"  --close-timeout S      seconds to wait for the client after closing (default 2)\n"
	"  --ping-interval S      send a keepalive ping every S seconds (default 0: off)\n"
	"  --ping-timeout S       close with 1011 when no pong comes (default: interval)\n"
	"  --trust-proxy          log X-Forwarded-For (only behind a proxy you run)\n"
	"  --log=WHERE            auto (default), stderr, syslog or none\n"
	"  -q, --quiet            same as --log=none\n"
	"  --no-sandbox           do not install the seccomp filter\n"
	"  --sandbox=required     refuse to run without the seccomp filter\n"
	"  -h, --help             this help\n"
	"  -V, --version          the version\n"
	"\n"
	"Exit status: 0 clean close or page served, 1 internal error, 2 usage,\n"
	"3 client broke the protocol, 4 client left without a close, 5 timeout.\n";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "wsfilter: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", usage_text);
	exit(EXIT_USAGE);
}

/* A number from the command line, in [min, max], or a usage error. */
static long long parse_num(const char *s, long long min, long long max, const char *name)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "wsfilter: %s: '%s' is not a number from %lld to %lld\n%s",
			name, s, min, max, usage_text);
		exit(EXIT_USAGE);
	}
	return v;
}

enum {
	OPT_ECHO = 256, OPT_RANDOM_MAX, OPT_ORIGIN, OPT_PROTOCOL, OPT_MAX_MESSAGE,
	OPT_HS_TIMEOUT, OPT_IDLE_TIMEOUT, OPT_CLOSE_TIMEOUT, OPT_PING_INTERVAL,
	OPT_PING_TIMEOUT, OPT_TRUST_PROXY, OPT_LOG, OPT_NO_SANDBOX, OPT_SANDBOX,
};

static void parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "echo",              no_argument,       NULL, OPT_ECHO },
		{ "random-max",        required_argument, NULL, OPT_RANDOM_MAX },
		{ "origin",            required_argument, NULL, OPT_ORIGIN },
		{ "protocol",          required_argument, NULL, OPT_PROTOCOL },
		{ "max-message",       required_argument, NULL, OPT_MAX_MESSAGE },
		{ "handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT },
		{ "idle-timeout",      required_argument, NULL, OPT_IDLE_TIMEOUT },
		{ "close-timeout",     required_argument, NULL, OPT_CLOSE_TIMEOUT },
		{ "ping-interval",     required_argument, NULL, OPT_PING_INTERVAL },
		{ "ping-timeout",      required_argument, NULL, OPT_PING_TIMEOUT },
		{ "trust-proxy",       no_argument,       NULL, OPT_TRUST_PROXY },
		{ "log",               required_argument, NULL, OPT_LOG },
		{ "quiet",             no_argument,       NULL, 'q' },
		{ "no-sandbox",        no_argument,       NULL, OPT_NO_SANDBOX },
		{ "sandbox",           required_argument, NULL, OPT_SANDBOX },
		{ "help",              no_argument,       NULL, 'h' },
		{ "version",           no_argument,       NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int ch, i;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":qhV", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_ECHO:
			opt.echo = 1;
			break;
		case OPT_RANDOM_MAX:
			opt.random_max = (uint64_t)parse_num(optarg, 1, 1000000000000LL, "--random-max");
			break;
		case OPT_ORIGIN:
		case OPT_PROTOCOL:
			if (ch == OPT_ORIGIN ? opt.norigins == LIST_MAX : opt.nprotocols == LIST_MAX)
				usage_error("too many %s options", ch == OPT_ORIGIN ? "--origin" : "--protocol");
			if (!*optarg)
				usage_error("%s needs a value", ch == OPT_ORIGIN ? "--origin" : "--protocol");
			if (ch == OPT_PROTOCOL) {
				for (i = 0; optarg[i]; i++)
					if (!is_tchar((unsigned char)optarg[i]))
						usage_error("--protocol '%s' is not an HTTP token", optarg);
				opt.protocols[opt.nprotocols++] = optarg;
			} else {
				opt.origins[opt.norigins++] = optarg;
			}
			break;
		case OPT_MAX_MESSAGE:
			opt.max_message = (uint64_t)parse_num(optarg, 0, 1LL << 62, "--max-message");
			break;
		case OPT_HS_TIMEOUT:
			opt.hs_timeout = (int)parse_num(optarg, 1, 86400, "--handshake-timeout");
			break;
		case OPT_IDLE_TIMEOUT:
			opt.idle_timeout = (int)parse_num(optarg, 0, 86400 * 365, "--idle-timeout");
			break;
		case OPT_CLOSE_TIMEOUT:
			opt.close_timeout = (int)parse_num(optarg, 0, 3600, "--close-timeout");
			break;
		case OPT_PING_INTERVAL:
			opt.ping_interval = (int)parse_num(optarg, 0, 86400, "--ping-interval");
			break;
		case OPT_PING_TIMEOUT:
			opt.ping_timeout = (int)parse_num(optarg, 1, 86400, "--ping-timeout");
			break;
		case OPT_TRUST_PROXY:
			opt.trust_proxy = 1;
			break;
		case OPT_LOG:
			if (!strcmp(optarg, "auto"))        opt.log = LOG_AUTO;
			else if (!strcmp(optarg, "stderr")) opt.log = LOG_STDERR;
			else if (!strcmp(optarg, "syslog")) opt.log = LOG_SYSLOG;
			else if (!strcmp(optarg, "none"))   opt.log = LOG_NONE;
			else usage_error("--log: '%s' is not auto, stderr, syslog or none", optarg);
			break;
		case 'q':
			opt.log = LOG_NONE;
			break;
		case OPT_NO_SANDBOX:
			opt.sandbox = 0;
			break;
		case OPT_SANDBOX:
			if (!strcmp(optarg, "required"))  opt.sandbox = 2;
			else if (!strcmp(optarg, "on"))   opt.sandbox = 1;
			else if (!strcmp(optarg, "off"))  opt.sandbox = 0;
			else usage_error("--sandbox: '%s' is not on, off or required", optarg);
			break;
		case 'h':
			printf("%s\n%s", usage_text, help_text);
			exit(EXIT_CLEAN);
		case 'V':
			printf("wsfilter %s\n", VERSION);
			exit(EXIT_CLEAN);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
			break;
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!opt.ping_timeout)
		opt.ping_timeout = opt.ping_interval;
}

/* systemd's LISTEN_FDS protocol, as sd_listen_fds(3) reads it: the
 * connection is fd 3 when LISTEN_PID is ours.  Returns the fd, or -1 when
 * the variables are not for us. */
static int listen_fd(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	char *end;
	long v;

	if (!pid || !fds)
		return -1;
	errno = 0;
	v = strtol(pid, &end, 10);
	if (errno || *end || v != (long)getpid())
		return -1;
	v = strtol(fds, &end, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (errno || *end || v != 1) {
		fprintf(stderr, "wsfilter: LISTEN_FDS=%s: expected exactly one connection "
			"(use Accept=yes)\n", fds);
		exit(EXIT_USAGE);
	}
	return 3;
}

/* Who the client is, for the log line, in the launchers' own words. */
static void peer_name(struct conn *c)
{
	static const char *const vars[][2] = {
		{ "REMOTE_ADDR", "REMOTE_PORT" },       /* systemd Accept=yes */
		{ "TCPREMOTEIP", "TCPREMOTEPORT" },     /* tcpserver */
		{ "SOCAT_PEERADDR", "SOCAT_PEERPORT" }, /* socat */
	};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char addr[INET6_ADDRSTRLEN], portbuf[8], raw[2 * PEER_MAX + 8];
	const char *a = NULL, *port = NULL;
	size_t i;

	for (i = 0; i < sizeof vars / sizeof vars[0] && !a; i++) {
		a = getenv(vars[i][0]);
		port = getenv(vars[i][1]);
	}
	if (!a && getpeername(c->in_fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			a = inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof addr);
			snprintf(portbuf, sizeof portbuf, "%u", ntohs(s4->sin_port));
			port = portbuf;
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			a = inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
			snprintf(portbuf, sizeof portbuf, "%u", ntohs(s6->sin6_port));
			port = portbuf;
		} else if (ss.ss_family == AF_UNIX) {
			a = "unix";
		}
	}
	if (!a) {
		snprintf(c->peer, sizeof c->peer, "stdin");
		return;
	}
	/* peer text from the environment: capped before use */
	snprintf(raw, sizeof raw, port && strchr(a, ':') ? "[%.*s]:%.8s" : port ? "%.*s:%.8s" : "%.*s",
		 PEER_MAX, a, port ? port : "");
	sanitize(c->peer, sizeof c->peer, raw, strlen(raw));
}

/* Where log lines go: under inetd and xinetd fd 2 is the client's socket,
 * and a line written there would land in the client's stream. */
static void log_setup(const struct conn *c)
{
	struct stat s2, sc;
	struct sockaddr_un sun = { .sun_family = AF_UNIX, .sun_path = "/dev/log" };

	log_to = opt.log;
	if (log_to == LOG_AUTO) {
		if (fstat(2, &s2) < 0)
			log_to = LOG_NONE;
		else if (fstat(c->in_fd, &sc) == 0 && s2.st_dev == sc.st_dev &&
			 s2.st_ino == sc.st_ino)
			log_to = LOG_SYSLOG;
		else
			log_to = LOG_STDERR;
	}
	if (log_to == LOG_SYSLOG) {
		syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (syslog_fd >= 0 &&
		    connect(syslog_fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
			close(syslog_fd);
			syslog_fd = -1;
		}
	}
}

/* Set up the descriptors: no delayed ACKs on TCP, non-blocking I/O so
 * that one poll loop drives both directions.  A terminal is left as it is
 * (others share it). */
static void fd_setup(int fd)
{
	int one = 1, fl;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (isatty(fd))
		return;
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void log_summary(const struct conn *c, int64_t now)
{
	int64_t ms = now - c->start_ms;
	char close_txt[64] = "", reason[REASON_MAX + 8] = "";

	if (c->reason[0])
		snprintf(reason, sizeof reason, " (%s)", c->reason);
	if (c->http_status == 101) {
		if (c->close_code || c->close_by)
			snprintf(close_txt, sizeof close_txt, ", close %d by %s",
				 c->close_code, c->close_by ? c->close_by : "server");
		log_line("%s websocket%s%s %lld.%03llds, in %llu msg %llu B, out %llu msg %llu B%s%s, exit %d",
			 c->peer, c->protocol ? " " : "", c->protocol ? c->protocol : "",
			 (long long)(ms / 1000), (long long)(ms % 1000),
			 (unsigned long long)c->msgs_in, (unsigned long long)c->bytes_in,
			 (unsigned long long)c->msgs_out, (unsigned long long)c->bytes_out,
			 close_txt, reason, c->status);
	} else if (c->http_status) {
		int what = c->http_what && strcmp(c->http_what, "http") != 0;

		log_line("%s http %d%s%s %lld.%03llds%s, exit %d", c->peer, c->http_status,
			 what ? " " : "", what ? c->http_what : "", (long long)(ms / 1000),
			 (long long)(ms % 1000), reason, c->status);
	} else {
		log_line("%s no request %lld.%03llds%s, exit %d", c->peer, (long long)(ms / 1000),
			 (long long)(ms % 1000), reason, c->status);
	}
}

#ifndef WSFILTER_NO_MAIN
int main(int argc, char **argv)
{
	struct conn *c = &conn;
	struct sigaction sa;
	sigset_t block, run_mask;
	int fd;

	parse_options(argc, argv);
	self_pid = getpid();

	fd = listen_fd();
	c->in_fd = fd >= 0 ? fd : 0;
	c->out_fd = fd >= 0 ? fd : 1;
	c->start_ms = c->last_rx_ms = now_ms();
	log_setup(c);
	peer_name(c);
	fd_setup(c->in_fd);
	if (c->out_fd != c->in_fd)
		fd_setup(c->out_fd);
	rng_seed(c->rng);

	/* signals only set a flag; they are let in during ppoll alone */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &run_mask);
	sigdelset(&run_mask, SIGTERM);
	sigdelset(&run_mask, SIGINT);
	sigdelset(&run_mask, SIGHUP);

	if (opt.sandbox && !SANITIZER_BUILD && sandbox_enter() < 0) {
		if (opt.sandbox == 2) {
			log_line("cannot install the seccomp filter: %s", strerror(errno));
			return EXIT_INTERNAL;
		}
		log_line("warning: running without the seccomp filter: %s", strerror(errno));
	}

	conn_run(c, &run_mask);
	log_summary(c, now_ms());
	return c->status;
}
#endif
