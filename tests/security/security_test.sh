#!/bin/bash
# security_test.sh - hostile-root probes from inside real local sandboxes.
#
# usage: security_test.sh [SBXFS_BINARY]        (prints "N passed, N failed")
#
# Mounts sbxfs (local backend, a fresh data dir) in a temp dir, creates
# sandboxes and runs each probe *inside* one, as root there, through the
# mount (sbx run, tools/sbx.c).  Every probe prints what it tried and what the
# kernel answered, and passes only when the attempt was refused (or, for
# the resource probes, stayed inside the sandbox's limits while the host
# kept answering).  Host-side values (sysctls, /etc/shadow) are checked
# before and after.  Needs root, /dev/fuse and the root image
# (tools/mkimage.sh).  Everything it starts is removed at exit.
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
HERE=$(cd "$(dirname "$0")" && pwd)
# sbx: $SBX (meson sets it to the built one), else a build dir of the
# clone, else the installed one
SBX=${SBX:-$(ls "$HERE"/../../build*/tools/sbx 2>/dev/null | head -1)}
SBX=${SBX:-sbx}
T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-sec.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
export SBX_MOUNT=$MNT
pass=0 fail=0 SPID= LPID=

cleanup() {
	if awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
		for d in "$MNT"/*/; do
			[ -d "$d" ] && timeout 20 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	[ -n "$SPID" ] && { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
	[ -n "$LPID" ] && { kill "$LPID" 2>/dev/null; wait "$LPID" 2>/dev/null; }
	# anything a failed destroy left: thaw and kill by cgroup, unmount
	for cg in /sys/fs/cgroup/freezer/sbxfs/*; do
		[ -d "$cg" ] || continue
		grep -q "$DATA" /proc/$(head -1 "$cg/cgroup.procs" 2>/dev/null)/mountinfo 2>/dev/null || continue
		echo THAWED >"$cg/freezer.state" 2>/dev/null
		xargs -r kill -9 <"$cg/cgroup.procs" 2>/dev/null
	done
	awk -v b="$T/" 'index($2, b) == 1 { print $2 }' /proc/mounts |
		sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; }
sbx() { timeout "${TMO:-60}" "$SBX" "$@"; }
# in BOX CMD: run a shell line inside, as root there; output in $out, code
# in $rc; both printed, so the log shows what the kernel answered
inside() {
	out=$(sbx run -n "$1" -- sh -c "$2" 2>&1)
	rc=$?
	printf '       tried: %s\n       answer (exit %s): %s\n' "$2" "$rc" \
		"$(printf '%s' "$out" | head -c 600 | tr '\n' '|')"
}
# probe NAME BOX CMD: passes when CMD fails inside (nonzero exit)
refused() {
	inside "$2" "$3"
	if [ "$rc" != 0 ]; then ok "$1"; else ko "$1"; fi
}

[ "$(id -u)" = 0 ] || { echo "security tests need root"; echo "0 passed, 1 failed"; exit 1; }
"$BIN" -f "local:$DATA" "$MNT" >"$T/sbxfs.log" 2>&1 &
SPID=$!
for _ in $(seq 100); do
	awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts && break
	sleep 0.1
done
if ! mkdir "$MNT/box" 2>"$T/mkdir.err"; then
	echo "cannot create a sandbox: $(cat "$T/mkdir.err") $(cat "$MNT/err" 2>/dev/null)"
	cat "$T/sbxfs.log"
	echo "0 passed, 1 failed"
	exit 1
fi

echo "# identity inside"
inside box 'cat /proc/self/uid_map; grep -E "^(Seccomp|NoNewPrivs|CapEff):" /proc/self/status'
base=$(printf '%s\n' "$out" | awk 'NR == 1 { print $2 }')
if [ -n "$base" ] && [ "$base" != 0 ] && printf '%s' "$out" | grep -q '^Seccomp:[[:space:]]*2' &&
	printf '%s' "$out" | grep -q '^NoNewPrivs:[[:space:]]*1'; then
	ok "root inside is host uid $base, seccomp filter on, no_new_privs"
else
	ko "user namespace / seccomp / no_new_privs"
fi
capeff=$(printf '%s\n' "$out" | awk '/^CapEff:/ { print $2 }')
# CAP_SYS_ADMIN is bit 21, CAP_SYS_MODULE 16, CAP_SYS_PTRACE 19, CAP_MKNOD 27
if [ -n "$capeff" ] && [ $(( 0x$capeff & ((1 << 21) | (1 << 16) | (1 << 19) | (1 << 27)) )) = 0 ]; then
	ok "no CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_MKNOD (CapEff $capeff)"
else
	ko "capabilities (CapEff $capeff)"
fi

echo "# kernel settings of the host"
cp_before=$(cat /proc/sys/kernel/core_pattern)
refused "core_pattern write" box 'echo "|/tmp/pwn.sh" > /proc/sys/kernel/core_pattern'
[ "$(cat /proc/sys/kernel/core_pattern)" = "$cp_before" ] &&
	ok "host core_pattern unchanged" || ko "host core_pattern changed!"
for s in vm/drop_caches:3 kernel/panic:5 kernel/pid_max:4242 fs/file-max:4242 kernel/randomize_va_space:0; do
	k=${s%%:*} v=${s#*:}
	before=$(cat /proc/sys/$k)
	refused "sysctl $k" box "echo $v > /proc/sys/$k"
	[ "$(cat /proc/sys/$k)" = "$before" ] || ko "host $k changed!"
done
refused "sysrq-trigger" box 'echo h > /proc/sysrq-trigger'
# masked (empty) or absent where this kernel lacks them
inside box 'for f in kcore keys timer_list sched_debug kallsyms; do cat /proc/$f 2>/dev/null; done | wc -c'
[ "$out" = 0 ] &&
	ok "/proc/kcore, keys, timer_list, sched_debug, kallsyms empty" || ko "masked /proc files"

echo "# namespaces, mounts and privileged system calls"
refused "unshare -U" box 'unshare -U true'
refused "unshare -Ur" box 'unshare -Ur true'
refused "unshare -m" box 'unshare -m true'
refused "mount tmpfs" box 'mkdir -p /mnt/x && mount -t tmpfs none /mnt/x'
refused "mount cgroup" box 'mkdir -p /mnt/c && mount -t cgroup -o pids none /mnt/c'
refused "mknod block device" box 'mknod /tmp/sda b 8 0'
# raw system calls (x86_64 numbers) through python3's ctypes: each must
# fail (EPERM from the filter or the kernel)
cat >"$MNT/box/fs/tmp/sc.py" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
name, nr = sys.argv[1], int(sys.argv[2])
# arguments: N = NULL, s:TEXT = a C string, else an integer
def arg(a):
    if a == "N":
        return None
    if a.startswith("s:"):
        return ctypes.c_char_p(a[2:].encode())
    return ctypes.c_long(int(a, 0))
conv = [arg(a) for a in sys.argv[3:]]
r = libc.syscall(ctypes.c_long(nr), *conv)
e = ctypes.get_errno()
print(name, "->", r, os.strerror(e) if r < 0 else "succeeded")
sys.exit(0 if r >= 0 else 1)
PY
sc() { # NAME NR ARGS: refused means the call itself returned -1
	inside box "python3 /tmp/sc.py $*"
	case $out in
	*"-> -1 "*) ok "$1" ;;
	*) ko "$1" ;;
	esac
}
if [ "$(uname -m)" = x86_64 ]; then
	sc keyctl 250 0 -1 0 0 0
	sc add_key 248 s:user s:k s:v 1 -4
	sc request_key 249 s:user s:k N -4
	sc bpf 321 0 N 0
	sc perf_event_open 298 N 0 -1 -1 0
	sc open_by_handle_at 304 -100 N 0
	sc init_module 175 N 0 s:
	sc finit_module 313 0 s: 0
	sc delete_module 176 s:ext4 0
	sc kexec_load 246 0 0 N 0
	sc reboot 169 0xfee1dead 672274793 0x4321fedc N
	sc swapon 167 s:/tmp 0
	sc acct 163 s:/tmp/acct
	sc setns 308 0 0
	sc unshare_newuser 272 0x10000000
	sc clone_newuser 56 0x10000000 N N N N
	sc clone_newns 56 0x20000 N N N N
	sc mount 165 s:none s:/mnt s:tmpfs 0 N
	sc umount2 166 s:/proc 2
	sc pivot_root 155 s:/tmp s:/tmp
	sc settimeofday 164 N N
	sc syslog 103 3 N 0
fi
inside box 'kill -0 '"$SPID"' 2>&1; ls /proc | grep -c "^[0-9]"'
printf '%s' "$out" | grep -q 'No such process' &&
	ok "host processes invisible (kill -0 of sbxfs's pid: no such process)" ||
	ko "host processes visible"

echo "# host files"
inside box 'head -1 /etc/shadow'
host_shadow=$(head -1 /etc/shadow)
[ "$out" != "$host_shadow" ] && ok "/etc/shadow inside is not the host's" ||
	ko "host /etc/shadow readable"
refused "another data dir" box "cat /var/lib/sbxfs/images/debian-12/meta.json $DATA/sandboxes/box/meta.json"
refused "host /root, /home" box 'ls /root/.bash_history /home/* 2>&1 | grep -v "No such"; test -n "$(ls -A /home)"'
refused "write the cgroup filesystem" box 'echo 1 > /sys/fs/cgroup/pids/cgroup.procs || echo 0 > /sys/fs/cgroup/cgroup.procs'
inside box 'ls -A /sys/fs/cgroup 2>/dev/null | wc -l'
[ "$out" = 0 ] && ok "no cgroup filesystem inside" || ko "cgroup filesystem visible"

echo "# network"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
timeout 120 python3 -c "
import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(5); s.settimeout(110)
while True:
    c, _ = s.accept(); c.sendall(b'host-secret\n'); c.close()" &
LPID=$!
sleep 0.3
refused "host loopback port $port" box "python3 -c 'import socket; print(socket.create_connection((\"127.0.0.1\", $port), timeout=3).recv(64))'"

echo "# files made inside: owners on the host and through the mount"
inside box 'mkdir -p /root/d && echo x > /root/d/f && chown 1000:1000 /root/d/f'
h=$(stat -c '%u:%g' "$DATA/sandboxes/box/upper/root/d/f")
m=$(stat -c '%u:%g' "$MNT/box/fs/root/d/f")
md=$(stat -c '%u' "$MNT/box/fs/root/d")
echo "       host upper: $h, through the mount: $m (dir owner $md)"
[ "$h" = "$((base + 1000)):$((base + 1000))" ] && [ "$m" = 1000:1000 ] && [ "$md" = 0 ] &&
	ok "owners: mapped on the host, as inside through the mount" || ko "owners"

echo "# resource limits"
mkdir_new() { echo "new $1 $2" >"$MNT/ctl"; }
if mkdir_new small 'memory=64M pids=64 cpus=0.5'; then
	st=$(cat "$MNT/small/status")
	printf '%s\n' "$st" | grep -q '^memory: 64M' && printf '%s\n' "$st" | grep -q '^pids: 64' &&
		printf '%s\n' "$st" | grep -q '^cpus: 0.5' && grep -q '"pids":64' "$MNT/small/info" &&
		ok "limits in status and info" || ko "limits in status/info: $st"
	mt=$(cat "$MNT/small/metrics")
	printf '%s\n' "$mt" | grep -qx 'pids_limit: 64' &&
		printf '%s\n' "$mt" | grep -qx 'memory_limit_bytes: 67108864' &&
		printf '%s\n' "$mt" | grep -q '^cpu_seconds: [0-9]' &&
		printf '%s\n' "$mt" | grep -q '^disk_bytes: [0-9]' &&
		ok "metrics: the cgroup figures of the sandbox" ||
		ko "metrics: $mt"
	# a fork bomb, bounded by time: pids.max holds, the host answers
	sbx run -n small -- sh -c 'b() { b | b & }; b; sleep 8' >/dev/null 2>&1 &
	bomb=$!
	sleep 2
	t0=$(date +%s%N)
	timeout 10 ls "$MNT" >/dev/null && timeout 10 cat "$MNT/box/status" >/dev/null
	t1=$(date +%s%N)
	ms=$(( (t1 - t0) / 1000000 ))
	cur=$(cat /sys/fs/cgroup/pids/sbxfs/*-small/pids.current 2>/dev/null ||
		cat /sys/fs/cgroup/sbxfs/*-small/pids.current 2>/dev/null)
	TMO=20 inside box 'echo alive'
	echo "       fork bomb: ls MOUNT + cat status took ${ms} ms, pids.current=$cur, other sandbox: $out"
	[ "$ms" -lt 3000 ] && [ -n "$cur" ] && [ "$cur" -le 64 ] && [ "$out" = alive ] &&
		ok "fork bomb stays inside pids=64" || ko "fork bomb"
	echo 'stop 0' >"$MNT/small/ctl"
	wait "$bomb" 2>/dev/null
	echo start >"$MNT/small/ctl"
	# a memory hog: the OOM killer acts inside the sandbox only
	TMO=60 inside small 'python3 -c "
a = []
for i in range(2048): a.append(bytearray(1 << 20))
print(\"allocated 2 GiB\")"'
	hog=$rc
	TMO=20 inside box 'echo alive'
	[ "$hog" = 137 ] && [ "$out" = alive ] && kill -0 "$SPID" 2>/dev/null &&
		ok "memory hog killed inside memory=64M (exit $hog); sbxfs and other sandboxes fine" ||
		ko "memory hog (exit $hog)"
	rmdir "$MNT/small"
else
	ko "new small memory=64M pids=64 cpus=0.5: $(cat "$MNT/err" 2>/dev/null)"
fi
if echo 'new bad memory=12Q' >"$MNT/ctl" 2>/dev/null || echo 'new bad pids=-1' >"$MNT/ctl" 2>/dev/null; then
	ko "bad limits accepted"
else
	ok "memory=12Q and pids=-1 refused"
fi

# the monitor of a proc/ job (the parent of its command, on the host) is
# out of reach: not in the sandbox's PID namespace or cgroup, its socket
# and the job directory not in the sandbox's file system
if mkdir "$MNT/box/proc/mon" && echo 'exec sleep 60' >"$MNT/box/proc/mon/cmd"; then
	jd=$DATA/sandboxes/box/jobs/mon
	mon= cg=
	for _ in $(seq 100); do
		cg=$(grep -l "^sleep" $(for p in $(cat /sys/fs/cgroup/sbxfs/*-box/cgroup.procs \
			/sys/fs/cgroup/freezer/sbxfs/*-box/cgroup.procs 2>/dev/null); do
			echo "/proc/$p/comm"; done) 2>/dev/null | head -1)
		[ -n "$cg" ] && break
		sleep 0.05
	done
	[ -n "$cg" ] && mon=$(awk '{ sub(/.*\) /, ""); print $2 }' "${cg%/comm}/stat")
	if [ -n "$mon" ] && [ -S "$jd/sock" ]; then
		inside box 'kill -0 '"$mon"' 2>&1; test -e '"$jd"' && echo reachable; ls -l /proc/*/fd 2>/dev/null | grep -c "sock" ; cat /proc/$$/stat | cut -d" " -f4'
		same_pid=$([ "$(readlink "/proc/$mon/ns/pid")" = "$(readlink /proc/self/ns/pid)" ] && echo y)
		mon_cg=$(cat "/proc/$mon/cgroup")
		printf '%s' "$out" | grep -q 'No such process' &&
			! printf '%s' "$out" | grep -q reachable && [ "$same_pid" = y ] &&
			! printf '%s' "$mon_cg" | grep -q -- "-box" &&
			[ "$(stat -c %a "$jd")" = 700 ] &&
			ok "job monitor (pid $mon) on the host side: invisible inside, its socket unreachable, not in the sandbox's cgroup, job dir 0700" ||
			ko "job monitor exposed: $out / cgroup $mon_cg / dir $(stat -c %a "$jd")"
	else
		ko "job monitor not found (sleep ${cg:-none}, parent ${mon:-none})"
	fi
	rmdir "$MNT/box/proc/mon"
else
	ko "proc/mon: $(cat "$MNT/box/err" 2>/dev/null)"
fi

rmdir "$MNT/box"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
