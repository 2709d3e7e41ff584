#!/bin/sh
# Install QEMU 10.0 from Debian's bookworm-backports into a private prefix, leaving the system
# QEMU (7.2 on Debian 12) in place. The backports suite is added for this download only, with the
# mirror URIs that this machine's own apt sources already name (no host name is written here).
set -eu
PREFIX=${1:-build/qemu-10.0}
PKGS="qemu-system-x86 qemu-system-common qemu-system-data seabios"
if [ -x "$PREFIX/usr/bin/qemu-system-x86_64" ] && \
   "$PREFIX/usr/bin/qemu-system-x86_64" --version 2>/dev/null | grep -q "version 10\."; then
  echo "QEMU 10.0 already in $PREFIX"; exit 0
fi
APTDIR=$(mktemp -d)
trap 'rm -rf "$APTDIR"' EXIT
mkdir -p "$APTDIR/debs"
. "$(dirname "$0")/private-apt.sh"
private_apt install-qemu10 "$APTDIR" deb bookworm-backports
(cd "$APTDIR/debs" && apt-get $APTOPTS download $PKGS)
rm -rf "$PREFIX.tmp"; mkdir -p "$PREFIX.tmp"
for deb in "$APTDIR"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX.tmp"; done
rm -rf "$PREFIX"; mv "$PREFIX.tmp" "$PREFIX"
missing=$(ldd "$PREFIX/usr/bin/qemu-system-x86_64" | awk '/not found/{print $1}')
[ -z "$missing" ] || { echo "install-qemu10: missing libraries: $missing" >&2; exit 1; }
"$PREFIX/usr/bin/qemu-system-x86_64" --version | head -1
