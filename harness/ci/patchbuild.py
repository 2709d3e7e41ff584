"""QEMU from a source tree plus patches, built on each host over the :class:`Host` interface.

A side of ``migbench compare`` may be ``src:TREE[+PATCH...]``: a QEMU source tree on this machine
and mbox (``git format-patch``) or plain diff files applied in order with ``patch -p1``. The tree is
packed (``.git`` and build folders left out), copied to the host, patched, configured with
``--target-list=x86_64-softmmu --prefix=...`` plus extra flags, built and installed::

    <cache>/<key>/install/bin/qemu-system-x86_64   the binary
    <cache>/<key>/build.log                        configure + make output, kept
    <cache>/<key>/build.json                       what was built: commit, patches, flags, time

``key`` hashes the source commit (``git rev-parse HEAD``, plus a hash of uncommitted changes; a
content hash for a tree without git), the patches' bytes, the configure flags and the target, so
the same inputs are built once per host and any change rebuilds. ``<cache>`` defaults to
``<host workdir>/qemu-builds``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.digest import sha256_file
from harness.errors import CommandFailed, HarnessError
from harness.hosts.host import Host, make_host, sh_script
from harness.plan.models import HostsConfig, HostSpec, QemuBuild

TARGET = "x86_64-softmmu"
MAX_PATCH_BYTES = 64 << 20  # a whole QEMU release diff is a few MiB
BINARY = "qemu-system-x86_64"
SKIP_DIRS = {".git", "build", ".cache", "__pycache__"}
BUILD_TIMEOUT_S = 4 * 3600.0


@dataclass(frozen=True)
class SourceSpec:
    tree: Path
    patches: tuple[Path, ...] = ()


def parse_source(token: str) -> SourceSpec:
    """``src:TREE[+PATCH...]`` -> SourceSpec (paths expanded and checked).

    :raise HarnessError: a missing tree (or one without ``configure``) or patch file.
    """
    if not token.startswith("src:"):
        raise HarnessError(f"{token!r}: a source side is written src:TREE[+PATCH...]")
    parts = token[4:].split("+")
    tree = Path(os.path.expanduser(parts[0])).resolve()
    if not (tree / "configure").is_file():
        raise HarnessError(f"{token}: {tree} is not a QEMU source tree (no configure script)")
    patches = []
    for p in parts[1:]:
        path = Path(os.path.expanduser(p)).resolve()
        if path.exists() and not path.is_file():  # a FIFO would block the read for ever
            raise HarnessError(f"{token}: patch {path} is not a regular file: give the patch "
                               "file itself")
        if not path.is_file():
            raise HarnessError(f"{token}: patch {path} does not exist")
        if path.stat().st_size > MAX_PATCH_BYTES:
            raise HarnessError(f"{token}: patch {path} is over {MAX_PATCH_BYTES >> 20} MiB: "
                               "is it really a patch file?")
        patches.append(path)
    return SourceSpec(tree, tuple(patches))


def _files(tree: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        # A symlink to a directory is kept as a link (os.walk does not descend into it).
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d not in links)
        for f in sorted([*filenames, *links]):
            out.append(Path(dirpath) / f)
    return out


def content_hash(tree: Path) -> str:
    h = hashlib.sha256()
    for f in _files(tree):
        rel = f.relative_to(tree).as_posix()
        h.update(rel.encode() + b"\0")
        if f.is_symlink():
            h.update(b"L" + os.readlink(f).encode())
        elif f.is_file():
            h.update(f.read_bytes())
        else:  # a FIFO, socket or device in the tree: reading it could block for ever
            h.update(b"S" + str(stat.S_IFMT(f.lstat().st_mode)).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def source_commit(tree: Path) -> str:
    """``git rev-parse HEAD`` (+ ``-dirty-<hash>`` for local changes), else ``content-<hash>``."""
    if (tree / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=30, check=True)
            status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain"],
                                    capture_output=True, text=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError):
            return f"content-{content_hash(tree)}"
        commit = head.stdout.strip()
        if status.stdout.strip():
            return f"{commit}-dirty-{content_hash(tree)}"
        return commit
    return f"content-{content_hash(tree)}"


def patch_hash(patches: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in patches:
        data = p.read_bytes()
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16]


def cache_key(commit: str, patches_hash: str, configure_args: Sequence[str]) -> str:
    ident = json.dumps({"commit": commit, "patches": patches_hash, "target": TARGET,
                        "configure": list(configure_args)}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def pack(tree: Path) -> bytes:
    """The tree as a gzipped tar (without .git and build folders), for copying to a host."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=3) as tar:
        for f in _files(tree):
            tar.add(f, arcname=f.relative_to(tree).as_posix(), recursive=False)
    return buf.getvalue()


# Runs on the build host, in "$1" (the build folder, holding src.tar.gz and patches/): unpack,
# patch, configure, make, install, all output in "$1/build.log". "$2" is make's job count, "$3"
# the configure command as it is shown in the log (already quoted), the rest configure's
# arguments. Values are only ever these parameters: never part of the script's text.
_BUILD_SH = r'''
set -e
dest=$1 jobs=$2 shown=$3
shift 3
exec >"$dest/build.log" 2>&1
mkdir -p -- "$dest/src"
cd -- "$dest/src"
tar -xzf ../src.tar.gz
for p in ../patches/*; do
  [ -e "$p" ] || continue
  printf '== patch -p1 < %s\n' "$p"
  patch -p1 --batch --forward -i "$p"
done
printf '== %s\n' "$shown"
./configure "$@"
printf '== make -j%s\n' "$jobs"
make -j"$jobs"
make install
'''

# What QEMU's configure, make and meson take unquoted: the install prefix lands in makefiles
# and build files, so a folder there holds only these characters.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")


def configure_argv(dest: Path, configure_args: Sequence[str]) -> list[str]:
    """configure's command line for a build in ``dest`` (pure)."""
    return ["./configure", f"--target-list={TARGET}", f"--prefix={dest / 'install'}",
            *configure_args]


def build_argv(dest: Path, configure_args: Sequence[str], jobs: int) -> list[str]:
    """The argv that builds the unpacked sources in ``dest`` on a host (pure): the fixed script
    :data:`_BUILD_SH` with every value as a positional parameter."""
    configure = configure_argv(dest, configure_args)
    return sh_script(_BUILD_SH, str(dest), str(int(jobs)), shlex.join(configure), *configure[1:])


def check_build_dir(where: str, path: Path) -> None:
    """Refuse a build folder that QEMU's build system cannot take as an install prefix.

    :raise HarnessError: a relative path, or one with characters other than letters, digits and
        ``_./+-`` (blanks, quotes, ``$``, backquotes, line breaks ...), naming the fix.
    """
    text = str(path)
    if not _SAFE_PATH.match(text):
        raise HarnessError(f"{where} {text!r}: a QEMU build needs an absolute folder of letters, "
                           "digits and '_./+-' (configure and make take the install prefix "
                           "unquoted): use another folder")


@dataclass(frozen=True)
class BuildResult:
    key: str
    build: QemuBuild
    log: Path  # on the host
    cached: bool
    seconds: float  # build time (of the original build when cached)
    commit: str


def _build_from(host: Host, dest: Path) -> QemuBuild:
    install = dest / "install"
    datadirs = tuple(d for d in (install / "share" / "qemu",) if host.exists(d))
    moduledir = next((d for d in (install / "lib" / "x86_64-linux-gnu" / "qemu",
                                  install / "lib" / "qemu") if host.exists(d)), None)
    return QemuBuild(binary=install / "bin" / BINARY, datadirs=datadirs, moduledir=moduledir)


def build_on_host(host: Host, src: SourceSpec, *, cache: Path | None = None,
                  configure_args: Sequence[str] = (), jobs: int | None = None,
                  log: Callable[[str], None] | None = None,
                  timeout: float = BUILD_TIMEOUT_S) -> BuildResult:
    """Build (or reuse) ``src`` on ``host``.

    The steps: the cache folder and key, a cached build if there is one, else upload the
    packed tree and patches, build, record ``build.json`` and drop the build tree.

    :raise HarnessError: the build failed (the message has the log's tail and its path), or the
        cache folder cannot hold a build (see :func:`check_build_dir`).
    """
    say = log or (lambda s: None)
    folder = _cache_dir(host, cache)
    commit = source_commit(src.tree)
    key = cache_key(commit, patch_hash(src.patches), configure_args)
    dest = folder / key
    build_log = dest / "build.log"
    binary = dest / "install" / "bin" / BINARY
    if host.exists(dest / "build.json") and host.exists(binary):
        say(f"{host.name}: QEMU {key} cached ({binary})")
        return BuildResult(key, _build_from(host, dest), build_log, True,
                           _cached_seconds(host, dest), commit)
    say(f"{host.name}: building QEMU {key} from {src.tree}"
        + (f" + {len(src.patches)} patch(es)" if src.patches else "") + f" (log: {build_log})")
    _upload(host, src, dest)
    t0 = time.monotonic()
    _run_build(host, src, dest, build_argv(dest, configure_args, jobs or os.cpu_count() or 2),
               timeout)
    seconds = round(time.monotonic() - t0, 1)
    if not host.exists(binary):
        raise HarnessError(f"{host.name}: the build of {src.tree} finished without {binary} "
                           f"(log {build_log})")
    _record(host, dest, {
        "key": key, "commit": commit, "tree": str(src.tree),
        "patches": [{"file": str(p), "sha256": sha256_file(p)} for p in src.patches],
        "configure": shlex.join(configure_argv(dest, configure_args)), "target": TARGET,
        "seconds": seconds, "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    host.remove_tree(dest / "src")  # a QEMU build tree is ~1 GB; the log and install stay
    host.run(["rm", "-f", "--", str(dest / "src.tar.gz")], timeout=30, check=False)
    say(f"{host.name}: built QEMU {key} in {seconds:.0f} s")
    return BuildResult(key, _build_from(host, dest), build_log, False, seconds, commit)


def _cache_dir(host: Host, cache: Path | None) -> Path:
    """The build cache on ``host``: ``cache`` (--build-cache) or workdir/qemu-builds, checked."""
    if cache is None:
        cache = host.spec.workdir / "qemu-builds"
        check_build_dir(f"{host.label}: build cache (workdir/qemu-builds)", cache)
    else:
        cache = host.absolute(cache)
        check_build_dir(f"{host.label}: --build-cache", cache)
    return cache


def _cached_seconds(host: Host, dest: Path) -> float:
    """The original build time from a cached build's build.json (0 when unreadable)."""
    try:
        cached = json.loads(host.read_file(dest / "build.json"))
    except (HarnessError, ValueError):
        cached = {}
    return float(cached.get("seconds", 0.0))


def _upload(host: Host, src: SourceSpec, dest: Path) -> None:
    """A fresh ``dest`` holding the packed tree and the numbered patches."""
    host.remove_tree(dest)
    host.mkdir(dest / "patches")
    with tempfile.TemporaryDirectory(prefix="migbench-src-") as tmp:
        tarball = Path(tmp) / "src.tar.gz"
        tarball.write_bytes(pack(src.tree))
        host.put(tarball, dest / "src.tar.gz")
        for i, p in enumerate(src.patches):
            host.put(p, dest / "patches" / f"{i:04d}-{p.name}")


def _run_build(host: Host, src: SourceSpec, dest: Path, argv: list[str], timeout: float) -> None:
    """Run the build script; a failure or timeout raises with the log's last lines."""
    try:
        host.run(argv, timeout=timeout)
    except CommandFailed as exc:
        build_log = dest / "build.log"
        try:
            tail = host.read_file(build_log, 4000).decode(errors="replace")
        except HarnessError:
            tail = ""
        lines = " | ".join(tail.strip().splitlines()[-6:])
        status = "timed out" if exc.exit_code is None else f"exited {exc.exit_code}"
        raise HarnessError(f"{host.name}: QEMU build of {src.tree} {status}; log {build_log}: "
                           f"{lines}") from None


def _record(host: Host, dest: Path, meta: dict[str, Any]) -> None:
    """Write ``dest/build.json`` on the host (what was built, from what, how long it took)."""
    with tempfile.TemporaryDirectory(prefix="migbench-meta-") as tmp:
        f = Path(tmp) / "build.json"
        f.write_text(json.dumps(meta, indent=1) + "\n")
        host.put(f, dest / "build.json")


def build_for_pair(src: SourceSpec, hosts: HostsConfig, *, cache: Path | None = None,
                   configure_args: Sequence[str] = (), pair_name: str | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[str, HostsConfig]:
    """Build ``src`` on both hosts of ``pair_name`` (default: the first pair); return the build
    name and a hosts config whose pair hosts know that build (the rest unchanged)."""
    pair_name = pair_name or next(iter(hosts.pairs))
    pair = hosts.pairs[pair_name]
    results: dict[str, BuildResult] = {}
    with make_host("source", pair.source) as source:
        results["source"] = build_on_host(source, src, cache=cache,
                                          configure_args=configure_args, log=log)
    # One machine, and the build where both hosts look for it: build once.
    if pair.source.same_machine(pair.destination) and (
            cache is not None or pair.source.workdir == pair.destination.workdir):
        results["destination"] = results["source"]
    else:
        with make_host("destination", pair.destination) as dest:
            results["destination"] = build_on_host(dest, src, cache=cache,
                                                   configure_args=configure_args, log=log)
    name = f"src-{results['source'].key[:10]}"

    def with_firmware(spec: HostSpec, build: QemuBuild) -> QemuBuild:
        # A tree built with --disable-install-blobs (or a distribution tarball stripped of
        # firmware) has no BIOS of its own: fall back to the default build's data directories.
        default = hosts.build_for(spec, hosts.default_build)
        extra = tuple(d for d in (default.datadirs if default else ()) if d not in build.datadirs)
        return build.model_copy(update={"datadirs": (*build.datadirs, *extra)})

    new_pair = pair.model_copy(update={
        role: spec.model_copy(update={"qemu": {
            **spec.qemu, name: with_firmware(spec, results[role].build)}})
        for role, spec in (("source", pair.source), ("destination", pair.destination))})
    return name, hosts.model_copy(update={"pairs": {**hosts.pairs, pair_name: new_pair}})
