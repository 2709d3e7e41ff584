"""The Debian guest: a minimal Debian 12 root filesystem with real services, in a qcow2.

``migbench image build --distro debian`` (and a matrix with ``guest: {image: debian}``) builds,
once per set of inputs, ``<cache>/debian-<digest16>/``:

* ``root.qcow2``: ``mmdebstrap --variant=essential`` of bookworm with redis-server, memcached,
  stress-ng and fio, from the apt sources this machine uses (its ``/etc/apt/sources.list`` and
  ``sources.list.d/*.list|*.sources``: no other download), plus busybox, our writer, udpecho and
  fiomon, ``workloads/init.sh`` as ``/etc/migbench/init`` and ``workloads/debian/services.sh`` as
  its hook. ``mkfs.ext4 -d`` makes the file system without mounting anything, ``qemu-img
  convert`` the qcow2. No systemd: the init starts only what the kernel command line names;
* ``initrd-debian.cpio.gz``: the stage-1 initramfs (busybox, the virtio and ext4 modules of the kernel
  the initramfs guest boots, ``workloads/debian/stage1.sh``) that mounts ``/dev/vda`` and
  switches to the root disk.

The guest never writes to ``root.qcow2``: each run boots a qcow2 overlay on it
(:func:`overlay_argv`), which both QEMUs of a run open (shared storage). The digest covers the
sources, busybox, the kernel and its modules, gcc, the package list with the candidate version of
each package apt would install, the apt sources and :data:`DEBIAN_FORMAT_VERSION`.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.digest import sha256_file
from harness.errors import ImageError
from harness.guest import image as base
from harness.guest.buildlog import quiet as _quiet

DEBIAN_FORMAT_VERSION = 1
"""Bump when the recipe changes in a way the inputs do not show."""

SUITE = "bookworm"
PACKAGES: tuple[str, ...] = ("redis-server", "memcached", "stress-ng", "fio")
ROOT_MODULES: tuple[str, ...] = (*base.GUEST_MODULES, "crc16", "mbcache", "jbd2",
                                 "crc32c_generic", "ext4")
"""The initramfs guest's modules plus what mounting an ext4 root needs (built in or loaded)."""

DEBIAN_DIR = base.WORKLOADS_DIR / "debian"
APT_SOURCES = Path("/etc/apt")
DISK_NAME = "root.qcow2"
# Not initrd.cpio.gz: a host that takes the image keeps every file in one folder (placement).
INITRD_NAME = "initrd-debian.cpio.gz"
ROOT_DEVICE_ID = "mbroot0"
# Not needed in a guest that only runs services; dropped to keep the image small.
_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


@dataclass(frozen=True)
class DebianImage:
    """A built Debian guest: the root disk (read-only base of every run) and stage-1 initrd."""

    disk: Path
    initrd: Path
    digest: str
    disk_bytes: int  # the qcow2 file's size
    build_s: float | None = None  # None when it came from the cache


def apt_sources(etc_apt: Path = APT_SOURCES) -> list[Path]:
    """The apt source files this machine uses, in apt's order (what mmdebstrap is given)."""
    found = [etc_apt / "sources.list"] if (etc_apt / "sources.list").is_file() else []
    found += sorted(p for p in (etc_apt / "sources.list.d").glob("*")
                    if p.is_file() and p.suffix in (".list", ".sources"))
    return [p for p in found if p.stat().st_size > 0]


def parse_candidates(policy: str) -> dict[str, str]:
    """Package -> candidate version from ``apt-cache policy P...`` output (pure)."""
    out: dict[str, str] = {}
    pkg = None
    for line in policy.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            pkg = line[:-1]
        elif pkg and line.strip().startswith("Candidate:"):
            out[pkg] = line.split(":", 1)[1].strip()
    return out


def _candidates() -> dict[str, str]:
    cp = base._run(["apt-cache", "policy", *PACKAGES], what="apt-cache policy",
                   fix="run on Debian 12 with apt lists (apt-get update)", timeout=60)
    found = parse_candidates(cp.stdout.decode("utf-8", "replace"))
    missing = [p for p in PACKAGES if found.get(p, "(none)") == "(none)"]
    if missing:
        raise ImageError(f"apt has no candidate for {', '.join(missing)}: run apt-get update "
                         "with the Debian 12 (bookworm) main archive in the apt sources")
    return found


def _sources() -> list[Path]:
    return [DEBIAN_DIR / "stage1.sh", DEBIAN_DIR / "services.sh", base.WORKLOADS_DIR / "init.sh",
            *sorted(base.WORKLOADS_DIR.glob("*.c")), *sorted(base.FIO_SOURCES_DIR.glob("*.c"))]


def debian_inputs(src: base.KernelSource, modules: Sequence[tuple[str, Path]],
                  sources: Sequence[Path], gcc: str, candidates: dict[str, str],
                  apt: Sequence[Path]) -> dict[str, str]:
    """Every input of the Debian image as label -> hash/version."""
    parts = base.image_inputs(src, modules, [], gcc)
    parts["format"] = f"debian-{DEBIAN_FORMAT_VERSION}"
    parts["suite"] = SUITE
    for p in sources:
        parts[f"source:{p.parent.name}/{p.name}"] = sha256_file(p)
    for pkg, version in sorted(candidates.items()):
        parts[f"package:{pkg}"] = version
    for p in apt:
        parts[f"apt:{p}"] = sha256_file(p)
    return parts


def mkfs_size_mib(used_bytes: int) -> int:
    """The ext4 size for a tree of ``used_bytes``: a third more and 128 MiB of room, in whole
    64 MiB steps (pure). Free blocks cost nothing in the qcow2."""
    mib = used_bytes * 4 // 3 // (1024 * 1024) + 128
    return (mib + 63) // 64 * 64


def _tree_bytes(root: Path) -> int:
    total = 0
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def overlay_argv(qemu_img: str, base_disk: Path, overlay: Path) -> list[str]:
    """``qemu-img create`` of a run's overlay on the cached root disk (pure)."""
    return [qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base_disk), "-F", "qcow2",
            str(overlay)]


def blank_argv(qemu_img: str, path: Path, size: int) -> list[str]:
    """``qemu-img create`` of a blank qcow2 of ``size`` bytes, no backing file (pure): the
    destination's root disk under ``storage: copy``, which the mirror fills."""
    return [qemu_img, "create", "-q", "-f", "qcow2", str(path), str(size)]


def virtual_size_argv(qemu_img: str, disk: Path) -> list[str]:
    """``qemu-img info`` as JSON (its ``virtual-size``: what the guest sees) (pure)."""
    return [qemu_img, "info", "-U", "--output=json", str(disk)]


def root_drive_args(overlay: Path, base_disk: Path | None) -> list[str]:
    """QEMU arguments for the root disk: the run's overlay over this host's copy of the base.

    The backing file is named per side, so each host opens its own copy of the base image while
    both open the one overlay (shared storage; QEMU keeps the incoming side's image inactive
    until the switchover). ``base_disk`` None: a qcow2 without backing (the destination's own
    disk under ``storage: copy``)."""
    node = (f"driver=qcow2,node-name={ROOT_DEVICE_ID},cache.direct=off,"
            f"file.driver=file,file.filename={overlay}")
    if base_disk is not None:
        node += (",backing.driver=qcow2,backing.file.driver=file,"
                 f"backing.file.filename={base_disk}")
    return ["-blockdev", node,
            "-device", f"virtio-blk-pci,drive={ROOT_DEVICE_ID},serial={ROOT_DEVICE_ID}"]


# --------------------------------------------------------------------------- build


def _compile(sources: Sequence[Path], out: Path) -> None:
    for c in (p for p in sources if p.suffix == ".c"):
        base._run(["gcc", "-O2", "-static", "-pthread", "-o", str(out / c.stem), str(c)],
                  what=f"compiling {c.name}",
                  fix=f"fix {c} or install gcc and static libc (libc6-dev)", timeout=300)


def _mmdebstrap(root: Path, apt: Sequence[Path], log: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise ImageError("building the Debian guest needs root (mmdebstrap and mkfs.ext4 -d "
                         "keep the files' owners): run migbench image build --distro debian as "
                         "root")
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap not found: apt-get install mmdebstrap (make setup does)")
    log(f"mmdebstrap {SUITE} with {', '.join(PACKAGES)} from {', '.join(map(str, apt))}")
    argv = ["mmdebstrap", "--quiet", "--variant=essential", "--mode=root", "--format=directory",
            f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt=path-exclude={p}" for p in _EXCLUDE),
            SUITE, str(root), *map(str, apt)]
    base._run(argv, what="mmdebstrap", timeout=1800,
              fix="check the apt sources reach a Debian 12 mirror (apt-get update works)")


def _add_ours(root: Path, sources: Sequence[Path], digest: str) -> None:
    """busybox, the compiled workloads, the init and its hook, in the root tree."""
    bindir = root / "usr" / "bin"
    shutil.copyfile(base.BUSYBOX, bindir / "busybox")
    _compile(sources, bindir)
    etc = root / "etc" / "migbench"
    (etc / "init.d").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base.WORKLOADS_DIR / "init.sh", etc / "init")
    shutil.copyfile(DEBIAN_DIR / "services.sh", etc / "init.d" / "services.sh")
    (root / "etc" / "migbench-image").write_text(digest + "\n")
    for p in (bindir / "busybox", etc / "init", *(bindir / c.stem for c in sources
                                                   if c.suffix == ".c")):
        p.chmod(0o755)


def _disk(root: Path, out: Path, log: Callable[[str], None]) -> None:
    raw = out / "root.raw"
    size = mkfs_size_mib(_tree_bytes(root))
    log(f"mkfs.ext4 -d ({size} MiB) and qemu-img convert to {DISK_NAME}")
    with raw.open("wb") as f:
        f.truncate(size * 1024 * 1024)
    # No journal: nothing in the guest needs one, and every write is migrated disk state.
    base._run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-L", "mbroot",
               "-d", str(root), str(raw)], what="mkfs.ext4 -d",
              fix="install e2fsprogs (1.43 or later) and check free disk space", timeout=600)
    base._run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / DISK_NAME)],
              what="qemu-img convert", fix="install qemu-utils and check free disk space",
              timeout=600)
    raw.unlink()


def _stage1(out: Path, modules: Sequence[tuple[str, Path]], digest: str) -> None:
    files: dict[str, tuple[int, bytes]] = {
        "init": (0o755, (DEBIAN_DIR / "stage1.sh").read_bytes()),
        "bin/busybox": (0o755, base.BUSYBOX.read_bytes()),
        "etc/migbench-image": (0o644, f"{digest}\n".encode()),
    }
    names = []
    for name, path in modules:
        files[f"lib/modules/{name}.ko"] = (0o644, base._read_module(path))
        names.append(f"/lib/modules/{name}.ko")
    files["etc/modules.list"] = (0o644, "".join(n + "\n" for n in names).encode())
    entries = base._initrd_entries(files) + [base.CpioEntry("newroot", 0o040755)]
    buf = io.BytesIO()
    base.write_newc(entries, buf)
    with gzip.GzipFile(out / INITRD_NAME, "wb", compresslevel=6, mtime=0) as gz:
        gz.write(buf.getvalue())


def _cached(d: Path, digest: str) -> DebianImage | None:
    try:
        manifest = json.loads((d / base.MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    disk, initrd = d / DISK_NAME, d / INITRD_NAME
    if not isinstance(manifest, dict) or manifest.get("digest") != digest \
            or not disk.is_file() or not initrd.is_file():
        return None
    return DebianImage(disk=disk, initrd=initrd, digest=digest, disk_bytes=disk.stat().st_size)


def ensure_debian(cache_dir: Path, *, force: bool = False,
                  log: Callable[[str], None] = _quiet) -> DebianImage:
    """The Debian guest for the current inputs, built into ``cache_dir`` when missing.

    :raise ImageError: not root, mmdebstrap or a package missing, a build step failed; the
        message names the fix.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        src = base.find_kernel(cache_dir, log)
        modules = base.guest_modules(src, ROOT_MODULES)
        if "ext4" not in {n for n, _ in modules} and not _builtin(src, "ext4"):
            raise ImageError(f"kernel {src.release} has no ext4 (built in or module): the "
                             "Debian guest's root is ext4")
        sources = _sources()
        apt = apt_sources()
        if not apt:
            raise ImageError(f"no apt sources under {APT_SOURCES}: the Debian guest is built "
                             "from the sources this machine uses")
        inputs = debian_inputs(src, modules, sources, base._gcc_version(), _candidates(), apt)
        digest = base.compute_digest(inputs)
        final = cache_dir / f"debian-{digest[:16]}"
        if not force and (img := _cached(final, digest)) is not None:
            return img
        started = time.monotonic()
        log(f"building the Debian guest {digest[:16]} (kernel {src.release})")
        with base.build_folder(cache_dir, f".build-debian-{digest[:16]}-", final,
                               "the Debian guest") as tmp:
            root = tmp / "root"
            _mmdebstrap(root, apt, log)
            _add_ours(root, sources, digest)
            _disk(root, tmp, log)
            shutil.rmtree(root)
            _stage1(tmp, modules, digest)
            build_s = round(time.monotonic() - started, 1)
            manifest = {"digest": digest, "format": DEBIAN_FORMAT_VERSION, "suite": SUITE,
                        "kernel_release": src.release, "build_s": build_s,
                        "modules": [n for n, _ in modules], "inputs": inputs}
            (tmp / base.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            tmp.chmod(0o755)
        img = _cached(final, digest)
        if img is None:
            raise ImageError(f"Debian guest {final} is incomplete after building; remove it")
        log(f"Debian guest ready: {final} ({img.disk_bytes // (1024 * 1024)} MiB, {build_s} s)")
        return DebianImage(disk=img.disk, initrd=img.initrd, digest=digest,
                           disk_bytes=img.disk_bytes, build_s=build_s)


def _builtin(src: base.KernelSource, name: str) -> bool:
    f = src.modules_dir / "modules.builtin"
    return f.is_file() and name in {base.module_name(x) for x in f.read_text().split()}


def qemu_img() -> str:
    """The qemu-img to make overlays with (Debian's qemu-utils)."""
    found = shutil.which("qemu-img")
    if found is None:
        raise ImageError("qemu-img not found: apt-get install qemu-utils")
    return found

