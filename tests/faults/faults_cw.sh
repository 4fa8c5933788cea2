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
sbxfs=${SBXFS_BIN:?SBXFS_BIN not set}
: "${SBXFS_SERVER_PORT:?run me under tools/with-server.sh --api cwsandbox}"
TIMEOUT=3	# -o timeout= of the mount: the operation bound
BOUND=12	# seconds a failing operation may take at most
HANG=60		# `timeout` of every command: beyond this it hung

T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-fc-XXXXXX") || exit 2
M=$T/mnt
mkdir "$M"
: >"$T/ctl"
pass=0
fail=0
ppid_=
fpid=
spid=$SBXFS_SERVER_PID
own_server=

cleanup() {
	trap - EXIT INT TERM
	if mountpoint -q "$M"; then
		: >"$T/ctl"
		for d in "$M"/*; do
			[ -d "$d" ] && [ ! -L "$d" ] &&
				timeout 60 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$M" 2>/dev/null || fusermount3 -uz "$M"
	fi
	[ -n "$fpid" ] && kill "$fpid" 2>/dev/null
	[ -n "$ppid_" ] && kill "$ppid_" 2>/dev/null
	[ -n "$own_server" ] && kill "$spid" 2>/dev/null
	wait 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { pass=$((pass + 1)); echo "ok   - $*"; }
nok() { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { # NAME CMD...: CMD must succeed
	local n=$1
	shift
	if timeout "$HANG" "$@" >"$T/out" 2>"$T/err"; then
		ok "$n"
	else
		nok "$n (status $?: $(head -c 300 "$T/err"))"
	fi
}
now() { date +%s.%N; }
since() { echo "$(now) $1" | awk '{ printf "%.1f", $1 - $2 }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# the proxy reads its control file every 50 ms: wait until it logged
# EVENT (a regex) more often than it had
proxy_saw() { # REGEX BEFORE
	local i
	for i in $(seq 100); do
		[ "$(grep -cE "$1" "$T/proxy.log")" -gt "$2" ] && return 0
		sleep 0.05
	done
	return 1
}
# RULE...: the proxy's rules from now on (returns once it has them)
ctl() {
	local n
	n=$(grep -c '^rules ' "$T/proxy.log")
	printf '%s\n' "$@" >"$T/ctl"
	proxy_saw '^rules ' "$n" || echo "faultproxy did not take '$*'"
}

# NAME BOUND ERRTEXT CMD...: CMD must fail (not by our timeout) within
# BOUND s, with ERRTEXT (a regex; empty: any) in its stderr.
fails_within() {
	local n=$1 b=$2 want=$3 t0 rc el
	shift 3
	t0=$(now)
	timeout "$HANG" "$@" >"$T/out" 2>"$T/err"
	rc=$?
	el=$(since "$t0")
	if [ $rc = 124 ]; then
		nok "$n: hung (> ${HANG}s)"
	elif [ $rc = 0 ]; then
		nok "$n: succeeded, expected an error ($(head -c 200 "$T/out"))"
	elif ! lt "$el" "$b"; then
		nok "$n: failed after ${el}s, bound ${b}s"
	elif [ -n "$want" ] && ! grep -qE "$want" "$T/err"; then
		nok "$n: failed in ${el}s, but not with '$want':" \
			"$(head -c 200 "$T/err")"
	else
		ok "$n: failed in ${el}s:" \
			"$(tr '\n' ' ' <"$T/err" | head -c 120)"
	fi
}

sbxfs_alive() {
	if kill -0 "$fpid" 2>/dev/null && mountpoint -q "$M"; then
		ok "$1: sbxfs still up"
	else
		nok "$1: sbxfs died or the mount is gone"
		tail -20 "$T/sbxfs.log"
		exit 1
	fi
}

kill_server() {
	kill -KILL "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
	for _ in $(seq 50); do
		kill -0 "$spid" 2>/dev/null || return 0
		sleep 0.1
	done
}

start_server() {
	local line
	rm -f "$T/s.out"
	mkfifo "$T/s.out"
	"$SBXFS_SERVER_BIN" --api cwsandbox \
		--listen "127.0.0.1:$SBXFS_SERVER_PORT" \
		--data "$SBXFS_SERVER_DATA" >"$T/s.out" 2>>"$T/server.log" &
	spid=$!
	own_server=1
	exec 4<"$T/s.out"
	if read -r -t 20 line <&4 && [ "${line#listening on}" != "$line" ]
	then
		cat <&4 >>"$T/server.log" &
		exec 4<&-
		ok "server started again on port $SBXFS_SERVER_PORT"
	else
		exec 4<&-
		nok "server did not start again: '$line'"
		cat "$T/server.log"
		exit 1
	fi
}

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

start_proxy() { # [PORT]
	: >"$T/proxy.out"
	"$proxy_bin" --tcp --upstream "$SBXFS_SERVER_PORT" --port "${1:-0}" \
		--control "$T/ctl" --log "$T/proxy.log" >"$T/proxy.out" 2>&1 &
	ppid_=$!
	pport=
	for _ in $(seq 100); do
		pport=$(sed -n 's/^listening on .*://p' "$T/proxy.out")
		[ -n "$pport" ] && return 0
		sleep 0.1
	done
	echo "faultproxy did not start: $(cat "$T/proxy.out")"
	exit 2
}
: >"$T/proxy.log"
start_proxy

"$sbxfs" -f -o "timeout=$TIMEOUT" "cwsandbox:http://127.0.0.1:$pport" "$M" \
	>"$T/sbxfs.log" 2>&1 &
fpid=$!
for _ in $(seq 100); do
	mountpoint -q "$M" && break
	sleep 0.1
done
mountpoint -q "$M" || { echo "mount failed"; cat "$T/sbxfs.log"; exit 2; }
# never cd into the mount: a background child would pin it

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
OPB=$(awk -v t="$TIMEOUT" 'BEGIN { print t + 1.5 }')
timeout "$HANG" python3 -c "
import os, time
fd = os.open('$B/fs/tmp/pw', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.write(fd, b'x' * 100)
open('$T/ctl', 'w').write('delay 2\n')
time.sleep(0.2)  # the proxy reads its control file every 50 ms
t = time.monotonic()
try:
    os.fsync(fd)
    print('ok', time.monotonic() - t)
except OSError as e:
    print(e.strerror.replace(' ', '_'), time.monotonic() - t)
try:
    os.close(fd)
except OSError:
    pass
" >"$T/out" 2>"$T/err"
ctl
read -r what el <"$T/out"
if [ "$what" = ok ]; then
	nok "per-op: fsync succeeded (${el}s), expected ETIMEDOUT"
elif [ "$what" != Connection_timed_out ]; then
	nok "per-op: fsync not ETIMEDOUT: $what $(cat "$T/err")"
elif ! lt "$el" "$OPB"; then
	nok "per-op: fsync took ${el}s, bound ${OPB}s"
else
	ok "per-op: fsync (WriteFile + command) ETIMEDOUT in ${el}s"
fi

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

( exec 3<>"$B/exec"
  echo 'i=0; while :; do echo line $i; i=$((i+1)); sleep 0.05; done' >&3
  timeout "$HANG" cat <&3 >"$T/stream.out" 2>"$T/stream.err"
  echo $? >"$T/stream.rc" ) &
cpid=$!
check "job: start" sh -c "mkdir $B/proc/j && echo 'i=0; while :; do \
echo j\$i; i=\$((i+1)); sleep 0.05; done' > $B/proc/j/cmd"
( timeout "$HANG" cat "$B/proc/j/stdout" >"$T/jout.out" 2>"$T/jout.err"
  echo $? >"$T/jout.rc" ) &
jpid=$!
( timeout "$HANG" cat "$B/proc/j/wait" >"$T/wait.out" 2>"$T/wait.err"
  echo $? >"$T/wait.rc" ) &
wpid=$!
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
wait $cpid
el=$(since "$t0")
rc=$(cat "$T/stream.rc")
n=$(wc -l <"$T/stream.out")
if [ "$rc" = 124 ]; then
	nok "cut mid-stream: exec read hung"
elif [ "$rc" = 0 ]; then
	nok "cut mid-stream: exec output ended in EOF as if the command" \
		"exited"
elif ! lt "$el" "$BOUND"; then
	nok "cut mid-stream: exec read ended only after ${el}s"
elif ! grep -q 'Input/output error' "$T/stream.err"; then
	nok "cut mid-stream: exec read failed, but not with EIO:" \
		"$(head -c 100 "$T/stream.err")"
elif [ "$n" -le 10 ]; then
	nok "cut mid-stream: exec read lost the output before the cut" \
		"($n lines)"
else
	ok "cut mid-stream: exec read failed after ${el}s, $n lines:" \
		"$(head -c 100 "$T/stream.err")"
fi
wait $jpid
rc=$(cat "$T/jout.rc")
n=$(grep -c '^j[0-9]' "$T/jout.out")
if [ "$rc" = 124 ]; then
	nok "cut mid-stream: proc/j/stdout hung"
elif [ "$rc" = 0 ]; then
	nok "cut mid-stream: proc/j/stdout ended in EOF as if the job exited"
elif ! grep -q 'Input/output error' "$T/jout.err"; then
	nok "cut mid-stream: proc/j/stdout failed, but not with EIO:" \
		"$(head -c 100 "$T/jout.err")"
elif [ "$n" -le 10 ]; then
	nok "cut mid-stream: proc/j/stdout lost the output ($n lines)"
else
	ok "cut mid-stream: proc/j/stdout gave $n lines, then" \
		"$(head -c 100 "$T/jout.err")"
fi
wait $wpid
rc=$(cat "$T/wait.rc")
if [ "$rc" = 124 ]; then
	nok "cut mid-stream: proc/j/wait hung"
elif [ "$rc" = 0 ] || ! grep -q 'Input/output error' "$T/wait.err"; then
	nok "cut mid-stream: proc/j/wait not EIO (status $rc," \
		"'$(head -c 60 "$T/wait.out")' $(head -c 80 "$T/wait.err"))"
else
	ok "cut mid-stream: proc/j/wait failed: $(head -c 80 "$T/wait.err")"
fi
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

for d in "$M"/*; do
	[ -d "$d" ] && [ ! -L "$d" ] && timeout 60 rmdir "$d"
done
if fusermount3 -u "$M"; then
	for _ in $(seq 100); do
		kill -0 "$fpid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$fpid" 2>/dev/null; then
		nok "sbxfs still running 10 s after the unmount"
	else
		wait "$fpid"
		rc=$?
		[ $rc = 0 ] && ok "sbxfs exited 0" ||
			nok "sbxfs exit status $rc"
		fpid=
	fi
else
	nok "unmount failed"
fi
echo "connections through the proxy: $(grep -c '^open ' "$T/proxy.log")"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
