#!/bin/bash
# make mutants: applies each deliberate bug of mutants.txt to a copy of
# wsfilter.c, one at a time, builds it, and runs the suites that must catch it
# against that build.  A mutant that its suites all pass has survived, and the
# script fails.  So does a mutant whose lines no longer match wsfilter.c, so
# that the list keeps up with the code.  MUTANTS=name,name runs only those.
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

failed=0 ran=0
for d in "$work"/*/; do
	name=$(basename "$d")
	if [ -n "${MUTANTS:-}" ] && [[ ",$MUTANTS," != *",$name,"* ]]; then
		continue
	fi
	if [ -f "$d/stale" ]; then
		echo "mutant $name: $(cat "$d/stale")"
		failed=$((failed + 1))
		continue
	fi
	if ! cc -O1 -D_FORTIFY_SOURCE=2 -I"$work" -o "$d/wsfilter" "$d/wsfilter.c" 2>"$d/cc.log"; then
		echo "mutant $name: does not build"; head -5 "$d/cc.log"
		failed=$((failed + 1))
		continue
	fi
	files=() missing=
	for s in $(cat "$d/suites"); do
		files+=("test/$s")
		[ -f "test/$s" ] || missing="$missing test/$s"
	done
	if [ -n "$missing" ]; then
		echo "mutant $name: no such suite:$missing"
		failed=$((failed + 1))
		continue
	fi
	ran=$((ran + 1))
	start=$SECONDS
	filter=(); [ -s "$d/filter" ] && filter=(-f "$(cat "$d/filter")")
	if WSFILTER="$d/wsfilter" timeout 900 bats "${filter[@]}" "${files[@]}" >"$d/bats.log" 2>&1; then
		echo "mutant $name: SURVIVED ${files[*]}"
		failed=$((failed + 1))
	else
		echo "mutant $name: caught by $(grep -c '^not ok' "$d/bats.log") test(s) in ${files[*]} ($((SECONDS - start)) s)"
	fi
done
echo "mutants: $ran built and run, $failed survived or stale"
[ "$failed" = 0 ]
