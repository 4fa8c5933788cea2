#!/bin/sh
# bench-mem.sh - sbxfs's memory under issue 10's loads: RSS and thread
# count of the sbxfs process beside its idle figures, after each load.
#
#   tools/bench-mem.sh [-n SANDBOXES] [-r READERS] [-w WRITES] [-p PJDFSTEST_DIR]
#                      (as root; ~2 min with the defaults, +4 min with -p)
#
# Mounts its own sbxfs (local backend, a fresh data dir under $TMPDIR or
# /tmp) and prints, one row each:
#   - idle: mounted, one sandbox, nothing open;
#   - after WRITES (default 10,000) malformed writes to MOUNT/ctl and as many
#     to NAME/ctl (bad verbs, bad arguments, oversized lines);
#   - after a pjdfstest run on NAME/fs/ (-p: a built pjdfstest clone);
#   - with SANDBOXES (default 1,000) sandboxes and READERS (default 100)
#     `cat NAME/proc/JOB/stdout` blocked on jobs that print nothing, and
#     again after all of them are gone.
# Target (issue 10): within 2x of idle after the ctl writes and after
# pjdfstest; under 32 MiB with 1,000 sandboxes and 100 blocked readers.
# Binary: $SBXFS_BIN, else BUILD/src/sbxfs (BUILD = $SBXFS_BUILD or the
# clone's build/).  Everything it makes is removed at exit, also when
# interrupted.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${SBXFS_BUILD:-$HERE/../build}
BIN=${SBXFS_BIN:-$BUILD/src/sbxfs}
NSB=1000 NREAD=100 NW=10000 PJD=
while getopts n:r:w:p: o; do
	case $o in
	n) NSB=$OPTARG ;;
	r) NREAD=$OPTARG ;;
	w) NW=$OPTARG ;;
	p) PJD=$(cd "$OPTARG" && pwd) ;;
	*)
		echo "usage: $0 [-n SANDBOXES] [-r READERS] [-w WRITES] [-p PJDFSTEST_DIR]" >&2
		exit 2
		;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "bench-mem.sh needs root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no $BIN: build first, or set SBXFS_BIN" >&2; exit 1; }
[ "$NREAD" -le "$NSB" ] || { echo "READERS > SANDBOXES" >&2; exit 2; }

T=$(mktemp -d "${TMPDIR:-/tmp}/sbxfs-mem.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
FPID= READERS=

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
	set +e
	cd /
	# shellcheck disable=SC2086
	[ -n "$READERS" ] && kill $READERS 2>/dev/null
	if mounted; then
		for d in "$MNT"/*/; do
			[ -d "$d" ] && timeout 60 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	[ -n "$FPID" ] && kill "$FPID" 2>/dev/null
	awk -v b="$T/" 'index($2, b) == 1 { print $2 }' /proc/mounts |
		sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

"$BIN" -f -o allow_other "local:$DATA" "$MNT" >"$T/sbxfs.log" 2>&1 &
FPID=$!
for _ in $(seq 100); do mounted && break; sleep 0.1; done
mounted || { echo "sbxfs did not mount" >&2; cat "$T/sbxfs.log" >&2; exit 1; }

# the process's RSS (KiB) and thread count
rss() { awk '/^VmRSS:/ { print $2 }' /proc/"$FPID"/status; }
thr() { awk '/^Threads:/ { print $2 }' /proc/"$FPID"/status; }
IDLE=
row() { # LABEL: RSS, threads, ratio to idle
	r=$(rss)
	printf "%-52s %8.1f MiB %4s thr %6s\n" "$1" "$(echo "$r" |
		awk '{ print $1 / 1024 }')" "$(thr)" "$([ -n "$IDLE" ] &&
		awk -v a="$r" -v b="$IDLE" 'BEGIN { printf "%.2fx", a / b }')"
}

echo "$("$BIN" -V 2>&1 | head -1), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-52s %12s %8s %6s\n" "" "RSS" "threads" "/idle"
mkdir "$MNT/m0"
head -1 "$MNT/m0/status" >/dev/null
IDLE=$(rss)
row "idle (one sandbox)"

# ---- malformed ctl writes ----------------------------------------------
long=$(head -c 70000 /dev/zero | tr '\0' x)
i=0
while [ $i -lt "$NW" ]; do
	case $((i % 4)) in
	0) echo "frobnicate $i" >"$MNT/ctl" ;;
	1) echo "new" >"$MNT/ctl" ;;
	2) echo "new bad/name$i cpus=-1" >"$MNT/ctl" ;;
	3) printf '%s\n' "$long" >"$MNT/ctl" ;;
	esac 2>/dev/null || true
	case $((i % 3)) in
	0) echo "frobnicate $i" >"$MNT/m0/ctl" ;;
	1) echo "stop x y z" >"$MNT/m0/ctl" ;;
	2) printf 'snapshot %s\n' "$long" >"$MNT/m0/ctl" ;;
	esac 2>/dev/null || true
	i=$((i + 1))
done
row "after $NW malformed writes to ctl and to NAME/ctl"

# ---- pjdfstest -----------------------------------------------------------
if [ -n "$PJD" ]; then
	mkdir "$MNT/m0/fs/pjd" && chmod 0755 "$MNT/m0/fs/pjd"
	(cd "$MNT/m0/fs/pjd" && prove -r "$PJD/tests" >"$T/pjd.out" 2>&1) || true
	row "after pjdfstest on NAME/fs/ ($(grep -Eo 'Tests=[0-9]+' "$T/pjd.out"))"
fi

# ---- many sandboxes, blocked readers -------------------------------------
i=1
while [ $i -lt "$NSB" ]; do
	mkdir "$MNT/m$i"
	i=$((i + 1))
done
row "$NSB sandboxes"
i=0
while [ $i -lt "$NREAD" ]; do
	mkdir "$MNT/m$i/proc/j"
	echo 'sleep 100000' >"$MNT/m$i/proc/j/cmd"
	cat "$MNT/m$i/proc/j/stdout" >/dev/null 2>&1 &
	READERS="$READERS $!"
	i=$((i + 1))
done
# the readers are parked when their cat sits in read(2)
for _ in $(seq 100); do
	n=0
	for p in $READERS; do
		grep -q '^0 ' /proc/"$p"/syscall 2>/dev/null && n=$((n + 1))
	done
	[ "$n" = "$NREAD" ] && break
	sleep 0.1
done
row "$NSB sandboxes, $n of $NREAD readers blocked in read"
# shellcheck disable=SC2086
kill $READERS 2>/dev/null || true
READERS=
i=0
while [ $i -lt "$NSB" ]; do
	rmdir "$MNT/m$i"
	i=$((i + 1))
done
row "all destroyed"
