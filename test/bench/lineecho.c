/*
 * lineecho: the benchmark's ceiling.  A line filter on stdin/stdout that
 * appends " - N" (N uniform in 1..1000) to every line, or with --echo copies
 * its input unchanged.  It does the least a per-connection filter can do:
 * one big read, the suffixes spliced in, one big write.  Run it under the
 * same launchers as wsfilter (or behind websocketd) to see what the launcher
 * and the kernel cost without any WebSocket work.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define IN_SIZE		(64 * 1024)
#define SUFFIX_MAX	8		/* " - 1000" and the newline */
#define RANDOM_MAX	1000

static unsigned char in[IN_SIZE];
static unsigned char out[IN_SIZE * SUFFIX_MAX];	/* every byte a newline */
static char suffix[RANDOM_MAX + 1][SUFFIX_MAX];
static unsigned char suffix_len[RANDOM_MAX + 1];

static int
write_all(const unsigned char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(1, p, len);
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

int
main(int argc, char **argv)
{
	int echo = argc > 1 && strcmp(argv[1], "--echo") == 0;
	uint64_t rng;
	const unsigned char *p, *end, *nl;
	unsigned char *o;
	ssize_t n;
	int i;

	if (argc > 2 || (argc == 2 && !echo)) {
		fprintf(stderr, "usage: lineecho [--echo]\n");
		return 2;
	}
	if (getrandom(&rng, sizeof(rng), 0) != sizeof(rng) || rng == 0)
		rng = (uint64_t)time(NULL) | 1;
	for (i = 1; i <= RANDOM_MAX; i++)
		suffix_len[i] = (unsigned char)snprintf(suffix[i], SUFFIX_MAX,
		    " - %d", i);
	for (;;) {
		n = read(0, in, sizeof(in));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? 0 : 1;
		if (echo) {
			if (write_all(in, (size_t)n) < 0)
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
		if (write_all(out, (size_t)(o - out)) < 0)
			return 1;
	}
}
