#!/bin/bash
# crashpoints_test.sh - kill -9 sbxfs (local backend) in the middle of the
# verbs recovery_test.sh does not cover (resume, snapshot, rmdir/destroy,
# a second mid-mkdir sweep at 5/20/40/100 ms) with a job running in the
# sandbox, remount, and compare the mount with the host: status against
# the init process and the cgroup, overlay mounts, meta.json, the data dir
# and MOUNT/templates/.
#
# usage: crashpoints_test.sh [SBXFS_BINARY]     (prints "N passed, N failed")
#
# Needs root, /dev/fuse, the root image and jq.  Everything it starts is
# removed at exit (sandboxes, templates, mounts).
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
RECOVERY_TAG=crp
. "$(dirname "$0")/lib.sh"

# one sandbox against the host
check_box() {
	local name=$1 d=$DATA/sandboxes/$1 st meta bad=
	if [ ! -d "$d" ]; then
		cg_live "$name" && bad="$bad gone-but-processes-live"
		overlay_of "$name" && bad="$bad gone-but-overlay-mounted"
		[ -e "$MNT/$name" ] && bad="$bad listed-without-data"
		echo "$bad"; return
	fi
	[ -f "$d/meta.json" ] || { echo " dir-without-metadata"; return; }
	meta=$(jq -r .state "$d/meta.json")
	st=$(timeout 10 head -1 "$MNT/$name/status" 2>/dev/null)
	[ -n "${VERBOSE:-}" ] && echo "       $name: status $st, meta $meta" >&2
	[ "$meta" = creating ] && bad="$bad meta-still-creating"
	case $st in
	running)
		init_alive "$name" || bad="$bad running-without-init"
		cg_frozen "$name" && bad="$bad running-but-frozen" ;;
	paused)
		init_alive "$name" || bad="$bad paused-without-init"
		cg_frozen "$name" || bad="$bad paused-but-not-frozen" ;;
	stopped)
		cg_live "$name" && bad="$bad stopped-with-processes" ;;
	*) bad="$bad status'$st'" ;;
	esac
	echo "$bad"
}
verdict() { # what, names...
	local what=$1 n b bad=
	shift
	for n in "$@"; do
		b=$(check_box "$n")
		[ -n "$b" ] && bad="$bad $n:${b# }"
	done
	if [ -z "$bad" ]; then ok "$what"; else nok "$what:$bad"; fi
}
# a job in sandbox NAME that runs until killed: proc/JOB
job() {
	timeout 20 mkdir "$MNT/$1/proc/j1" || return 1
	echo 'exec sleep 300' >"$MNT/$1/proc/j1/cmd" || return 1
	echo j1
}
# a verb written to box/ctl in the background, sbxfs killed MS ms later
kill_mid() { # name verb ms
	(echo "$2" >"$MNT/$1/ctl") 2>/dev/null &
	sleep "0.$(printf '%03d' "$3")"
	crash
	wait 2>/dev/null
	start
}

[ "$(id -u)" = 0 ] || { echo "0 passed, 1 failed"; exit 1; }
command -v jq >/dev/null || { echo "0 passed, 1 failed (no jq)"; exit 1; }
start || { echo "0 passed, 1 failed"; exit 1; }
u=cp$$

# mid-mkdir at 5, 20, 40, 100 ms
for ms in 5 20 40 100; do
	mkdir "$MNT/$u-m$ms" 2>/dev/null &
	sleep "0.$(printf '%03d' "$ms")"
	crash
	wait 2>/dev/null
	start || break
	verdict "kill -9 $ms ms into mkdir, remount" "$u-m$ms"
done

# a sandbox with a job running, then each verb interrupted
B=$u-b
if timeout 60 mkdir "$MNT/$B" && J=$(job "$B"); then
	for v in pause resume pause stop; do
		for ms in 5 40; do
			kill_mid "$B" "$v" "$ms" || break 2
			verdict "kill -9 $ms ms into $v (job running), remount" "$B"
			st=$(timeout 10 head -1 "$MNT/$B/status")
			# put the sandbox back where the next verb means something
			case $v:$st in
			pause:running) timeout 30 sh -c "echo pause > '$MNT/$B/ctl'" ;;
			resume:paused) timeout 30 sh -c "echo resume > '$MNT/$B/ctl'" ;;
			esac
		done
	done
	# the job: its directory is back; after stop it is ended
	if [ -d "$MNT/$B/proc/$J" ]; then ok "job dir back after the crashes"
	else nok "job dir $J gone after the crashes"; fi
else
	nok "setup of $B (mkdir + job)"
fi

# mid-snapshot: no broken template in MOUNT/templates/
S=$u-s
if timeout 60 mkdir "$MNT/$S" && job "$S" >/dev/null &&
	head -c 64M /dev/urandom >"$MNT/$S/fs/root/big"; then
	for ms in 5 20 100; do
		kill_mid "$S" "snapshot $u-t$ms" "$ms" || break
		verdict "kill -9 $ms ms into snapshot, remount (sandbox)" "$S"
		# it was running: the freeze of the copy does not outlive the kill
		st=$(timeout 10 head -1 "$MNT/$S/status")
		[ "$st" = running ] && ok "kill -9 $ms ms into snapshot: sandbox running again" ||
			nok "kill -9 $ms ms into snapshot: sandbox reads $st"
		bad=
		for t in "$MNT"/templates/*/; do
			[ -d "$t" ] || continue
			timeout 10 cat "$t/info" >/dev/null 2>&1 || bad="$bad $(basename "$t"):no-info"
			tn=$(basename "$t")
			[ -f "$DATA/templates/$tn/meta.json" ] || bad="$bad $tn:no-meta"
			[ -d "$DATA/templates/$tn/root" ] || bad="$bad $tn:no-root"
		done
		for t in "$DATA"/templates/*/; do
			[ -d "$t" ] || continue
			tn=$(basename "$t")
			[ -e "$MNT/templates/$tn" ] || bad="$bad $tn:on-disk-not-listed"
		done
		timeout 10 ls -l "$MNT/templates/" >/dev/null || bad="$bad ls-l-fails"
		# the half copy goes in the start-up sweep (a worker: wait for it)
		for _ in $(seq 200); do
			ls -d "$DATA"/tmp/snap-* >/dev/null 2>&1 || break
			sleep 0.05
		done
		ls -d "$DATA"/tmp/snap-* >/dev/null 2>&1 && bad="$bad half-copy-left-in-tmp"
		[ -n "${VERBOSE:-}" ] && ls "$MNT/templates/" >&2
		if [ -z "$bad" ]; then ok "kill -9 $ms ms into snapshot: templates/ whole"
		else nok "kill -9 $ms ms into snapshot: templates/:$bad"; fi
		# a template that is listed is usable
		if [ -d "$MNT/templates/$u-t$ms" ]; then
			if timeout 60 sh -c "echo 'new $u-f$ms template=$u-t$ms' > '$MNT/ctl'" &&
				timeout 10 cmp -s "$MNT/$u-f$ms/fs/root/big" "$MNT/$S/fs/root/big"; then
				ok "snapshot $u-t$ms listed and usable"
			else
				nok "snapshot $u-t$ms listed but not usable"
			fi
		fi
	done
else
	nok "setup of $S"
fi

# mid-cp of a large file into fs/
C=$u-c
if timeout 60 mkdir "$MNT/$C"; then
	head -c 256M /dev/zero >"$T/big"
	(cp "$T/big" "$MNT/$C/fs/root/big") 2>/dev/null &
	# kill once some of it has arrived in the sandbox
	up=$(jq -r .pid "$DATA/sandboxes/$C/meta.json")
	for _ in $(seq 200); do
		[ "$(stat -c %s "/proc/$up/root/root/big" 2>/dev/null || echo 0)" -gt 1048576 ] && break
		sleep 0.01
	done
	crash
	wait 2>/dev/null
	if start; then
		verdict "kill -9 mid-cp, remount" "$C"
		sz=$(timeout 10 stat -c %s "$MNT/$C/fs/root/big" 2>/dev/null || echo none)
		hs=$(stat -c %s "/proc/$up/root/root/big" 2>/dev/null || echo none)
		[ "$sz" = "$hs" ] && ok "mid-cp: mount and sandbox agree on the size ($sz of 268435456)" ||
			nok "mid-cp: mount says $sz, sandbox $hs"
		if timeout 30 cp "$T/big" "$MNT/$C/fs/root/big" &&
			timeout 30 cmp -s "$T/big" "$MNT/$C/fs/root/big"; then
			ok "mid-cp: the copy again is whole"
		else nok "mid-cp: the copy again differs"; fi
	fi
else
	nok "setup of $C"
fi

# mid-destroy (rmdir) with a job running: finished on the remount
D=$u-d
for ms in 5 40; do
	if timeout 60 mkdir "$MNT/$D$ms" && job "$D$ms" >/dev/null; then
		rmdir "$MNT/$D$ms" 2>/dev/null &
		sleep "0.$(printf '%03d' "$ms")"
		crash
		wait 2>/dev/null
		start || break
		# a half-done destroy is finished, or the sandbox is whole
		for _ in $(seq 100); do
			[ -d "$DATA/sandboxes/$D$ms" ] || break
			[ -e "$MNT/$D$ms" ] && break
			sleep 0.05
		done
		verdict "kill -9 $ms ms into rmdir (job running), remount" "$D$ms"
	else
		nok "setup of $D$ms"
	fi
done

timeout 10 ls "$MNT" >/dev/null && ok "mount answers after the crashes" ||
	nok "mount hangs"
# a clean unmount of the last sbxfs: no sanitizer report in any run's log
fusermount3 -u "$MNT" && wait "$SPID" 2>/dev/null
SPID=
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/sbxfs.log"; then
	nok "sanitizer report in the log"
	grep -E -A5 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/sbxfs.log" | head -20
else
	ok "no sanitizer report in the logs"
fi
summary
