#!/bin/bash
# mkimage.sh - build the default root image of local sandboxes: a Debian 12
# (bookworm) root filesystem made from Debian's packages with mmdebstrap.
#
#   tools/mkimage.sh [IMAGEDIR]     default /var/lib/sbxfs/images/debian-12
#
# IMAGEDIR/root/ is the tree (owned by uid 0 on disk; every sandbox sees it
# through an idmapped, read-only mount, so it is never changed), and
# IMAGEDIR/meta.json is written last: an image without it is unfinished.
# A rerun after a failure starts the tree again but reuses the packages
# already downloaded (IMAGEDIR.cache/).  Needs root and network access to
# the Debian mirror that apt uses.  Environment: SBXFS_MIRROR (default
# http://deb.debian.org/debian), SBXFS_IMAGE_PACKAGES (extra packages,
# comma separated).
set -eu

dir=${1:-/var/lib/sbxfs/images/debian-12}
mirror=${SBXFS_MIRROR:-http://deb.debian.org/debian}
# what a code sandbox is expected to have; minbase brings sh, coreutils,
# findutils, grep, sed, tar, gzip, bash, diffutils
pkgs=python3,ca-certificates,curl,procps,findutils,grep,sed,tar,gzip,bzip2,xz-utils,less,file,iproute2,netbase
[ -n "${SBXFS_IMAGE_PACKAGES:-}" ] && pkgs="$pkgs,$SBXFS_IMAGE_PACKAGES"

if [ -f "$dir/meta.json" ] && [ -d "$dir/root" ]; then
	echo "mkimage: $dir is already built"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "mkimage: run as root (the image's files belong to root)" >&2
	exit 1
fi
if ! command -v mmdebstrap >/dev/null; then
	echo "mkimage: mmdebstrap is missing (apt-get install mmdebstrap)" >&2
	exit 1
fi

mkdir -p "$(dirname "$dir")" "$dir.cache"
chmod 0755 "$(dirname "$dir")"
rm -rf --one-file-system "$dir.tmp"
mkdir -p "$dir.tmp"
echo "mkimage: building a Debian 12 root filesystem in $dir (about a" \
	"minute on a good network; packages: minbase + $pkgs)"
# The package cache lives beside the image so a rerun downloads nothing
# twice; it is emptied out of the tree itself before the image is sealed.
if ! mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
	--setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
	--setup-hook="sync-in $dir.cache /var/cache/apt/archives/" \
	--customize-hook="sync-out /var/cache/apt/archives $dir.cache" \
	--customize-hook='echo sandbox > "$1/etc/hostname"' \
	--customize-hook='printf "127.0.0.1 localhost\n::1 localhost\n" > "$1/etc/hosts"' \
	--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
	bookworm "$dir.tmp/root" "$mirror"; then
	echo "mkimage: building the image failed (see above); run" \
		"'tools/mkimage.sh $dir' again to retry (downloads are kept)" >&2
	exit 1
fi
# mount points the sandbox init needs
mkdir -p "$dir.tmp/root/proc" "$dir.tmp/root/sys" "$dir.tmp/root/dev" \
	"$dir.tmp/root/tmp" "$dir.tmp/root/root"
chmod 1777 "$dir.tmp/root/tmp"
chmod 0755 "$dir.tmp/root"
printf '{"name":"debian-12","suite":"bookworm","built":%s,"packages":"%s"}\n' \
	"$(date +%s)" "$pkgs" >"$dir.tmp/meta.json"
rm -rf --one-file-system "$dir"
mv "$dir.tmp" "$dir"
du -sh "$dir/root" | awk -v d="$dir" '{ print "mkimage: done: " d " (" $1 ")" }'
