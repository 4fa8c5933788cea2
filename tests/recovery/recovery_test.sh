#!/bin/bash
# recovery_test.sh - kill -9 sbxfs (local backend) at several points, mount
# again, and compare what the mount says with what is on the host.
#
# usage: recovery_test.sh [SBXFS_BINARY]        (prints "N passed, N failed")
#
# Points: mid-mkdir (a range of delays after the mkdir starts), mid-verb
# (pause, stop), mid-cp (a file being written).  After each kill and
# remount: every sandbox the mount lists is "running" only if its init is
# alive on the host (and "stopped"/"paused" only if it is not running), no
# sandbox reads "creating" or "failed" when a live init exists, no sandbox
# directory without metadata is left, and the mount answers.  Needs root,
# /dev/fuse and the root image.  Everything it starts is removed at exit.
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-rec.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
pass=0 fail=0 SPID=

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
start() {
	"$BIN" -f "local:$DATA" "$MNT" >>"$T/sbxfs.log" 2>&1 &
	SPID=$!
	for _ in $(seq 100); do
		mounted && timeout 5 stat "$MNT/ctl" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "sbxfs did not mount"; tail -5 "$T/sbxfs.log"
	return 1
}
crash() {
	kill -9 "$SPID" 2>/dev/null
	wait "$SPID" 2>/dev/null
	SPID=
	fusermount3 -uz "$MNT" 2>/dev/null
}
cleanup() {
	[ -n "$SPID" ] && crash
	if start 2>/dev/null; then
		for d in "$MNT"/*/; do
			[ -d "$d" ] && timeout 30 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
		wait "$SPID" 2>/dev/null
	else
		fusermount3 -uz "$MNT" 2>/dev/null
	fi
	awk -v b="$T/" 'index($2, b) == 1 { print $2 }' /proc/mounts |
		sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; }

# init of sandbox NAME alive on the host, from its metadata (pid + start
# time), independently of sbxfs
init_alive() {
	local meta=$DATA/sandboxes/$1/meta.json pid st
	[ -f "$meta" ] || return 1
	pid=$(jq -r .pid "$meta") st=$(jq -r .starttime "$meta")
	[ "$pid" -gt 0 ] 2>/dev/null || return 1
	[ -r "/proc/$pid/stat" ] || return 1
	[ "$(awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$pid/stat")" = "$st" ]
}
# live processes in the cgroup of sandbox NAME (v1 freezer or v2), found
# by its unique name, independently of sbxfs
cg_live() {
	local f n=0
	for f in /sys/fs/cgroup/freezer/sbxfs/*-"$1"/cgroup.procs \
		/sys/fs/cgroup/sbxfs/*-"$1"/cgroup.procs; do
		[ -f "$f" ] || continue
		for p in $(cat "$f"); do
			[ "$(awk '{ sub(/.*\) /, ""); print $1 }' /proc/$p/stat 2>/dev/null)" = Z ] ||
				n=$((n + 1))
		done
	done
	[ "$n" -gt 0 ]
}

# Compare the mount with the host.  Every sandbox an interrupted create
# left is either finished (running, its init alive) or gone (no directory,
# no process); nothing reads "failed" or stays "creating".
consistent() {
	local what=$1 bad= d name st meta
	for name in $NAMES; do
		d=$DATA/sandboxes/$name
		if [ ! -d "$d" ]; then
			cg_live "$name" && bad="$bad $name:gone-but-processes-live"
			continue
		fi
		if [ ! -f "$d/meta.json" ]; then
			bad="$bad $name:dir-without-metadata"
			continue
		fi
		meta=$(jq -r .state "$d/meta.json")
		st=$(timeout 10 head -1 "$MNT/$name/status" 2>/dev/null)
		[ -n "${VERBOSE:-}" ] && echo "       $name: status $st, meta $meta"
		[ "$meta" = creating ] && bad="$bad $name:meta-still-creating"
		case $st in
		running | paused)
			init_alive "$name" || bad="$bad $name:$st-without-init" ;;
		stopped)
			cg_live "$name" && bad="$bad $name:stopped-with-processes" ;;
		*) bad="$bad $name:status'$st'" ;;
		esac
	done
	if [ -z "$bad" ]; then ok "$what"; else ko "$what:$bad"; fi
}

[ "$(id -u)" = 0 ] || { echo "0 passed, 1 failed"; exit 1; }
start || { echo "0 passed, 1 failed"; exit 1; }

# mid-mkdir: delays from 0 to ~120 ms after the mkdir starts
i=0 NAMES=
u=rk$$
for ms in 0 5 10 15 20 30 40 60 80 120; do
	i=$((i + 1))
	NAMES="$NAMES $u-m$i"
	mkdir "$MNT/$u-m$i" 2>/dev/null &
	sleep "0.$(printf '%03d' "$ms")"
	crash
	wait 2>/dev/null
	start || break
	consistent "kill -9 ${ms} ms into mkdir, remount"
done
timeout 10 ls "$MNT" >/dev/null && ok "mount answers after the crashes" ||
	ko "mount hangs"

# mid-verb: pause and stop of a running sandbox
v=$u-v
NAMES="$NAMES $v"
if mkdir "$MNT/$v" 2>/dev/null; then
	for verb in pause resume "stop 5" start; do
		echo "$verb" >"$MNT/$v/ctl" 2>/dev/null &
		sleep 0.02
		crash
		wait 2>/dev/null
		start || break
		consistent "kill -9 during '$verb', remount"
	done
	# the sandbox can still be driven afterwards
	echo resume >"$MNT/$v/ctl" 2>/dev/null
	echo start >"$MNT/$v/ctl" 2>/dev/null
	[ "$(head -1 "$MNT/$v/status")" = running ] &&
		ok "sandbox usable after interrupted verbs" ||
		ko "sandbox state after interrupted verbs: $(head -1 "$MNT/$v/status")"
else
	ko "mkdir $v: $(cat "$MNT/err" 2>/dev/null)"
fi

# mid-cp: the writer dies with sbxfs; the file is whole or partly there,
# never a hang, and the sandbox keeps working
head -c 64M /dev/zero >"$T/big"
cp "$T/big" "$MNT/$v/fs/root/big" 2>/dev/null &
sleep 0.1
crash
wait 2>/dev/null
start && consistent "kill -9 mid-cp, remount"
sz=$(stat -c %s "$MNT/$v/fs/root/big" 2>/dev/null)
echo "       after the crash the file has ${sz:-?} of 67108864 bytes"
cmp -n "${sz:-0}" "$T/big" "$MNT/$v/fs/root/big" >/dev/null 2>&1 &&
	ok "what arrived of the interrupted cp is intact" ||
	ko "interrupted cp left wrong bytes"
cp "$T/big" "$MNT/$v/fs/root/big" && cmp -s "$T/big" "$MNT/$v/fs/root/big" &&
	ok "cp again after the remount" || ko "cp after the remount"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
