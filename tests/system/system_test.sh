#!/bin/bash
# system_test.sh - sbxfs installed on a Linux system: mounts from an
# /etc/fstab line through mount(8) and mount.fuse3 (local, and wrenn with a
# key file against the private sbxfs-server of tools/with-server.sh), mount
# -t fuse.sbxfs, the systemd units' ExecStart run by hand under setpriv(1)
# with the units' NoNewPrivileges= and CapabilityBoundingSet= (systemd is
# not PID 1 in every test machine, so the units are also checked with
# systemd-analyze verify), and the man pages.  Prints "N passed, N failed".
#
# usage (under tools/with-server.sh, which sets WRENN_API_KEY and
# SBXFS_SERVER_URL): system_test.sh SBXFS SBXFS_SERVER UNITDIR MANPAGE...
#
# Touches two system paths, both restored on any exit: a line tagged
# comment=sbxfs-test-PID is appended to /etc/fstab and removed again, and
# /usr/local/sbin/sbxfs (first in the PATH mount(8) gives its helpers) is a
# symlink to the sbxfs under test while the fuse.sbxfs cases run, only when
# no such file exists already.
set -u
BIN=$(readlink -f "$1")
SERVER=$(readlink -f "$2")
UNITDIR=$3
shift 3
MANPAGES=("$@")

base=${SBXFS_TEST_TMP:-/tmp}
mkdir -p "$base"
T=$(mktemp -d "$base/sbxfs-sys-XXXXXX") || exit 1
TAG=sbxfs-test-$$
LINK=/usr/local/sbin/sbxfs
made_link=
made_sbin=
had_fstab=
[ -e /etc/fstab ] && had_fstab=1
pids=()
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() {
	fail=$((fail + 1)); echo "FAIL - $1"
	[ -n "${2:-}" ] && printf '       %s\n' "$2"
	return 0
}

# wait_for SECONDS CMD...: true once CMD succeeds, false after SECONDS
wait_for() {
	local n=$(($1 * 10)) i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
gone() { ! kill -0 "$1" 2>/dev/null; }
mounted() { mountpoint -q "$1"; }
unmounted() { ! mountpoint -q "$1"; }

# PIDs of the sbxfs processes serving mount point $1
sbxfs_pids() {
	local p
	for p in $(pgrep -x sbxfs); do
		tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" |
			grep -qF -- " $1 " && echo "$p"
	done
}

# Destroy every sandbox still in data dir $1 through a local mount of it.
sweep_data() {
	local d=$1 m=$T/sweep-mnt p e
	[ -n "$(ls -A "$d/sandboxes" 2>/dev/null)" ] || return 0
	mkdir -p "$m"
	"$BIN" -f "local:$d" "$m" >"$T/sweep.log" 2>&1 &
	p=$!
	if wait_for 10 mounted "$m"; then
		for e in "$m"/*; do
			[ -d "$e" ] && [ ! -L "$e" ] || continue
			echo "# destroying leftover $e"
			timeout 60 rmdir "$e" 2>/dev/null
		done
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
	fi
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
}

remove_fstab_lines() {
	grep -q "comment=$TAG" /etc/fstab 2>/dev/null || return 0
	# in place (same inode), dropping only our tagged lines
	grep -v "comment=$TAG" /etc/fstab >"$T/fstab.new"
	cat "$T/fstab.new" >/etc/fstab
}

cleanup() {
	local m p
	trap - EXIT INT TERM HUP
	for m in "$T"/m-*; do
		[ -d "$m" ] || continue
		if mounted "$m"; then
			for e in "$m"/*; do
				[ -d "$e" ] && [ ! -L "$e" ] || continue
				timeout 60 rmdir "$e" 2>/dev/null
			done
			umount "$m" 2>/dev/null || fusermount3 -uz "$m"
		fi
		for p in $(sbxfs_pids "$m"); do
			kill -KILL "$p" 2>/dev/null
		done
	done
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
		wait_for 10 gone "$p" || kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	remove_fstab_lines
	[ -z "$had_fstab" ] && [ ! -s /etc/fstab ] && rm -f /etc/fstab
	if [ -n "$made_link" ] && [ -L "$LINK" ]; then
		rm -f "$LINK"
	fi
	[ -n "$made_sbin" ] && rmdir /usr/local/sbin 2>/dev/null
	for d in "$T"/data-*; do
		[ -d "$d" ] && sweep_data "$d"
	done
	if awk -v b="$T/" 'index($2, b) == 1 { f = 1 } END { exit !f }' \
		/proc/mounts; then
		echo "# mounts remain under $T; kept"
	else
		rm -rf --one-file-system "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

if [ "$(id -u)" != 0 ]; then
	echo "system_test: needs root (mount, /etc/fstab)" >&2
	exit 1
fi
# One run at a time on a machine (several clones or builds may run their
# suites at once): /etc/fstab and /usr/local/sbin/sbxfs are shared.
exec 9>/run/lock/sbxfs-system-test.lock
if ! flock -w 400 9; then
	echo "system_test: another run held the lock for 400 s" >&2
	exit 1
fi

# a sandbox works: created by mkdir, runs a command, takes a file, goes
check_use() { # NAME MOUNT
	local m=$2 out
	if ! timeout 120 mkdir "$m/box"; then
		ko "$1: mkdir box" "$(cat "$m/err" 2>/dev/null)"
		return
	fi
	out=$(timeout 60 sh -c 'exec 3<>"$1/box/exec"; echo "echo hi-\$((6*7))" >&3
		cat <&3' sh "$m")
	[ "$out" = hi-42 ] && ok "$1: exec in a sandbox" ||
		ko "$1: exec in a sandbox" "got '$out'"
	echo data >"$T/f" && cp "$T/f" "$m/box/fs/root/f" &&
		[ "$(cat "$m/box/fs/root/f")" = data ] &&
		ok "$1: cp into fs/" || ko "$1: cp into fs/"
	timeout 120 rmdir "$m/box" && ok "$1: rmdir box" ||
		ko "$1: rmdir box" "$(cat "$m/box/err" 2>/dev/null)"
}

# umount through mount(8), and the daemon goes with it
check_umount() { # NAME MOUNT
	local m=$2 p ps
	ps=$(sbxfs_pids "$m")
	if umount "$m" && wait_for 10 unmounted "$m"; then
		ok "$1: umount"
	else
		ko "$1: umount"
	fi
	for p in $ps; do
		if ! wait_for 10 gone "$p"; then
			ko "$1: sbxfs $p exits after umount"
			return
		fi
	done
	ok "$1: sbxfs exits after umount"
}

# ---- man pages --------------------------------------------------------
for f in "${MANPAGES[@]}"; do
	n=$(basename "$f")
	w=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=w -l "$f" 2>&1 >"$T/man.out")
	if [ -z "$w" ] && grep -q '^NAME' "$T/man.out" &&
		grep -q '^SYNOPSIS' "$T/man.out"; then
		ok "man $n renders without warnings"
	else
		ko "man $n renders without warnings" "$w"
	fi
done

# ---- bash completion of sbx -------------------------------------------
COMPL=$(cd "$(dirname "$0")/../../tools/completion" && pwd)/sbx.bash
BC=/usr/share/bash-completion/bash_completion
if [ -r "$BC" ]; then
	C=$T/compl
	mkdir -p "$C/m/box1" "$C/m/box2"
	ln -s box1 "$C/m/cl-0123"
	: >"$C/m/ctl"
	got=$(bash -c '
		source "$1" 2>/dev/null; source "$2"
		c() {
			COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
			COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
			_sbx sbx "${COMP_WORDS[COMP_CWORD]}" \
				"${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
			printf "%s " "${COMPREPLY[@]}"; echo
		}
		c sbx ""
		c sbx -m "$3" rm ""
		c sbx -m "$3" run ""
		c sbx -m "$3" run box1 ""
		c sbx new x network=h
		SBX_MOUNT=$3 c sbx status b' sh "$BC" "$COMPL" "$C/m")
	want='-m run new rm ls status 
box1 box2 
-n box1 box2 
-- 
network=host 
box1 box2 '
	[ "$got" = "$want" ] && ok "bash completion of sbx" ||
		ko "bash completion of sbx" "got: $got"
else
	echo "# no bash-completion: completion of sbx not checked"
fi

# ---- mount(8) and /etc/fstab ------------------------------------------
if [ -L "$LINK" ] &&
	case $(readlink "$LINK") in */src/sbxfs) true ;; *) false ;; esac; then
	# a build's sbxfs: left by a run that was killed (we hold the lock)
	rm -f "$LINK"
fi
if [ -e "$LINK" ] || [ -L "$LINK" ]; then
	echo "# $LINK exists: fuse.sbxfs cases use it as installed"
else
	[ -d /usr/local/sbin ] || { mkdir -p /usr/local/sbin && made_sbin=1; }
	ln -s "$BIN" "$LINK" && made_link=1
fi

# 1. a local source from an fstab line with the options of a real one
D1=$T/data-1 M1=$T/m-1
mkdir -p "$D1" "$M1"
printf 'local:%s %s fuse.sbxfs noauto,nofail,x-systemd.automount,comment=%s,poll=1 0 0\n' \
	"$D1" "$M1" "$TAG" >>/etc/fstab
if timeout 60 mount "$M1" 2>"$T/err" && mounted "$M1"; then
	ok "fstab local: mount MOUNTPOINT"
	t=$(findmnt -n -o FSTYPE "$M1")
	[ "$t" = fuse.local ] && ok "fstab local: type fuse.local" ||
		ko "fstab local: type fuse.local" "got $t"
	check_use "fstab local" "$M1"
	s=$(findmnt -n -o SOURCE "$M1")
	[ "$s" = "local:$D1" ] && ok "fstab local: source shown as written" ||
		ko "fstab local: source shown as written" "got $s"
	# mount -a knows the line is mounted (by its source) and leaves it;
	# a private fstab without noauto, so no other line is touched
	printf 'local:%s %s fuse.sbxfs poll=1 0 0\n' "$D1" "$M1" >"$T/fstab"
	timeout 60 mount -a -T "$T/fstab" 2>"$T/err"
	n=$(awk -v m="$M1" '$2 == m' /proc/mounts | wc -l)
	[ "$n" = 1 ] && ok "fstab local: mount -a leaves a mounted line" ||
		ko "fstab local: mount -a leaves a mounted line" \
			"$n mounts at $M1 $(cat "$T/err")"
	check_umount "fstab local" "$M1"
else
	ko "fstab local: mount MOUNTPOINT" "$(cat "$T/err")"
fi
remove_fstab_lines

# 2. mount -t fuse.sbxfs with fstab-only options on the command line
D2=$T/data-2 M2=$T/m-2
mkdir -p "$D2" "$M2"
if timeout 60 mount -t fuse.sbxfs "local:$D2" "$M2" \
	-o defaults,_netdev,nofail,poll=1,x-systemd.device-timeout=9 \
	2>"$T/err" && mounted "$M2"; then
	ok "mount -t fuse.sbxfs with fstab options"
	[ -d "$M2" ] && cat "$M2/ctl" >/dev/null 2>&1
	check_umount "mount -t" "$M2"
else
	ko "mount -t fuse.sbxfs with fstab options" "$(cat "$T/err")"
fi
# mount.fuse3 by hand passes x-*, defaults and comment= on: sbxfs drops them
M2b=$T/m-2b
mkdir -p "$M2b"
if timeout 60 /sbin/mount.fuse3 "$BIN#local:$D2" "$M2b" \
	-o defaults,x-systemd.automount,comment=x,noauto,_netdev,poll=1 \
	2>"$T/err" && mounted "$M2b"; then
	ok "mount.fuse3 BIN#SOURCE with fstab options"
	check_umount "mount.fuse3" "$M2b"
else
	ko "mount.fuse3 BIN#SOURCE with fstab options" "$(cat "$T/err")"
fi

# 3. a wrenn source from an fstab line, the key in a key file
if [ -n "${WRENN_API_KEY:-}" ] && [ -n "${SBXFS_SERVER_URL:-}" ]; then
	M3=$T/m-3 KF=$T/wrenn.key
	mkdir -p "$M3"
	(umask 077 && printf '%s\n' "$WRENN_API_KEY" >"$KF")
	printf 'wrenn:%s %s fuse.sbxfs noauto,_netdev,keyfile=%s,comment=%s,timeout=20 0 0\n' \
		"$SBXFS_SERVER_URL" "$M3" "$KF" "$TAG" >>/etc/fstab
	key=$WRENN_API_KEY
	# the key file is the only source of the key
	if env -u WRENN_API_KEY timeout 60 mount "$M3" 2>"$T/err" &&
		mounted "$M3"; then
		ok "fstab wrenn: mount with keyfile="
		t=$(findmnt -n -o FSTYPE "$M3")
		[ "$t" = fuse.wrenn ] && ok "fstab wrenn: type fuse.wrenn" ||
			ko "fstab wrenn: type fuse.wrenn" "got $t"
		leak=
		grep -qF "$key" /proc/mounts /proc/self/mountinfo /etc/fstab \
			2>/dev/null && leak="mount table or fstab"
		[ -r /run/mount/utab ] && grep -qF "$key" /run/mount/utab &&
			leak="$leak utab"
		for p in $(sbxfs_pids "$M3"); do
			tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF "$key" &&
				leak="$leak argv"
			tr '\0' '\n' <"/proc/$p/environ" | grep -qF "$key" &&
				leak="$leak environment"
		done
		[ -z "$leak" ] && ok "fstab wrenn: key not in argv, env, mounts" ||
			ko "fstab wrenn: key not in argv, env, mounts" "$leak"
		check_use "fstab wrenn" "$M3"
		check_umount "fstab wrenn" "$M3"
	else
		ko "fstab wrenn: mount with keyfile=" "$(cat "$T/err")"
	fi
	# a key file others can read is refused, with the reason
	chmod 644 "$KF"
	if env -u WRENN_API_KEY timeout 60 mount "$M3" 2>"$T/err"; then
		ko "fstab wrenn: key file readable by others refused"
		umount "$M3"
	elif grep -q 'chmod 600' "$T/err"; then
		ok "fstab wrenn: key file readable by others refused"
	else
		ko "fstab wrenn: key file readable by others refused" \
			"$(cat "$T/err")"
	fi
	remove_fstab_lines
else
	echo "# no private sbxfs-server (run under tools/with-server.sh):" \
		"wrenn fstab case skipped"
fi

# 4. a cwsandbox source from an fstab line (sbxfs-server --api cwsandbox
#    on a private data dir), the key in a key file
DC=$T/data-cw MC=$T/m-cw KC=$T/cw.key
mkdir -p -m 700 "$DC" "$MC"
keyc=wrn_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$keyc" >"$DC/server-key" &&
	printf '%s\n' "$keyc" >"$KC")
"$SERVER" --api cwsandbox --port 0 --data "$DC" >"$T/cw.out" 2>"$T/cw.err" &
cpid=$!
pids+=("$cpid")
cw_up() { grep -q '^listening on' "$T/cw.out"; }
if wait_for 20 cw_up; then
	cport=$(sed -n 's/^listening on 127.0.0.1://p' "$T/cw.out")
	printf 'cwsandbox:http://127.0.0.1:%s %s fuse.sbxfs noauto,_netdev,keyfile=%s,comment=%s 0 0\n' \
		"$cport" "$MC" "$KC" "$TAG" >>/etc/fstab
	if env -u CWSANDBOX_API_KEY timeout 60 mount "$MC" 2>"$T/err" &&
		mounted "$MC"; then
		ok "fstab cwsandbox: mount with keyfile="
		t=$(findmnt -n -o FSTYPE "$MC")
		[ "$t" = fuse.cwsandbox ] && ok "fstab cwsandbox: type" ||
			ko "fstab cwsandbox: type" "got $t"
		check_use "fstab cwsandbox" "$MC"
		check_umount "fstab cwsandbox" "$MC"
	else
		ko "fstab cwsandbox: mount with keyfile=" "$(cat "$T/err")"
	fi
	remove_fstab_lines
else
	ko "sbxfs-server --api cwsandbox starts" "$(cat "$T/cw.err")"
fi

# ---- systemd units ----------------------------------------------------
# The value of KEY= in unit file $1 (continuation lines joined)
unit_get() {
	sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$1" |
		sed -n "s/^$2=//p" | tail -1
}
# setpriv(1) arguments for the unit's NoNewPrivileges= and
# CapabilityBoundingSet=
setpriv_args() {
	local nnp caps c a=()
	nnp=$(unit_get "$1" NoNewPrivileges)
	caps=$(unit_get "$1" CapabilityBoundingSet)
	[ "$nnp" = yes ] && a+=(--no-new-privs)
	if [ -n "$caps" ]; then
		c=-all
		for x in $caps; do
			x=${x#CAP_}
			c="$c,+${x,,}"
		done
		a+=("--bounding-set=$c")
	fi
	echo "${a[@]}"
}

U1=$UNITDIR/sbxfs@.service U2=$UNITDIR/sbxfs-server.service
if command -v systemd-analyze >/dev/null; then
	V=$T/verify
	mkdir -p "$V"
	sed "s|^ExecStart=[^ ]*/sbxfs |ExecStart=$BIN |" "$U1" \
		>"$V/sbxfs@mnt-sbxfs.service"
	sed "s|^ExecStart=[^ ]*/sbxfs-server |ExecStart=$SERVER |" "$U2" \
		>"$V/sbxfs-server.service"
	if out=$(systemd-analyze verify --man=no "$V/sbxfs@mnt-sbxfs.service" \
		"$V/sbxfs-server.service" 2>&1); then
		ok "systemd-analyze verify: both units"
	else
		ko "systemd-analyze verify: both units" "$out"
	fi
fi
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
	echo "# systemd is PID 1 here, yet units run by hand below"
fi

# Type=notify as systemd does it: a datagram socket in $NOTIFY_SOCKET; the
# unit is up when READY=1 arrives.  notify_listen NAME starts a listener
# (python3) that writes what it receives to $T/NAME.got; notify_env gives
# the environment for the service; notify_wait waits for READY=1.
notify_listen() {
	rm -f "$T/$1.sock" "$T/$1.got" "$T/$1.sock.bound"
	python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(60)
open(sys.argv[1] + ".bound", "w").close()
try:
    m = s.recv(4096).decode()
except socket.timeout:
    m = "timeout"
open(sys.argv[2], "w").write(m + "\n")' "$T/$1.sock" "$T/$1.got" &
	pids+=("$!")
	wait_for 10 test -e "$T/$1.sock.bound"
}
notify_wait() { # NAME: true once READY=1 came (60 s at most)
	wait_for 60 test -s "$T/$1.got" && grep -qx 'READY=1' "$T/$1.got"
}

# sbxfs@.service: ExecStart= with %f, ${SOURCE} and $OPTIONS filled in as
# systemd would from /etc/sbxfs/INSTANCE.conf, READY=1 (Type=notify), stop
# (SIGTERM to sbxfs only: KillMode=process), start again.
D4=$T/data-4 M4=$T/m-4
mkdir -p "$D4"
read -r -a SP <<<"$(setpriv_args "$U1")"
start_unit() {
	local cmd
	cmd=$(unit_get "$U1" ExecStart)
	cmd=${cmd//%f/$M4}
	cmd=${cmd//'${SOURCE}'/local:$D4}
	cmd=${cmd//'$OPTIONS'/-o poll=1}
	read -r -a argv <<<"$cmd"
	argv[0]=$BIN
	mkdir -p "$M4"
	notify_listen unit
	NOTIFY_SOCKET=$T/unit.sock setpriv "${SP[@]}" -- "${argv[@]}" \
		>>"$T/unit.log" 2>&1 &
	upid=$!
	pids+=("$upid")
	# Type=notify: mounted by the time READY=1 arrives
	notify_wait unit && mounted "$M4"
}
[ "$(unit_get "$U1" Type)" = notify ] ||
	ko "sbxfs@.service: Type=notify" "$(unit_get "$U1" Type)"
if start_unit; then
	ok "sbxfs@.service: ExecStart under setpriv ${SP[*]}: READY=1, mounted"
	st=$(grep -E '^(NoNewPrivs|CapBnd)' "/proc/$upid/status" | tr '\n' ' ')
	echo "# sbxfs runs with: $st"
	check_use "sbxfs@.service" "$M4"
	timeout 120 mkdir "$M4/keep" && ok "sbxfs@.service: mkdir keep" ||
		ko "sbxfs@.service: mkdir keep" "$(cat "$M4/err" 2>/dev/null)"
	kill -TERM "$upid"
	if wait_for 30 gone "$upid" && unmounted "$M4"; then
		ok "sbxfs@.service: stop (SIGTERM) unmounts"
	else
		ko "sbxfs@.service: stop (SIGTERM) unmounts"
	fi
	wait "$upid" 2>/dev/null
	rc=$?
	# (a sanitizer report at exit would show here)
	[ "$rc" = 0 ] && ok "sbxfs@.service: sbxfs exits 0 on SIGTERM" ||
		ko "sbxfs@.service: sbxfs exits 0 on SIGTERM" \
			"status $rc; $(tail -5 "$T/unit.log")"
	if start_unit && mounted "$M4" &&
		[ "$(head -1 "$M4/keep/status" 2>/dev/null)" = running ]; then
		ok "sbxfs@.service: sandbox outlives a restart"
	else
		ko "sbxfs@.service: sandbox outlives a restart" \
			"$(head -1 "$M4/keep/status" 2>&1)"
	fi
	timeout 120 rmdir "$M4/keep" 2>/dev/null
	kill -TERM "$upid"
	wait_for 30 gone "$upid"
	wait "$upid" 2>/dev/null
else
	ko "sbxfs@.service: ExecStart under setpriv ${SP[*]}: READY=1, mounted" \
		"$(tail -5 "$T/unit.log")"
fi

# sbxfs-server.service: ExecStart= with the unit's restrictions, on a
# temp data dir and a free port (through $SBXFS_SERVER_OPTS), then used
# through a wrenn mount.
D5=$T/data-5 M5=$T/m-5
mkdir -p -m 700 "$D5" "$M5"
read -r -a SP <<<"$(setpriv_args "$U2")"
key5=wrn_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$key5" >"$D5/server-key")
cmd=$(unit_get "$U2" ExecStart)
cmd=${cmd//\/var\/lib\/sbxfs-server/$D5}
cmd=${cmd//'$SBXFS_SERVER_OPTS'/--port 0}
read -r -a argv <<<"$cmd"
argv[0]=$SERVER
notify_listen server
NOTIFY_SOCKET=$T/server.sock setpriv "${SP[@]}" -- "${argv[@]}" \
	>"$T/server.out" 2>"$T/server.err" &
spid=$!
pids+=("$spid")
has_port() { grep -q '^listening on' "$T/server.out"; }
if notify_wait server && has_port; then
	ok "sbxfs-server.service: ExecStart under setpriv ${SP[*]}: READY=1"
	port=$(sed -n 's/^listening on 127.0.0.1://p' "$T/server.out")
	WRENN_API_KEY=$key5 XDG_STATE_HOME=$T/state \
		"$BIN" -f "wrenn:http://127.0.0.1:$port" "$M5" \
		>"$T/m5.log" 2>&1 &
	pids+=("$!")
	if wait_for 10 mounted "$M5"; then
		check_use "sbxfs-server.service" "$M5"
		fusermount3 -u "$M5"
	else
		ko "sbxfs-server.service: wrenn mount" "$(cat "$T/m5.log")"
	fi
	kill -TERM "$spid"
	wait_for 30 gone "$spid"
	wait "$spid" 2>/dev/null
	rc=$?
	[ "$rc" = 0 ] && ok "sbxfs-server.service: exits 0 on SIGTERM" ||
		ko "sbxfs-server.service: exits 0 on SIGTERM" \
			"status $rc; $(tail -5 "$T/server.err")"
else
	ko "sbxfs-server.service: ExecStart under setpriv ${SP[*]}" \
		"$(cat "$T/server.err")"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
