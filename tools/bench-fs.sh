#!/bin/sh
# bench-fs.sh - file and lifecycle figures of the local backend through the
# mount, side by side with the same work done directly on the disk (the
# sandbox's own writable layer), in one run.
#
#   tools/bench-fs.sh [SBXFS_BIN]      (as root; takes about a minute)
#
# Mounts its own instance on a temporary data dir and removes everything
# it made, also when interrupted.
set -eu

BIN=${1:-${SBXFS_BIN:-$(dirname "$0")/../build/src/sbxfs}}
SIZE_MB=${SIZE_MB:-256}
NFILES=${NFILES:-10000}
T=$(mktemp -d /tmp/sbxfs-bench.XXXXXX)
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"

cleanup() {
	set +e
	if grep -q " $MNT fuse" /proc/mounts; then
		rmdir "$MNT"/bench 2>/dev/null
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
# secs START: seconds since START, 3 decimals
secs() { echo "$(now) $1" | awk '{printf "%.3f", $1 - $2}'; }
rate() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.0f MB/s", $1 / $2;
	else print "-" }'; }
row() { printf '%-34s %14s %14s\n' "$1" "$2" "$3"; }

"$BIN" -o attr_timeout=1 "local:$DATA" "$MNT"
pid=$(pgrep -n -f "sbxfs.*local:$DATA") || true

t=$(now); mkdir "$MNT/bench"; t_new=$(secs "$t")
UP=$DATA/sandboxes/bench/upper
head -c "${SIZE_MB}M" /dev/urandom > "$T/src.bin"
sync

echo "sbxfs local backend, $(nproc) cores; reference = same disk, no FUSE"
row "" "sbxfs" "direct"
row "mkdir sandbox (create+start)" "${t_new}s" "-"

echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t=$(now); cp "$T/src.bin" "$MNT/bench/fs/tmp/a.bin"; a=$(secs "$t")
t=$(now); cp "$T/src.bin" "$UP/b.bin"; sync "$UP/b.bin"; b=$(secs "$t")
row "cp ${SIZE_MB} MiB in" "$(rate "$SIZE_MB" "$a")" "$(rate "$SIZE_MB" "$b")"

echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t=$(now); cat "$MNT/bench/fs/tmp/a.bin" > /dev/null; a=$(secs "$t")
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t=$(now); cat "$UP/b.bin" > /dev/null; b=$(secs "$t")
row "cat ${SIZE_MB} MiB out (cold)" "$(rate "$SIZE_MB" "$a")" \
	"$(rate "$SIZE_MB" "$b")"
cmp "$T/src.bin" "$MNT/bench/fs/tmp/a.bin"

mkdir "$UP/many"
i=0
while [ $i -lt "$NFILES" ]; do : > "$UP/many/f$i"; i=$((i + 1)); done
t=$(now); n=$(ls -l "$MNT/bench/fs/many" | wc -l); a=$(secs "$t")
t=$(now); ls -l "$UP/many" > /dev/null; b=$(secs "$t")
row "ls -l ${NFILES} entries" "${a}s" "${b}s"
[ "$n" -gt "$NFILES" ] || echo "ls listed only $n lines" >&2

t=$(now); cp -r /usr/share/doc "$MNT/bench/fs/tmp/doc"; a=$(secs "$t")
t=$(now); cp -r /usr/share/doc "$UP/doc"; b=$(secs "$t")
row "cp -r /usr/share/doc" "${a}s" "${b}s"

t=$(now); i=0
while [ $i -lt 200 ]; do head -1 "$MNT/bench/status" > /dev/null; i=$((i+1))
done; a=$(secs "$t")
row "200 x head -1 status" "${a}s" "-"

if [ -n "$pid" ]; then
	row "sbxfs RSS after" "$(awk '/VmRSS/{print $2" kB"}' \
		/proc/"$pid"/status)" "-"
fi
t=$(now); rmdir "$MNT/bench"; row "rmdir sandbox (destroy)" "$(secs "$t")s" "-"
