#!/bin/bash
# make mutants: applies each deliberate bug of mutants.txt to a copy of
# wsfilter.c, one at a time, builds it, and runs the suites that must catch it
# against that build.  A mutant that its suites all pass has survived, and the
# script fails.  So does a mutant whose lines no longer match wsfilter.c, so
# that the list keeps up with the code.  MUTANTS=name,name runs only those;
# MUTANT_JOBS=N runs N at once (default 2).
set -u
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
make -s web_index.h wsfilter-test-forbidden wsfilter-test-abort >/dev/null || exit 1
cp web_index.h "$work/"

# one folder per mutant: suites, and the mutated source (or why it is missing)
python3 - test/mutants/mutants.txt wsfilter.c "$work" <<'PY' || exit 1
import os, sys
lst, src, work = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
muts, cur = [], None
for line in open(lst).read().split("\n"):
    if line.startswith("== "):
        name, suites = line[3:].split(":", 1)
        cur = {"name": name.strip(), "suites": suites.split(), "old": [], "new": [], "filter": ""}
        muts.append(cur)
    elif line.startswith("? ") and cur:
        cur["filter"] = line[2:]
    elif line.startswith("- ") and cur:
        cur["old"].append(line[2:])
    elif line.startswith("+ ") and cur:
        cur["new"].append(line[2:])
for m in muts:
    d = os.path.join(work, m["name"])
    os.mkdir(d)
    open(os.path.join(d, "suites"), "w").write(" ".join(m["suites"]))
    open(os.path.join(d, "filter"), "w").write(m["filter"])
    old, new = "\n".join(m["old"]) + "\n", "\n".join(m["new"]) + "\n"
    n = src.count(old)
    if n != 1:
        open(os.path.join(d, "stale"), "w").write("its lines stand %d times in wsfilter.c\n" % n)
    else:
        open(os.path.join(d, "wsfilter.c"), "w").write(src.replace(old, new))
PY

# one mutant: build it, run its suites; its verdict in $d/result, "ok ..."
# when caught, "bad ..." when not
one() {
	local d=$1 name files=() missing= s start filter=() probe
	name=$(basename "$d")
	if [ -f "$d/stale" ]; then
		echo "bad mutant $name: $(cat "$d/stale")" >"$d/result"
		return
	fi
	if ! cc -O1 -D_FORTIFY_SOURCE=2 -I"$work" -o "$d/wsfilter" "$d/wsfilter.c" 2>"$d/cc.log"; then
		{ echo "bad mutant $name: does not build"; head -5 "$d/cc.log"; } >"$d/result"
		return
	fi
	# sandbox.bats probes the filter with a program built from the source
	probe=
	if grep -qw sandbox.bats "$d/suites"; then
		probe=$d/filter_probe
		if ! cc -O1 -D_FORTIFY_SOURCE=2 -Wno-unused-function -I"$d" -I"$work" -o "$probe" \
			test/lib/filter_probe.c 2>"$d/cc.log"; then
			{ echo "bad mutant $name: its filter probe does not build"; head -5 "$d/cc.log"; } >"$d/result"
			return
		fi
	fi
	for s in $(cat "$d/suites"); do
		files+=("test/$s")
		[ -f "test/$s" ] || missing="$missing test/$s"
	done
	if [ -n "$missing" ]; then
		echo "bad mutant $name: no such suite:$missing" >"$d/result"
		return
	fi
	start=$SECONDS
	[ -s "$d/filter" ] && filter=(-f "$(cat "$d/filter")")
	if WSFILTER="$d/wsfilter" FILTER_PROBE=${probe:-$PWD/test/lib/filter_probe} timeout 900 bats "${filter[@]}" "${files[@]}" >"$d/bats.log" 2>&1; then
		echo "bad mutant $name: SURVIVED ${files[*]}" >"$d/result"
	else
		echo "ok mutant $name: caught by $(grep -c '^not ok' "$d/bats.log") test(s) in ${files[*]} ($((SECONDS - start)) s)" >"$d/result"
	fi
}

# MUTANT_JOBS at a time (2: the suites wait on timers more than they compute;
# a mutant is caught by a test's failure, which contention does not hide)
jobs=${MUTANT_JOBS:-2} dirs=()
for d in "$work"/*/; do
	name=$(basename "$d")
	if [ -n "${MUTANTS:-}" ] && [[ ",$MUTANTS," != *",$name,"* ]]; then
		continue
	fi
	dirs+=("$d")
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
		wait -n
	done
	one "$d" &
done
wait
failed=0 ran=0
for d in "${dirs[@]}"; do
	if [ ! -s "$d/result" ]; then
		echo "mutant $(basename "$d"): no verdict"
		failed=$((failed + 1))
		continue
	fi
	sed '1s/^[a-z]* //' "$d/result"
	case $(head -c 3 "$d/result") in
	"ok ") ran=$((ran + 1)) ;;
	*) failed=$((failed + 1)); grep -q SURVIVED "$d/result" && ran=$((ran + 1)) ;;
	esac
done
echo "mutants: $ran built and run, $failed survived or stale"
[ "$failed" = 0 ]
