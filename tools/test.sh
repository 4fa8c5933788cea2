#!/bin/bash
# test.sh - build sbxfs twice (plain, and ASan+UBSan) and run every test
# suite in both; the last line is "N passed, N failed" (criterion tests,
# summed); exit status 0 only when nothing failed.
#
#   tools/test.sh                 everything (unit, contract, mount)
#   tools/test.sh --suite mount   one suite (repeatable)
#   tools/test.sh --no-asan       plain build only
#   tools/test.sh --sweep DIR     only clean up what tests left under DIR
#
# Environment: SBXFS_BUILD, SBXFS_BUILD_ASAN (build dirs, default build/
# and build-asan/ in the clone), SBXFS_TEST_TMP (where mount tests make
# their temp dirs; default a fresh /tmp/sbxfs-test.XXXXXX, swept at exit).
# Needs root for the mount tests (FUSE mounts, namespaces, cgroups).
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
build=${SBXFS_BUILD:-$src/build}
asan=${SBXFS_BUILD_ASAN:-$src/build-asan}
suites=()
do_asan=1

# Clean up after mount tests: FUSE mounts under DIR, processes of the local
# sandboxes whose data dirs are under DIR (thawed first: a frozen task does
# not die), other mounts under DIR, then DIR itself.
sweep() {
	local base=$1 d pid cg cgs=() i found mp
	[ -n "$base" ] && [ -d "$base" ] || return 0
	base=$(cd "$base" && pwd -P)
	awk -v b="$base/" 'index($2, b) == 1 && $3 ~ /^fuse/ { print $2 }' \
		/proc/mounts | sort -r | while read -r mp; do
		echo "sweep: unmounting stale test mount $mp" >&2
		fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp"
	done
	for i in 1 2 3 4 5 6 7 8 9 10; do
		found=
		for d in /proc/[0-9]*; do
			pid=${d#/proc/}
			[ "$pid" = $$ ] && continue
			# a sandbox process: its root mount names the data dir
			awk -v b="$base/" '$5 == "/" && index($0, b) { f = 1 }
				END { exit !f }' "$d/mountinfo" 2>/dev/null ||
				continue
			cg=$(sed -n 's/^[0-9]*:freezer://p' "$d/cgroup" \
				2>/dev/null)
			if [ -n "$cg" ] && [ "$cg" != / ]; then
				echo THAWED >"/sys/fs/cgroup/freezer$cg/freezer.state" \
					2>/dev/null
				cgs+=("$cg")
			fi
			kill -9 "$pid" 2>/dev/null && found=1
		done
		[ -z "$found" ] && break
		[ "$i" = 1 ] && echo "sweep: killed leftover sandbox processes" >&2
		sleep 0.2
	done
	for cg in "${cgs[@]}"; do
		rmdir "/sys/fs/cgroup/freezer$cg" 2>/dev/null
	done
	awk -v b="$base/" 'index($2, b) == 1 { print $2 }' /proc/mounts |
		sort -r | while read -r mp; do
		umount -l "$mp" 2>/dev/null
	done
	if awk -v b="$base/" 'index($2, b) == 1 { f = 1 } END { exit !f }' \
		/proc/mounts; then
		echo "sweep: mounts remain under $base; not removing it" >&2
		return 1
	fi
	rm -rf --one-file-system "$base"
}

while [ $# -gt 0 ]; do
	case $1 in
	--suite) suites+=(--suite "$2"); shift ;;
	--no-asan) do_asan= ;;
	--sweep) sweep "$2"; exit ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

if [ -z "${SBXFS_TEST_TMP:-}" ]; then
	SBXFS_TEST_TMP=$(mktemp -d /tmp/sbxfs-test.XXXXXX) || exit 1
	own_tmp=1
else
	mkdir -p "$SBXFS_TEST_TMP" || exit 1
	own_tmp=
fi
export SBXFS_TEST_TMP
cleanup() {
	if [ -n "$own_tmp" ]; then
		sweep "$SBXFS_TEST_TMP"
	else
		# leave the dir to its owner, but never leave mounts behind
		awk -v b="$SBXFS_TEST_TMP/" \
			'index($2, b) == 1 && $3 ~ /^fuse/ { print $2 }' \
			/proc/mounts | sort -r | while read -r mp; do
			fusermount3 -uz "$mp" 2>/dev/null
		done
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$(id -u)" != 0 ]; then
	echo "test.sh: warning: not root; mount tests will fail" >&2
fi

passed=0
failed=0

# Sum criterion's per-executable "Synthesis" lines from a meson test log
# (or a script's own "N passed, N failed" line).  An executable without one (timeout, crash before the summary, or not a
# criterion program) counts as one test, by its result; one whose exit
# status is nonzero though no test failed (e.g. a sanitizer report at exit,
# a teardown that failed) counts one failure.
count_log() {
	local log=$1 p f
	read -r p f < <(awk '
		function flush() {
			if (name == "") return
			ok = (result == "exit status 0")
			if (plain && !syn)
				syn = 1
			if (syn) {
				P += sp; F += sf
				if (!ok && sf == 0) {
					F++
					printf "  %s: %s, though no test " \
					    "failed\n", name, result > "/dev/stderr"
				}
			} else if (ok) {
				P++
			} else {
				F++
				printf "  %s: %s, no criterion summary\n",
				    name, result > "/dev/stderr"
			}
			name = ""
		}
		/^=+ [0-9]+\/[0-9]+ =+$/ {
			flush(); syn = plain = 0; result = ""
		}
		/^test: / { name = $0; sub(/^test: +/, "", name) }
		/^result: / { sub(/^result: +/, ""); result = $0 }
		# a non-criterion test program may print the plain summary
		/^[0-9]+ passed, [0-9]+ failed/ && !syn {
			split($0, w, /[ ,]+/)
			sp = w[1] + 0; sf = w[3] + 0; plain = 1
		}
		/Synthesis: Tested:/ {
			line = $0
			gsub(/\033\[[0-9;]*m/, "", line)
			sp = sf = 0
			if (match(line, /Passing: [0-9]+/))
				sp = substr(line, RSTART + 9, RLENGTH - 9) + 0
			if (match(line, /Failing: [0-9]+/))
				sf = substr(line, RSTART + 9, RLENGTH - 9) + 0
			syn = 1
		}
		END { flush(); print P + 0, F + 0 }
	' "$log")
	passed=$((passed + p))
	failed=$((failed + f))
	echo "== $log: $p passed, $f failed" >&2
}

# configure DIR [meson options...]; build it; run the suites.
run_build() {
	local dir=$1 label=$2
	shift 2
	echo "== [$label] configure and build in $dir" >&2
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$src" "$@" >&2 || {
			echo "== [$label] meson setup FAILED" >&2
			failed=$((failed + 1)); return
		}
	fi
	ninja -C "$dir" >&2 || {
		echo "== [$label] build FAILED" >&2
		failed=$((failed + 1)); return
	}
	echo "== [$label] meson test ${suites[*]}" >&2
	rm -f "$dir/meson-logs/testlog.txt"
	meson test -C "$dir" --no-rebuild --print-errorlogs \
		${MESON_TEST_ARGS:-} "${suites[@]}" >&2
	if [ -f "$dir/meson-logs/testlog.txt" ]; then
		count_log "$dir/meson-logs/testlog.txt"
	else
		echo "== [$label] no test log" >&2
		failed=$((failed + 1))
	fi
}

# Local sandboxes need the root image (tools/mkimage.sh, built once into
# the system data dir, which test data dirs fall back to).
if [ "$(id -u)" = 0 ] && ! "$src/tools/mkimage.sh" >&2; then
	echo "== the root image could not be built; local sandbox tests" \
		"will fail" >&2
fi

run_build "$build" plain
if [ -n "$do_asan" ]; then
	# Sanitizer reports abort (so they fail the test); the program
	# under test inherits these through the test's environment.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
	# criterion itself leaks a little at exit: not ours to report
	mkdir -p "$asan"
	printf 'leak:libcriterion.so\n' >"$asan/lsan.supp"
	export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$asan/lsan.supp:print_suppressions=0}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
	run_build "$asan" asan+ubsan -Db_sanitize=address,undefined \
		-Db_lundef=false
fi

# clean up before the summary, so that it stays the last line
trap - EXIT
cleanup
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
