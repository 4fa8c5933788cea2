#!/bin/bash
# bench-cwsandbox.sh - sbxfs on the cwsandbox backend beside a raw gRPC
# client (Node grpc-js, the wire tests' client) of the same private
# sbxfs-server --api cwsandbox, in one run (a script, not a timed test):
#   - cp of a 256 MiB file into the mount (above the 32 MiB unary cap: one
#     StreamExec `cat >` + rename) vs raw StreamExec `cat >` with the same
#     bytes on stdin, and raw WriteFile of 32 MiB;
#   - cat of it back through the mount, cold (StreamExec `cat`) vs raw
#     StreamExec `cat`, and raw ReadFile of 32 MiB;
#   - ls -l of a 10,000-entry directory through the mount (one listing
#     command) vs the raw Exec of the same `find -printf`;
#   - tar x of 1,000 small files into the mount (TAR_N=N for fewer);
#   - exec first byte: MOUNT/box/exec vs raw StreamExec (median of 7).
#
#   tools/bench-cwsandbox.sh [BUILD_DIR]     (default build/ in the clone)
#
# Needs root, node, and the grpc-js modules that tests/grpc/grpc_test.sh
# installs into BUILD_DIR/tests/grpc/node (run the grpc suite once).
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
export SBXFS_BIN=${SBXFS_BIN:-$build/src/sbxfs}
export SBXFS_SERVER_BIN=${SBXFS_SERVER_BIN:-$build/tools/sbxfs-server/sbxfs-server}
mods=$build/tests/grpc/node/node_modules
[ -d "$mods/@grpc/grpc-js" ] || {
	echo "bench-cwsandbox.sh: no $mods; run the grpc suite first" >&2
	exit 2
}

if [ -z "${SBXFS_SERVER_PORT:-}" ]; then
	exec "$src/tools/with-server.sh" --api cwsandbox -- "$0" "$@"
fi

T=$(mktemp -d "${SBXFS_TEST_TMP:-/tmp}/sbxfs-bc-XXXXXX") || exit 2
M=$T/mnt
mkdir "$M"
fpid=
cleanup() {
	trap - EXIT INT TERM
	cd /
	if mountpoint -q "$M"; then
		[ -d "$M/box" ] && timeout 60 rmdir "$M/box" 2>/dev/null
		fusermount3 -u "$M" 2>/dev/null || fusermount3 -uz "$M"
	fi
	[ -n "$fpid" ] && { kill "$fpid" 2>/dev/null; wait "$fpid"; }
	rm -rf --one-file-system "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

"$SBXFS_BIN" -f "$SBXFS_TEST_SOURCE" "$M" >"$T/sbxfs.log" 2>&1 &
fpid=$!
for _ in $(seq 100); do mountpoint -q "$M" && break; sleep 0.1; done
mountpoint -q "$M" || { cat "$T/sbxfs.log"; exit 1; }
mkdir "$M/box" || exit 1
id=
for f in "$M"/*; do	# the platform ID: the symlink to box
	[ -L "$f" ] && [ "$(readlink "$f")" = box ] && id=${f##*/}
done

# the raw client: one node process per measurement, printing seconds
raw() {
	GRPC_TEST_MODULES=$mods ID=$id node -e '
const path = require("path"), m = process.env.GRPC_TEST_MODULES;
const grpc = require(path.join(m, "@grpc/grpc-js"));
const pl = require(path.join(m, "@grpc/proto-loader"));
const pkg = grpc.loadPackageDefinition(pl.loadSync(process.argv[1],
	{ keepCase: true, defaults: true, oneofs: true, longs: String,
	  enums: String })).coreweave.sandbox.v1;
const c = new pkg.SandboxService(
	process.env.SBXFS_SERVER_URL.replace("http://", ""),
	grpc.credentials.createInsecure(),
	{ "grpc.max_receive_message_length": 100 << 20,
	  "grpc.max_send_message_length": 100 << 20 });
const md = new grpc.Metadata();
md.add("authorization", "Bearer " + process.env.CWSANDBOX_API_KEY);
const id = process.env.ID, what = process.argv[2];
const u = (n, r) => new Promise((a, b) => c[n](r, md, (e, v) => e ? b(e) : a(v)));
function sx(cmd, stdinBytes, firstByte) {
	return new Promise(res => {
		const s = c.StreamExec(md);
		let n = 0;
		const t0 = process.hrtime.bigint();
		s.on("data", async d => {
			if (d.ready && stdinBytes) {
				const buf = Buffer.alloc(65536, 97);
				for (let o = 0; o < stdinBytes; o += 65536)
					if (!s.write({ stdin: buf }))
						await new Promise(r => s.once("drain", r));
				s.write({ close: {} }); s.end();
			}
			if (d.output) {
				n += d.output.data.length;
				if (firstByte) { res(Number(process.hrtime.bigint() - t0) / 1e9); s.cancel(); }
			}
		});
		s.on("error", () => {});
		s.on("status", () => res(Number(process.hrtime.bigint() - t0) / 1e9));
		s.write({ init: { sandbox_id: id, command: cmd } });
		if (!stdinBytes) s.end();
	});
}
(async () => {
	const t0 = process.hrtime.bigint();
	let t;
	if (what === "write256") t = await sx(["sh", "-c", "cat > /tmp/raw.bin"], 256 << 20);
	else if (what === "read256") t = await sx(["cat", "/tmp/raw.bin"]);
	else if (what === "first") t = await sx(["echo", "x"], 0, true);
	else if (what === "wf32") { await u("WriteFile", { sandbox_id: id, path: "/tmp/raw32", content: Buffer.alloc(32 << 20, 98) }); }
	else if (what === "rf32") { await u("ReadFile", { sandbox_id: id, path: "/tmp/raw32" }); }
	else if (what === "ls") { await u("Exec", { sandbox_id: id, max_output_bytes: 64 << 20, command: ["find", "-H", "/tmp/many", "-mindepth", "1", "-maxdepth", "1", "-printf", "%m %y %s %A@ %T@ %C@ %U %G %n %i %f\\0"] }); }
	if (t === undefined) t = Number(process.hrtime.bigint() - t0) / 1e9;
	console.log(t.toFixed(3));
	process.exit(0);
})();' "$src/api/cwsandbox/sandbox.proto" "$1"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "== cwsandbox: sbxfs mount vs raw gRPC client, same sbxfs-server"
head -c $((256 << 20)) /dev/urandom >"$T/big"
t0=$(now); cp "$T/big" "$M/box/fs/tmp/big"; t1=$(now)
echo "write 256 MiB: mount cp $(secs "$t0" "$t1") s;" \
	"raw StreamExec cat> $(raw write256) s; raw WriteFile 32 MiB $(raw wf32) s"
t0=$(now); cat "$M/box/fs/tmp/big" >"$T/back"; t1=$(now)
cmp -s "$T/big" "$T/back" || echo "  (content differs!)"
echo "read 256 MiB: mount cat cold $(secs "$t0" "$t1") s;" \
	"raw StreamExec cat $(raw read256) s; raw ReadFile 32 MiB $(raw rf32) s"
rm -f "$T/back" "$T/big"

mkdir "$M/box/proc/mk"
echo 'mkdir -p /tmp/many && cd /tmp/many && i=0; while [ $i -lt 10000 ]; do : > f$i; i=$((i + 1)); done' >"$M/box/proc/mk/cmd"
cat "$M/box/proc/mk/wait" >/dev/null
rmdir "$M/box/proc/mk"
t0=$(now); n=$(ls -l "$M/box/fs/tmp/many" | grep -c '^-'); t1=$(now)
echo "ls -l of $n entries: mount cold $(secs "$t0" "$t1") s;" \
	"raw Exec of the listing $(raw ls) s"

tn=${TAR_N:-1000}
mkdir "$T/small"
for i in $(seq "$tn"); do echo "file $i" >"$T/small/f$i"; done
tar -C "$T" -cf "$T/small.tar" small
mkdir "$M/box/fs/tmp/x"
t0=$(now); tar -C "$M/box/fs/tmp/x" -xf "$T/small.tar"; t1=$(now)
echo "tar x of $tn small files: mount $(secs "$t0" "$t1") s"

for _ in 1 2 3 4 5 6 7; do
	t0=$(now)
	exec 3<>"$M/box/exec"
	echo 'echo x' >&3
	head -c1 <&3 >/dev/null
	t1=$(now)
	exec 3<&-
	secs "$t0" "$t1"
done | median >"$T/m1"
for _ in 1 2 3 4 5 6 7; do raw first; done | median >"$T/m2"
echo "exec first byte (median of 7): mount $(cat "$T/m1") s;" \
	"raw StreamExec $(cat "$T/m2") s (node start not counted)"
