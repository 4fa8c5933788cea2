#!/bin/bash
# recovery_test.sh - kill -9 sbxfs (local backend) at several points, mount
# again, and compare what the mount says with what is on the host.
#
# usage: recovery_test.sh [SBXFS_BINARY]        (prints "N passed, N failed")
#
# Points: mid-mkdir (a range of delays after the mkdir starts), mid-verb
# (pause, stop), mid-cp (a file being written), with jobs running (one
# ends while sbxfs is down, one keeps running: status, wait, spooled
# output and kill after the remount; no job monitor left behind).  After each kill and
# remount: every sandbox the mount lists is "running" only if its init is
# alive on the host (and "stopped"/"paused" only if it is not running), no
# sandbox reads "creating" or "failed" when a live init exists, no sandbox
# directory without metadata is left, and the mount answers.  Needs root,
# /dev/fuse and the root image.  Everything it starts is removed at exit.
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
RECOVERY_TAG=rec
. "$(dirname "$0")/lib.sh"

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
	if [ -z "$bad" ]; then ok "$what"; else nok "$what:$bad"; fi
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
	nok "mount hangs"

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
		nok "sandbox state after interrupted verbs: $(head -1 "$MNT/$v/status")"
else
	nok "mkdir $v: $(cat "$MNT/err" 2>/dev/null)"
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
	nok "interrupted cp left wrong bytes"
cp "$T/big" "$MNT/$v/fs/root/big" && cmp -s "$T/big" "$MNT/$v/fs/root/big" &&
	ok "cp again after the remount" || nok "cp after the remount"

# jobs: kill -9 with one job that finishes while sbxfs is down (exit 7,
# output on both streams) and one that keeps running; after the remount
# proc/ has both back with status, wait, output and kill, and no monitor
# is left once they are removed.
# processes forked from a sbxfs of this test other than the mount itself
monitors() {
	local p n=0
	for p in $(pgrep -f "local:$DATA"); do
		[ "$p" = "${SPID:-}" ] || n=$((n + 1))
	done
	echo "$n"
}
J=$MNT/$v/proc
JD=$DATA/sandboxes/$v/jobs
if mkdir "$J/j1" "$J/j2" 2>/dev/null &&
	echo 'echo early; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo late; echo oops >&2; exit 7' >"$J/j1/cmd" &&
	echo 'exec sleep 300' >"$J/j2/cmd"; then
	read -r line <"$J/j1/stdout"
	[ "$line" = early ] &&
		ok "job output before the crash" || nok "job output before the crash"
	crash
	# the job's shell may not have reached its `exec sleep` yet: wait
	# for the process to show, do not look once
	j2pid=
	find_j2() {
		j2pid=$(cg_pids "$v" | while read -r p; do
			[ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" = "sleep 300 " ] &&
				echo "$p"
		done | head -1)
		[ -n "$j2pid" ]
	}
	until_ok 200 find_j2
	touch "$DATA/sandboxes/$v/root/tmp/go"
	until_ok 200 test -f "$JD/j1/exit" &&
		[ "$(cat "$JD/j1/exit")" = 7 ] &&
		ok "exit 7 recorded on the host while no sbxfs runs" ||
		nok "exit status while down: $(cat "$JD/j1/exit" 2>&1)"
	grep -q late "$JD/j1/out.spool" 2>/dev/null &&
		ok "output while down spooled in the data dir" ||
		nok "no spool: $(ls "$JD/j1" 2>&1)"
	start
	[ "$(ls "$J" 2>/dev/null | tr '\n' ' ')" = "j1 j2 " ] &&
		ok "proc/ lists the jobs after the remount" ||
		nok "proc/ after the remount: $(ls "$J" 2>&1)"
	[ "$(head -1 "$J/j1/status" 2>/dev/null)" = exited ] &&
		ok "status of the job that ended while down" ||
		nok "status: $(head -1 "$J/j1/status" 2>&1)"
	[ "$(timeout 10 cat "$J/j1/wait" 2>/dev/null)" = 7 ] &&
		ok "wait gives the true exit code" ||
		nok "wait: $(timeout 10 cat "$J/j1/wait" 2>&1)"
	[ "$(timeout 10 cat "$J/j1/stdout" 2>/dev/null)" = late ] &&
		[ "$(timeout 10 cat "$J/j1/stderr" 2>/dev/null)" = oops ] &&
		ok "stdout and stderr written while down" ||
		nok "output: $(timeout 10 cat "$J/j1/stdout" "$J/j1/stderr" 2>&1)"
	grep -q "sleep 300" "$J/j1/status" "$J/j2/status" 2>/dev/null &&
		[ "$(head -1 "$J/j2/status" 2>/dev/null)" = running ] &&
		[ -n "$j2pid" ] && kill -0 "$j2pid" 2>/dev/null &&
		ok "the running job is running, cmd kept" ||
		nok "running job: $(head -3 "$J/j2/status" 2>&1) host pid ${j2pid:-none}"
	echo kill >"$J/j2/ctl" 2>/dev/null
	w=$(timeout 10 cat "$J/j2/wait" 2>/dev/null)
	# gone, or the zombie kept until rmdir
	st=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$j2pid/stat" 2>/dev/null)
	{ [ "$w" = 137 ] || [ "$w" = 143 ]; } && { [ -z "$st" ] || [ "$st" = Z ]; } &&
		ok "kill of a recovered job ($w)" || nok "kill: wait '$w'"
	rmdir "$J/j1" "$J/j2"
	# generous bounds (20 s each): a loaded machine, an ASan build
	until_ok 400 test "$(monitors)" = 0 && until_ok 400 test ! -e "$JD/j1" &&
		until_ok 400 test ! -e "$JD/j2" &&
		ok "no monitor or job directory left after rmdir" ||
		nok "left: $(monitors) monitors, $(ls "$JD" 2>&1)"
	# a job still running when its sandbox is destroyed while no mount
	# looked at proc/: the monitor goes with the sandbox
	mkdir "$J/j3" && echo 'exec sleep 300' >"$J/j3/cmd"
	crash
	start && rmdir "$MNT/$v" 2>/dev/null
	until_ok 200 test "$(monitors)" = 0 &&
		ok "destroy ends the monitors of unattached jobs" ||
		nok "destroy left $(monitors) monitors"
else
	nok "jobs: $(cat "$MNT/$v/err" 2>/dev/null)"
fi

summary
