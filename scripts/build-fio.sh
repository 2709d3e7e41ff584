#!/bin/sh
# Build a lean, static fio for the guest from Debian's source package: no rados/rbd/gluster/rdma/
# http/nfs/pmem engines, no libnuma, statically linked, stripped (about 3 MB; Debian's binary with
# its libraries is about 80 MB). The source is fetched with `apt-get source --download-only` from a
# temporary deb-src list built from the mirror URIs this machine's apt sources already name (no host
# name is written here). Output: $PREFIX/fio-<upstream version>/fio; a second run is a no-op.
set -eu
PREFIX=${1:-build/fio}
SUITE=${FIO_SUITE:-bookworm}
if ls "$PREFIX"/fio-*/fio >/dev/null 2>&1; then
  echo "fio already built: $(ls "$PREFIX"/fio-*/fio | tail -1)"; exit 0
fi
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
. "$(dirname "$0")/private-apt.sh"
private_apt build-fio "$WORK" deb-src "$SUITE"
(cd "$WORK/src" && apt-get $APTOPTS source --download-only fio >/dev/null)
TARBALL=$(ls "$WORK"/src/fio_*.orig.tar.* | head -1)
VERSION=$(basename "$TARBALL" | sed 's/^fio_\(.*\)\.orig\.tar\..*/\1/')
mkdir -p "$WORK/build"
tar -xf "$TARBALL" -C "$WORK/build"
cd "$WORK/build"/fio-*
./configure --build-static --disable-native --disable-numa --disable-rdma --disable-rados \
  --disable-rbd --disable-http --disable-gfapi --disable-libnfs --disable-lex --disable-pmem \
  --disable-xnvme --disable-libzbc --disable-tcmalloc --disable-dfs >"$WORK/configure.log" 2>&1 \
  || { tail -20 "$WORK/configure.log" >&2; exit 1; }
make -j"$(nproc)" fio >"$WORK/make.log" 2>&1 || { tail -30 "$WORK/make.log" >&2; exit 1; }
strip fio
./fio --version
rm -rf "$PREFIX/fio-$VERSION.tmp"; mkdir -p "$PREFIX/fio-$VERSION.tmp"
cp fio "$PREFIX/fio-$VERSION.tmp/fio"
rm -rf "$PREFIX/fio-$VERSION"; mv "$PREFIX/fio-$VERSION.tmp" "$PREFIX/fio-$VERSION"
echo "fio $VERSION built: $PREFIX/fio-$VERSION/fio"
