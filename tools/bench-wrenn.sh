#!/bin/bash
# bench-wrenn.sh - sbxfs on the wrenn backend vs raw clients of the same
# sbxfs-server, side by side, in one run (a script, not a timed test):
#   - cat of a 256 MiB file through the mount vs curl files/stream/read
#     and files/read;
#   - cp of a 256 MiB file into the mount (split into upload parts and
#     joined in the capsule, as on Wrenn) vs curl files/stream/write in one
#     request and curl files/write in parts of the same size;
#   - exec: first byte of output through MOUNT/box/exec vs a raw WebSocket
#     client of exec/stream (median of 7);
#   - ls -l of a 10,000-entry directory through the mount (cold), with the
#     number of API calls it made (counted by tools/faultproxy in pass
#     mode) vs curl files/list of that directory;
#   - small files: tar x of 1,000 small files and creating 2,000 empty
#     files through the mount (with their API calls) vs the raw-client
#     equivalent, one upload of the archive plus one `tar x` by exec.
#
#   tools/bench-wrenn.sh [BUILD_DIR]     (default build/ in the clone)
#
# The server runs with --upload-limit 0 (no emulated envd ceiling), so raw
# single-request uploads are possible; the mount still splits uploads at
# its own wrenn_upload_max (default about 2 MiB, like Wrenn's envd), and a
# second cp row uses -o wrenn_upload_max=64M.  Needs root, curl, python3.
#
# One run on the 2-core dev VM (loopback, plain build, other tests busy):
#   read:  mount cat cold 0.78 s (328 MiB/s), warm 0.46 s; raw curl
#          stream/read 0.36 s (711 MiB/s), files/read 0.42 s
#   write: mount cp 2.43 s (105 MiB/s; 129 parts of ~2 MiB + join), with
#          wrenn_upload_max=64M 0.95 s; raw stream/write 0.35 s, raw
#          files/write x129 curl processes + join 6.12 s
#   exec first byte: mount 0.043 s, raw WebSocket 0.018 s (medians)
#   ls -l of 10,000 entries: cold 0.66 s with 3 files/list (+1 status
#          poll), warm 0.12 s with 0 calls; raw files/list 0.37 s
#   small files (BENCH_ONLY=small: only these and the ls rows), each
#   timed until one exec after it returned, so the files have landed:
#          tar x of 1,000 files 0.96 / 1.31 s (2 batches) vs raw 0.32 /
#          0.62 s = 3.0x / 2.1x; 2,000 empty files 1.19 / 1.33 s vs
#          0.36 / 1.05 s (two runs, load average 3-4)
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
export SBXFS_BIN=${SBXFS_BIN:-$build/src/sbxfs}
srvbin=$build/tools/sbxfs-server/sbxfs-server
export SBXFS_SERVER_BIN=${SBXFS_SERVER_BIN:-$srvbin}
SIZE=$((256 << 20))

if [ -z "${SBXFS_SERVER_PORT:-}" ]; then
	exec "$src/tools/with-server.sh" --upload-limit 0 -- "$0" "$@"
fi

T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-bw-XXXXXX") || exit 2
M=$T/mnt
mkdir "$M"
fpid=
ppid_=
cleanup() {
	trap - EXIT INT TERM
	if mountpoint -q "$M"; then
		for d in "$M"/cl-*; do
			[ -d "$d" ] && timeout 60 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$M" 2>/dev/null || fusermount3 -uz "$M"
	fi
	[ -n "$fpid" ] && kill "$fpid" 2>/dev/null
	[ -n "$ppid_" ] && kill "$ppid_" 2>/dev/null
	wait 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

U=$SBXFS_SERVER_URL/v1/capsules
(umask 077 && printf 'X-API-Key: %s\n' "$WRENN_API_KEY" >"$T/hdr")
H=(-H @"$T/hdr")	# the key stays off argv

now() { date +%s.%N; }
secs() { echo "$(now) $1" | awk '{ printf "%.2f", $1 - $2 }'; }
rate() { awk -v s="$1" -v b="$SIZE" 'BEGIN {
	if (s > 0) printf "%.0f MiB/s", b / 1048576 / s; else print "-" }'; }
row() { printf '%-44s %9s s  %s\n' "$1" "$2" "${3:-}"; }

mount_it() { # MOUNT URL [OPTS]
	local m=$1 url=$2 o=${3:-}
	mkdir -p "$m"
	if [ -n "$o" ]; then
		"$SBXFS_BIN" -f -o "$o" "wrenn:$url" "$m" >>"$T/sbxfs.log" 2>&1 &
	else
		"$SBXFS_BIN" -f "wrenn:$url" "$m" >>"$T/sbxfs.log" 2>&1 &
	fi
	fpid=$!
	for _ in $(seq 100); do
		mountpoint -q "$m" && return 0
		sleep 0.1
	done
	echo "mount failed" >&2
	cat "$T/sbxfs.log" >&2
	exit 2
}
umount_it() {
	fusermount3 -u "$1"
	for _ in $(seq 100); do
		kill -0 "$fpid" 2>/dev/null || break
		sleep 0.1
	done
	wait "$fpid" 2>/dev/null
	fpid=
}

mount_it "$M" "$SBXFS_SERVER_URL"
mkdir "$M/box" || exit 2
# NAME is the directory, the capsule ID a symlink to it
ID=
for l in "$M"/cl-*; do
	[ "$(readlink "$l")" = box ] && ID=${l##*/}
done
[ -n "$ID" ] || { echo "no capsule ID for box" >&2; exit 2; }
B=$M/box
sh_in() { # run a command line in the capsule through the mount
	( exec 3<>"$B/exec"; printf '%s\n' "$1" >&3; cat <&3 )
}
echo "sbxfs-server $SBXFS_SERVER_URL, capsule $ID, $(nproc) cores"
echo "file size $((SIZE >> 20)) MiB; times are wall clock, one run each"
echo

if [ "${BENCH_ONLY:-}" != small ]; then
head -c $SIZE /dev/urandom >"$T/src"
want=$(sha256sum <"$T/src" | cut -d' ' -f1)
sh_in "head -c $SIZE /dev/urandom > /tmp/big; mkdir -p /tmp/up" >/dev/null
bigsum=$(sh_in "sha256sum < /tmp/big" | cut -d' ' -f1)

echo "== read 256 MiB"
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
t0=$(now)
cat "$B/fs/tmp/big" >/dev/null
s=$(secs "$t0")
row "mount: cat box/fs/tmp/big > /dev/null (cold)" "$s" "$(rate "$s")"
t0=$(now)
cat "$B/fs/tmp/big" >/dev/null
s=$(secs "$t0")
row "mount: the same again (warm)" "$s" "$(rate "$s")"
t0=$(now)
curl -sS "${H[@]}" -H 'Content-Type: application/json' \
	-d '{"path":"/tmp/big"}' "$U/$ID/files/stream/read" -o /dev/null
s=$(secs "$t0")
row "raw:   curl files/stream/read -o /dev/null" "$s" "$(rate "$s")"
t0=$(now)
curl -sS "${H[@]}" -H 'Content-Type: application/json' \
	-d '{"path":"/tmp/big"}' "$U/$ID/files/read" -o /dev/null
s=$(secs "$t0")
row "raw:   curl files/read -o /dev/null" "$s" "$(rate "$s")"
# correctness, untimed
got=$(sha256sum <"$B/fs/tmp/big" | cut -d' ' -f1)
[ "$got" = "$bigsum" ] && echo "  (mount read: sha256 ok)" ||
	echo "  (mount read: checksum MISMATCH)"
echo

echo "== write 256 MiB"
t0=$(now)
cp "$T/src" "$B/fs/tmp/up/a"
s=$(secs "$t0")
row "mount: cp (default wrenn_upload_max, joined)" "$s" "$(rate "$s")"
got=$(sh_in "sha256sum < /tmp/up/a" | cut -d' ' -f1)
[ "$got" = "$want" ] || echo "  (mount cp: checksum MISMATCH)"
t0=$(now)
curl -sS -f "${H[@]}" -H 'Expect:' -F path=/tmp/up/b -F "file=@$T/src" \
	"$U/$ID/files/stream/write" || echo "  (raw stream/write failed)"
s=$(secs "$t0")
row "raw:   curl files/stream/write (1 request)" "$s" "$(rate "$s")"
got=$(sh_in "sha256sum < /tmp/up/b" | cut -d' ' -f1)
[ "$got" = "$want" ] || echo "  (raw stream/write: checksum MISMATCH)"
# raw parts of the mount's part size, 3 at a time like the client, then
# one join: what the client does, without FUSE
part=2096914
split -b $part -a 4 -d "$T/src" "$T/part."
t0=$(now)
ls "$T"/part.* | xargs -P 3 -I{} sh -c 'curl -sS -f -H @"$1/hdr" -H Expect: \
	-F path=/tmp/up/p/$(basename "$2") -F "file=@$2" \
	"$3/files/write" || echo "  (part $2 failed)"' _ "$T" {} "$U/$ID"
sh_in "cat /tmp/up/p/part.* > /tmp/up/c && rm -r /tmp/up/p" >/dev/null
s=$(secs "$t0")
row "raw:   curl files/write x$(ls "$T"/part.* | wc -l) parts + join" "$s" \
	"$(rate "$s")"
rm -f "$T"/part.*
umount_it "$M"
mount_it "$M" "$SBXFS_SERVER_URL" "wrenn_upload_max=67108864"
t0=$(now)
cp "$T/src" "$B/fs/tmp/up/d"
s=$(secs "$t0")
row "mount: cp (-o wrenn_upload_max=64M, joined)" "$s" "$(rate "$s")"
got=$(sh_in "sha256sum < /tmp/up/d" | cut -d' ' -f1)
[ "$got" = "$want" ] || echo "  (mount cp 64M: checksum MISMATCH)"
sh_in "rm -rf /tmp/up /tmp/big" >/dev/null
rm -f "$T/src"
echo

echo "== exec: first byte of output (median of 7)"
python3 - "$B/exec" <<'EOF'
import os, sys, time
ts = []
for _ in range(7):
    t0 = time.monotonic()
    fd = os.open(sys.argv[1], os.O_RDWR)
    os.write(fd, b"echo hi\n")
    b = os.read(fd, 1)
    ts.append(time.monotonic() - t0)
    while os.read(fd, 4096):
        pass
    os.close(fd)
    assert b == b"h", b
ts.sort()
print("%-44s %9.3f s  (min %.3f)" % ("mount: open exec, write, first byte",
                                     ts[3], ts[0]))
EOF
python3 - "$SBXFS_SERVER_PORT" "/v1/capsules/$ID/exec/stream" <<'EOF'
import base64, json, os, socket, struct, sys, time
key = os.environ["WRENN_API_KEY"]
def frame(p):
    m = os.urandom(4)
    h = bytes([0x81]) + (bytes([0x80 | len(p)]) if len(p) < 126 else
                         bytes([0x80 | 126]) + struct.pack("!H", len(p)))
    return h + m + bytes(b ^ m[i % 4] for i, b in enumerate(p))
ts = []
for _ in range(7):
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nX-API-Key: %s\r\n\r\n"
               % (sys.argv[2], k, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    assert b" 101 " in buf.split(b"\r\n")[0], buf
    buf = buf[buf.index(b"\r\n\r\n") + 4:]
    s.sendall(frame(json.dumps({"type": "start", "cmd": "/bin/sh",
                                "args": ["-c", "echo hi"]}).encode()))
    while b'"stdout"' not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    ts.append(time.monotonic() - t0)
    s.close()
ts.sort()
print("%-44s %9.3f s  (min %.3f)" % (
    "raw:   WebSocket exec/stream, first stdout",
                                     ts[3], ts[0]))
EOF
echo

fi # BENCH_ONLY=small: only the listing and small-file rows

echo "== ls -l of a 10,000-entry directory"
sh_in "mkdir -p /tmp/d10k && cd /tmp/d10k && seq 10000 | xargs touch" \
	>/dev/null
umount_it "$M"
: >"$T/ctl"
"$src/tools/faultproxy" --upstream "$SBXFS_SERVER_PORT" --control "$T/ctl" \
	--log "$T/proxy.log" >"$T/proxy.out" 2>&1 &
ppid_=$!
for _ in $(seq 100); do
	pport=$(sed -n 's/^listening on .*://p' "$T/proxy.out")
	[ -n "$pport" ] && break
	sleep 0.1
done
mount_it "$M" "http://127.0.0.1:$pport"
B=$M/$ID	# aliases are per base URL: the proxy's URL has none
ls "$B/fs/tmp" >/dev/null	# resolve the path first
sleep 1.2			# listings are cached for a second
n0=$(wc -l <"$T/proxy.log")
t0=$(now)
n=$(ls -l "$B/fs/tmp/d10k" | wc -l)
s=$(secs "$t0")
n1=$(wc -l <"$T/proxy.log")
calls=$(sed -n "$((n0 + 1)),${n1}p" "$T/proxy.log" |
	awk '{ print $1, $2 }' | sed 's|/v1/capsules/[^/]*/|.../|' |
	sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2 " " $3, $1;
	sep = ", " }')
row "mount: ls -l box/fs/tmp/d10k ($((n - 1)) entries)" "$s" \
	"$((n1 - n0)) API calls: $calls"
t0=$(now)
ls -l "$B/fs/tmp/d10k" >/dev/null
s=$(secs "$t0")
n2=$(wc -l <"$T/proxy.log")
row "mount: same again (warm)" "$s" "$((n2 - n1)) API calls"
# the directory's listing expired but the path to it just looked up
sleep 1.2
ls "$B/fs/tmp" >/dev/null
n2=$(wc -l <"$T/proxy.log")
t0=$(now)
ls -l "$B/fs/tmp/d10k" >/dev/null
s=$(secs "$t0")
n3=$(wc -l <"$T/proxy.log")
row "mount: again, its listing expired, path fresh" "$s" \
	"$((n3 - n2)) API calls"
stat "$B/fs/tmp/d10k/5000" >/dev/null
n2=$(wc -l <"$T/proxy.log")
stat "$B/fs/tmp/d10k/5001" >/dev/null
n3=$(wc -l <"$T/proxy.log")
row "mount: stat of a file (listing warm)" "-" "$((n3 - n2)) API calls"
t0=$(now)
c=$(curl -sS "${H[@]}" -H 'Content-Type: application/json' \
	-d '{"path":"/tmp/d10k"}' "$U/$ID/files/list" | grep -o '"name"' |
	wc -l)
s=$(secs "$t0")
row "raw:   curl files/list ($c entries)" "$s" "1 API call"
sh_in "rm -rf /tmp/d10k" >/dev/null
echo

echo "== small files"
# the archives: 1,000 files of 100-300 bytes with modes and times (what
# tar sets with chmod and utimes), and 2,000 empty files
mkdir -p "$T/small/s" "$T/small/e"
for i in $(seq 1000); do
	head -c $((100 + i % 200)) /dev/urandom >"$T/small/s/f$i"
done
(cd "$T/small/e" && seq 2000 | sed 's/^/e/' | xargs touch)
tar -C "$T/small/s" -cf "$T/s.tar" .
tar -C "$T/small/e" -cf "$T/e.tar" .
raw_exec() { # one foreground exec of a shell line
	curl -sS -f "${H[@]}" -H 'Content-Type: application/json' \
		-d "$(python3 -c 'import json,sys; print(json.dumps({"cmd": \
"/bin/sh", "args": ["-c", sys.argv[1]]}))' "$1")" "$U/$ID/exec" >/dev/null
}
raw_tar() { # NAME TAR: one upload + one tar x
	curl -sS -f "${H[@]}" -H Expect: -F "path=/tmp/$1.tar" \
		-F "file=@$2" "$U/$ID/files/write" &&
		raw_exec "mkdir -p /tmp/$1 && tar -C /tmp/$1 -xf /tmp/$1.tar"
}
small_row() { # LABEL CMD: run CMD timed, with the API calls it made
	local n0 n1 t0 s calls
	n0=$(wc -l <"$T/proxy.log")
	t0=$(now)
	sh -c "$2"
	s=$(secs "$t0")
	n1=$(wc -l <"$T/proxy.log")
	calls=$(sed -n "$((n0 + 1)),${n1}p" "$T/proxy.log" |
		awk '{ print $1, $2 }' | sed 's|/v1/capsules/[^/]*/|.../|' |
		sort | uniq -c | sort -rn | head -4 | awk '{ printf "%s%s x%s",
		sep, $2 " " $3, $1; sep = ", " }')
	row "$1" "$s" "$((n1 - n0)) API calls: $calls"
	last_s=$s
}
ratio() { # MOUNT RAW
	awk -v m="$1" -v r="$2" 'BEGIN { if (r > 0) printf "%.1fx", m / r }'
}
# through the mount, close(2) of a small file queues it; the rows time
# until everything is in the capsule: one exec after (it waits for the
# queue to land first)
landed="; (exec 3<>$B/exec; echo true >&3; cat <&3 >/dev/null)"
small_row "mount: tar x of 1,000 small files + 1 exec" \
	"mkdir $B/fs/tmp/tx && tar -C $B/fs/tmp/tx -xf $T/s.tar$landed"
ms=$last_s
t0=$(now)
raw_tar tr "$T/s.tar"
rs=$(secs "$t0")
row "raw:   1 upload of the tar + 1 exec tar x" "$rs" \
	"2 API calls; mount/raw $(ratio "$ms" "$rs") (target <= 5x)"
small_row "mount: 2,000 empty files (xargs touch) + 1 exec" \
	"mkdir $B/fs/tmp/ex && cd $B/fs/tmp/ex && seq 2000 | sed 's/^/e/' | \
xargs touch$landed"
ms=$last_s
t0=$(now)
raw_tar er "$T/e.tar"
rs=$(secs "$t0")
row "raw:   1 upload of the tar + 1 exec tar x" "$rs" \
	"2 API calls; mount/raw $(ratio "$ms" "$rs")"
# correctness, untimed: the same bytes, modes and times in the capsule
a=$(sh_in "cd /tmp/tx && find . -type f -exec sha256sum {} + | sort | \
sha256sum; find . -type f -printf '%m %T@\\n' | sort | sha256sum")
b=$(sh_in "cd /tmp/tr && find . -type f -exec sha256sum {} + | sort | \
sha256sum; find . -type f -printf '%m %T@\\n' | sort | sha256sum")
[ "$a" = "$b" ] && echo "  (tar x through the mount: same bytes, modes, times)" ||
	echo "  (tar x through the mount: DIFFERS from the raw tar x)"
n=$(sh_in "ls /tmp/ex | wc -l")
[ "$n" = 2000 ] || echo "  (empty files: $n of 2000 in the capsule)"
sh_in "rm -rf /tmp/tx /tmp/tr /tmp/ex /tmp/er /tmp/tr.tar /tmp/er.tar" \
	>/dev/null
