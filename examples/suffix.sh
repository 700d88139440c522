#!/bin/sh
# suffix.sh: answer each line with the line + " - N", N random in 1..1000: what
# wsfilter does without a program, as a program. One line out for each line in,
# written at once (printf is the shell's own: no buffering). A POSIX shell loop,
# not awk: mawk reads its input in blocks and would sit on a short line.
#   socat TCP-LISTEN:8765,bind=127.0.0.1,reuseaddr,fork EXEC:'wsfilter -- examples/suffix.sh'
n=$(( ($$ + $(date +%s)) % 2147483648 ))
while IFS= read -r line; do
	n=$(( (n * 1103515245 + 12345) % 2147483648 ))
	printf '%s - %d\n' "$line" $(( n / 65536 % 1000 + 1 ))
done
