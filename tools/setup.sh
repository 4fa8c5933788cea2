#!/bin/bash
# setup.sh - one command from a fresh Debian 12 clone (as root): install the
# dependencies, build, install sbxfs to /usr/local, mount the local default
# at /mnt/sbxfs and say what to try.
#
#   tools/setup.sh               all of the above
#   tools/setup.sh --deps-only   only install the Debian packages (CI)
#
# Environment: SBXFS_MNT (mount point, default /mnt/sbxfs), SBXFS_SOURCE
# (default: local, data in /var/lib/sbxfs), SBXFS_BUILD (build dir, default
# build/ in the clone).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
mnt=${SBXFS_MNT:-/mnt/sbxfs}
build=${SBXFS_BUILD:-$src/build}
source=${SBXFS_SOURCE:-local}

# Build: meson, ninja, pkg-config, gcc + the libraries sbxfs links.
# Run: fuse3 (fusermount3, /dev/fuse).  Tests: criterion, and the tools
# the tests drive (diff, tar, mount/umount; curl, jq and python3 for the
# sbxfs-server wire tests; libnghttp2 + protobuf-c for its gRPC side and
# the cwsandbox backend; node + npm for the gRPC wire tests' client;
# man-db, systemd (systemd-analyze, the unit dir) and bash-completion for
# the installed man pages, units and completion and tests/system; clang
# and its runtime (libFuzzer) for tests/fuzz).
deps=(
	meson ninja-build pkg-config gcc libc6-dev
	libfuse3-dev fuse3 libcurl4-openssl-dev libcjson-dev libwebsockets-dev
	libcriterion-dev
	coreutils diffutils tar mount util-linux procps curl ca-certificates
	jq python3
	libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler nodejs
	libseccomp-dev mmdebstrap
	man-db systemd bash-completion
	clang libclang-rt-14-dev
)

install_deps() {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y -o Dpkg::Options::=--force-confold "${deps[@]}"
	# Debian's nodejs comes without npm (a NodeSource nodejs has it)
	command -v npm >/dev/null ||
		apt-get install -y -o Dpkg::Options::=--force-confold npm
}

if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (it installs packages and mounts)" >&2
	exit 1
fi

install_deps
[ "${1:-}" = --deps-only ] && exit 0

# FUSE needs /dev/fuse; load the module where it is not built in.
[ -e /dev/fuse ] || modprobe fuse || true

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$src"
fi
ninja -C "$build"
meson install -C "$build" --no-rebuild

# The root image of local sandboxes (Debian 12 from Debian's packages),
# built once; a rerun after a failure resumes with what was downloaded.
if [ "$source" = local ] || [ "${source#local:}" != "$source" ]; then
	if ! "$src/tools/mkimage.sh"; then
		echo "setup.sh: the root image of local sandboxes could not be" \
			"built (see above); run tools/setup.sh again to retry" >&2
		exit 1
	fi
fi

mkdir -p "$mnt"
if awk -v m="$mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then
	echo "sbxfs: $mnt is already mounted; left as it is"
else
	# daemonizes like sshfs; local sandboxes live in /var/lib/sbxfs
	/usr/local/bin/sbxfs "$source" "$mnt"
	for _ in $(seq 50); do
		awk -v m="$mnt" '$2 == m { f = 1 } END { exit !f }' \
			/proc/mounts && break
		sleep 0.2
	done
	awk -v m="$mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts || {
		echo "setup.sh: $mnt did not appear in /proc/mounts" >&2
		exit 1
	}
fi

cat <<EOF

$(/usr/local/bin/sbxfs --version 2>/dev/null | head -1) is mounted at $mnt ($source).
Try:

  cd $mnt
  mkdir box1 && head -1 box1/status          # running
  echo hello > box1/fs/tmp/hi && cat box1/fs/tmp/hi
  cp -r /usr/share/doc/bash box1/fs/root/ && diff -r /usr/share/doc/bash box1/fs/root/bash
  echo pause > box1/ctl && head -1 box1/status   # paused
  echo resume > box1/ctl
  cat box1/ctl                                # the verbs
  echo 'snapshot snap1' > box1/ctl; echo 'new box2 template=snap1' > ctl
  rmdir box1 box2                             # destroy

Unmount with: fusermount3 -u $mnt   (sandboxes keep running; a new mount shows them)
Run the tests with: tools/test.sh
EOF
