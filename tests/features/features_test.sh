#!/bin/bash
# features_test.sh - platform features as files (issue 11 item 3) on a real
# local mount: MOUNT/templates/, NAME/ports/PORT, tags and MOUNT/.tags/.
#
# usage: features_test.sh [SBXFS_BINARY]        (prints "N passed, N failed")
#
# With SBXFS_TEST_SOURCE=wrenn:URL (tools/with-server.sh: a private
# sbxfs-server) the Wrenn part runs instead: templates through the
# server's /v1/snapshots, the port proxy URL form, tags refused.
#
# Mounts sbxfs (local backend, a fresh data dir) in a temp dir and drives it
# with shell tools, checking the sandbox side (meta.json and the template
# store in the data dir, the forwarder's listener with ss, the request in
# the sandbox's server log).  Waits on conditions, never bare sleeps.
# Everything it starts is removed at exit.  Needs root, /dev/fuse, the root
# image (tools/mkimage.sh), curl, jq and ss.
set -u
BIN=${1:-${SBXFS_BIN:-sbxfs}}
HERE=$(cd "$(dirname "$0")" && pwd)
SBX=${SBX:-$(ls "$HERE"/../../build*/tools/sbx 2>/dev/null | head -1)}
SBX=${SBX:-sbx}
T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-feat.XXXXXX")
MNT=$T/mnt DATA=$T/data
mkdir -p "$MNT" "$DATA"
export SBX_MOUNT=$MNT
pass=0 fail=0 SPID=

mounted() { awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }
cleanup() {
	if mounted; then
		for d in "$MNT"/*/; do
			[ -d "$d" ] && [ "$d" != "$MNT/templates/" ] &&
				timeout 20 rmdir "$d" 2>/dev/null
		done
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	[ -n "$SPID" ] && { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }
	# sandboxes a failed rmdir left: kill by cgroup
	for cg in /sys/fs/cgroup/freezer/sbxfs/* /sys/fs/cgroup/sbxfs/*; do
		[ -f "$cg/cgroup.procs" ] || continue
		grep -q "$DATA" /proc/$(head -1 "$cg/cgroup.procs" 2>/dev/null)/mountinfo 2>/dev/null || continue
		[ -f "$cg/freezer.state" ] && echo THAWED >"$cg/freezer.state" 2>/dev/null
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
check() { # check NAME CMD...: passes when CMD succeeds
	local name=$1
	shift
	if "$@"; then ok "$name"; else ko "$name"; fi
}
# until SECS CMD...: wait for CMD to succeed (polling), 1 if it never does
until_ok() {
	local end=$((SECONDS + $1))
	shift
	while ! "$@"; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.1
	done
}
fails_with() { # fails_with TEXT CMD...: CMD fails and says TEXT
	local text=$1 out
	shift
	out=$("$@" 2>&1) && return 1
	case $out in *"$text"*) return 0 ;; esac
	echo "       got: $out"
	return 1
}
sbx() { timeout "${TMO:-60}" "$SBX" "$@"; }

SOURCE=${SBXFS_TEST_SOURCE:-local:$DATA}
start_sbxfs() {
	"$BIN" -f "$SOURCE" "$MNT" >>"$T/sbxfs.log" 2>&1 &
	SPID=$!
	until_ok 10 mounted
}
stop_sbxfs() { # unmount; sbxfs must exit 0 with no sanitizer report
	local rc
	fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"
	wait "$SPID"
	rc=$?
	SPID=
	[ $rc = 0 ] && ! grep -qE 'Sanitizer|runtime error' "$T/sbxfs.log" &&
		return 0
	echo "       sbxfs exit status $rc; its log:"
	sed 's/^/       /' "$T/sbxfs.log" | tail -60
	return 1
}

[ "$(id -u)" = 0 ] || { echo "features tests need root"; echo "0 passed, 1 failed"; exit 1; }
if ! start_sbxfs; then
	echo "cannot mount"; cat "$T/sbxfs.log"; echo "0 passed, 1 failed"; exit 1
fi

if [ "${SOURCE%%:*}" = wrenn ]; then
	port=${SOURCE##*:}
	check "MOUNT/ lists templates/, no .tags/ (no tags on Wrenn)" \
		bash -c "ls -a '$MNT' | grep -qx templates && ! ls -a '$MNT' | grep -qx .tags"
	check "new NAME tag=T: EOPNOTSUPP" \
		fails_with "not supported" bash -c "echo 'new t1 tag=a' >'$MNT/ctl'"
	check "  ... with a sentence in MOUNT/err" grep -q "no tags" "$MNT/err"
	mkdir "$MNT/box" || cat "$MNT/err"
	id=$(find "$MNT" -maxdepth 1 -type l -lname box -printf '%f\n' | head -1)
	check "cat NAME/ports/8080 is the proxy URL (8080-$id.127.0.0.1:$port)" \
		bash -c "[ \"\$(cat '$MNT/box/ports/8080')\" = 'http://8080-$id.127.0.0.1:$port' ]"
	check "ls NAME/ports: nothing known" bash -c "[ -z \"\$(ls '$MNT/box/ports')\" ]"
	# the URL itself, through sbxfs-server's port proxy (Host PORT-ID.…)
	mkdir -p "$MNT/box/fs/srv"
	echo "hello from a capsule" >"$MNT/box/fs/srv/index.html"
	sbx run -n box -- sh -c 'cd /srv && nohup python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 &' >/dev/null 2>&1
	url=$(cat "$MNT/box/ports/8080")
	hostport=${url#http://}
	check "curl of the proxy URL reaches the service in the capsule" \
		until_ok 20 bash -c "[ \"\$(curl -s --max-time 10 --resolve '$hostport:127.0.0.1' '$url/index.html')\" = 'hello from a capsule' ]"
	check "  ... an unknown capsule: 404 in plain text" \
		bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: 8080-cl-nosuch0.x' 'http://127.0.0.1:$port/')\" = 404 ]"
	check "  ... a port nothing listens on: 502" \
		bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: 9-$id.x' 'http://127.0.0.1:$port/')\" = 502 ]"
	check "NAME/ports/x: EINVAL" fails_with "Invalid argument" cat "$MNT/box/ports/x"
	check "ls MOUNT/templates lists the platform's template" \
		bash -c "ls '$MNT/templates' | grep -qx minimal"
	check "rmdir of a platform template: refused" \
		fails_with "ermi" rmdir "$MNT/templates/minimal"
	echo "snapshot snapw" >"$MNT/box/ctl" 2>"$T/e" || cat "$T/e" "$MNT/box/err"
	check "a snapshot shows in MOUNT/templates" \
		bash -c "ls '$MNT/templates' | grep -qx snapw"
	check "MOUNT/templates/snapw/info is the platform's record" \
		bash -c "jq -e '.name == \"snapw\" and .type == \"snapshot\"' '$MNT/templates/snapw/info' >/dev/null"
	when=$(stat -c %Y "$MNT/templates/snapw" 2>/dev/null)
	check "ls -l shows its date" bash -c "[ \$(( \$(date +%s) - ${when:-0} )) -lt 600 ]"
	echo "new box2 template=snapw" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
	check "rmdir of a template in use: EBUSY" \
		fails_with "busy" rmdir "$MNT/templates/snapw"
	check "  ... with the server's reason in MOUNT/err" grep -q "in use" "$MNT/err"
	rmdir "$MNT/box2"
	check "rmdir MOUNT/templates/snapw deletes it" rmdir "$MNT/templates/snapw"
	check "  ... gone from the listing" \
		bash -c "! ls '$MNT/templates' | grep -qx snapw"
	check "rmdir of an unknown template: ENOENT" \
		fails_with "No such file" rmdir "$MNT/templates/nosuch"
	rmdir "$MNT/box"
	check "unmount: sbxfs exits 0, no sanitizer report" stop_sbxfs
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
fi

if [ "${SOURCE%%:*}" = cwsandbox ]; then
	check "MOUNT/ lists .tags/" bash -c "ls -a '$MNT' | grep -qx .tags"
	if [ -d "$MNT/templates" ]; then # file-system snapshots, once served
		check "MOUNT/templates/ can be listed" ls "$MNT/templates"
	fi
	echo "new cbox tag=team-a tag=blue" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
	check "new NAME tag=T tag=U: .tags/T/NAME links to the sandbox" \
		bash -c "[ \"\$(readlink '$MNT/.tags/team-a/cbox')\" = ../../cbox ]"
	check "  ... and .tags/U/NAME" \
		bash -c "[ \"\$(ls '$MNT/.tags/blue')\" = cbox ]"
	check "  ... the tags are in the platform's record (info)" \
		bash -c "grep -q team-a '$MNT/cbox/info'"
	echo "new cport port=8080" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
	check "ls NAME/ports lists the port exposed at create" \
		bash -c "[ \"\$(ls '$MNT/cport/ports')\" = 8080 ]"
	check "NAME/ports/PORT not exposed: ENOENT" \
		fails_with "No such file" cat "$MNT/cport/ports/9090"
	check "  ... with a sentence in NAME/err" grep -q "port=9090" "$MNT/cport/err"
	check "an exposed port the server gives no URL for: EAGAIN" \
		fails_with "temporarily unavailable" cat "$MNT/cport/ports/8080"
	rmdir "$MNT/cport"
	check "new NAME tag=a:b: EINVAL" \
		fails_with "Invalid argument" bash -c "echo 'new cbad tag=a:b' >'$MNT/ctl'"
	rmdir "$MNT/cbox"
	check "rmdir: the tag directory goes with it" \
		until_ok 10 bash -c "! ls '$MNT/.tags' | grep -qx team-a"
	check "unmount: sbxfs exits 0, no sanitizer report" stop_sbxfs
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
	exit
fi

# ---- the root -------------------------------------------------------------
check "MOUNT/ lists templates/ and .tags/" \
	bash -c "ls -a '$MNT' | grep -qx templates && ls -a '$MNT' | grep -qx .tags"
check "mkdir MOUNT/templates: EEXIST" \
	fails_with "File exists" mkdir "$MNT/templates"
check "rmdir MOUNT/templates: EPERM" \
	fails_with "not permitted" rmdir "$MNT/templates"
check "rmdir MOUNT/.tags: EPERM" \
	fails_with "not permitted" rmdir "$MNT/.tags"

# ---- tags -------------------------------------------------------------------
echo "new web1 tag=web tag=blue" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
echo "new web2 tag=web network=host" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
echo "new plain" >"$MNT/ctl" 2>"$T/e" || cat "$T/e" "$MNT/err"
check "new NAME tag=T tag=U: both in info" \
	bash -c "jq -e '.tags == [\"web\",\"blue\"]' '$MNT/web1/info' >/dev/null"
check "tags stored with the sandbox (meta.json on the host)" \
	bash -c "jq -e '.tags == [\"web\",\"blue\"]' '$DATA/sandboxes/web1/meta.json' >/dev/null"
check "ls MOUNT/.tags lists each tag once" \
	bash -c "[ \"\$(ls '$MNT/.tags' | tr '\n' ' ')\" = 'blue web ' ]"
check "ls MOUNT/.tags/web lists the matching sandboxes" \
	bash -c "[ \"\$(ls '$MNT/.tags/web' | tr '\n' ' ')\" = 'web1 web2 ' ]"
check "MOUNT/.tags/blue/web1 is a symlink to ../../web1" \
	bash -c "[ \"\$(readlink '$MNT/.tags/blue/web1')\" = ../../web1 ]"
check "cat MOUNT/.tags/web/web1/status follows the link" \
	bash -c "head -1 '$MNT/.tags/web/web1/status' | grep -qx running"
check "an untagged sandbox is in no tag directory" \
	bash -c "! ls '$MNT/.tags/web' '$MNT/.tags/blue' | grep -qx plain"
check "a tag nobody has: ENOENT" \
	fails_with "No such file" ls "$MNT/.tags/nosuch"
check "a bad tag name under .tags: EINVAL" \
	fails_with "Invalid argument" ls "$MNT/.tags/-x"
check "new NAME tag=-bad: EINVAL" \
	fails_with "Invalid argument" bash -c "echo 'new bad1 tag=-bad' >'$MNT/ctl'"
check "  ... with a sentence in MOUNT/err" grep -q "tag '-bad'" "$MNT/err"
check "  ... and nothing made" test ! -e "$DATA/sandboxes/bad1"
check "new NAME tag=a:b: EINVAL" \
	fails_with "Invalid argument" bash -c "echo 'new bad2 tag=a:b' >'$MNT/ctl'"

# ---- ports ----------------------------------------------------------------
mkdir -p "$MNT/web1/fs/srv"
echo "hello from web1" >"$MNT/web1/fs/srv/index.html"
sbx run -n web1 -- sh -c 'cd /srv && nohup python3 -m http.server 8080 --bind 127.0.0.1 >/tmp/http.log 2>&1 &' >/dev/null 2>&1
check "ls NAME/ports lists a port listening in the sandbox" \
	until_ok 20 bash -c "ls '$MNT/web1/ports' | grep -qx 8080"
url=$(cat "$MNT/web1/ports/8080" 2>"$T/e")
check "cat NAME/ports/8080 gives a loopback URL ($url)" \
	bash -c "[[ '$url' =~ ^http://127\.0\.0\.1:[0-9]+$ ]]"
hport=${url##*:}
check "the forwarder listens on 127.0.0.1 only" \
	bash -c "ss -Hltn | awk '{print \$4}' | grep -x '.*:$hport' | grep -qx '127.0.0.1:$hport'"
check "curl URL reaches the service in a sandbox with no network" \
	bash -c "[ \"\$(curl -s --max-time 10 '$url/index.html')\" = 'hello from web1' ]"
check "  ... the request arrived in the sandbox (its server log)" \
	until_ok 5 grep -q 'GET /index.html' "$MNT/web1/fs/tmp/http.log"
check "a second read gives the same URL (one forwarder)" \
	bash -c "[ \"\$(cat '$MNT/web1/ports/8080')\" = '$url' ]"
check "a port with nothing listening: the connection is closed" \
	bash -c "u=\$(cat '$MNT/web1/ports/9') && ! curl -s --max-time 5 \"\$u\" >/dev/null"
check "network=host: the port itself" \
	bash -c "[ \"\$(cat '$MNT/web2/ports/8080')\" = http://127.0.0.1:8080 ]"
for bad in abc 0 65536 08080 -1; do
	check "NAME/ports/$bad: EINVAL" fails_with "Invalid argument" cat "$MNT/web1/ports/$bad"
done
check "  ... with a sentence in NAME/err" grep -q "a port is a number" "$MNT/web1/err"
check "NAME/ports/PORT is read-only" \
	fails_with "denied" bash -c "echo x >'$MNT/web1/ports/8080'"
echo stop >"$MNT/plain/ctl"
check "a stopped sandbox: EBUSY" \
	fails_with "busy" cat "$MNT/plain/ports/80"
check "  ... with a sentence in NAME/err" grep -q "not running" "$MNT/plain/err"
echo start >"$MNT/plain/ctl"

# ---- templates ------------------------------------------------------------
echo "made before the snapshot" >"$MNT/plain/fs/root/mark"
echo "snapshot snap1" >"$MNT/plain/ctl" 2>"$T/e" || cat "$T/e" "$MNT/plain/err"
check "ls MOUNT/templates lists the snapshot" \
	bash -c "ls '$MNT/templates' | grep -qx snap1"
check "the template store on the host has it" test -d "$DATA/templates/snap1/root"
line=$(ls -l --time-style=+%s "$MNT/templates" | awk '$NF == "snap1"')
size=$(echo "$line" | awk '{print $5}')
when=$(echo "$line" | awk '{print $6}')
check "ls -l shows its size ($size bytes)" bash -c "[ '${size:-0}' -gt 0 ]"
check "ls -l shows its date" bash -c "[ \$(( \$(date +%s) - ${when:-0} )) -lt 600 ]"
check "MOUNT/templates/snap1/info is its JSON record" \
	bash -c "jq -e '.name == \"snap1\" and .from == \"plain\" and .size_bytes > 0' '$MNT/templates/snap1/info' >/dev/null"
check "new NAME template=X still works" \
	bash -c "echo 'new fromsnap template=snap1' >'$MNT/ctl' && [ \"\$(cat '$MNT/fromsnap/fs/root/mark')\" = 'made before the snapshot' ]"
check "rmdir MOUNT/templates/snap1 deletes it" rmdir "$MNT/templates/snap1"
check "  ... gone from the store on the host" test ! -e "$DATA/templates/snap1"
check "  ... and from the listing" bash -c "! ls '$MNT/templates' | grep -qx snap1"
check "  ... a sandbox made from it keeps running with its files" \
	bash -c "head -1 '$MNT/fromsnap/status' | grep -qx running && [ -s '$MNT/fromsnap/fs/root/mark' ]"
check "rmdir of an unknown template: ENOENT" \
	fails_with "No such file" rmdir "$MNT/templates/nosuch"
check "mkdir MOUNT/templates/X: EPERM" \
	fails_with "not permitted" mkdir "$MNT/templates/x"
check "  ... with a sentence in MOUNT/err" grep -q "snapshot NAME" "$MNT/err"
check "new NAME template=<deleted>: ENOENT" \
	fails_with "No such file" bash -c "echo 'new late template=snap1' >'$MNT/ctl'"

# ---- forwarder ends with its sandbox; tags survive a remount --------------
rmdir "$MNT/web1"
check "rmdir NAME stops its forwarder" \
	until_ok 5 bash -c "! ss -Hltn | awk '{print \$4}' | grep -qx '127.0.0.1:$hport'"
check "MOUNT/.tags/blue is gone with its last sandbox" \
	fails_with "No such file" ls "$MNT/.tags/blue"
check "unmount: sbxfs exits 0, no sanitizer report" stop_sbxfs
start_sbxfs
check "after a remount MOUNT/.tags/web lists web2 again" \
	until_ok 10 bash -c "[ \"\$(ls '$MNT/.tags/web' 2>/dev/null)\" = web2 ]"
for d in web2 plain fromsnap; do rmdir "$MNT/$d" 2>/dev/null; done
check "final unmount: sbxfs exits 0, no sanitizer report" stop_sbxfs

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
