/*
 * libFuzzer target for wsfilter's protocol core, a struct core alone:
 * bytes in, frames out, no descriptors.  The first input byte picks options and how the rest is cut
 * into reads (down to one byte at a time); the output is then checked: after
 * a 101, it must parse as whole, unmasked, minimally encoded server frames.
 * With the option byte's top bit a program serves the connection, and each
 * read is also its output: then every text frame must be valid UTF-8.  Its
 * exec succeeds, unless bits 1-3 are set too: then the answer is a 500; with
 * bits 2-3 and not 1, it never reports, and the handshake timeout (1 s here)
 * ends the connection with a 500.
 */
#define WSFILTER_NO_MAIN
#include "../../wsfilter.c"

#define OUT_KEEP (1 << 20)

static unsigned char sent[OUT_KEEP];
static size_t nsent;
static int program_mode; /* text frames must then be valid UTF-8 each */

/* What the I/O loop would write: kept for the check, then consumed the
 * way a write consumes it. */
static void drain(struct core *c)
{
	size_t n = c->out_len;

	if (n > OUT_KEEP - nsent)
		n = OUT_KEEP - nsent;
	memcpy(sent + nsent, c->out + c->out_off, n);
	nsent += n;
	if (c->out_len)
		out_consume(c, c->out_len);
}

/* Server frames after the 101 head: whole, unmasked, minimal lengths,
 * no RSV bits, known opcodes, control frames short and final. */
static void check_output(void)
{
	const unsigned char *p = sent, *end = sent + nsent, *h, *start;
	uint64_t len;
	int op;

	if (nsent == OUT_KEEP || nsent < 13 || memcmp(p, "HTTP/1.1 101 ", 13) != 0)
		return;
	h = memmem(p, nsent, "\r\n\r\n", 4);
	if (!h)
		abort();
	p = h + 4;
	while (p < end) {
		if (end - p < 2)
			abort();
		start = p;
		op = p[0] & 0x0F;
		if ((p[0] & WSBIT_RSV) || (p[1] & WSBIT_MASK))
			abort();
		if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY &&
		    op != OP_CLOSE && op != OP_PING && op != OP_PONG)
			abort();
		len = p[1] & 0x7F;
		p += 2;
		if (len == 126) {
			if (end - p < 2)
				abort();
			len = (uint64_t)p[0] << 8 | p[1];
			if (len < 126)
				abort();
			p += 2;
		} else if (len == 127) {
			if (end - p < 8)
				abort();
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[i];
			if (len <= 0xFFFF)
				abort();
			p += 8;
		}
		if (op >= OP_CLOSE && (len > CTRL_MAX || !(start[0] & WSBIT_FIN)))
			abort();
		if (program_mode && (op == OP_TEXT || op == OP_CONT) && (uint64_t)(end - p) >= len) {
			struct utf8 u;
			size_t bad;

			/* a program's lines are cut only between characters */
			utf8_reset(&u);
			if (utf8_run(&u, p, (size_t)len, &bad) < 0 || u.need)
				abort();
		}
		if ((uint64_t)(end - p) < len)
			abort();
		p += len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct core core;
	struct core *c = &core;
	struct options o;
	size_t off, step, n, room;
	uint8_t sel;
	int64_t now = 1000000;

	if (size < 1)
		return 0;
	sel = data[0];
	data++, size--;

	options_init(&o);
	o.echo = sel & 1;
	o.max_message = (sel & 2) ? 300 : 0;
	if (sel & 4) {
		o.origins[0] = "http://a.example";
		o.norigins = 1;
		o.protocols[0] = "chat";
		o.nprotocols = 1;
	}
	o.ping_interval = (sel & 8) ? 1 : 0;
	/* bit 7: a program serves the connection; each read is also fed to
	 * the core as the program's output (bit 0: --binary) */
	static char *prog_argv[] = { "program", NULL };
	program_mode = (sel & 0x80) && !(sel & 1);
	if (sel & 0x80) {
		o.program = prog_argv;
		o.binary = sel & 1;
		o.echo = 0;
		if ((sel & 0x0e) == 0x0c)
			o.hs_timeout = 1;
	}
	/* bits 1-3 = 101: an admission check (also before the built-in
	 * filter), and --sameorigin; with a program, routes by --dir */
	if ((sel & 0x0e) == 0x0a) {
		o.check = "check";
		o.sameorigin = 1;
		if (o.program) {
			o.dir = "/nonexistent";
			o.program = NULL;
		}
	}
	o.runs = o.program || o.dir;
	o.gate = o.runs || o.check;
	o.ping_timeout = o.ping_interval;
	o.send_timeout = 1;
	log_to = LOG_NONE;
	core_init(c, &o, now, 1700000000);
	nsent = 0;

	/* reads of 1, 2, 7, 64 or up to 64 KiB bytes */
	static const size_t steps[] = { 1, 2, 7, 64, 4096, IN_BUF_SIZE, 3, 13 };
	step = steps[(sel >> 4) & 7];
	for (off = 0; off < size && (c->state == CS_HANDSHAKE || c->state == CS_STARTING ||
				 c->state == CS_OPEN);) {
		room = IN_BUF_SIZE - c->in_len;
		if (c->in_off) {
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->in_off = 0;
			room = IN_BUF_SIZE - c->in_len;
		}
		n = size - off < step ? size - off : step;
		if (n > room)
			n = room;
		memcpy(c->in + c->in_len, data + off, n);
		c->in_len += n;
		off += n;
		now += 10;
		if (o.runs && c->state == CS_OPEN) {
			size_t room = buf_room(c->pout, &c->pout_off, c->pout_len);
			size_t k = n < room ? n : room;

			memcpy(c->pout + c->pout_len, data + off - n, k);
			c->pout_len += k;
			c->prog_eof = off >= size;
			c->pin_off = c->pin_len = 0; /* the program reads it all */
		}
		conn_process(c, now);
		if (c->state == CS_STARTING && (sel & 0x0e) != 0x0c) {
			/* the waiting child's report: the exec fails when bits
			 * 1-3 are all set; with a check, the rest of the input
			 * is the report as it comes (records, the check's
			 * output); else it is empty: the program runs */
			static unsigned char rep[REPORT_MAX];
			struct report h = { REP_ERRNO, ENOENT, 0 };
			size_t rl = 0;

			if ((sel & 0x0e) == 0x0e) {
				memcpy(rep, &h, sizeof h);
				rl = sizeof h;
			} else if (o.check) {
				rl = size - off < sizeof rep ? size - off : sizeof rep;
				memcpy(rep, data + off, rl);
				off += rl;
			}
			prog_report(c, rep, rl);
			conn_process(c, now);
		}
		drain(c);
		conn_expire(c, now);
		drain(c);
		/* what is left must be less than a frame header or a
		 * control frame, or the head being read */
		if (c->state == CS_OPEN && c->in_len - c->in_off > 2 + 8 + 4 + CTRL_MAX)
			abort();
		/* the meter never counts more than was written */
		if (c->meter.bytes > c->written_total)
			abort();
	}
	if (c->state == CS_STARTING) {
		/* the input is over and the exec never reported */
		conn_expire(c, now + o.hs_timeout * 1000);
		drain(c);
	}
	check_output();
	return 0;
}
