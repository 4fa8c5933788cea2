#!/bin/sh
# bench-exec.sh - exec and job-stream costs of sbxfs, side by side with the
# same work done directly in the sandbox's namespaces (nsenter).
#
#   tools/bench-exec.sh [-m MOUNT] [-s SANDBOX] [-n ROUNDS] [-b BYTES]
#
# MOUNT: -m, else $SBX_MOUNT, else /mnt/sbxfs (a mounted local sbxfs).
# SANDBOX: created (and destroyed at the end) when it does not exist.
# Prints: round trip of `true` through NAME/exec vs nsenter; stdout
# throughput of `head -c BYTES /dev/zero` through proc/JOB/stdout vs
# nsenter; sbxfs's RSS before, at its peak during the stream, and after.
# Needs root (nsenter) and the local backend (the sandbox's init PID comes
# from its `info`).
set -eu

MNT=${SBX_MOUNT:-/mnt/sbxfs}
SBNAME=bench$$
ROUNDS=200
BYTES=1G
while getopts m:s:n:b: o; do
	case $o in
	m) MNT=$OPTARG ;;
	s) SBNAME=$OPTARG ;;
	n) ROUNDS=$OPTARG ;;
	b) BYTES=$OPTARG ;;
	*)
		echo "usage: $0 [-m MOUNT] [-s SANDBOX] [-n ROUNDS]" \
			"[-b BYTES]" >&2
		exit 2
		;;
	esac
done

SB=$MNT/$SBNAME
made=0
job=
sampler=
cleanup() {
	[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
	[ -n "$job" ] && rmdir "$SB/proc/$job" 2>/dev/null
	[ $made = 1 ] && rmdir "$SB" 2>/dev/null
	rm -f "${TMPF:-}"
}
trap 'cleanup' EXIT
trap 'exit 130' INT TERM

ns() { date +%s%N; }

# The sbxfs process serving MOUNT: the one whose command line names it.
sbxfs_pid() {
	for p in $(pgrep -x sbxfs); do
		if tr '\0' ' ' </proc/"$p"/cmdline | grep -q -- " $MNT\( \|\$\)"
		then
			echo "$p"
			return
		fi
	done
	pgrep -x sbxfs | head -1
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' /proc/"$1"/status; }

if [ ! -d "$SB" ]; then
	mkdir "$SB"
	made=1
fi
[ "$(head -n 1 "$SB/status")" = running ] || {
	echo "sandbox $SBNAME is not running" >&2
	exit 1
}
PID=$(tr -d ' \t\n' <"$SB/info" | sed -n 's/.*"pid":\([0-9][0-9]*\).*/\1/p')
[ -n "$PID" ] || {
	echo "no init pid in $SB/info (local backend only)" >&2
	exit 1
}
NSENTER="nsenter -t $PID -m -u -i -n -p -r -w"
FPID=$(sbxfs_pid)
[ -n "$FPID" ] || {
	echo "cannot find the sbxfs process of $MNT" >&2
	exit 1
}
TMPF=$(mktemp)
rss0=$(rss_kib "$FPID")

# ---- round trip of `true` ----------------------------------------------
t0=$(ns)
i=0
while [ $i -lt "$ROUNDS" ]; do
	exec 3<>"$SB/exec"
	echo true >&3
	cat <&3
	exec 3<&-
	i=$((i + 1))
done
t1=$(ns)
i=0
while [ $i -lt "$ROUNDS" ]; do
	$NSENTER /bin/sh -c true
	i=$((i + 1))
done
t2=$(ns)
exec_us=$(((t1 - t0) / ROUNDS / 1000))
ns_us=$(((t2 - t1) / ROUNDS / 1000))

# ---- stdout throughput -------------------------------------------------
# RSS sampled every 0.1 s while the stream runs; the peak is what counts.
(
	while :; do
		rss_kib "$FPID" >>"$TMPF" 2>/dev/null || exit 0
		sleep 0.1
	done
) &
sampler=$!
job=bench.$$
mkdir "$SB/proc/$job"
t0=$(ns)
echo "head -c $BYTES /dev/zero" >"$SB/proc/$job/cmd"
got=$(cat "$SB/proc/$job/stdout" | wc -c)
t1=$(ns)
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=
rmdir "$SB/proc/$job"
job=
dgot=$($NSENTER /bin/sh -c "head -c $BYTES /dev/zero" | wc -c)
t2=$(ns)
mbs() {
	awk -v b="$1" -v t="$2" \
		'BEGIN { printf "%.0f", b / 1048576 / (t / 1e9) }'
}
job_mbs=$(mbs "$got" $((t1 - t0)))
ns_mbs=$(mbs "$dgot" $((t2 - t1)))
rss_peak=$(sort -n "$TMPF" | tail -1)
rss1=$(rss_kib "$FPID")

printf '%-34s %14s %14s\n' "" "sbxfs" "nsenter"
printf '%-34s %11s us %11s us\n' "round trip of true (x$ROUNDS)" \
	"$exec_us" "$ns_us"
printf '%-34s %9s MiB/s %9s MiB/s\n' "stdout of head -c $BYTES /dev/zero" \
	"$job_mbs" "$ns_mbs"
printf '%-34s %s\n' "bytes received" "$got / $dgot"
printf '%-34s %s KiB before, %s KiB peak, %s KiB after\n' "sbxfs RSS" \
	"$rss0" "${rss_peak:-?}" "$rss1"
