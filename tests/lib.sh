# tests/lib.sh - helpers shared by the shell tests (sourced, not run).
#
# Counting: ok and nok print one line each and count; summary prints the
# last line, "N passed, N failed", and returns 1 when something failed.
# check runs a command bounded by $HANG seconds with its output in
# $T/out and $T/err ($T: the test's temporary directory).  now, since and
# lt time things in seconds with fractions.

pass=0
fail=0
: "${HANG:=60}"	# `timeout` of a checked command: beyond this it hung

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

summary() {
	echo "$pass passed, $fail failed"
	[ "$fail" = 0 ]
}
