#!/bin/bash
# with-server.sh - run a command against a private sbxfs-server on loopback:
# the server gets a fresh data dir, the command gets
# SBXFS_TEST_SOURCE=wrenn:http://127.0.0.1:PORT and WRENN_API_KEY in its
# environment (never on a command line), and afterwards every capsule left
# over is destroyed, the server stopped and its data dir removed.  The exit
# status is the command's.
#
#   tools/with-server.sh [options] [--] COMMAND [ARG...]
#     --server BIN        sbxfs-server (default $SBXFS_SERVER_BIN, else
#                         build/tools/sbxfs-server/sbxfs-server)
#     --sbxfs BIN         sbxfs, for the final sweep of the data dir
#                         (default $SBXFS_BIN, else build/src/sbxfs)
#     --upload-limit N    passed to the server
#     --server-log FILE   keep the server's output there
#     --api cwsandbox     serve CW Sandbox's gRPC API instead: the command
#                         gets SBXFS_TEST_SOURCE=cwsandbox:http://... and
#                         CWSANDBOX_API_KEY (leftovers are swept locally)
#
# Also exported to COMMAND: SBXFS_SERVER_PID, SBXFS_SERVER_PORT,
# SBXFS_SERVER_DATA, SBXFS_SERVER_URL (for tests that stop and restart the
# server: tools/with-server.sh never restarts it, it only cleans up).
# Temp dirs go under $SBXFS_TEST_TMP when set (tools/test.sh sweeps it).
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
server=${SBXFS_SERVER_BIN:-$src/build/tools/sbxfs-server/sbxfs-server}
sbxfs=${SBXFS_BIN:-$src/build/src/sbxfs}
limit=
slog=
api=wrenn

while [ $# -gt 0 ]; do
	case $1 in
	--server) server=$2; shift ;;
	--sbxfs) sbxfs=$2; shift ;;
	--upload-limit) limit=$2; shift ;;
	--server-log) slog=$2; shift ;;
	--api) api=$2; shift ;;
	--) shift; break ;;
	-h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "with-server.sh: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
[ $# -gt 0 ] || { echo "with-server.sh: no command" >&2; exit 2; }
[ -x "$server" ] || { echo "with-server.sh: no server $server" >&2; exit 2; }

base=${SBXFS_TEST_TMP:-/tmp}
[ -d "$base" ] || mkdir -p "$base"
tmp=$(mktemp -d "$base/sbxfs-ws-XXXXXX") || exit 2
data=$tmp/data
mkdir -m 700 "$data"
[ -n "$slog" ] || slog=$tmp/server.log
spid=
port=

# The key is made here, owner-only, so the server never prints it.
key=wrn_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$key" >"$data/server-key")
# curl reads the header from a file: the key stays off every argv.
hdr=$tmp/hdr
(umask 077 && printf 'X-API-Key: %s\n' "$key" >"$hdr")

api() { # METHOD PATH -> body on stdout
	curl -sS -m 60 -H @"$hdr" -X "$1" "http://127.0.0.1:$port$2"
}

# Destroys every capsule the server still lists.  The list hides stopped
# capsules, which hold no sandbox any more.
destroy_all() {
	local ids id
	ids=$(api GET /v1/capsules 2>/dev/null |
		grep -o '"id":"cl-[0-9a-z]*"' | cut -d'"' -f4)
	for id in $ids; do
		api DELETE "/v1/capsules/$id" >/dev/null 2>&1 ||
			echo "with-server.sh: DELETE $id failed" >&2
	done
}

# Whatever the API could not reach: mount the data dir with the local
# backend and rmdir every sandbox directory.
sweep_local() {
	local m=$tmp/sweep d i
	[ -d "$data/sandboxes" ] || return 0
	[ -n "$(ls -A "$data/sandboxes" 2>/dev/null)" ] || return 0
	[ -x "$sbxfs" ] || {
		echo "with-server.sh: sandboxes left in $data, no sbxfs" >&2
		return 1
	}
	mkdir -p "$m"
	"$sbxfs" -f "local:$data" "$m" >"$tmp/sweep.log" 2>&1 &
	local fpid=$!
	for i in $(seq 100); do
		mountpoint -q "$m" && break
		kill -0 $fpid 2>/dev/null || break
		sleep 0.1
	done
	if mountpoint -q "$m"; then
		for d in "$m"/*; do
			[ -d "$d" ] && [ ! -L "$d" ] || continue
			[ "$d" = "$m/templates" ] && continue	# the mount's own
			echo "with-server.sh: destroying leftover $d" >&2
			timeout 60 rmdir "$d" 2>/dev/null ||
				echo "with-server.sh: rmdir $d failed" >&2
		done
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
	fi
	kill $fpid 2>/dev/null
	wait $fpid 2>/dev/null
}

cleanup() {
	trap - EXIT INT TERM HUP
	if [ "$api" = wrenn ] && [ -n "$spid" ] &&
	   kill -0 "$spid" 2>/dev/null && [ -n "$port" ]
	then
		destroy_all
	fi
	if [ -n "$spid" ]; then
		kill -TERM "$spid" 2>/dev/null
		for i in $(seq 50); do
			kill -0 "$spid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$spid" 2>/dev/null
		wait "$spid" 2>/dev/null
	fi
	sweep_local
	# A server restarted by the command (fault tests) is its business;
	# one still bound to our data dir is ended here.
	for p in $(pgrep -f -- "sbxfs-server .*--data $data( |\$)" 2>/dev/null); do
		kill -KILL "$p" 2>/dev/null
	done
	if awk -v b="$tmp/" 'index($2, b) == 1 { f = 1 } END { exit !f }' \
		/proc/mounts; then
		echo "with-server.sh: mounts remain under $tmp; kept" >&2
	else
		rm -rf --one-file-system "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

args=(--port 0 --data "$data")
[ -n "$limit" ] && args+=(--upload-limit "$limit")
[ "$api" = wrenn ] || args+=(--api "$api")
fifo=$tmp/out
mkfifo "$fifo"
"$server" "${args[@]}" >"$fifo" 2>>"$slog" &
spid=$!
exec 3<"$fifo"
line=
if read -r -t 20 line <&3; then
	port=${line##*:}
fi
# keep draining the server's stdout into the log
cat <&3 >>"$slog" &
exec 3<&-
case $port in
''|*[!0-9]*)
	echo "with-server.sh: server did not start: '$line'" >&2
	cat "$slog" >&2
	exit 2 ;;
esac

# the client's alias state (per base URL) stays in the temp dir
export XDG_STATE_HOME=$tmp/state
if [ "$api" = cwsandbox ]; then
	export SBXFS_TEST_SOURCE=cwsandbox:http://127.0.0.1:$port
	export CWSANDBOX_API_KEY=$key
else
	export SBXFS_TEST_SOURCE=wrenn:http://127.0.0.1:$port
	export WRENN_API_KEY=$key
fi
export SBXFS_SERVER_PID=$spid SBXFS_SERVER_PORT=$port
export SBXFS_SERVER_DATA=$data SBXFS_SERVER_URL=http://127.0.0.1:$port
# In the background, so that a TERM (meson's timeout) runs the cleanup at
# once instead of after the command; it is passed on to the command.
"$@" <&0 &
cpid=$!
trap 'kill -TERM $cpid 2>/dev/null; wait $cpid; exit 143' TERM HUP
trap 'kill -TERM $cpid 2>/dev/null; wait $cpid; exit 130' INT
wait $cpid
rc=$?
exit $rc
