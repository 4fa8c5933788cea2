#!/bin/bash
# bench-ports.sh - NAME/ports/PORT on the local runtime: a service in a
# sandbox with its own network, reached through sbxfs's loopback forwarder,
# beside the same service in a network=host sandbox reached directly (the
# reference: the only difference is the forwarder hop).  A script, not a
# timed test:
#   - throughput: curl of a SIZE_MB file (default 256) from python3's
#     http.server, best of 3;
#   - connection + small request: N (default 200) sequential HTTP GETs of
#     a 6-byte file on new connections (python urllib), ms per request.
#
#   tools/bench-ports.sh [BUILD_DIR]     (default build/ in the clone)
#
# Needs root, /dev/fuse, the root image, curl, python3.
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
BIN=${SBXFS_BIN:-$build/src/sbxfs}
SBX=${SBX:-$build/tools/sbx}
SIZE_MB=${SIZE_MB:-256}
N=${N:-200}
T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-bports.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
export SBX_MOUNT=$MNT
SPID=
mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
	if mounted; then
		for d in own host; do [ -d "$MNT/$d" ] && rmdir "$MNT/$d"; done
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	[ -n "$SPID" ] && { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$BIN" -f "local:$DATA" "$MNT" >"$T/sbxfs.log" 2>&1 &
SPID=$!
for _ in $(seq 100); do mounted && break; sleep 0.1; done
mounted || { cat "$T/sbxfs.log"; exit 1; }
echo "new own" >"$MNT/ctl" && echo "new host network=host" >"$MNT/ctl" || {
	cat "$MNT/err"; exit 1; }

# the same server in both, the host one on a free port of this machine
hp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for b in own:8080 host:$hp; do
	box=${b%:*} port=${b#*:}
	"$SBX" run -n "$box" -- sh -c "mkdir -p /srv && cd /srv &&
		head -c ${SIZE_MB}M /dev/zero >big && printf hello\\\\n >small &&
		nohup python3 -m http.server $port --bind 127.0.0.1 >/dev/null 2>&1 &" >/dev/null
done
for b in own:8080 host:$hp; do
	box=${b%:*} port=${b#*:}
	for _ in $(seq 100); do ls "$MNT/$box/ports" | grep -qx "$port" && break; sleep 0.1; done
done
url_own=$(cat "$MNT/own/ports/8080")
url_host=$(cat "$MNT/host/ports/$hp")

thr() { # best MB/s of 3
	local best=0 s
	for _ in 1 2 3; do
		s=$(curl -s -o /dev/null -w '%{speed_download}' "$1/big")
		best=$(awk -v a="$best" -v b="$s" 'BEGIN { print (b > a ? b : a) }')
	done
	awk -v b="$best" 'BEGIN { printf "%.0f", b / 1048576 }'
}
lat() { # ms per new-connection GET
	python3 - "$1/small" "$N" <<'PY'
import sys, time, urllib.request
u, n = sys.argv[1], int(sys.argv[2])
t = time.monotonic()
for _ in range(n):
    urllib.request.urlopen(u).read()
print("%.2f" % ((time.monotonic() - t) * 1000 / n))
PY
}
printf '%-44s %14s %14s\n' "" "forwarder" "network=host"
printf '%-44s %14s %14s\n' "curl of ${SIZE_MB} MiB, MB/s (best of 3)" \
	"$(thr "$url_own")" "$(thr "$url_host")"
printf '%-44s %14s %14s\n' "$N GETs on new connections, ms each" \
	"$(lat "$url_own")" "$(lat "$url_host")"
echo "forwarder: $url_own  direct: $url_host"
