#!/bin/bash
# grpc_test.sh - wire tests of sbxfs-server --api cwsandbox with an
# independent gRPC client (Node's @grpc/grpc-js + @grpc/proto-loader,
# versions pinned in package-lock.json, installed with `npm ci` into
# MODDIR, never into the source tree).  The server is private (a fresh
# data dir on loopback, tools/with-server.sh) and is stopped and swept
# afterwards even on failure.  Prints "N passed, N failed" last.
#
#   tests/grpc/grpc_test.sh SERVER_BIN MODDIR [SBXFS_BIN]
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
server=$1
moddir=$2
sbxfs=${3:-}

fail() {
	echo "grpc_test.sh: $*" >&2
	echo "0 passed, 1 failed"
	exit 1
}

command -v node >/dev/null || fail "node is not installed"
command -v npm >/dev/null || fail "npm is not installed"
mkdir -p "$moddir" || fail "cannot make $moddir"
# install once per lock file
if ! cmp -s "$here/package-lock.json" "$moddir/package-lock.json" ||
   [ ! -d "$moddir/node_modules/@grpc/grpc-js" ]; then
	cp "$here/package.json" "$here/package-lock.json" "$moddir/" ||
		fail "cannot copy the package files"
	(cd "$moddir" && timeout 300 npm ci --no-audit --no-fund \
		--loglevel=error >&2) || {
		rm -f "$moddir/package-lock.json"
		fail "npm ci failed (is the npm registry reachable?)"
	}
fi

slog=$(mktemp "${SBXFS_TEST_TMP:-/tmp}/sbxfs-grpc-log.XXXXXX") ||
	fail "no temp file"
trap 'rm -f "$slog"' EXIT
args=(--server "$server" --api cwsandbox --server-log "$slog")
[ -n "$sbxfs" ] && args+=(--sbxfs "$sbxfs")
GRPC_TEST_MODULES=$moddir/node_modules \
	"$src/tools/with-server.sh" "${args[@]}" -- \
	node "$here/wire.js" | tee "$slog.out"
rc=${PIPESTATUS[0]}
# under ASan/UBSan the server reports at exit (after its SIGTERM): a
# report in its log is one more failure
if grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$slog"; then
	grep -E -A20 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$slog" |
		head -60
	last=$(tail -1 "$slog.out")
	p=${last%% passed*}
	f=${last#*passed, }
	f=${f%% failed*}
	case $p$f in *[!0-9]*|'') p=0; f=0 ;; esac
	echo "sanitizer report from sbxfs-server"
	echo "$p passed, $((f + 1)) failed"
	rc=1
fi
rm -f "$slog.out"
exit "$rc"
