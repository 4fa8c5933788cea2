#!/bin/sh
# pjdfstest.sh - run pjdfstest on NAME/fs/ of a local sandbox mounted
# -o allow_other, and the same tests on a directory of the host's disk
# (ext4 or whatever $TMPDIR is on) for comparison.
#
#   tools/pjdfstest.sh PJDFSTEST_DIR [TEST_SUBDIR...]   (as root)
#
# PJDFSTEST_DIR is a built clone of github.com/pjd/pjdfstest
# (autoreconf -ifs && ./configure && make pjdfstest).  TEST_SUBDIRs (e.g.
# link chmod) limit the run; default: all of tests/.  Prints prove's
# summary for both, and the failed test files with their failed cases.
# Binary: $SBXFS_BIN, else BUILD/src/sbxfs (BUILD = $SBXFS_BUILD or the
# clone's build/).  $PJD_SKIP_HOST=1 skips the host run.  Everything it
# makes is removed at exit, also when interrupted.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${SBXFS_BUILD:-$HERE/../build}
BIN=${SBXFS_BIN:-$BUILD/src/sbxfs}
PJD=${1:?usage: $0 PJDFSTEST_DIR [TEST_SUBDIR...]}
shift
PJD=$(cd "$PJD" && pwd)
[ -x "$PJD/pjdfstest" ] || { echo "no $PJD/pjdfstest: build it first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "pjdfstest needs root" >&2; exit 1; }
if [ $# -eq 0 ]; then set -- "$PJD/tests"; else
	dirs=; for d in "$@"; do dirs="$dirs $PJD/tests/$d"; done
	# shellcheck disable=SC2086
	set -- $dirs
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/sbxfs-pjd.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA" "$T/host"
FPID=
mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
	set +e
	cd /
	if mounted; then
		[ -d "$MNT/pjd" ] && timeout 120 rmdir "$MNT/pjd" 2>/dev/null
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

"$BIN" -f -o allow_other${SBXFS_OPTS:+,$SBXFS_OPTS} "local:$DATA" "$MNT" \
	>"$T/sbxfs.log" 2>&1 &
FPID=$!
for _ in $(seq 100); do mounted && break; sleep 0.1; done
mounted || { echo "sbxfs did not mount" >&2; cat "$T/sbxfs.log" >&2; exit 1; }
mkdir "$MNT/pjd"
mkdir "$MNT/pjd/fs/pjd"
chmod 0755 "$MNT/pjd/fs/pjd"

cd "$MNT/pjd/fs/pjd"
prove -r "$@" >"$T/sbxfs.out" 2>&1 || true
if [ -z "${PJD_SKIP_HOST:-}" ]; then
	cd "$T/host"
	prove -r "$@" >"$T/host.out" 2>&1 || true
fi
cd /
for w in sbxfs host; do
	[ -f "$T/$w.out" ] || continue
	echo "== $w ($(df -T "$([ $w = host ] && echo "$T/host" || echo "$DATA")" |
		awk 'NR == 2 { print $2 }'))"
	awk '/^Test Summary Report/ { f = 1 } f' "$T/$w.out"
	grep -E '^(Files=|Result:)' "$T/$w.out" | tail -2
	grep -Eo 'Failed [0-9]+/[0-9]+ subtests' "$T/$w.out" |
		awk '{ split($2, a, "/"); n += a[1]; t += a[2] }
		     END { printf "failed subtests: %d\n", n }'
done
[ -n "${PJD_KEEP_LOG:-}" ] && cp "$T/sbxfs.out" "$PJD_KEEP_LOG"
exit 0
