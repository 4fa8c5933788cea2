#!/bin/sh
# bench.sh - sbxfs's figures (issue 10's table, plus the rows of the
# former bench-fs.sh and bench-exec.sh, which it replaces), each printed
# beside its reference from the same run, with the ratio sbxfs / reference.
#
#   tools/bench.sh [-e|-f] [-r REPS] [-n ROUNDS] [-s MIB]  (as root; ~5 min)
#
# Mounts its own sbxfs (local backend, a fresh data dir under $TMPDIR or
# /tmp), creates one sandbox and compares:
#   - file work through MOUNT/bench/fs/ with the same work done directly
#     on the sandbox's writable layer, DATA/sandboxes/bench/upper (files
#     written there by root on the host are owned by host root: fine for a
#     benchmark; tar x and the creates in the same parent directory as
#     sbxfs's, see below);
#   - `sbx run` with `nsenter` into the same sandbox's namespaces.
# Every row runs sbxfs and its reference alternately REPS times (default
# 3) and prints the medians; exec rows are the mean of ROUNDS commands
# (default 200) per repetition.  MIB (default 1024) sizes the big file and
# the stdout stream.  -e: the exec rows only (issue 10 item 2); -f: the
# file rows only (item 1).  The load
# average is printed first and last: on a shared machine read the ratios,
# not the absolutes.
#
# Binaries: $SBXFS_BIN and $SBX, else BUILD/src/sbxfs and BUILD/tools/sbx
# with BUILD = $SBXFS_BUILD or the clone's build/.  $SBXFS_OPTS adds -o
# options to the mount.  Everything it makes is removed at exit, also when
# interrupted.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${SBXFS_BUILD:-$HERE/../build}
BIN=${SBXFS_BIN:-$BUILD/src/sbxfs}
SBX=${SBX:-$BUILD/tools/sbx}
REPS=3 ROUNDS=200 MIB=1024 EXEC_ONLY= FILES_ONLY=
while getopts efr:n:s: o; do
	case $o in
	e) EXEC_ONLY=1 ;;
	f) FILES_ONLY=1 ;;
	r) REPS=$OPTARG ;;
	n) ROUNDS=$OPTARG ;;
	s) MIB=$OPTARG ;;
	*)
		echo "usage: $0 [-e|-f] [-r REPS] [-n ROUNDS] [-s MIB]" >&2
		exit 2
		;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (nsenter, the data dir)" >&2; exit 1; }
for b in "$BIN" "$SBX"; do
	[ -x "$b" ] || { echo "no $b: build first (meson/ninja), or set SBXFS_BIN / SBX" >&2; exit 1; }
done

T=$(mktemp -d "${TMPDIR:-/tmp}/sbxfs-bench.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA" "$T/src"
FPID= SAMPLER=

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
	set +e
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
	if mounted; then
		[ -d "$MNT/bench" ] && timeout 120 rmdir "$MNT/bench" 2>/dev/null
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	[ -n "$FPID" ] && kill "$FPID" 2>/dev/null
	# whatever a failed destroy left: overlay mounts under T
	awk -v b="$T/" 'index($2, b) == 1 { print $2 }' /proc/mounts |
		sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

ns() { date +%s%N; }
# ms START: milliseconds since START (ns), 3 decimals
ms() { echo "$(ns) $1" | awk '{ printf "%.3f", ($1 - $2) / 1e6 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
	END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
# fmt MS [BYTES]: "0.123 s" (or "12.3 ms" under a second), "(N MB/s)"
fmt() { awk -v t="$1" -v b="${2:-0}" 'BEGIN {
	s = (t >= 1000) ? sprintf("%.2f s", t / 1000) : sprintf("%.1f ms", t)
	if (b > 0 && t > 0) s = s sprintf(" (%.0f MB/s)", b / 1e6 / (t / 1000))
	print s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
W=44
row() { printf "%-${W}s %20s %20s %7s\n" "$1" "$2" "$3" "$4"; }
# cmp_row LABEL BYTES "SBXFS_MS..." "REF_MS...": medians and their ratio
cmp_row() {
	a=$(median $3) b=$(median $4)
	row "$1" "$(fmt "$a" "$2")" "$(fmt "$b" "$2")" "$(ratio "$a" "$b")"
}
# timed CMD...: run it (stdout discarded), print its milliseconds
timed() {
	t=$(ns)
	"$@" >/dev/null || echo "  ($* failed)" >&2
	ms "$t"
}

"$BIN" ${SBXFS_OPTS:+-o "$SBXFS_OPTS"} "local:$DATA" "$MNT"
for _ in $(seq 100); do mounted && break; sleep 0.1; done
mounted || { echo "sbxfs did not mount" >&2; exit 1; }
FPID=$(pgrep -n -f "sbxfs.*local:$DATA") || FPID=
rss() { awk '/^VmRSS:/ { print $2 }' /proc/"$FPID"/status 2>/dev/null; }

echo "$("$BIN" -V 2>&1 | head -1), $(nproc) cores, load $(load) at start"
echo "reference: files straight on the writable layer; exec: nsenter into the same sandbox"
echo "medians of $REPS interleaved runs; ratio = sbxfs / reference (lower is better)"
row "" "sbxfs" "reference" "ratio"

t=$(ns); mkdir "$MNT/bench"; t_new=$(ms "$t")
[ "$(head -n 1 "$MNT/bench/status")" = running ] || { echo "sandbox not running" >&2; exit 1; }
M=$MNT/bench/fs/bt
U=$DATA/sandboxes/bench/upper
D=$U/direct
mkdir "$M" "$D"
row "mkdir sandbox (create + start)" "$(fmt "$t_new")" "" ""

BIG=$((MIB * 1048576))
files_rows() {
# ---- inputs (not timed) ------------------------------------------------
head -c "$BIG" /dev/urandom >"$T/src.bin"
TARSRC=
for d in /usr/share/man /usr/share/perl; do
	[ -d "$d" ] && TARSRC="$TARSRC ${d#/}"
done
# shellcheck disable=SC2086
tar -C / -cf "$T/src.tar" $TARSRC 2>/dev/null || true
NTAR=$(tar -tf "$T/src.tar" | wc -l)
TARMB=$(($(stat -c %s "$T/src.tar") / 1000000))
mkdir "$T/small"
i=0
while [ $i -lt 1000 ]; do
	head -c 4096 "$T/src.bin" >"$T/small/f$i"
	i=$((i + 1))
done
NDOC=$(find /usr/share/doc | wc -l)
cat "$T/src.bin" "$T/src.tar" >/dev/null

# The create rows (tar x, create 2,000) work side by side in one parent
# directory, made through the mount: sbxfs in one child, the reference
# straight in the writable layer's copy of the same parent.  ext4 puts a
# directory's new inodes in its parent's block group, and on a disk
# without a journal the search for a free inode there skips every inode
# freed in the last minutes (recently_deleted()): per group that cost
# ranged from ~0 to ~400 us a file on this machine, which made the ratio
# of two directories a draw (a run gave 12x, the next 2x).
B=$U/bt
# ---- tar x -------------------------------------------------------------
a= b=
for r in $(seq "$REPS"); do
	mkdir "$M/tar$r" "$M/tar$r/s"
	mkdir "$B/tar$r/d"
	a="$a $(timed tar -C "$M/tar$r/s" -xf "$T/src.tar")"
	b="$b $(timed tar -C "$B/tar$r/d" -xf "$T/src.tar")"
done
cmp_row "tar x of $NTAR entries ($TARMB MB)" 0 "$a" "$b"

# ---- create 2,000 empty files -----------------------------------------
# mkfiles DIR PREFIX: DIR/PREFIX0 ... DIR/PREFIX1999, empty
mkfiles() {
	j=0
	while [ $j -lt 2000 ]; do
		: >"$1/$2$j"
		j=$((j + 1))
	done
}
a= b=
for r in $(seq "$REPS"); do
	mkdir "$M/c$r" # one directory for both (see tar x)
	a="$a $(timed mkfiles "$M/c$r" f)"
	b="$b $(timed mkfiles "$B/c$r" g)"
done
cmp_row "create 2,000 empty files" 0 "$a" "$b"

# ---- cp 1 GiB in + sync ------------------------------------------------
a= b=
cpsync() { cp "$T/src.bin" "$1" && sync "$1"; }
for r in $(seq "$REPS"); do
	a="$a $(timed cpsync "$M/big$r")"
	b="$b $(timed cpsync "$D/big$r")"
	[ $r = "$REPS" ] || rm -f "$M/big$r" "$D/big$r"
done
cmp_row "cp $MIB MiB in + sync" "$BIG" "$a" "$b"
cmp -s "$T/src.bin" "$M/big$REPS" || echo "  (the copy through sbxfs differs!)"

# ---- cat of the big file: warm, then cold ------------------------------
cat "$M/big$REPS" "$D/big$REPS" >/dev/null
a= b=
for r in $(seq "$REPS"); do
	a="$a $(timed cat "$M/big$REPS")"
	b="$b $(timed cat "$D/big$REPS")"
done
cmp_row "warm cat of an unchanged $MIB MiB file" "$BIG" "$a" "$b"
a= b=
for r in $(seq "$REPS"); do
	sync
	echo 3 >/proc/sys/vm/drop_caches
	a="$a $(timed cat "$M/big$REPS")"
	echo 3 >/proc/sys/vm/drop_caches
	b="$b $(timed cat "$D/big$REPS")"
done
cmp_row "cold cat of $MIB MiB (caches dropped)" "$BIG" "$a" "$b"
rm -f "$M/big$REPS" "$D/big$REPS"

# ---- cat of 1,000 x 4 KiB, warm ----------------------------------------
cp -r "$T/small" "$M/small"
cp -r "$T/small" "$D/small"
cat "$M"/small/* "$D"/small/* >/dev/null
a= b=
for r in $(seq "$REPS"); do
	a="$a $(timed cat "$M"/small/*)"
	b="$b $(timed cat "$D"/small/*)"
done
cmp_row "cat of 1,000 x 4 KiB, warm" 0 "$a" "$b"

# ---- cp -r /usr/share/doc ----------------------------------------------
a= b=
for r in $(seq "$REPS"); do
	a="$a $(timed cp -r /usr/share/doc "$M/doc$r")"
	b="$b $(timed cp -r /usr/share/doc "$D/doc$r")"
done
cmp_row "cp -r /usr/share/doc ($NDOC entries)" 0 "$a" "$b"

# ---- ls -l of 10,000 entries -------------------------------------------
# made on the writable layer (quick), listed through both
mkdir "$D/many"
i=0
while [ $i -lt 10000 ]; do
	: >"$D/many/f$i"
	i=$((i + 1))
done
a= b=
for r in $(seq "$REPS"); do
	a="$a $(timed ls -l "$M/../direct/many")"
	b="$b $(timed ls -l "$D/many")"
done
cmp_row "ls -l of 10,000 entries" 0 "$a" "$b"
n=$(ls "$M/../direct/many" | wc -l)
[ "$n" = 10000 ] || echo "  (ls through sbxfs listed $n entries)"

}
[ -n "$EXEC_ONLY" ] || files_rows
if [ -n "$FILES_ONLY" ]; then
	echo "load $(load) at the end"
	exit 0
fi

# ---- exec: round trip of true ------------------------------------------
PID=$(tr -d ' \t\n' <"$MNT/bench/info" |
	sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p')
[ -n "$PID" ] || { echo "no init pid in bench/info" >&2; exit 1; }
NSENTER="nsenter -t $PID -m -u -i -n -p -r -w"
export SBX_MOUNT=$MNT
loop_sbx() {
	j=0
	while [ $j -lt "$ROUNDS" ]; do
		"$SBX" run bench -- true </dev/null ||
			echo "  (sbx run failed: $?)" >&2
		j=$((j + 1))
	done
}
loop_ns() {
	j=0
	while [ $j -lt "$ROUNDS" ]; do
		$NSENTER /bin/sh -c true </dev/null ||
			echo "  (nsenter failed: $?)" >&2
		j=$((j + 1))
	done
}
a= b=
for r in $(seq "$REPS"); do
	t=$(timed loop_sbx)
	a="$a $(echo "$t $ROUNDS" | awk '{ printf "%.3f", $1 / $2 }')"
	t=$(timed loop_ns)
	b="$b $(echo "$t $ROUNDS" | awk '{ printf "%.3f", $1 / $2 }')"
done
cmp_row "exec true, sbx run vs nsenter (mean of $ROUNDS)" 0 "$a" "$b"
ma=$(median $a) mb=$(median $b)
row "  difference per command" "$(awk -v a="$ma" -v b="$mb" \
	'BEGIN { printf "%+.2f ms", a - b }')" "" ""

# ---- exec: 1 GiB of stdout ---------------------------------------------
rss0=$(rss)
(
	while :; do
		rss >>"$T/rss" || exit 0
		sleep 0.1
	done
) &
SAMPLER=$!
a= b= bad=
for r in $(seq "$REPS"); do
	t=$(ns)
	got=$("$SBX" run -n bench -- head -c "$BIG" /dev/zero | wc -c)
	a="$a $(ms "$t")"
	[ "$got" = "$BIG" ] || bad="sbx run gave $got bytes"
	t=$(ns)
	got=$($NSENTER /bin/sh -c "head -c $BIG /dev/zero" </dev/null | wc -c)
	b="$b $(ms "$t")"
	[ "$got" = "$BIG" ] || bad="nsenter gave $got bytes"
done
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=
cmp_row "$MIB MiB of stdout into a pipe (| wc -c)" "$BIG" "$a" "$b"
[ -z "$bad" ] || echo "  ($bad, expected $BIG)"

# ---- status and memory -------------------------------------------------
t=$(ns)
i=0
while [ $i -lt 200 ]; do
	head -n 1 "$MNT/bench/status" >/dev/null
	i=$((i + 1))
done
row "200 x head -1 status" "$(fmt "$(ms "$t")")" "" ""
row "sbxfs RSS: before the stream, peak, now" \
	"$rss0 / $(sort -n "$T/rss" | tail -1) / $(rss) KiB" "" ""
t=$(ns)
rmdir "$MNT/bench"
row "rmdir sandbox (destroy)" "$(fmt "$(ms "$t")")" "" ""
echo "load $(load) at the end"
