#!/bin/bash
# fake-devlog.sh DIR CMD [ARG...]
# Run CMD in a private mount namespace (needs root) whose /dev is a fresh tmpfs
# holding only null, zero, full, random, urandom and tty, bind-mounted from the
# real /dev, so that CMD can bind its own unix datagram socket at /dev/log
# without touching the machine's /dev. DIR is an empty directory that the real
# /dev is bind-mounted on inside the namespace (nothing is left there after).
set -eu
dir=$1
shift
exec unshare --mount --propagation private /bin/bash -c '
set -eu
dir=$1
shift
mount --bind /dev "$dir"
mount -t tmpfs -o mode=0755,size=1m wsfilter-test-dev /dev
for n in null zero full random urandom tty; do
	: >"/dev/$n"
	mount --bind "$dir/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
exec "$@"
' fake-devlog "$dir" "$@"
