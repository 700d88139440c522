#!/bin/sh
# An admission check for wsfilter --check: admits a client whose token is
# listed in $WSFILTER_TOKENS (default /etc/wsfilter/tokens; lines "TOKEN USER")
# and names the user; refuses any other with 401.
#
# The token comes from "Authorization: Bearer TOKEN", from a cookie named
# token, or from ?token=TOKEN (a browser's WebSocket cannot set
# Authorization; it does send the site's cookies).  Only letters, digits,
# '.', '_' and '-' can be a token: nothing else reaches awk.
tokens=${WSFILTER_TOKENS:-/etc/wsfilter/tokens}

refuse() {
	printf 'Status: 401 Unauthorized\n'
	printf 'WWW-Authenticate: Bearer realm="wsfilter"\n'
	printf '\n%s\n' "$1"
	exit 1
}

# the value of NAME in a list of NAME=VALUE separated by SEP
pick() {
	printf '%s\n' "$1" | tr "$2" '\n' | sed -n "s/^ *$3=//p" | head -n 1
}

token=
case ${HTTP_AUTHORIZATION:-} in
"Bearer "*) token=${HTTP_AUTHORIZATION#Bearer } ;;
esac
[ -n "$token" ] || token=$(pick "${HTTP_COOKIE:-}" ';' token)
[ -n "$token" ] || token=$(pick "${QUERY_STRING:-}" '&' token)
case $token in
'') refuse "no token" ;;
*[!A-Za-z0-9._-]*) refuse "malformed token" ;;
esac
[ -r "$tokens" ] || { echo "cannot read $tokens" >&2; exit 2; }
user=$(awk -v t="$token" '$1 == t { print $2; exit }' "$tokens")
[ -n "$user" ] || refuse "unknown token"
echo "Remote-User: $user"
