# tests/recovery/lib.sh - what recovery_test.sh and crashpoints_test.sh
# share: a local mount that is killed with -9 and started again on the
# same data dir, the clean-up of everything it made, and the host's side
# of a sandbox (its init, cgroup processes, freezer state, overlay
# mounts), read independently of sbxfs.  Sourced, after the script set
#   BIN          the sbxfs binary
#   RECOVERY_TAG the temporary directory's name: sbxfs-TAG.XXXXXX
# Defines T, MNT (the mount point), DATA (its data dir) and SPID (the
# running sbxfs, empty when none).
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-$RECOVERY_TAG.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
SPID=

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
# mount (in the background, -f) and wait until it answers
start() {
	"$BIN" -f "local:$DATA" "$MNT" >>"$T/sbxfs.log" 2>&1 &
	SPID=$!
	for _ in $(seq 200); do
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
# at exit: mount once more and remove every template and sandbox made
cleanup() {
	[ -n "$SPID" ] && crash
	if start 2>/dev/null; then
		for d in "$MNT"/templates/*/; do
			[ -d "$d" ] && timeout 30 rmdir "$d" 2>/dev/null
		done
		for d in "$MNT"/*/; do
			case $d in */templates/) continue ;; esac
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
	local f n=0 p
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
cg_pids() {
	cat /sys/fs/cgroup/freezer/sbxfs/*-"$1"/cgroup.procs \
		/sys/fs/cgroup/sbxfs/*-"$1"/cgroup.procs 2>/dev/null
}
# frozen on the host: v1 freezer.state FROZEN or v2 cgroup.freeze 1
cg_frozen() {
	local f
	for f in /sys/fs/cgroup/freezer/sbxfs/*-"$1"/freezer.state; do
		[ -f "$f" ] && grep -q FROZEN "$f" && return 0
	done
	for f in /sys/fs/cgroup/sbxfs/*-"$1"/cgroup.freeze; do
		[ -f "$f" ] && [ "$(cat "$f")" = 1 ] && return 0
	done
	return 1
}
overlay_of() { awk -v d="$DATA/sandboxes/$1/" 'index($2, d) == 1' /proc/mounts | grep -q .; }
# tries (0.05 s apart), command...: until the command succeeds
until_ok() {
	local n=$1
	shift
	for _ in $(seq "$n"); do "$@" && return 0; sleep 0.05; done
	return 1
}
