#!/bin/bash
# recipes_test.sh - run the README's recipes as written, so the README
# cannot drift from the code: every indented command line of the
# "Shell recipes" and "Wrenn" sections, in order, one shell per section
# (cd, exec'd descriptors and variables carry over from line to line, as in
# a terminal).  A line passes when its exit status is 0; a few lines also
# have their output checked (uname, os-release, the job's output and exit
# code, sbx's exit code and the sha256 of the forwarded stdin...).  Prints
# "N passed, N failed".
#
# usage: recipes_test.sh SBXFS SBX SBXFS_SERVER README.md
#
# What differs from a user's machine, and nothing else:
#  - /mnt/sbxfs and /mnt/wrenn are temp dirs; /mnt/sbxfs is mounted first
#    (local backend, fresh data dir), as tools/setup.sh mounts it;
#  - HOME is a temp dir holding the user's files the recipes name:
#    ~/project/, ~/app.tar (with app.py), ~/data.bin;
#  - sbxfs, sbx and sbxfs-server come first in PATH as the built ones;
#    sbxfs-server runs on a fresh data dir and a free port (--port 0), and
#    http://127.0.0.1:8642 in the recipe becomes that port, read when the
#    line runs (a recipe that uses the server before it listens fails).
# Everything is destroyed afterwards, also on failure: sandboxes (through
# the mounts, then through a local mount of each data dir), mounts, the
# server.
set -u
BIN=$(readlink -f "$1")
SBX=$(readlink -f "$2")
SERVER=$(readlink -f "$3")
README=$(readlink -f "$4")

base=${SBXFS_TEST_TMP:-/tmp}
mkdir -p "$base"
T=$(mktemp -d "$base/sbxfs-doc-XXXXXX") || exit 1
pass=0 fail=0
lpid=

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() {
	fail=$((fail + 1)); echo "FAIL - $1"
	[ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/       /'
	return 0
}
wait_for() { # SECONDS CMD...
	local n=$(($1 * 10)) i
	shift
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
mounted() { mountpoint -q "$1"; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# Destroy the sandboxes of data dir $1 through a local mount of it.
sweep_data() {
	local d=$1 m=$T/sweep p e
	[ -n "$(ls -A "$d/sandboxes" 2>/dev/null)" ] || return 0
	mkdir -p "$m"
	"$BIN" -f "local:$d" "$m" >"$T/sweep.log" 2>&1 &
	p=$!
	if wait_for 10 mounted "$m"; then
		for e in "$m"/*; do
			[ -d "$e" ] && [ ! -L "$e" ] || continue
			echo "# destroying leftover $(basename "$e")"
			timeout 60 rmdir "$e" 2>/dev/null
		done
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
	fi
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
}

# sbxfs processes serving mount point $1
sbxfs_pids() {
	local p
	for p in $(pgrep -x sbxfs); do
		tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" |
			grep -qF -- " $1 " && echo "$p"
	done
}

unmount() { # MOUNT: destroy what is in it, unmount, end its sbxfs
	local m=$1 e p ps
	mounted "$m" || return 0
	for e in "$m"/*; do
		[ -d "$e" ] && [ ! -L "$e" ] || continue
		timeout 60 rmdir "$e" 2>/dev/null
	done
	ps=$(sbxfs_pids "$m")
	fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"
	for p in $ps; do
		wait_for 10 gone "$p" || kill -KILL "$p" 2>/dev/null
	done
}

cleanup() {
	local p
	trap - EXIT INT TERM HUP
	unmount "$T/mnt-sbxfs"
	unmount "$T/mnt-wrenn"
	if [ -n "$lpid" ]; then
		kill "$lpid" 2>/dev/null
		wait "$lpid" 2>/dev/null
	fi
	for p in $(pgrep -f -- "sbxfs-server .*--data $T/server( |\$)"); do
		kill -TERM "$p" 2>/dev/null
		wait_for 10 gone "$p" || kill -KILL "$p" 2>/dev/null
	done
	sweep_data "$T/data"
	sweep_data "$T/server"
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

# ---- the user's files and commands ------------------------------------
H=$T/home
mkdir -p "$H/project/src" "$T/app" "$T/bin"
echo 'print("project main")' >"$H/project/src/main.py"
echo 'a project' >"$H/project/README"
echo 'print("hello from app.py")' >"$T/app/app.py"
tar -C "$T/app" -cf "$H/app.tar" app.py
head -c 1048576 /dev/urandom >"$H/data.bin"
sum=$(sha256sum <"$H/data.bin" | cut -d' ' -f1)

ln -s "$BIN" "$T/bin/sbxfs"
ln -s "$SBX" "$T/bin/sbx"
# sbxfs-server on a private data dir and a free port; the port is written
# to $T/port before the "listening" line is passed on
cat >"$T/bin/sbxfs-server" <<EOF
#!/bin/sh
for a; do
	[ "\$a" = --print-key ] && exec "$SERVER" --data "$T/server" "\$@"
done
"$SERVER" --data "$T/server" --port 0 "\$@" | while IFS= read -r l; do
	case \$l in
	"listening on "*) echo "\${l##*:}" >"$T/port.tmp" &&
		mv "$T/port.tmp" "$T/port" ;;
	esac
	printf '%s\n' "\$l"
done
EOF
chmod +x "$T/bin/sbxfs-server"

# ---- the recipes: code lines of a README section ----------------------
# (indented by 4, as Markdown code; comment-only lines skipped)
section() {
	awk -v want="$1" '
		/^## / { cur = substr($0, 4); next }
		cur == want && /^    / {
			l = substr($0, 5)
			if (l ~ /^[ \t]*#/ || l ~ /^[ \t]*$/) next
			print l
		}' "$README"
}

# Runs the lines of file $1 in one sh, each one's output (stdout and
# stderr) in $2/N.out and its exit status in $2/N.rc; at the end the
# variables named in $3 are written to $2/vars.
run_lines() {
	local lines=$1 out=$2 n=0 script=$2/script.sh l
	mkdir -p "$out"
	: >"$script"
	while IFS= read -r l; do
		n=$((n + 1))
		printf '{\n%s\n} >"%s/%d.out" 2>&1\necho $? >"%s/%d.rc"\n' \
			"$l" "$out" "$n" "$out" "$n" >>"$script"
	done <"$lines"
	for v in $3; do
		printf 'echo "%s=${%s-unset}" >>"%s/vars"\n' "$v" "$v" "$out" \
			>>"$script"
	done
	(cd "$T" && HOME=$H PATH=$T/bin:$PATH SBX_MOUNT=$T/mnt-sbxfs \
		XDG_STATE_HOME=$T/state timeout 600 sh "$script" </dev/null)
}

# Reports each line; $2/N.out and .rc as left by run_lines
report() { # LINESFILE OUTDIR SECTION (LINESFILE.orig: as in the README)
	local n=0 l rc
	while IFS= read -r l; do
		n=$((n + 1))
		rc=$(cat "$2/$n.rc" 2>/dev/null || echo 'not run')
		if [ "$rc" = 0 ]; then
			ok "$3: $l"
		else
			ko "$3: $l" "exit status $rc; output:
$(head -c 1500 "$2/$n.out" 2>/dev/null)"
		fi
	done <"$1.orig"
}

# out_of PATTERN OUTDIR: the output of the first line matching PATTERN
out_of() {
	local n
	n=$(grep -nF -- "$1" "$LINES" | head -1 | cut -d: -f1)
	[ -n "$n" ] && cat "$2/$n.out" 2>/dev/null
}
# expect NAME PATTERN-OF-LINE OUTDIR TEST...: checks a line's output when
# the README has such a line
expect() {
	local name=$1 pat=$2 dir=$3 o
	shift 3
	grep -qF -- "$pat" "$LINES" || return 0
	o=$(out_of "$pat" "$dir")
	if "$@" "$o"; then ok "$name"; else ko "$name" "output: $o"; fi
}
has() { case $2 in *"$1"*) return 0 ;; esac; return 1; }
last_is() { [ "$(printf '%s\n' "$2" | tail -1)" = "$1" ]; }

# ---- Shell recipes, on a mount like tools/setup.sh's ---------------------
LINES=$T/shell.lines
section "Shell recipes" >"$LINES.orig"
sed "s|/mnt/sbxfs|$T/mnt-sbxfs|g" "$LINES.orig" >"$LINES"
if [ ! -s "$LINES" ]; then
	ko "README has a Shell recipes section with code"
else
	mkdir -p "$T/mnt-sbxfs" "$T/data"
	"$BIN" -f -o poll=1 "local:$T/data" "$T/mnt-sbxfs" \
		>"$T/sbxfs.log" 2>&1 &
	lpid=$!
	if ! wait_for 10 mounted "$T/mnt-sbxfs"; then
		ko "mount local at /mnt/sbxfs" "$(cat "$T/sbxfs.log")"
	else
		run_lines "$LINES" "$T/out-shell" code
		report "$LINES" "$T/out-shell" recipes
		O=$T/out-shell
		expect "recipes: os-release is Debian's" os-release "$O" \
			has 'Debian GNU/Linux 12'
		expect "recipes: exec prints uname" "box/exec" "$O" has Linux
		expect "recipes: ls -l shows the upload and app.py" \
			"ls -l box/fs/root" "$O" sh -c \
			'case $0 in *project*app.py*|*app.py*project*) ;;
			 *) exit 1 ;; esac'
		expect "recipes: the job printed app.py's line" \
			"box/proc/run1/stdout" "$O" has "hello from app.py"
		if grep -qF 'code=$(cat box/proc/run1/wait)' "$LINES"; then
			grep -qx 'code=0' "$O/vars" &&
				ok "recipes: the job's exit code is 0" ||
				ko "recipes: the job's exit code is 0" \
					"$(cat "$O/vars")"
		fi
		expect "recipes: sbx run exits with the command's code (7)" \
			"exit 7'; echo \$?" "$O" last_is 7
		expect "recipes: stdin forwarded whole (sha256)" \
			"sha256sum <" "$O" has "$sum"
		if grep -q 'rmdir box box2' "$LINES"; then
			# templates/ and .tags/ are the mount's own
			left=$(find "$T/mnt-sbxfs" -mindepth 1 -maxdepth 1 \
				-type d ! -name templates ! -name .tags)
			[ -z "$left" ] &&
				ok "recipes: no sandbox left after rmdir" ||
				ko "recipes: no sandbox left after rmdir" "$left"
		fi
	fi
fi

# ---- Wrenn, against a private sbxfs-server -----------------------------
LINES=$T/wrenn.lines
section "Wrenn" >"$LINES.orig"
sed -e "s|/mnt/wrenn|$T/mnt-wrenn|g" \
	-e "s|http://127.0.0.1:8642|http://127.0.0.1:\$(cat $T/port)|g" \
	"$LINES.orig" >"$LINES"
if [ ! -s "$LINES" ]; then
	ko "README has a Wrenn section with code"
else
	run_lines "$LINES" "$T/out-wrenn" WRENN_API_KEY
	report "$LINES" "$T/out-wrenn" wrenn
	O=$T/out-wrenn
	expect "wrenn: the new capsule is running" "head -1 box1/status" \
		"$O" last_is running
	key=$(cat "$T/server/server-key" 2>/dev/null)
	if [ -n "$key" ]; then
		grep -qx "WRENN_API_KEY=$key" "$O/vars" &&
			ok "wrenn: --print-key gave the server's key" ||
			ko "wrenn: --print-key gave the server's key"
		grep -rqF -- "$key" "$O"/*.out &&
			ko "wrenn: the key is printed by no recipe line" ||
			ok "wrenn: the key is printed by no recipe line"
	fi
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
