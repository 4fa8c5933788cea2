#!/bin/sh
# run.sh - build the libFuzzer targets with clang and run each for a
# bounded time on its corpus; prints "N passed, N failed" (one per target).
#
#   tests/fuzz/run.sh [BUILDDIR]     BUILDDIR: where binaries and the
#                                    scratch corpus go (default: a temp dir)
#   FUZZ_SECS=20                     seconds per target
#   tests/fuzz/run.sh --merge        fold new inputs into tests/fuzz/corpus/
#
# The kept corpus (tests/fuzz/corpus/TARGET/) is only read by a run: new
# inputs go to a scratch dir, so tests never change the source tree.
# Exit 77 (meson: skipped) when clang or libFuzzer is missing.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
merge=
if [ "${1:-}" = --merge ]; then merge=1; shift; fi
out=${1:-$(mktemp -d /tmp/sbxfs-fuzz.XXXXXX)}
secs=${FUZZ_SECS:-20}
cc=${FUZZ_CC:-clang}
mkdir -p "$out" || exit 1

if ! command -v "$cc" >/dev/null 2>&1; then
	echo "run.sh: $cc not found (tools/setup.sh installs clang)" >&2
	exit 77
fi
flags="-g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -I$src
	$(pkg-config --cflags fuse3 libcjson libcurl)"
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n)
	{ (void)d; (void)n; return 0; }' |
	$cc -x c -fsanitize=fuzzer -o "$out/probe" - 2>/dev/null; then
	echo "run.sh: $cc cannot link libFuzzer (apt-get install" \
		"libclang-rt-14-dev)" >&2
	exit 77
fi

# target: sources and libraries
build() {
	name=$1
	shift
	# shellcheck disable=SC2086
	$cc $flags -o "$out/fuzz_$name" "$src/tests/fuzz/fuzz_$name.c" "$@"
}

pass=0
fail=0
for t in ctl kv wrenn_err; do
	case $t in
	ctl|kv) set -- "$src/fs/util.c" $(pkg-config --libs fuse3) ;;
	wrenn_err) set -- "$src/api/wrenn/errmap.c" \
		$(pkg-config --libs libcjson libcurl) ;;
	esac
	if ! build "$t" "$@" 2>"$out/$t.build.log"; then
		echo "fuzz $t: build FAILED" >&2
		cat "$out/$t.build.log" >&2
		fail=$((fail + 1))
		continue
	fi
	seeds=$src/tests/fuzz/corpus/$t
	scratch=$out/corpus-$t
	mkdir -p "$scratch"
	if [ -n "$merge" ]; then
		"$out/fuzz_$t" -merge=1 "$seeds" "$scratch" \
			>"$out/$t.log" 2>&1
		echo "fuzz $t: merged into $seeds" >&2
	fi
	if "$out/fuzz_$t" -max_total_time="$secs" -timeout=10 \
		-rss_limit_mb=1024 -artifact_prefix="$out/$t-" \
		-print_final_stats=1 "$scratch" "$seeds" >"$out/$t.log" 2>&1; then
		echo "fuzz $t: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' \
			"$out/$t.log" | sed 's/.*: //') runs in ${secs} s)" >&2
		pass=$((pass + 1))
	else
		echo "fuzz $t: FAILED; input in $out/$t-*; log:" >&2
		tail -40 "$out/$t.log" >&2
		fail=$((fail + 1))
	fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
