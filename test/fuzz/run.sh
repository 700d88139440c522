#!/bin/sh
# Fuzzes wsfilter for FUZZ_TIME seconds with each of two fuzzers:
#  - libFuzzer (clang, ASan+UBSan) on the protocol core, fuzz_core.c;
#  - AFL++ on the whole program, a conversation on stdin.
# Both start from corpus/ (made by mkcorpus.py) with ws.dict; libFuzzer also
# from corpus-core/ (inputs with its option byte, kept from longer runs).  A finding
# makes the script fail; add it to corpus/ as a regression once fixed.
set -eu
cd "$(dirname "$0")"
FUZZ_TIME=${FUZZ_TIME:-60}
mkdir -p bin out
python3 mkcorpus.py corpus

# the libFuzzer input has an option byte first: seed a few variants
rm -rf out/lf-corpus && mkdir -p out/lf-corpus
for f in corpus/*; do
	for sel in 000 021 122 163 200 201 012 212; do
		{ printf "\\$sel"; cat "$f"; } > "out/lf-corpus/$(basename "$f")-$sel"
	done
done
# and the corpus a longer run grew (minimized with -merge=1)
cp corpus-core/* out/lf-corpus/ 2>/dev/null || true
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	fuzz_core.c -o bin/fuzz_core
echo "libFuzzer: $FUZZ_TIME s on the protocol core"
if ! ./bin/fuzz_core -max_total_time="$FUZZ_TIME" -dict=ws.dict -max_len=8192 -print_final_stats=1 \
	-artifact_prefix=out/ out/lf-corpus >out/libfuzzer.log 2>&1; then
	tail -40 out/libfuzzer.log
	echo "libFuzzer found a failure: see test/fuzz/out/" >&2
	exit 1
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' out/libfuzzer.log || true

if ! command -v afl-fuzz >/dev/null 2>&1; then
	echo "AFL++ not installed: skipped" >&2
	exit 0
fi
AFL_QUIET=1 afl-clang-fast -O2 -g -o bin/wsfilter-afl -I../.. ../../wsfilter.c >/dev/null
echo "AFL++: $FUZZ_TIME s on the whole program"
rm -rf out/afl
AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
AFL_SKIP_CRASHES=1 AFL_NO_AFFINITY=1 \
	timeout $((FUZZ_TIME + 60)) afl-fuzz -V "$FUZZ_TIME" -i corpus -o out/afl -x ws.dict -t 2000 -- \
	./bin/wsfilter-afl --no-sandbox --close-timeout 0 --handshake-timeout 1 -q \
	>out/afl.log 2>&1 || { tail -30 out/afl.log; echo "afl-fuzz failed" >&2; exit 1; }
stats=out/afl/default/fuzzer_stats
grep -E '^(execs_done|execs_per_sec|saved_crashes|saved_hangs|run_time) ' "$stats"
crashes=$(awk '$1 == "saved_crashes" { print $3 }' "$stats")
hangs=$(awk '$1 == "saved_hangs" { print $3 }' "$stats")
if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
	echo "AFL++ found $crashes crashes and $hangs hangs: see test/fuzz/out/afl/default/" >&2
	exit 1
fi
