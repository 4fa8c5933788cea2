#!/bin/bash
# faults_cw.sh - sbxfs on the cwsandbox backend (gRPC over HTTP/2) facing
# a failing server.
#
# Runs under tools/with-server.sh --api cwsandbox (SBXFS_SERVER_* and
# CWSANDBOX_API_KEY in the environment).  sbxfs mounts
# cwsandbox:http://127.0.0.1:PROXY with -o timeout=3 through
# `tools/faultproxy --tcp`, which copies the bytes of the real HTTP/2
# connections and is told per case to delay or hold what the server sends,
# cut every open connection mid-frame, cut after N bytes, or refuse new
# connections; for "server down" the real sbxfs-server is SIGKILLed and
# later started again on the same port and data dir.  Each fault must end
# the operation with the right errno within the bound (never a hang),
# sbxfs must stay up, and a later operation must work.  Prints
# "N passed, N failed".
#
#   faults_cw.sh [FAULTPROXY]    (SBXFS_BIN: the sbxfs binary)
set -u

src=$(cd "$(dirname "$0")/../.." && pwd)
proxy_bin=${1:-$src/tools/faultproxy}
: "${SBXFS_SERVER_PORT:?run me under tools/with-server.sh --api cwsandbox}"
TIMEOUT=3	# -o timeout= of the mount: the operation bound
BOUND=12	# seconds a failing operation may take at most
FAULTS_API=cwsandbox
FAULTS_TAG=fc
. "$src/tests/faults/lib.sh"

# unnamed sandboxes: ID directories that are not the symlink of a NAME
orphans() {
	local d
	for d in "$M"/*; do
		case ${d##*/} in ctl|err|templates) continue ;; esac
		[ -d "$d" ] && [ ! -L "$d" ] && [ "${d##*/}" != box ] &&
			[ "${d##*/}" != orph ] && echo "$d"
	done
}

# ---- setup: proxy, mount, one sandbox with a small file ---------------

: >"$T/proxy.log"
start_proxy
mount_sbxfs

check "mkdir box" mkdir "$M/box"
B=$M/box
# directories the mount has never listed (made by a command before /tmp
# is first listed): a fault on their listing cannot hide behind a cache
check "make fresh dirs" sh -c "exec 3<>$B/exec; echo 'for i in 1 2 3 4 \
5 6 7 8 9; do mkdir -p /tmp/ft\$i/sub; done' >&3; cat <&3"
check "write small" sh -c "echo small > $B/fs/tmp/small"
check "make a 4 MiB file" sh -c "head -c 4194304 /dev/urandom | tee \
$B/fs/tmp/big | sha256sum > $T/big.sum"
bigsum=$(cut -d' ' -f1 "$T/big.sum")

# ---- 1. slow and silent server: ETIMEDOUT, never EIO -------------------

ctl "delay 8"
fails_within "slow: stat" "$BOUND" 'timed out' stat "$B/fs/tmp/ft1/sub/x"
fails_within "slow: write" "$BOUND" 'timed out' sh -c "echo x > \
$B/fs/tmp/ft2/sub/x"
fails_within "slow: exec" "$BOUND" '' sh -c "exec 3<>$B/exec; \
echo 'echo hi' >&3; cat <&3"
ctl "stall"
fails_within "stalled answers: stat" "$BOUND" 'timed out' \
	stat "$B/fs/tmp/ft3/sub/x"
fails_within "stalled answers: ls" "$BOUND" 'timed out' ls "$B/fs/tmp/ft4"
sbxfs_alive "slow"
ctl
check "fast again: stat" stat "$B/fs/tmp/small"
check "fast again: write+read" sh -c "echo s > $B/fs/tmp/s4 && \
[ \"\$(cat $B/fs/tmp/s4)\" = s ]"

# ---- 2. one bound per user operation -----------------------------------

# Each answer comes 2 s late: one call fits the 3 s bound, two do not.
# fsync(2) of a written file is a WriteFile and a command (rename): it
# must end in ETIMEDOUT near the bound (not after 2x it), never EIO.
# (close(2) of a small file only queues it for a batch: fsync waits.)
per_op_fsync "WriteFile + command" "delay 2"
ctl

# ---- 3. a write cut mid-upload leaves the old content ------------------

check "write old" sh -c "echo old > $B/fs/tmp/keep"
n0=$(grep -c '^cut ' "$T/proxy.log")
# 8 MiB in one WriteFile: with the server's answers held (its window
# updates too) the upload stops after the first window; then every
# connection is cut mid-frame.
timeout "$HANG" python3 -c "
import os, threading, time
fd = os.open('$B/fs/tmp/keep', os.O_WRONLY | os.O_TRUNC)
os.write(fd, b'n' * (8 << 20))
open('$T/ctl', 'w').write('stall\n')
time.sleep(0.2)
res = []
def close():
    try:
        os.close(fd)
        res.append('ok')
    except OSError as e:
        res.append(e.strerror.replace(' ', '_'))
th = threading.Thread(target=close)
th.start()
time.sleep(1)
open('$T/ctl', 'w').write('cut\n')
th.join()
print(res[0])
" >"$T/out" 2>"$T/err"
ctl
read -r what <"$T/out"
if [ "$what" = ok ]; then
	nok "cut mid-upload: close succeeded"
elif [ "$(grep -c '^cut ' "$T/proxy.log")" -le "$n0" ]; then
	nok "cut mid-upload: the proxy cut nothing (close: $what)"
else
	ok "cut mid-upload: close failed: $what"
fi
check "cut mid-upload: old content kept" sh -c \
	"[ \"\$(cat $B/fs/tmp/keep)\" = old ]"
check "cut mid-upload: no temporary left" sh -c \
	"! ls -a $B/fs/tmp | grep -q '^\.sbxfs-'"

# ---- 4. a download cut after some bytes ---------------------------------

ctl "cutafter 200000"
fails_within "cut mid-download: cat" "$BOUND" 'Input/output error' \
	sh -c "cat $B/fs/tmp/big > $T/part"
ctl
check "whole again: big file" sh -c "[ \"\$(sha256sum < $B/fs/tmp/big | \
cut -d' ' -f1)\" = $bigsum ]"

# ---- 5. StreamExec cut mid-stream: EIO, not EOF; err says so ------------

streams_start
for _ in $(seq 100); do
	[ "$({ wc -l <"$T/stream.out"; } 2>/dev/null || echo 0)" -gt 10 ] &&
		[ "$({ wc -l <"$T/jout.out"; } 2>/dev/null || echo 0)" -gt 10 ] &&
		break
	sleep 0.1
done
n0=$(grep -c '^cut ' "$T/proxy.log")
t0=$(now)
ctl cut
proxy_saw '^cut ' "$n0" || nok "cut mid-stream: the proxy cut nothing"
streams_cut "cut mid-stream" "$t0"
# err keeps the last sentence only (a later failure replaces it); every
# sentence is in the log too
grep -q 'lost track of the command' "$B/err" "$T/sbxfs.log" 2>/dev/null &&
	ok "cut mid-stream: err says the command was lost" ||
	nok "cut mid-stream: err lacks the sentence: $(cat "$B/err" 2>&1)"
# the status of the job is honest: not a clean exit code
st=$(cat "$B/proc/j/status" 2>&1)
case $st in
*"exited 0"*|*"exit 0"*) nok "cut mid-stream: job status claims a clean exit: $st" ;;
*) ok "cut mid-stream: job status: $(echo "$st" | tr '\n' ' ')" ;;
esac
sbxfs_alive "cut mid-stream"
check "after the cut: exec" sh -c "exec 3<>$B/exec; echo 'echo back' >&3; \
[ \"\$(cat <&3)\" = back ]"
check "after the cut: new job" sh -c "mkdir $B/proc/k && echo 'echo kk' > \
$B/proc/k/cmd && [ \"\$(cat $B/proc/k/stdout)\" = kk ]"

# ---- 6. connections refused ---------------------------------------------

ctl refuse
fails_within "refused: stat" "$BOUND" '' stat "$B/fs/tmp/ft5/sub/x"
grep -q 'No such file' "$T/err" && nok "refused: stat said ENOENT"
fails_within "refused: mkdir sandbox" "$BOUND" '' mkdir "$M/e3"
ctl
sbxfs_alive "refused"

# ---- 7. a create that times out leaves no orphan ------------------------

before=$(orphans | wc -l)
# the name check answers after 2 s, the create reaches the server at
# once but its answer comes after the 3 s bound of the mkdir
ctl "delay 2"
fails_within "create times out: mkdir" "$BOUND" 'timed out' mkdir "$M/orph"
ctl
# the create went on at the server: wait (bounded) until the sandbox it
# made shows under its NAME (a tag the request carried), running
for _ in $(seq 150); do
	[ "$(head -1 "$M/orph/status" 2>/dev/null)" = running ] && break
	sleep 0.1
done
[ "$(orphans | wc -l)" -le "$before" ] &&
	ok "create times out: no unnamed sandbox" ||
	nok "create times out: orphan left: $(orphans | tr '\n' ' ')"
if [ -d "$M/orph" ]; then
	fails_within "create times out: adopted, retry says it exists" \
		"$BOUND" 'exists' mkdir "$M/orph"
else
	check "create times out: nothing made, retry works" mkdir "$M/orph"
fi
[ "$(orphans | wc -l)" -le "$before" ] && ok "retry: still no orphan" ||
	nok "retry: orphan: $(orphans | tr '\n' ' ')"
check "create times out: the sandbox works" sh -c "echo o > \
$M/orph/fs/tmp/o && [ \"\$(cat $M/orph/fs/tmp/o)\" = o ]"

# ---- 8. server down: errors at once, one log line, back when it is -----

# nothing listens any more: the proxy goes too (it would accept)
kill "$ppid_"
wait "$ppid_" 2>/dev/null
kill_server
fails_within "server down: stat" "$BOUND" '' stat "$B/fs/tmp/ft6/sub/x"
grep -q 'No such file' "$T/err" && nok "server down: stat said ENOENT"
fails_within "server down: ls" "$BOUND" '' ls "$B/fs/tmp/ft7"
fails_within "server down: exec" "$BOUND" '' sh -c "exec 3<>$B/exec; \
echo 'echo hi' >&3; cat <&3"
fails_within "server down: mkdir" "$BOUND" '' mkdir "$M/e4"
sbxfs_alive "server down"
start_server
start_proxy "$pport"
check "server back: read small" sh -c \
	"[ \"\$(cat $B/fs/tmp/small)\" = small ]"
check "server back: write+read" sh -c "echo again > $B/fs/tmp/again && \
[ \"\$(cat $B/fs/tmp/again)\" = again ]"
n=$(grep -c 'cwsandbox: .* is unreachable' "$T/sbxfs.log")
a=$(grep -c 'cwsandbox: .* answers again' "$T/sbxfs.log")
p=$(grep -c 'status poll:' "$T/sbxfs.log")
if [ "$n" = 1 ] && [ "$a" = 1 ] && [ "$p" -le 8 ]; then
	ok "log: one 'unreachable' and one 'answers again' line for the" \
		"outage, $p 'status poll' lines for all the faults"
else
	nok "log: $n 'unreachable', $a 'answers again', $p 'status poll'" \
		"lines for one outage:" \
		"$(grep -E 'unreachable|answers again' "$T/sbxfs.log")"
fi

# ---- end: clean unmount, sbxfs exits 0 -----------------------------------

unmount_clean
echo "connections through the proxy: $(grep -c '^open ' "$T/proxy.log")"
summary
