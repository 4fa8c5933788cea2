#!/bin/bash
# queue_mount_test.sh - through a real mount (local backend): sandboxes
# busy with lifecycle work never hold up another sandbox's verb.
#
# usage: queue_mount_test.sh [SBXFS_BINARY]     (prints "N passed, N failed")
#
# Sandboxes A, B and C each run a job that ignores SIGTERM, so `stop 5`
# holds each of them for the whole grace period.  The three stops go in
# through three different ctl files (one ctl file would not do: the
# kernel's inode lock lets one write per file reach the daemon at a
# time), and once all three writers are inside the FUSE request, `ping`
# of sandbox D must answer at once.  With workers that block while a
# sandbox is busy (3, before the runtime) D waited the whole 5 s: the
# check fails at 78a55c4 and at f3bcb57 (5009 and 5037 ms; now 3-4 ms).
# Then `rmdir A` behind another held stop of A, and a `pause` of B (more
# entry points), while D is pinged again: D answers at once, rmdir A
# completes after A's stop, B is paused.  Needs root, /dev/fuse and the root image; everything
# it starts is removed at exit (tests/recovery/lib.sh).
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
RECOVERY_TAG=qm
. "$(dirname "$0")/../recovery/lib.sh"

[ "$(id -u)" = 0 ] || { echo "0 passed, 1 failed"; exit 1; }
start || { echo "0 passed, 1 failed"; exit 1; }

ms() { echo $(($(date +%s%N) / 1000000)); }
# every PID given is blocked inside a FUSE request
in_fuse() {
	local p
	for p in "$@"; do
		grep -q "request_wait_answer\|fuse" "/proc/$p/wchan" 2>/dev/null ||
			return 1
	done
}

u=qm$$
A=$MNT/$u-a B=$MNT/$u-b C=$MNT/$u-c D=$MNT/$u-d
made=1
for s in "$A" "$B" "$C" "$D"; do
	mkdir "$s" 2>/dev/null || { nok "mkdir $s: $(cat "$MNT/err")"; made=; }
done
[ -n "$made" ] && ok "four sandboxes made"

# a job that ignores SIGTERM; its first output comes after the trap is set
for s in "$A" "$B" "$C"; do
	mkdir "$s/proc/stubborn" &&
		echo "sh -c 'trap \"\" TERM; echo ready; exec sleep 1000'" \
			>"$s/proc/stubborn/cmd" &&
		[ "$(timeout 20 head -c 5 "$s/proc/stubborn/stdout")" = ready ] ||
		nok "TERM-ignoring job in $s"
done

t0=$(ms)
pids=()
for s in "$A" "$B" "$C"; do
	( echo "stop 5" >"$s/ctl" && echo $(($(ms) - t0)) >"$T/stop.${s##*-}" ) \
		2>/dev/null &
	pids+=($!)
done
# each subshell writes itself (echo is a builtin): wait until all three
# are inside their write
if until_ok 100 in_fuse "${pids[@]}"; then
	ok "three stops in flight"
else
	nok "three stops in flight ($(for p in "${pids[@]}"; do cat "/proc/$p/wchan" 2>/dev/null; echo -n ' '; done))"
fi
t1=$(ms)
if echo ping >"$D/ctl" 2>/dev/null; then
	dt=$(($(ms) - t1))
	[ "$dt" -lt 1500 ] && ok "ping of D while A, B, C stop: $dt ms" ||
		nok "ping of D while A, B, C stop took $dt ms"
else
	nok "ping of D: $(cat "$D/err")"
fi
wait "${pids[@]}"
for n in a b c; do
	t=$(cat "$T/stop.$n" 2>/dev/null)
	[ -n "$t" ] && [ "$t" -ge 4000 ] && ok "stop of $n held for the grace period ($t ms)" ||
		nok "stop of $n: ${t:-failed} ms"
done

# A: start, stop 5 held again, then rmdir A behind it; B: start, pause
for s in "$A" "$B"; do echo start >"$s/ctl" 2>/dev/null || nok "start $s"; done
mkdir "$A/proc/s2" &&
	echo "sh -c 'trap \"\" TERM; echo ready; exec sleep 1000'" >"$A/proc/s2/cmd" &&
	[ "$(timeout 20 head -c 5 "$A/proc/s2/stdout")" = ready ] ||
	nok "TERM-ignoring job in A again"
t0=$(ms)
( echo "stop 5" >"$A/ctl" ) 2>/dev/null &
sp=$!
until_ok 100 in_fuse "$sp" || nok "stop of A in flight"
( rmdir "$A" && echo $(($(ms) - t0)) >"$T/rmdir" ) 2>/dev/null &
rp=$!
( echo pause >"$B/ctl" ) 2>/dev/null &
pp=$!
t1=$(ms)
if echo ping >"$D/ctl" 2>/dev/null; then
	dt=$(($(ms) - t1))
	[ "$dt" -lt 1500 ] && ok "ping of D while A stops with rmdir A queued: $dt ms" ||
		nok "ping of D while A stops with rmdir A queued took $dt ms"
else
	nok "ping of D: $(cat "$D/err")"
fi
wait "$sp" "$rp" "$pp"
t=$(cat "$T/rmdir" 2>/dev/null)
[ -n "$t" ] && [ "$t" -ge 4000 ] && [ ! -e "$A" ] &&
	ok "rmdir A done after A's stop ($t ms)" || nok "rmdir A: ${t:-failed}"
[ "$(timeout 10 head -1 "$B/status")" = paused ] && ok "B paused" ||
	nok "B: $(timeout 10 head -1 "$B/status")"

summary
