# tests/faults/lib.sh - what faults_test.sh (wrenn) and faults_cw.sh
# (cwsandbox) share: the temporary directory and its clean-up, the fault
# proxy, the mount, the real server killed and started again, the checks
# of a failing operation and of a stream cut mid-way, and the clean
# unmount at the end.  Sourced, after the script set:
#
#   FAULTS_API     the platform: wrenn or cwsandbox (the server's --api,
#                  the proxy's --tcp, the mount's SOURCE)
#   FAULTS_TAG     the temporary directory's name: sbxfs-TAG-XXXXXX
#   proxy_bin      tools/faultproxy
#   TIMEOUT BOUND  -o timeout= of the mount; seconds a failing operation
#                  may take at most
# and with SBXFS_BIN and SBXFS_SERVER_* (tools/with-server.sh) in the
# environment.  Defines T (the directory), M (the mount point), B (the
# sandbox box, once made), $T/ctl (the proxy's control file).
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

sbxfs=${SBXFS_BIN:?SBXFS_BIN not set}
HANG=60		# `timeout` of every command: beyond this it hung

T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-$FAULTS_TAG-XXXXXX") || exit 2
M=$T/mnt
mkdir "$M"
: >"$T/ctl"
ppid_=
fpid=
spid=$SBXFS_SERVER_PID	# the server we talk to now (restarted by us)
own_server=

cleanup() {
	trap - EXIT INT TERM
	if mountpoint -q "$M"; then
		# destroy what we made while the server is reachable
		: >"$T/ctl"
		# NAME is the directory, the ID a symlink to it
		for d in "$M"/*; do
			[ -d "$d" ] && [ ! -L "$d" ] &&
				timeout 60 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$M" 2>/dev/null || fusermount3 -uz "$M"
	fi
	[ -n "$fpid" ] && kill "$fpid" 2>/dev/null
	[ -n "$ppid_" ] && kill "$ppid_" 2>/dev/null
	# a server we started ourselves is ours to end (with-server.sh
	# sweeps the data dir afterwards)
	[ -n "$own_server" ] && kill "$spid" 2>/dev/null
	wait 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# the proxy (--tcp) reads its control file every 50 ms: wait until it
# logged EVENT (a regex) more often than it had
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
	local line api=()
	[ "$FAULTS_API" = wrenn ] || api=(--api "$FAULTS_API")
	rm -f "$T/s.out"
	mkfifo "$T/s.out"
	"$SBXFS_SERVER_BIN" "${api[@]}" \
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

start_proxy() { # [PORT]: sets pport
	local tcp=()
	[ "$FAULTS_API" = wrenn ] || tcp=(--tcp)
	: >"$T/proxy.out"
	"$proxy_bin" "${tcp[@]}" --upstream "$SBXFS_SERVER_PORT" \
		--port "${1:-0}" --control "$T/ctl" --log "$T/proxy.log" \
		>"$T/proxy.out" 2>&1 &
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

# mount the platform through the proxy, -o timeout=$TIMEOUT
mount_sbxfs() {
	"$sbxfs" -f -o "timeout=$TIMEOUT" \
		"$FAULTS_API:http://127.0.0.1:$pport" "$M" \
		>"$T/sbxfs.log" 2>&1 &
	fpid=$!
	for _ in $(seq 100); do
		mountpoint -q "$M" && break
		sleep 0.1
	done
	mountpoint -q "$M" ||
		{ echo "mount failed"; cat "$T/sbxfs.log"; exit 2; }
	# never cd into the mount: a background child would pin it
}

# Streams to cut: an endless command through $B/exec (cpid; output in
# $T/stream.*), a job proc/j (checked: "job: start"), readers of its
# stdout (jpid, $T/jout.*) and of its wait (wpid, $T/wait.*).
streams_start() {
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
}

# WHAT T0: the streams were cut at T0: each reader gets what came, then
# EIO (never EOF as if the command ended), within the bound.
streams_cut() {
	local what=$1 t0=$2 el rc n
	wait $cpid
	el=$(since "$t0")
	rc=$(cat "$T/stream.rc")
	n=$(wc -l <"$T/stream.out")
	if [ "$rc" = 124 ]; then
		nok "$what: exec read hung"
	elif [ "$rc" = 0 ]; then
		nok "$what: exec output ended in EOF as if the command" \
			"exited (err: $(tail -1 "$B/err" 2>&1 | head -c 120))"
	elif ! lt "$el" "$BOUND"; then
		nok "$what: exec read ended only after ${el}s"
	elif ! grep -q 'Input/output error' "$T/stream.err"; then
		nok "$what: exec read failed, but not with EIO:" \
			"$(head -c 100 "$T/stream.err")"
	elif [ "$n" -le 10 ]; then
		nok "$what: exec read lost the output before the cut" \
			"($n lines)"
	else
		ok "$what: exec read failed after ${el}s, $n lines:" \
			"$(head -c 100 "$T/stream.err")"
	fi
	# a reader of proc/j/stdout: what arrived, then EIO (not EOF)
	wait $jpid
	rc=$(cat "$T/jout.rc")
	n=$(grep -c '^j[0-9]' "$T/jout.out")
	if [ "$rc" = 124 ]; then
		nok "$what: proc/j/stdout hung"
	elif [ "$rc" = 0 ]; then
		nok "$what: proc/j/stdout ended in EOF as if the job exited"
	elif ! grep -q 'Input/output error' "$T/jout.err"; then
		nok "$what: proc/j/stdout failed, but not with EIO:" \
			"$(head -c 100 "$T/jout.err")"
	elif [ "$n" -le 10 ]; then
		nok "$what: proc/j/stdout lost the output ($n lines)"
	else
		ok "$what: proc/j/stdout gave $n lines, then" \
			"$(head -c 100 "$T/jout.err")"
	fi
	wait $wpid
	rc=$(cat "$T/wait.rc")
	if [ "$rc" = 124 ]; then
		nok "$what: proc/j/wait hung"
	elif [ "$rc" = 0 ] || ! grep -q 'Input/output error' "$T/wait.err"
	then
		nok "$what: proc/j/wait not EIO (status $rc," \
			"'$(head -c 60 "$T/wait.out")' $(head -c 80 "$T/wait.err"))"
	else
		ok "$what: proc/j/wait failed: $(head -c 80 "$T/wait.err")"
	fi
}

# WHAT RULE: fsync(2) of a file just written while the proxy applies RULE
# (each answer late: one request fits the bound, two do not) must end in
# ETIMEDOUT near the bound (not after 2x it), never in EIO.  Timed inside:
# only the fsync, not python's start under load.
per_op_fsync() {
	local what=$1 rule=$2 opb el
	opb=$(awk -v t="$TIMEOUT" 'BEGIN { print t + 1.5 }')
	timeout "$HANG" python3 -c "
import os, time
fd = os.open('$B/fs/tmp/pw', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.write(fd, b'x' * 100)
open('$T/ctl', 'w').write('$rule\n')
time.sleep(0.2)  # the proxy (--tcp) reads its control file every 50 ms
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
	read -r what_ el <"$T/out"
	if [ "$what_" = ok ]; then
		nok "per-op: fsync succeeded (${el}s), expected ETIMEDOUT"
	elif [ "$what_" != Connection_timed_out ]; then
		nok "per-op: fsync not ETIMEDOUT: $what_ $(cat "$T/err")"
	elif ! lt "$el" "$opb"; then
		nok "per-op: fsync took ${el}s, bound ${opb}s"
	else
		ok "per-op: fsync ($what) ETIMEDOUT in ${el}s"
	fi
}

# the end: every sandbox removed, a clean unmount, sbxfs exits 0
unmount_clean() {
	local rc
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
}
