#!/bin/bash
# check-layers.sh - hold the layers of api/wrenn/ (README.md, "Layers").
#
#   check-layers.sh [DIR]    DIR: the api/wrenn folder (default: this one)
#
# Each file belongs to a layer (FILE.c and FILE.h to FILE, loop.c to http);
# each layer has a rank.  A file may include, and use the functions
# declared by, only the header of its own layer and of layers of a lower
# rank; layers of the same rank do not see each other.  Fails (exit 1,
# one line per breach) on an include of a header of a higher or equal
# rank, on an include of a header that is no layer's, on a use of a
# function or object that a header of such a layer declares, and on a
# global wrenn_* function defined in a .c file that its layer's header
# does not declare (a back door around the headers).
#
# Below every layer is the service loop the remote backends share
# (api/netloop.c, .h): only the transport (loop.c, http.c, http.h) may
# include api/netloop.h or call its nl_* functions (the layers above go
# through wrenn_post and the other wrappers of http.h), and the shared
# loop includes nothing of a backend.
set -u
dir=${1:-$(cd "$(dirname "$0")" && pwd)}

declare -A rank=(
	[errmap]=0	# errno from statuses, envelopes, texts, curl codes
	[http]=1	# transport: loop.c (thread, queue, timers), http.c
	[capsule]=2	# capsules, verbs, aliases, keep-alive, sh exec
	[files]=3	# listings, stat, mkdir/unlink/rmdir, rfile primitives
	[features]=3	# templates, ports
	[exec]=4	# exec/stream WebSocket, wrapper, signals
	[wrenn]=5	# ops table, options, init/free: wires the rest
)

layer_of() {
	local b
	b=$(basename "$1")
	b=${b%.[ch]}
	[ "$b" = loop ] && b=http
	echo "$b"
}

fail=0
bad() {
	echo "layers: $*"
	fail=1
}

# Symbols each layer's header declares: functions and extern objects.
declare -A decl
for l in "${!rank[@]}"; do
	h=$dir/$l.h
	[ "$l" = wrenn ] && continue
	if [ ! -f "$h" ]; then
		bad "$l.h: missing (every layer below the top has a header)"
		continue
	fi
	decl[$l]=$(sed 's@/\*.*\*/@@g' "$h" |
		grep -oE '\bwrenn_[a-z0-9_]+[[:space:]]*\(|extern .*\bwrenn_[a-z0-9_]+;' |
		grep -oE 'wrenn_[a-z0-9_]+' | sort -u | tr '\n' ' ')
done

n=0
for f in "$dir"/*.c "$dir"/*.h; do
	[ -f "$f" ] || continue
	n=$((n + 1))
	me=$(layer_of "$f")
	name=$(basename "$f")
	if [ -z "${rank[$me]+x}" ]; then
		bad "$name: in no layer (add it to check-layers.sh and README.md)"
		continue
	fi
	# includes
	while read -r inc; do
		[ -n "$inc" ] || continue
		l=$(layer_of "$inc")
		if [ -z "${rank[$l]+x}" ] || [ "$l" = wrenn ]; then
			bad "$name includes $inc, which is no layer's header"
		elif [ "$l" != "$me" ] && [ "${rank[$l]}" -ge "${rank[$me]}" ]; then
			bad "$name (${me}, rank ${rank[$me]}) includes $inc" \
				"(${l}, rank ${rank[$l]}): upward"
		fi
	done < <(grep -oE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"api/wrenn/[^"]+"' "$f" |
		sed -E 's@.*"api/wrenn/([^"]+)"@\1@')
	# uses: identifiers of a header the file may not see
	[ "${f%.c}" != "$f" ] || continue
	used=" $(grep -oE '\bwrenn_[a-z0-9_]+' "$f" | sort -u | tr '\n' ' ')"
	for l in "${!decl[@]}"; do
		[ "$l" = "$me" ] && continue
		[ "${rank[$l]}" -lt "${rank[$me]}" ] && continue
		for s in ${decl[$l]}; do
			case $used in
			*" $s "*) bad "$name ($me) uses $s of $l.h: upward" ;;
			esac
		done
	done
	# global functions defined here must be in the layer's header
	[ "$me" = wrenn ] && continue
	while read -r s; do
		case " ${decl[$me]:-} " in
		*" $s "*) ;;
		*) bad "$name defines $s, which $me.h does not declare" ;;
		esac
	done < <(grep -oE '^[a-z].*\bwrenn_[a-z0-9_]+\(' "$f" | grep -v '^static' |
		grep -oE 'wrenn_[a-z0-9_]+\($' | tr -d '(')
done
# the shared loop, at the bottom
for f in "$dir/../netloop.c" "$dir/../netloop.h"; do
	if [ ! -f "$f" ]; then
		bad "api/$(basename "$f"): missing (the shared service loop)"
		continue
	fi
	grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"api/(wrenn|cwsandbox)/' "$f" &&
		bad "api/$(basename "$f") (shared loop, below every layer)" \
			"includes a backend's header: upward"
done
for f in "$dir"/*.c "$dir"/*.h; do
	[ -f "$f" ] || continue
	[ "$(layer_of "$f")" = http ] && continue
	grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"api/netloop\.h"' "$f" &&
		bad "$(basename "$f") includes api/netloop.h: only the" \
			"transport (http) reaches the shared loop"
	for s in $(sed 's@/\*.*\*/@@g' "$f" | grep -oE '\bnl_[a-z0-9_]+[[:space:]]*\(' |
		grep -oE 'nl_[a-z0-9_]+' | sort -u); do
		bad "$(basename "$f") calls $s of api/netloop.h: only the" \
			"transport (http) reaches the shared loop"
	done
done
[ "$n" -gt 0 ] || bad "no sources in $dir"
[ "$fail" = 0 ] && echo "layers: $n files, no upward include or use"
exit "$fail"
