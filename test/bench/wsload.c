/*
 * wsload: load client for wsfilter's benchmark (libc only).
 *
 * Opens C connections to HOST:PORT at once (one epoll loop, non-blocking
 * sockets), does the WebSocket handshake on each (random 16-byte key, checks
 * "101" and Sec-WebSocket-Accept), waits until every connection is open, then
 * sends N masked text messages of S bytes per connection keeping at most W
 * of them outstanding, verifies every reply in order and closes cleanly
 * (close 1000, waits for the server's close and for the end of the stream).
 *
 * A reply must be the sent text followed by " - " and 1-4 digits, or the
 * same text with --echo.  Message i reads "Hello Server <i>" padded with
 * letters to S bytes (if that is longer than S, its last S bytes).
 *
 * --raw speaks plain TCP instead: each message is the same text and "\n",
 * the reply the text, the optional suffix and "\n"; a first line "wsload"
 * and its answer take the place of the handshake.
 * --connections M measures connection setup instead: M connections one
 * after the other, each handshake + one message + close.
 * --binary sends binary messages and reads the replies as one byte stream
 * (implies --echo): the server may cut and join its binary messages
 * anywhere, as websocketd --binary and wsfilter --binary PROGRAM do, as long
 * as the bytes come back in order.
 * --ready FILE: once every reply is in, write wsload's pid to FILE and hold
 * every connection open (still reading: pings are answered, a connection
 * the server ends counts as failed) until SIGUSR1 or --hold S seconds, then
 * close.  -c goes up to 100,000; the soft open-files limit is raised to the
 * hard one if the connections need it.
 *
 * Output: one line of key=value figures on stdout.  Exit status 0 when every
 * reply arrived and matched, 1 otherwise, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ==== Limits ==== */

#define OUT_SIZE	(128 * 1024)	/* per-connection send buffer */
#define IN_SIZE		(256 * 1024)	/* per-read receive buffer (shared) */
#define HS_MAX		8192		/* largest handshake response accepted */
#define SUFFIX_MAX	7		/* " - " and at most 4 digits */
#define FILL_PERIOD	26		/* filler is the alphabet, repeated */
#define TEXT_MAX	48		/* "Hello Server <i>" fits easily */
#define RAW_GREETING	"wsload\n"	/* --raw: the first line, not counted */

/* ==== Types ==== */

enum conn_state {
	CS_CONNECTING,	/* non-blocking connect in progress */
	CS_HANDSHAKE,	/* request queued, waiting for the 101 */
	CS_OPEN,	/* exchanging messages */
	CS_DRAINED,	/* every reply in, waiting for the others (hold/close) */
	CS_CLOSING,	/* close sent (or write side shut), waiting for the end */
	CS_DONE,	/* stream ended cleanly */
	CS_FAILED	/* error, early end or protocol violation */
};

enum rx_state { RX_HEADER, RX_PAYLOAD };

struct conn {
	int fd;
	enum conn_state state;
	char accept[32];		/* expected Sec-WebSocket-Accept */
	double t_connect;		/* when connect() was called */
	uint32_t events;		/* epoll interest registered, 0 none */

	unsigned char out[OUT_SIZE];	/* bytes queued for the socket */
	size_t out_off, out_len;

	long next_send;			/* index of the message being queued */
	uint64_t send_off;		/* bytes of it already queued */
	char tx_text[TEXT_MAX];		/* its leading text */
	size_t tx_text_len;
	uint32_t mask;			/* its masking key */

	long next_recv;			/* index of the reply being read */
	uint64_t rx_off;		/* bytes of it read so far */
	char rx_text[TEXT_MAX];		/* expected leading text */
	size_t rx_text_len;
	char suffix[SUFFIX_MAX];	/* bytes after the sent text */
	size_t suffix_len;
	int rx_bad;			/* this reply does not match */
	int in_message;			/* a data frame without FIN was seen */

	unsigned char hs[HS_MAX];	/* handshake response so far */
	size_t hs_len;

	enum rx_state rx;		/* frame decoder state */
	unsigned char hdr[14];
	size_t hdr_len, hdr_need;
	int opcode, fin;
	uint64_t payload_left;
	unsigned char ctl[125];		/* control frame payload */
	size_t ctl_len;

	int close_code;			/* the server's close code, -1 none */
	double *sent_at;		/* send time of each message */
};

struct options {
	const char *host, *port, *path;
	int nconns;
	long nmsgs;
	uint64_t size;
	long window;
	long sequential;		/* --connections M, 0 = off */
	int echo, raw, binary;
	double timeout, stall, hold;
	const char *ready_file;
};

struct stats {
	long received, mismatched, lost, close_errors, failed;
	long reply_frames;		/* data messages the server sent */
	double *lat;			/* microseconds, one per reply or connection */
	long nlat;
	char why[160];			/* first failure, for the report */
};

static struct options opt = {
	.host = "127.0.0.1", .port = NULL, .path = "/", .nconns = 1,
	.nmsgs = 1000, .size = 17, .window = 0, .timeout = 120, .stall = 5,
	.hold = 30,
};
static struct stats st;
static struct addrinfo *target;
static unsigned char fill[OUT_SIZE + FILL_PERIOD];
static uint64_t rng_state;
static unsigned char inbuf[IN_SIZE];

/* ==== Helpers ==== */

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
cpu_time(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	    ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
note_failure(const char *fmt, ...)
{
	va_list ap;

	if (st.why[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(st.why, sizeof(st.why), fmt, ap);
	va_end(ap);
}

/* xorshift64*: masking keys and the handshake key need no more than this. */
static uint64_t
rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static void
die(const char *msg)
{
	fprintf(stderr, "wsload: %s\n", msg);
	exit(2);
}

/* ---- SHA-1 (FIPS 180-4), only for checking Sec-WebSocket-Accept ---- */

static uint32_t
rol32(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static void
sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdc;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6;
		}
		t = rol32(a, 5) + f + e + k + w[i];
		e = d; d = c; c = rol32(b, 30); b = a; a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

/* Digest of a short message (the key and the GUID: under 120 bytes). */
static void
sha1(const char *msg, size_t len, unsigned char out[20])
{
	uint32_t h[5] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476,
	    0xc3d2e1f0 };
	unsigned char buf[128];
	size_t padded = (len + 8) / 64 * 64 + 64, i;
	uint64_t bits = (uint64_t)len * 8;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, msg, len);
	buf[len] = 0x80;
	for (i = 0; i < 8; i++)
		buf[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (i = 0; i < padded; i += 64)
		sha1_block(h, buf + i);
	for (i = 0; i < 20; i++)
		out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static void
base64(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	uint32_t v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = tab[v & 63];
	}
	if (len - i == 1) {
		v = (uint32_t)in[i] << 16;
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*out++ = tab[v >> 18];
		*out++ = tab[(v >> 12) & 63];
		*out++ = tab[(v >> 6) & 63];
		*out++ = '=';
	}
	*out = '\0';
}

/* ==== Message content ==== */

/* The leading text of message i: "Hello Server <i>", at most S bytes. */
static size_t
message_text(long i, char *buf)
{
	static const char hello[] = "Hello Server ";
	char tmp[TEXT_MAX], digits[24];
	size_t len = sizeof(hello) - 1, nd = 0;

	/* by hand: this runs twice per message, snprintf would dominate */
	memcpy(tmp, hello, len);
	do {
		digits[nd++] = (char)('0' + i % 10);
		i /= 10;
	} while (i > 0);
	while (nd > 0)
		tmp[len++] = digits[--nd];

	if (len > opt.size) {
		/* keep the index: it is what shows a reordering */
		memcpy(buf, tmp + (len - opt.size), opt.size);
		return opt.size;
	}
	memcpy(buf, tmp, len);
	return len;
}

/*
 * Bytes [off, off+len) of a message on the wire (before masking): the text,
 * the alphabet as filler up to S bytes, and in raw mode a final newline.
 */
static void
message_bytes(const char *text, size_t text_len, uint64_t off,
    unsigned char *dst, size_t len)
{
	size_t n;

	if (off < text_len) {
		n = text_len - off < len ? text_len - off : len;
		memcpy(dst, text + off, n);
		dst += n; off += n; len -= n;
	}
	while (len > 0 && off < opt.size) {
		n = opt.size - off < len ? (size_t)(opt.size - off) : len;
		if (n > OUT_SIZE)
			n = OUT_SIZE;
		memcpy(dst, fill + off % FILL_PERIOD, n);
		dst += n; off += n; len -= n;
	}
	if (len > 0)		/* raw mode: the line's end */
		*dst = '\n';
}

/* Does data equal bytes [off, off+len) of the expected text and filler? */
static int
message_matches(const char *text, size_t text_len, uint64_t off,
    const unsigned char *data, size_t len)
{
	size_t n;

	if (off < text_len) {
		n = text_len - off < len ? text_len - off : len;
		if (memcmp(data, text + off, n) != 0)
			return 0;
		data += n; off += n; len -= n;
	}
	while (len > 0) {
		n = len > OUT_SIZE ? OUT_SIZE : len;
		if (memcmp(data, fill + off % FILL_PERIOD, n) != 0)
			return 0;
		data += n; off += n; len -= n;
	}
	return 1;
}

/* XOR with the masking key, the key rotated to the payload offset. */
static void
mask_bytes(unsigned char *p, size_t len, uint32_t key, uint64_t off)
{
	unsigned char k[4];
	uint64_t word, v;
	size_t i = 0;
	int j;

	for (j = 0; j < 4; j++)
		k[j] = (unsigned char)(key >> (8 * ((off + (unsigned)j) % 4)));
	memcpy(&word, k, 4);
	memcpy((unsigned char *)&word + 4, k, 4);
	for (; i + 8 <= len; i += 8) {
		memcpy(&v, p + i, 8);
		v ^= word;
		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] ^= k[i % 4];
}

/* The masking key on the wire: byte j is the key's bits 8j..8j+7. */
static void
put_key(unsigned char *o, uint32_t key)
{
	int j;

	for (j = 0; j < 4; j++)
		o[j] = (unsigned char)(key >> (8 * j));
}

/* ==== Replies ==== */

static void
reply_begin(struct conn *c)
{
	c->rx_off = 0;
	c->suffix_len = 0;
	c->rx_bad = 0;
	if (c->next_recv < opt.nmsgs)
		c->rx_text_len = message_text(c->next_recv, c->rx_text);
}

static void
reply_bytes(struct conn *c, const unsigned char *p, size_t len)
{
	size_t n;

	if (c->rx_bad || c->next_recv >= opt.nmsgs) {
		c->rx_bad = 1;
		return;
	}
	if (c->rx_off < opt.size) {
		n = opt.size - c->rx_off < len ? (size_t)(opt.size - c->rx_off) : len;
		if (!message_matches(c->rx_text, c->rx_text_len, c->rx_off, p, n))
			c->rx_bad = 1;
		p += n; len -= n; c->rx_off += n;
	}
	if (len > 0) {
		if (c->suffix_len + len > SUFFIX_MAX) {
			c->rx_bad = 1;
			return;
		}
		memcpy(c->suffix + c->suffix_len, p, len);
		c->suffix_len += len;
		c->rx_off += len;
	}
}

static int
suffix_ok(const struct conn *c)
{
	size_t i;

	if (opt.echo)
		return c->suffix_len == 0;
	if (c->suffix_len < 4 || memcmp(c->suffix, " - ", 3) != 0)
		return 0;
	if (c->suffix[3] == '0')
		return 0;
	for (i = 3; i < c->suffix_len; i++)
		if (c->suffix[i] < '0' || c->suffix[i] > '9')
			return 0;
	return 1;
}

static void queue_close(struct conn *c);
static void reply_end(struct conn *c, double t);

/* --binary: replies are a byte stream, each S bytes one reply */
static void
stream_bytes(struct conn *c, const unsigned char *p, size_t len, double t)
{
	size_t n;

	while (len > 0) {
		if (c->next_recv >= opt.nmsgs) {
			st.mismatched++;
			note_failure("bytes after the last reply");
			return;
		}
		n = opt.size - c->rx_off < len ? (size_t)(opt.size - c->rx_off) : len;
		if (!c->rx_bad &&
		    !message_matches(c->rx_text, c->rx_text_len, c->rx_off, p, n))
			c->rx_bad = 1;
		p += n; len -= n; c->rx_off += n;
		if (c->rx_off == opt.size)
			reply_end(c, t);
	}
}

static void
reply_end(struct conn *c, double t)
{
	if (c->next_recv >= opt.nmsgs) {
		st.mismatched++;
		note_failure("unexpected extra reply");
		return;
	}
	if (c->rx_bad || c->rx_off < opt.size || !suffix_ok(c)) {
		st.mismatched++;
		note_failure("reply %ld does not match", c->next_recv);
	}
	st.received++;
	if (!opt.sequential)
		st.lat[st.nlat++] = (t - c->sent_at[c->next_recv]) * 1e6;
	c->next_recv++;
	reply_begin(c);
	if (c->next_recv == opt.nmsgs && c->state == CS_OPEN)
		c->state = CS_DRAINED;
}

/* ==== Output ==== */

static void
out_reserve(struct conn *c, size_t need)
{
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
	} else if (OUT_SIZE - c->out_len < need && c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
}

/* Queue a masked frame with a short payload (control frames). */
static void
queue_control(struct conn *c, int opcode, const unsigned char *p, size_t len)
{
	uint32_t key = (uint32_t)rng_next();
	unsigned char *o;

	out_reserve(c, len + 6);
	if (OUT_SIZE - c->out_len < len + 6) {
		note_failure("send buffer full for a control frame");
		c->state = CS_FAILED;
		return;
	}
	o = c->out + c->out_len;
	o[0] = (unsigned char)(0x80 | opcode);
	o[1] = (unsigned char)(0x80 | len);
	put_key(o + 2, key);
	memcpy(o + 6, p, len);
	mask_bytes(o + 6, len, key, 0);
	c->out_len += len + 6;
}

static void
queue_close(struct conn *c)
{
	static const unsigned char normal[2] = { 0x03, 0xe8 };	/* 1000 */

	if (opt.raw)
		shutdown(c->fd, SHUT_WR);
	else
		queue_control(c, 0x8, normal, 2);
	if (c->state != CS_FAILED)
		c->state = CS_CLOSING;
}

/* Queue as many messages as the window and the buffer allow. */
static void
fill_out(struct conn *c, double t)
{
	uint64_t wire = opt.size + (opt.raw ? 1 : 0);
	size_t room, n;
	unsigned char *o;

	if (c->state != CS_OPEN)
		return;
	for (;;) {
		out_reserve(c, 14 + 64);
		if (c->send_off == 0) {
			if (c->next_send >= opt.nmsgs ||
			    c->next_send - c->next_recv >= opt.window)
				return;
			if (OUT_SIZE - c->out_len < 14 + 64)
				return;
			o = c->out + c->out_len;
			c->tx_text_len = message_text(c->next_send, c->tx_text);
			c->sent_at[c->next_send] = t;
			if (!opt.raw) {
				c->mask = (uint32_t)rng_next();
				*o++ = opt.binary ? 0x82 : 0x81;	/* FIN, text or binary */
				if (opt.size < 126) {
					*o++ = (unsigned char)(0x80 | opt.size);
				} else if (opt.size < 65536) {
					*o++ = 0x80 | 126;
					*o++ = (unsigned char)(opt.size >> 8);
					*o++ = (unsigned char)opt.size;
				} else {
					int i;

					*o++ = 0x80 | 127;
					for (i = 7; i >= 0; i--)
						*o++ = (unsigned char)(opt.size >> (8 * i));
				}
				put_key(o, c->mask);
				o += 4;
				c->out_len = (size_t)(o - c->out);
			}
			if (wire == 0) {
				c->next_send++;
				continue;
			}
		}
		room = OUT_SIZE - c->out_len;
		if (room == 0)
			return;
		n = wire - c->send_off < room ? (size_t)(wire - c->send_off) : room;
		o = c->out + c->out_len;
		message_bytes(c->tx_text, c->tx_text_len, c->send_off, o, n);
		if (!opt.raw)
			mask_bytes(o, n, c->mask, c->send_off);
		c->out_len += n;
		c->send_off += n;
		if (c->send_off == wire) {
			c->send_off = 0;
			c->next_send++;
		}
	}
}

/* Write what is queued; 0 on success (including EAGAIN), -1 on error. */
static int
flush_out(struct conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			note_failure("write: %s", strerror(errno));
			return -1;
		}
		c->out_off += (size_t)n;
	}
	return 0;
}

/* Queue and write until the socket is full or nothing is left to send. */
static int
pump(struct conn *c, double t, int go)
{
	do {
		if (go)
			fill_out(c, t);
		if (c->out_off == c->out_len)
			return 0;
		if (flush_out(c) < 0)
			return -1;
	} while (c->out_off == c->out_len);
	return 0;
}

/* ==== Input ==== */

static void
conn_fail(struct conn *c, const char *why)
{
	note_failure("%s", why);
	c->state = CS_FAILED;
}

/* Handle a control frame from the server. */
static void
control_frame(struct conn *c)
{
	switch (c->opcode) {
	case 0x8:	/* close */
		c->close_code = c->ctl_len >= 2 ? c->ctl[0] << 8 | c->ctl[1] : 1005;
		if (c->state == CS_CLOSING) {
			/* our close was answered: wait for the end of the stream */
			return;
		}
		note_failure("server closed with %d before the last reply",
		    c->close_code);
		queue_close(c);
		c->state = CS_FAILED;
		break;
	case 0x9:	/* ping */
		queue_control(c, 0xa, c->ctl, c->ctl_len);
		break;
	case 0xa:	/* pong */
		break;
	default:
		conn_fail(c, "unknown control opcode");
	}
}

/* Decode server frames (RFC 6455 5.2; server frames are not masked). */
static void
frames_in(struct conn *c, const unsigned char *p, size_t len, double t)
{
	size_t n;

	while (len > 0 && c->state != CS_FAILED) {
		if (c->rx == RX_HEADER) {
			if (c->hdr_len < 2) {
				c->hdr[c->hdr_len++] = *p++;
				len--;
				if (c->hdr_len < 2)
					continue;
				if (c->hdr[1] & 0x80) {
					conn_fail(c, "server frame is masked");
					return;
				}
				c->hdr_need = 2 + ((c->hdr[1] & 0x7f) == 126 ? 2 :
				    (c->hdr[1] & 0x7f) == 127 ? 8 : 0);
			}
			n = c->hdr_need - c->hdr_len < len ? c->hdr_need - c->hdr_len : len;
			memcpy(c->hdr + c->hdr_len, p, n);
			c->hdr_len += n; p += n; len -= n;
			if (c->hdr_len < c->hdr_need)
				continue;
			c->fin = c->hdr[0] & 0x80;
			c->opcode = c->hdr[0] & 0x0f;
			if (c->hdr_need == 2) {
				c->payload_left = c->hdr[1] & 0x7f;
			} else if (c->hdr_need == 4) {
				c->payload_left = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
			} else {
				int i;

				c->payload_left = 0;
				for (i = 2; i < 10; i++)
					c->payload_left = c->payload_left << 8 | c->hdr[i];
			}
			c->hdr_len = 0;
			c->ctl_len = 0;
			if (c->opcode & 0x8) {
				if (!c->fin || c->payload_left > 125) {
					conn_fail(c, "bad control frame");
					return;
				}
			} else if (c->opcode == 0) {
				if (!c->in_message) {
					conn_fail(c, "continuation without a message");
					return;
				}
			} else if (c->opcode == 1 || c->opcode == 2) {
				if (c->in_message) {
					conn_fail(c, "new message inside a message");
					return;
				}
				c->in_message = 1;
			} else {
				conn_fail(c, "unknown opcode");
				return;
			}
			c->rx = RX_PAYLOAD;
		}
		n = c->payload_left < len ? (size_t)c->payload_left : len;
		if (c->opcode & 0x8) {
			memcpy(c->ctl + c->ctl_len, p, n);
			c->ctl_len += n;
		} else if (opt.binary) {
			stream_bytes(c, p, n, t);
		} else {
			reply_bytes(c, p, n);
		}
		p += n; len -= n; c->payload_left -= n;
		if (c->payload_left > 0)
			continue;
		c->rx = RX_HEADER;
		if (c->opcode & 0x8) {
			control_frame(c);
		} else if (c->fin) {
			c->in_message = 0;
			st.reply_frames++;
			if (!opt.binary)
				reply_end(c, t);
		}
	}
}

/* Plain lines: a newline ends each reply. */
static void
lines_in(struct conn *c, const unsigned char *p, size_t len, double t)
{
	const unsigned char *nl;
	size_t n;

	while (len > 0) {
		nl = memchr(p, '\n', len);
		n = nl ? (size_t)(nl - p) : len;
		reply_bytes(c, p, n);
		if (!nl)
			return;
		reply_end(c, t);
		p += n + 1;
		len -= n + 1;
	}
}

/* Collect the handshake response; on success pass what follows on. */
static void
handshake_in(struct conn *c, const unsigned char *p, size_t len, double t)
{
	unsigned char *end, *line, *eol;
	size_t n = HS_MAX - c->hs_len < len ? HS_MAX - c->hs_len : len;
	size_t head, vlen;
	int found = 0;

	memcpy(c->hs + c->hs_len, p, n);
	c->hs_len += n;
	if (opt.raw) {
		end = memchr(c->hs, '\n', c->hs_len);
		if (!end) {
			if (c->hs_len == HS_MAX)
				conn_fail(c, "greeting answer too long");
			return;
		}
		if (memcmp(c->hs, RAW_GREETING, sizeof(RAW_GREETING) - 2) != 0) {
			conn_fail(c, "greeting answered with something else");
			return;
		}
		c->state = CS_OPEN;
		head = (size_t)(end - c->hs) + 1;
		if (c->hs_len > head)
			lines_in(c, c->hs + head, c->hs_len - head, t);
		return;
	}
	end = memmem(c->hs, c->hs_len, "\r\n\r\n", 4);
	if (!end) {
		if (c->hs_len == HS_MAX)
			conn_fail(c, "handshake response too long");
		return;
	}
	head = (size_t)(end - c->hs) + 4;
	if (c->hs_len < 12 || memcmp(c->hs, "HTTP/1.1 101", 12) != 0) {
		char status[40];
		size_t sl = c->hs_len < sizeof(status) - 1 ? c->hs_len : sizeof(status) - 1;

		memcpy(status, c->hs, sl);
		status[sl] = '\0';
		status[strcspn(status, "\r\n")] = '\0';
		note_failure("handshake answered \"%s\"", status);
		c->state = CS_FAILED;
		return;
	}
	for (line = (unsigned char *)memchr(c->hs, '\n', head) + 1; line < end;
	    line = eol + 2) {
		eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
		if (eol - line > 21 &&
		    strncasecmp((char *)line, "Sec-WebSocket-Accept:", 21) == 0) {
			unsigned char *v = line + 21;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			vlen = (size_t)(eol - v);
			while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			found = vlen == strlen(c->accept) &&
			    memcmp(v, c->accept, vlen) == 0;
		}
	}
	if (!found) {
		conn_fail(c, "missing or wrong Sec-WebSocket-Accept");
		return;
	}
	c->state = CS_OPEN;
	/* what arrived with the response belongs to the frame stream */
	n = c->hs_len - head;
	if (n > 0)
		frames_in(c, c->hs + head, n, t);
	(void)len;
}

/* ==== Connections ==== */

static void
conn_init(struct conn *c, double *sent_at)
{
	int one = 1;

	memset(c, 0, offsetof(struct conn, out));
	c->out_off = c->out_len = 0;
	c->next_send = c->next_recv = 0;
	c->send_off = 0;
	c->in_message = 0;
	c->hs_len = 0;
	c->rx = RX_HEADER;
	c->hdr_len = 0;
	c->close_code = -1;
	c->sent_at = sent_at;
	reply_begin(c);
	c->t_connect = now();
	c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, "socket failed");
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, target->ai_addr, target->ai_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		note_failure("connect: %s", strerror(errno));
		c->state = CS_FAILED;
		return;
	}
	c->state = CS_CONNECTING;
}

/* The connect finished: queue the upgrade request (or start, in raw mode). */
static void
conn_connected(struct conn *c)
{
	unsigned char key[16], digest[20];
	char key64[32], cat[96];
	uint64_t r;
	int err = 0, n, i;
	socklen_t elen = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
		note_failure("connect: %s", strerror(err ? err : errno));
		c->state = CS_FAILED;
		return;
	}
	if (opt.raw) {
		/*
		 * One greeting line and its answer stand in for the handshake:
		 * the launcher has started the filter when the answer is back,
		 * as it has started wsfilter when the 101 is back.
		 */
		memcpy(c->out, RAW_GREETING, sizeof(RAW_GREETING) - 1);
		c->out_off = 0;
		c->out_len = sizeof(RAW_GREETING) - 1;
		c->state = CS_HANDSHAKE;
		return;
	}
	for (i = 0; i < 16; i += 8) {
		r = rng_next();
		memcpy(key + i, &r, 8);
	}
	base64(key, 16, key64);
	n = snprintf(cat, sizeof(cat), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key64);
	sha1(cat, (size_t)n, digest);
	base64(digest, 20, c->accept);
	n = snprintf((char *)c->out, OUT_SIZE,
	    "GET %s HTTP/1.1\r\n"
	    "Host: %s:%s\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\n"
	    "Sec-WebSocket-Version: 13\r\n"
	    "\r\n", opt.path, opt.host, opt.port, key64);
	c->out_off = 0;
	c->out_len = (size_t)n;
	c->state = CS_HANDSHAKE;
}

/* Read what is there and feed it to the right decoder; -1 on error. */
static int
conn_read(struct conn *c, double t)
{
	ssize_t n = read(c->fd, inbuf, sizeof(inbuf));

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		note_failure("read: %s", strerror(errno));
		c->state = CS_FAILED;
		return -1;
	}
	if (n == 0) {
		if (c->state == CS_CLOSING && (opt.raw || c->close_code >= 0)) {
			if (!opt.raw && c->close_code != 1000) {
				st.close_errors++;
				note_failure("server closed with %d", c->close_code);
			}
			c->state = CS_DONE;
		} else {
			if (c->state == CS_CLOSING)
				st.close_errors++;
			note_failure("server ended the stream early");
			c->state = CS_FAILED;
		}
		return -1;
	}
	switch (c->state) {
	case CS_HANDSHAKE:
		handshake_in(c, inbuf, (size_t)n, t);
		break;
	case CS_OPEN:
	case CS_DRAINED:
	case CS_CLOSING:
		if (opt.raw)
			lines_in(c, inbuf, (size_t)n, t);
		else
			frames_in(c, inbuf, (size_t)n, t);
		break;
	default:
		break;
	}
	return 0;
}

/* ==== Event loop ==== */

static volatile sig_atomic_t released;

static void
on_release(int sig)
{
	(void)sig;
	released = 1;
}

/*
 * Create the ready file: every reply is in and every connection is still
 * open.  The caller then holds them open until SIGUSR1 or --hold seconds,
 * still reading them (pings are answered, a server that ends one is seen).
 */
static void
write_ready(void)
{
	FILE *f = fopen(opt.ready_file, "w");

	if (f) {
		fprintf(f, "%ld\n", (long)getpid());
		fclose(f);
	}
}

struct phase {
	double t0, t_open, t_end;	/* start, all open, all replies in */
	double cpu_open, cpu_end;
	int timed_out, stalled;
};

/*
 * The running counts: connections not yet done or failed, of them those open
 * (handshake done) and those drained (every reply in).  Kept up to date as
 * each connection changes state, so that no step of the loop is O(count)
 * but the few that touch every connection once.
 */
struct counts {
	int active, opened, drained;
};

static void
count_state(struct counts *n, enum conn_state s, int d)
{
	if (s == CS_DONE || s == CS_FAILED)
		return;
	n->active += d;
	if (s >= CS_OPEN)
		n->opened += d;
	if (s >= CS_DRAINED)
		n->drained += d;
}

/*
 * After a step on one connection: the counts, its descriptor closed once it
 * is done or failed (which takes it out of the epoll set), else the epoll
 * interest it needs now (the connect's end, or input and pending output).
 */
static void
settle(int ep, struct counts *n, struct conn *c, enum conn_state before)
{
	struct epoll_event ev;
	uint32_t want;

	if (c->state != before) {
		count_state(n, before, -1);
		count_state(n, c->state, 1);
	}
	if (c->state == CS_DONE || c->state == CS_FAILED) {
		if (c->fd >= 0) {
			close(c->fd);
			c->fd = -1;
		}
		return;
	}
	want = c->state == CS_CONNECTING ? EPOLLOUT : EPOLLIN;
	if (c->out_off < c->out_len)
		want |= EPOLLOUT;
	if (want == c->events)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = want;
	ev.data.ptr = c;
	if (epoll_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl failed");
	c->events = want;
}

#define MAX_EVENTS	1024

/*
 * Run connections until each is done or failed.  Messages start once every
 * connection is open, so that the transfer phase is timed on its own.
 */
static void
run(struct conn *conns, int count, struct phase *ph)
{
	static struct epoll_event evs[MAX_EVENTS];
	struct counts n = { 0, 0, 0 };
	double t, last_progress, deadline, hold_until = 0;
	int i, k, nev, ep, go = 0, held = 0, holding = 0;
	enum conn_state before;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1 failed");
	for (i = 0; i < count; i++) {
		conns[i].events = 0;
		count_state(&n, conns[i].state, 1);
		settle(ep, &n, &conns[i], conns[i].state);
	}
	ph->t0 = last_progress = now();
	deadline = ph->t0 + opt.timeout;
	ph->t_open = ph->t_end = 0;
	for (;;) {
		t = now();
		if (!go && n.opened == n.active) {
			go = 1;
			ph->t_open = t;
			ph->cpu_open = cpu_time();
			for (i = 0; i < count; i++) {
				struct conn *c = &conns[i];

				if (c->state != CS_OPEN)
					continue;
				before = c->state;
				if (pump(c, t, go) < 0)
					c->state = CS_FAILED;
				settle(ep, &n, c, before);
			}
		}
		if (go && n.drained == n.active && ph->t_end == 0) {
			ph->t_end = t;
			ph->cpu_end = cpu_time();
			if (opt.ready_file && !held) {
				held = holding = 1;
				hold_until = t + opt.hold;
				write_ready();
			}
		}
		if (holding && (released || t >= hold_until)) {
			holding = 0;
			t = last_progress = now();
			deadline = t + opt.timeout;
		}
		if (ph->t_end != 0 && !holding && held != 2) {
			held = 2;	/* the closes are queued once */
			for (i = 0; i < count; i++) {
				struct conn *c = &conns[i];

				if (c->state != CS_DRAINED)
					continue;
				before = c->state;
				queue_close(c);
				if (flush_out(c) < 0)
					c->state = CS_FAILED;
				settle(ep, &n, c, before);
			}
			continue;
		}
		if (n.active == 0)
			break;
		if (holding) {
			/* nothing is due from the server while held */
			last_progress = t;
		} else if (t > deadline) {
			ph->timed_out = 1;
			note_failure("timed out after %.0f s", opt.timeout);
			break;
		}
		if (t - last_progress > opt.stall) {
			ph->stalled = 1;
			note_failure("no progress for %.1f s (stalled)", opt.stall);
			break;
		}
		nev = epoll_wait(ep, evs, MAX_EVENTS, 100);
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait failed");
		}
		t = now();
		for (k = 0; k < nev; k++) {
			struct conn *c = evs[k].data.ptr;

			if (c->fd < 0)
				continue;
			last_progress = t;
			before = c->state;
			if (c->state == CS_CONNECTING) {
				conn_connected(c);
			} else if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				if (conn_read(c, t) < 0) {
					settle(ep, &n, c, before);
					continue;
				}
			}
			if (c->state != CS_FAILED && c->state != CS_DONE &&
			    pump(c, t, go) < 0)
				c->state = CS_FAILED;
			settle(ep, &n, c, before);
		}
	}
	for (i = 0; i < count; i++) {
		if (conns[i].fd >= 0) {
			close(conns[i].fd);
			conns[i].fd = -1;
		}
		if (conns[i].state != CS_DONE)
			st.failed++;
		st.lost += opt.nmsgs - conns[i].next_recv;
	}
	close(ep);
	if (ph->t_open == 0)
		ph->t_open = ph->t0;
	if (ph->t_end == 0) {
		ph->t_end = now();
		ph->cpu_end = cpu_time();
	}
}

/* ==== Report ==== */

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double
percentile(double p)
{
	long i;

	if (st.nlat == 0)
		return 0;
	i = (long)(p * (double)(st.nlat - 1) + 0.5);
	return st.lat[i];
}

/* Room for every connection's descriptor: the soft limit up to the hard one. */
static void
raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ?
	    rl.rlim_max : need;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
		fprintf(stderr, "wsload: %llu connections need %llu descriptors, "
		    "the hard limit is %llu\n", (unsigned long long)need - 16,
		    (unsigned long long)need, (unsigned long long)rl.rlim_max);
		exit(2);
	}
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: wsload [-c conns] [-n msgs] [-s size] [-w window] [--echo] [--raw]\n"
	    "              [--binary]\n"
	    "              [--connections M] [--path PATH] [--timeout S] [--stall S]\n"
	    "              [--ready FILE [--hold S]] [HOST] PORT\n");
	exit(2);
}

static long
number(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "wsload: %s: %s is not in %ld..%ld\n", what, s, lo, hi);
		exit(2);
	}
	return v;
}

static double
seconds(const char *s, const char *what)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !(v > 0) || v > 86400) {
		fprintf(stderr, "wsload: %s: %s is not a number of seconds\n", what, s);
		exit(2);
	}
	return v;
}

int
main(int argc, char **argv)
{
	struct addrinfo hints;
	struct conn *conns;
	struct phase ph;
	double *sent_at, elapsed, cpu, t_start, cpu_start;
	long total, i;
	int argi, rc, npos = 0;
	const char *pos[2];
	struct sigaction sa;

	for (argi = 1; argi < argc; argi++) {
		const char *a = argv[argi];
		const char *v = argi + 1 < argc ? argv[argi + 1] : NULL;

#define NEEDV() do { if (!v) usage(); argi++; } while (0)
		if (strcmp(a, "-c") == 0) {
			NEEDV(); opt.nconns = (int)number(v, 1, 100000, "-c");
		} else if (strcmp(a, "-n") == 0) {
			NEEDV(); opt.nmsgs = number(v, 1, 100000000, "-n");
		} else if (strcmp(a, "-s") == 0) {
			NEEDV(); opt.size = (uint64_t)number(v, 0, 1L << 30, "-s");
		} else if (strcmp(a, "-w") == 0) {
			NEEDV(); opt.window = number(v, 1, LONG_MAX, "-w");
		} else if (strcmp(a, "--connections") == 0) {
			NEEDV(); opt.sequential = number(v, 1, 10000000, "--connections");
		} else if (strcmp(a, "--path") == 0) {
			NEEDV(); opt.path = v;
		} else if (strcmp(a, "--timeout") == 0) {
			NEEDV(); opt.timeout = seconds(v, "--timeout");
		} else if (strcmp(a, "--stall") == 0) {
			NEEDV(); opt.stall = seconds(v, "--stall");
		} else if (strcmp(a, "--ready") == 0) {
			NEEDV(); opt.ready_file = v;
		} else if (strcmp(a, "--hold") == 0) {
			NEEDV(); opt.hold = seconds(v, "--hold");
		} else if (strcmp(a, "--echo") == 0) {
			opt.echo = 1;
		} else if (strcmp(a, "--raw") == 0) {
			opt.raw = 1;
		} else if (strcmp(a, "--binary") == 0) {
			opt.binary = opt.echo = 1;
		} else if (a[0] == '-' && a[1] != '\0') {
			usage();
		} else if (npos < 2) {
			pos[npos++] = a;
		} else {
			usage();
		}
#undef NEEDV
	}
	if (npos == 0 || (opt.binary && (opt.raw || opt.size == 0)))
		usage();
	if (npos == 2) {
		opt.host = pos[0];
		opt.port = pos[1];
	} else {
		opt.port = pos[0];
	}
	if (opt.sequential) {
		opt.nconns = 1;
		opt.nmsgs = 1;
		opt.window = 1;
	}
	if (opt.window == 0)
		opt.window = opt.nmsgs > 0 ? opt.nmsgs : 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(opt.host, opt.port, &hints, &target)) != 0) {
		fprintf(stderr, "wsload: %s:%s: %s\n", opt.host, opt.port, gai_strerror(rc));
		return 2;
	}
	if (getrandom(&rng_state, sizeof(rng_state), 0) != sizeof(rng_state) ||
	    rng_state == 0)
		rng_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL | 1;
	for (i = 0; i < (long)sizeof(fill); i++)
		fill[i] = (unsigned char)('a' + i % FILL_PERIOD);
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_release;
	sigaction(SIGUSR1, &sa, NULL);

	raise_nofile((rlim_t)opt.nconns + 16);
	total = opt.sequential ? opt.sequential : (long)opt.nconns * opt.nmsgs;
	conns = calloc((size_t)opt.nconns, sizeof(*conns));
	sent_at = calloc((size_t)opt.nconns * (size_t)opt.nmsgs + 1, sizeof(double));
	st.lat = calloc((size_t)total + 1, sizeof(double));
	if (!conns || !sent_at || !st.lat)
		die("out of memory");

	memset(&ph, 0, sizeof(ph));
	t_start = now();
	cpu_start = cpu_time();
	if (opt.sequential) {
		/* M connections, one after the other, each timed whole */
		double deadline = t_start + opt.timeout;

		for (i = 0; i < opt.sequential; i++) {
			struct phase one;
			long failed = st.failed;

			memset(&one, 0, sizeof(one));
			conn_init(&conns[0], sent_at);
			run(conns, 1, &one);
			st.lat[st.nlat++] = (now() - conns[0].t_connect) * 1e6;
			if (one.stalled || one.timed_out || st.failed > failed) {
				ph.stalled |= one.stalled;
				ph.timed_out |= one.timed_out;
				st.lost += opt.sequential - i - 1;
				break;
			}
			if (now() > deadline) {
				ph.timed_out = 1;
				note_failure("timed out after %.0f s", opt.timeout);
				st.lost += opt.sequential - i - 1;
				break;
			}
		}
		ph.t0 = ph.t_open = t_start;
		ph.t_end = now();
		ph.cpu_open = cpu_start;
		ph.cpu_end = cpu_time();
	} else {
		for (i = 0; i < opt.nconns; i++)
			conn_init(&conns[i], sent_at + i * opt.nmsgs);
		run(conns, opt.nconns, &ph);
	}

	elapsed = ph.t_end - ph.t_open;
	cpu = ph.cpu_end - ph.cpu_open;
	if (elapsed <= 0)
		elapsed = 1e-9;
	qsort(st.lat, (size_t)st.nlat, sizeof(double), cmp_double);
	printf("mode=%s conns=%d msgs=%ld size=%llu window=%ld elapsed_s=%.4f",
	    opt.sequential ? (opt.raw ? "raw-connect" : "ws-connect") :
	    (opt.raw ? "raw" : opt.binary ? "ws-binary" : "ws"),
	    opt.sequential ? (int)opt.sequential : opt.nconns,
	    total, (unsigned long long)opt.size, opt.window, elapsed);
	printf(" msgs_s=%.0f MB_s=%.2f p50_us=%.0f p99_us=%.0f",
	    st.received / elapsed, st.received * (double)opt.size / elapsed / 1e6,
	    percentile(0.50), percentile(0.99));
	if (opt.sequential)
		printf(" conn_s=%.0f", (opt.sequential - st.failed) / elapsed);
	if (opt.binary)
		printf(" reply_frames=%ld", st.reply_frames);
	printf(" lost=%ld failed=%ld mismatched=%ld close_errors=%ld cpu_s=%.3f open_s=%.4f status=%s",
	    st.lost, st.failed, st.mismatched, st.close_errors, cpu, ph.t_open - ph.t0,
	    ph.timed_out ? "timeout" : ph.stalled ?
	    "stalled" : (st.lost || st.mismatched || st.failed) ? "failed" : "ok");
	if (st.why[0])
		printf(" why=\"%s\"", st.why);
	printf("\n");
	fflush(stdout);
	return (st.lost || st.mismatched || st.failed || st.close_errors ||
	    ph.timed_out || ph.stalled) ? 1 : 0;
}
