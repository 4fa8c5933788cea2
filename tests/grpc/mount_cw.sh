#!/bin/bash
# mount_cw.sh - the cwsandbox backend through a real mount, as a user
# drives it with shell tools, against a private sbxfs-server --api
# cwsandbox (run inside tools/with-server.sh --api cwsandbox, which sets
# SBXFS_TEST_SOURCE and CWSANDBOX_API_KEY).  Every check prints ok/FAIL;
# the last line is "N passed, N failed".  The mount is always taken down
# (trap), the server and its sandboxes by with-server.sh.
#
#   tools/with-server.sh --api cwsandbox -- tests/grpc/mount_cw.sh SBXFS
set -u

sbxfs=${1:-${SBXFS_BIN:-}}
[ -x "$sbxfs" ] || { echo "mount_cw.sh: no sbxfs"; echo "0 passed, 1 failed"; exit 1; }
base=${SBXFS_TEST_TMP:-/tmp}
tmp=$(mktemp -d "$base/sbxfs-cwm-XXXXXX") || exit 1
m=$tmp/mnt
mkdir "$m"
log=$tmp/sbxfs.log
pass=0
fail=0
fpid=

cleanup() {
	if mountpoint -q "$m" 2>/dev/null; then
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
	fi
	if [ -n "$fpid" ]; then
		kill "$fpid" 2>/dev/null
		wait "$fpid" 2>/dev/null
	fi
	rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check() {	# NAME COMMAND...: passes when COMMAND succeeds (it runs
		# in this shell, so a remount sticks)
	local name=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then
		pass=$((pass + 1))
		echo "ok   $name"
	else
		fail=$((fail + 1))
		echo "FAIL $name: $(head -5 "$tmp/out")"
	fi
}

mount_it() {
	"$sbxfs" -f -o timeout=60 "$SBXFS_TEST_SOURCE" "$m" >>"$log" 2>&1 &
	fpid=$!
	for _ in $(seq 100); do
		mountpoint -q "$m" && return 0
		kill -0 "$fpid" 2>/dev/null || break
		sleep 0.1
	done
	echo "mount_cw.sh: mount failed:"; cat "$log"
	return 1
}

umount_it() {
	local rc=0

	cd / || return 1
	timeout 60 fusermount3 -u "$m" || rc=1
	[ -n "$fpid" ] && { wait "$fpid" || rc=1; }
	fpid=
	return $rc
}

mount_it || { echo "0 passed, 1 failed"; exit 1; }
cd "$m" || exit 1

t_mkdir() {
	mkdir box && [ "$(head -1 box/status)" = running ]
}
check "mkdir NAME: status running" t_mkdir

t_alias() {
	local f
	id=
	for f in *; do
		[ -L "$f" ] && [ "$(readlink "$f")" = box ] && id=$f
	done
	[ -n "$id" ] && [ -d "$id/fs" ] &&
		grep -q "\"sandboxId\":[[:space:]]*\"$id\"" box/info &&
		grep -q 'sbxfs-name=box' box/info
}
check "ls: NAME directory, platform ID as a symlink; info is the record" t_alias

t_new() {
	echo 'new box2 tag=team-a env=GREETING=hi cpus=1 memory=512Mi' >ctl &&
		[ "$(head -1 box2/status)" = running ] &&
		grep -q '"team-a"' box2/info && grep -q '"GREETING"' box2/info
}
check "ctl new NAME with tag/env/cpus/memory" t_new

t_bad_setting() {
	! echo 'new box3 bogus=1' >ctl && [ ! -e box3 ]
}
check "ctl new with an unknown setting fails (EINVAL)" t_bad_setting

t_exec() {
	exec 3<>box/exec
	echo 'echo out; echo err >&2; pwd' >&3
	out=$(timeout 30 cat <&3 | sort | tr '\n' ' ')
	exec 3<&-
	[ "$out" = "/root err out " ]
}
check "exec: a command line, stdout+stderr" t_exec

t_job_stdin() {
	mkdir box/proc/j1 &&
		exec 4>box/proc/j1/stdin &&
		echo 'tr a-z A-Z; exit 3' >box/proc/j1/cmd &&
		echo hello >&4 && exec 4>&- &&
		[ "$(cat box/proc/j1/stdout)" = HELLO ] &&
		[ "$(cat box/proc/j1/wait)" = 3 ] && rmdir box/proc/j1
}
check "job: streamed stdin, stdout, exit code" t_job_stdin

t_job_kill() {
	mkdir box/proc/j2 && echo 'sleep 300' >box/proc/j2/cmd &&
		echo kill >box/proc/j2/ctl &&
		[ "$(timeout 20 cat box/proc/j2/wait)" = 137 ] &&
		rmdir box/proc/j2
}
check "job: kill ends it with 128+9" t_job_kill

t_job_stderr() {
	mkdir box/proc/j3 && echo 'echo o; echo e >&2' >box/proc/j3/cmd &&
		[ "$(cat box/proc/j3/stdout)" = o ] &&
		[ "$(cat box/proc/j3/stderr)" = e ] && rmdir box/proc/j3
}
check "job: stdout and stderr apart" t_job_stderr

t_files_small() {
	echo hello >box/fs/tmp/a.txt && [ "$(cat box/fs/tmp/a.txt)" = hello ] &&
		echo more >>box/fs/tmp/a.txt &&
		[ "$(cat box/fs/tmp/a.txt)" = "$(printf 'hello\nmore')" ]
}
check "files: echo > f, cat, >>" t_files_small

t_files_big() {
	head -c 40000000 /dev/urandom >"$tmp/big" &&
		cp "$tmp/big" box/fs/tmp/big && cmp "$tmp/big" box/fs/tmp/big &&
		[ "$(stat -c %s box/fs/tmp/big)" = 40000000 ]
}
check "files: 40 MB (above the 32 MiB unary cap) both ways" t_files_big

t_files_meta() {
	mkdir -p box/fs/tmp/d/e && touch box/fs/tmp/d/e/f &&
		chmod 600 box/fs/tmp/d/e/f &&
		[ "$(stat -c %a box/fs/tmp/d/e/f)" = 600 ] &&
		mv box/fs/tmp/d/e/f box/fs/tmp/d/g &&
		ln -s g box/fs/tmp/d/l && [ "$(readlink box/fs/tmp/d/l)" = g ] &&
		rm box/fs/tmp/d/l box/fs/tmp/d/g && rmdir box/fs/tmp/d/e &&
		rmdir box/fs/tmp/d && [ ! -e box/fs/tmp/d ]
}
check "files: mkdir -p, chmod, mv, ln -s, rm, rmdir" t_files_meta

t_ls_l() {
	mkdir box/fs/tmp/many && mkdir box/proc/mk &&
		echo 'cd /tmp/many && for i in $(seq 300); do : > f$i; done' \
			>box/proc/mk/cmd &&
		[ "$(timeout 60 cat box/proc/mk/wait)" = 0 ] &&
		rmdir box/proc/mk &&
		[ "$(ls -l box/fs/tmp/many | grep -c '^-')" = 300 ]
}
check "files: ls -l of 300 entries" t_ls_l

t_enoent() {
	! cat box/fs/tmp/nope 2>/dev/null && ! ls nosuchbox 2>/dev/null
}
check "files: missing file and sandbox are ENOENT" t_enoent

t_tar() {
	tar -C /usr/share -cf "$tmp/t.tar" doc/bash doc/coreutils 2>/dev/null &&
		mkdir box/fs/tmp/x && tar -C box/fs/tmp/x -xf "$tmp/t.tar" &&
		diff -r --no-dereference /usr/share/doc/bash box/fs/tmp/x/doc/bash
}
check "files: tar x, diff -r" t_tar

t_remount() {
	umount_it && mount_it && cd "$m" && [ -d box ] &&
		[ "$(head -1 box/status)" = running ] &&
		[ "$(cat box/fs/tmp/a.txt)" = "$(printf 'hello\nmore')" ]
}
check "remount finds NAME (kept as a tag)" t_remount

t_pause() {
	! echo pause >box/ctl && grep -qi cwsandbox box/err
}
check "pause: EOPNOTSUPP with a sentence" t_pause

t_stop() {
	echo 'stop 1' >box2/ctl && [ "$(head -1 box2/status)" = stopped ]
}
check "stop GRACE: DeleteSandbox, status stopped" t_stop

t_rmdir() {
	rmdir box box2 && [ ! -e box ] && [ -z "$(find . -maxdepth 1 -type l)" ]
}
check "rmdir: gone, ID symlink too" t_rmdir

umount_it || { fail=$((fail + 1)); echo "FAIL unmount"; }
# under ASan/UBSan: a report in sbxfs's log is a failure
if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
	fail=$((fail + 1))
	echo "FAIL sanitizer report from sbxfs:"
	grep -E -A12 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log" |
		head -40
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
