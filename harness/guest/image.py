"""Guest image build and cache: kernel + initramfs + workloads, content-hashed.

This module owns everything a guest boots from:

* the kernel: the host's ``/boot/vmlinuz-$(uname -r)`` with its modules when readable, else
  Debian's ``linux-image-cloud-amd64`` downloaded with ``apt-get download`` into
  ``<cache>/kernel/``. When the bzImage carries a compressed ELF with a PVH entry note it is
  extracted to ``vmlinux`` so that QEMU boots it directly (skipping the slow decompressor under
  TCG); otherwise the bzImage itself is used;
* the initramfs: busybox, ``workloads/init.sh`` as ``/init``, every ``workloads/*.c`` compiled
  statically to ``/bin/<name>``, and the virtio modules (with their dependencies, in load order)
  listed in ``/etc/modules.list``;
* the cache: ``<cache>/<digest16>/{vmlinux|vmlinuz, initrd.cpio.gz, manifest.json}`` where the
  digest covers every input (sources, busybox, kernel, modules, gcc version and
  :data:`IMAGE_FORMAT_VERSION`). An unchanged image costs only hashing;
* the optional fio part: a lean static fio (``$MIGBENCH_FIO`` or ``--fio PATH``; else built by
  ``scripts/build-fio.sh`` of a checkout into ``<cache>/fio/fio-<ver>/fio``)
  and ``workloads/fio/fiomon.c`` in a second cpio archive. Cpio archives concatenate, so
  ``initrd-fio-<key16>.cpio.gz`` is the base initrd followed by that part; only cells that run fio
  boot it (every extra MB in the initramfs is guest RAM that is migrated too).
  :func:`initrd_for` picks the right file for a workload.

Pure helpers (magic scanning, ELF note parsing, module ordering, cpio writing, digests) are
module-level functions so that they can be tested without downloads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import locations
from harness.digest import sha256_file
from harness.errors import ImageError
from harness.guest.buildlog import quiet as _quiet
from harness.output import write_atomic, write_failure
from harness.plan.models import WorkloadSpec

IMAGE_FORMAT_VERSION = 1
"""Bump when the image layout or build recipe changes in a way the inputs do not show."""

WORKLOADS_DIR = locations.WORKLOADS
FIO_SOURCES_DIR = WORKLOADS_DIR / "fio"
BUSYBOX = Path("/bin/busybox")
DEBIAN_KERNEL_META = "linux-image-cloud-amd64"

GUEST_MODULES: tuple[str, ...] = (
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
)
"""Modules the guest needs, in preferred order; dependencies are pulled in and put first."""

# (format, magic) pairs searched for in a bzImage; LZ4 first: it is what Debian uses.
KERNEL_MAGICS: tuple[tuple[str, bytes], ...] = (
    ("lz4", b"\x02\x21\x4c\x18"),
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd\x37\x7a\x58\x5a\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
)
MAX_CANDIDATES_PER_MAGIC = 16
XEN_ELFNOTE_PHYS32_ENTRY = 18

INITRD_NAME = "initrd.cpio.gz"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class GuestImage:
    """A built guest image: what ``-kernel`` and ``-initrd`` point at."""

    kernel: Path
    initrd: Path
    digest: str
    kernel_release: str
    pvh: bool
    fio_initrd: Path | None = None  # base initrd + fio part; None unless built with fio=True
    # The Debian guest (harness.guest.debian): its root disk and stage-1 initrd; None unless
    # built with debian=True.
    debian_disk: Path | None = None
    debian_initrd: Path | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description for storing with results."""
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "digest": self.digest,
            "kernel_release": self.kernel_release,
            "pvh": self.pvh,
            "fio_initrd": str(self.fio_initrd) if self.fio_initrd else None,
            **({"debian_disk": str(self.debian_disk),
                "debian_initrd": str(self.debian_initrd)} if self.debian_disk else {}),
        }


def initrd_for(image: GuestImage, workload: WorkloadSpec) -> Path:
    """The initrd a guest running ``workload`` boots: with the fio part only when fio runs.

    :raise ImageError: the workload runs fio but the image was built without it.
    """
    if workload.fio is None:
        return image.initrd
    if image.fio_initrd is None:
        raise ImageError(
            "this workload runs fio but the guest image has no fio part; build it with "
            "ensure_image(..., fio=True) (needs `make fio` or network access to a Debian mirror)"
        )
    return image.fio_initrd


@dataclass(frozen=True)
class KernelSource:
    """Where the guest kernel and its modules come from."""

    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<release>
    release: str
    origin: str  # "host" or the Debian package name


# --------------------------------------------------------------------------- pure helpers


def find_magic(data: bytes, magic: bytes, limit: int = MAX_CANDIDATES_PER_MAGIC) -> list[int]:
    """Offsets of ``magic`` in ``data`` (at most ``limit``), in increasing order."""
    found: list[int] = []
    start = 0
    while len(found) < limit:
        i = data.find(magic, start)
        if i < 0:
            break
        found.append(i)
        start = i + 1
    return found


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def _elf_notes(data: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """Yield (name, type, desc) for every note in the PT_NOTE segments of a 64-bit LE ELF."""
    if not is_elf(data) or len(data) < 64 or data[4] != 2 or data[5] != 1:
        return
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for k in range(phnum):
        off = phoff + k * phentsize
        if off + 56 > len(data):
            return
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, min(p_offset + p_filesz, len(data))
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            pos += 12
            name = data[pos : pos + namesz].rstrip(b"\x00")
            pos += (namesz + 3) & ~3
            desc = data[pos : pos + descsz]
            pos += (descsz + 3) & ~3
            yield name, ntype, desc


def has_pvh_note(data: bytes) -> bool:
    """Whether an ELF kernel carries XEN_ELFNOTE_PHYS32_ENTRY (QEMU can boot it via PVH)."""
    return any(
        name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY for name, ntype, _ in _elf_notes(data)
    )


def module_name(path: str | Path) -> str:
    """Canonical module name: basename without ``.ko[.xz|.zst|.gz]``, dashes as underscores."""
    base = Path(path).name
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """Parse ``modules.dep``: name -> (relative path, names of its dependencies)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        out[module_name(path.strip())] = (path.strip(), [module_name(d) for d in rest.split()])
    return out


def parse_modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list from a module's .modinfo strings."""
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [module_name(d) for d in m.group(1).decode("ascii", "replace").split(",") if d]


def resolve_module_order(
    wanted: Sequence[str],
    depends: Callable[[str], Sequence[str] | None],
    builtin: Iterable[str] = (),
) -> list[str]:
    """Loadable modules for ``wanted`` in insmod order (dependencies first).

    ``depends(name)`` returns the dependencies of an available module or ``None`` when the module
    does not exist; missing wanted modules are skipped, built-in ones need no loading. A module
    whose dependency is missing is skipped too (insmod would fail on it).
    """
    built = set(builtin)
    order: list[str] = []
    state: dict[str, bool] = {}  # name -> loadable (False while visiting or unavailable)

    def visit(name: str) -> bool:
        if name in built:
            return True
        if name in state:
            return state[name]
        state[name] = False
        deps = depends(name)
        if deps is None:
            return False
        if all(visit(d) for d in deps):
            state[name] = True
            order.append(name)
        return state[name]

    for w in wanted:
        visit(w)
    return order


def compute_digest(parts: Mapping[str, str]) -> str:
    """sha256 over ``label=value`` lines in sorted label order (values are hashes or versions)."""
    h = hashlib.sha256()
    for label in sorted(parts):
        h.update(f"{label}={parts[label]}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive; ``mode`` includes the file type bits."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> bytes:
    return b"\x00" * ((4 - n % 4) % 4)


def write_newc(entries: Iterable[CpioEntry], out: io.BufferedIOBase | io.BytesIO) -> None:
    """Write a newc ("070701") cpio archive, owned by root, mtime 0 (reproducible)."""
    ino = 1
    for e in [*entries, CpioEntry("TRAILER!!!", 0)]:
        name = e.name.encode() + b"\x00"
        fields = (
            ino if e.name != "TRAILER!!!" else 0,
            e.mode,
            0,  # uid
            0,  # gid
            2 if (e.mode & 0o170000) == 0o040000 else 1,  # nlink
            0,  # mtime
            len(e.data),
            0,  # devmajor
            0,  # devminor
            e.rdev[0],
            e.rdev[1],
            len(name),
            0,  # check
        )
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.write(header + name + _pad4(len(header) + len(name)))
        out.write(e.data + _pad4(len(e.data)))
        ino += 1


# --------------------------------------------------------------------------- subprocesses


def _run(
    argv: Sequence[str],
    *,
    what: str,
    fix: str,
    timeout: float = 120.0,
    cwd: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    try:
        cp = subprocess.run(
            list(argv), cwd=cwd, input=input, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ImageError(f"{what} failed: {argv[0]} not found; {fix}") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what} failed: timed out after {timeout:.0f} s; {fix}") from None
    if check and cp.returncode != 0:
        tail = cp.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = tail[-1] if tail else f"exit code {cp.returncode}"
        raise ImageError(f"{what} failed: {reason}; {fix}")
    return cp


def _decompress(data: bytes, fmt: str) -> bytes | None:
    """Decompress a stream that may be followed by trailing garbage; None if it is not valid."""
    try:
        if fmt == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if fmt == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    except (zlib.error, lzma.LZMAError):
        return None
    tool = {"lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dcq"]}[fmt]
    try:
        # Trailing garbage makes these tools exit non-zero after writing the whole payload.
        cp = subprocess.run(tool, input=data, capture_output=True, timeout=120, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return cp.stdout


def extract_pvh_vmlinux(vmlinuz: bytes) -> bytes | None:
    """The ELF vmlinux with a PVH note embedded in a bzImage, or None."""
    for fmt, magic in KERNEL_MAGICS:
        for off in find_magic(vmlinuz, magic):
            out = _decompress(vmlinuz[off:], fmt)
            if out and is_elf(out) and has_pvh_note(out):
                return out
    return None


# --------------------------------------------------------------------------- kernel


def _host_kernel() -> KernelSource | None:
    release = platform.release()
    vmlinuz = Path(f"/boot/vmlinuz-{release}")
    modules = Path(f"/lib/modules/{release}")
    if vmlinuz.is_file() and os.access(vmlinuz, os.R_OK) and modules.is_dir():
        return KernelSource(vmlinuz, modules, release, "host")
    return None


def _resolve_debian_package() -> str | None:
    try:
        cp = subprocess.run(
            ["apt-cache", "depends", DEBIAN_KERNEL_META],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    m = re.search(rb"Depends:\s*(linux-image-[0-9][^\s]*)", cp.stdout)
    return m.group(1).decode() if m else None


def _extracted_kernel(pkg_dir: Path, origin: str) -> KernelSource | None:
    mods = sorted((pkg_dir / "lib" / "modules").glob("*"))
    if not (pkg_dir / ".complete").exists() or not mods:
        return None
    release = mods[-1].name
    vmlinuz = pkg_dir / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file():
        return None
    return KernelSource(vmlinuz, mods[-1], release, origin)


def _debian_kernel(kernel_dir: Path, log: Callable[[str], None]) -> KernelSource:
    kernel_dir.mkdir(parents=True, exist_ok=True)
    pkg = _resolve_debian_package()
    if pkg is None:
        # Offline or not Debian: reuse whatever was downloaded before.
        for d in sorted(kernel_dir.glob("linux-image-*"), reverse=True):
            src = _extracted_kernel(d, d.name)
            if src:
                log(f"apt-cache unavailable; reusing cached kernel {d.name}")
                return src
        raise ImageError(
            f"cannot resolve {DEBIAN_KERNEL_META} with apt-cache and no kernel is cached in "
            f"{kernel_dir}; run on Debian with apt lists (apt-get update) or make "
            "/boot/vmlinuz-$(uname -r) readable"
        )
    pkg_dir = kernel_dir / pkg
    src = _extracted_kernel(pkg_dir, pkg)
    if src:
        return src
    log(f"downloading {pkg} into {kernel_dir}")
    fix = "run with network access to the Debian mirror (and apt-get update)"
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=kernel_dir) as tmp:
        t = Path(tmp)
        _run(
            ["apt-get", "download", pkg],
            what=f"apt-get download {pkg}",
            fix=fix,
            cwd=t,
            timeout=600,
        )
        debs = sorted(t.glob(f"{pkg}_*.deb"))
        if not debs:
            raise ImageError(f"apt-get download {pkg} produced no .deb in {t}; {fix}")
        x = t / "x"
        _run(
            ["dpkg-deb", "-x", str(debs[0]), str(x)],
            what=f"dpkg-deb -x {debs[0].name}",
            fix="install dpkg and check free disk space",
            timeout=300,
        )
        shutil.copy2(debs[0], x / debs[0].name)
        (x / ".complete").write_text(pkg + "\n")
        if pkg_dir.exists():
            shutil.rmtree(pkg_dir)
        os.rename(x, pkg_dir)
    src = _extracted_kernel(pkg_dir, pkg)
    if src is None:
        raise ImageError(
            f"{pkg} has no boot/vmlinuz-* or lib/modules/*; use another kernel package"
        )
    return src


def find_kernel(cache_dir: Path, log: Callable[[str], None] = _quiet) -> KernelSource:
    """The host kernel when readable, else Debian's cloud kernel (downloaded once)."""
    return _host_kernel() or _debian_kernel(cache_dir / "kernel", log)


# --------------------------------------------------------------------------- modules


def guest_modules(src: KernelSource, wanted: Sequence[str] = GUEST_MODULES
                  ) -> list[tuple[str, Path]]:
    """(name, file) of the ``wanted`` modules to load in the guest, in insmod order."""
    builtin: set[str] = set()
    bfile = src.modules_dir / "modules.builtin"
    if bfile.is_file():
        builtin = {module_name(line) for line in bfile.read_text().split() if line}
    dep_file = src.modules_dir / "modules.dep"
    paths: dict[str, Path] = {}
    deps: dict[str, list[str]] = {}
    if dep_file.is_file():
        for name, (rel, d) in parse_modules_dep(dep_file.read_text()).items():
            paths[name] = src.modules_dir / rel
            deps[name] = d
    else:
        # Debian's package ships no modules.dep (depmod runs in postinst): read .modinfo.
        for root, _dirs, files in os.walk(src.modules_dir / "kernel"):
            for f in files:
                if ".ko" in f:
                    paths.setdefault(module_name(f), Path(root) / f)

    def depends(name: str) -> list[str] | None:
        if name not in paths:
            return None
        if name not in deps:
            deps[name] = parse_modinfo_depends(_read_module(paths[name]))
        return deps[name]

    return [(n, paths[n]) for n in resolve_module_order(wanted, depends, builtin)]


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        cp = _run(
            ["zstd", "-dcq"],
            input=data,
            what=f"zstd -d {path.name}",
            fix="install zstd",
            timeout=60,
        )
        return cp.stdout
    return data


# --------------------------------------------------------------------------- build


def _gcc_version() -> str:
    cp = _run(["gcc", "--version"], what="gcc --version", fix="install gcc", timeout=30)
    return cp.stdout.decode("utf-8", "replace").splitlines()[0].strip()


def _workload_sources() -> list[Path]:
    init = WORKLOADS_DIR / "init.sh"
    if not init.is_file():
        raise ImageError(f"{init} is missing; restore it from git")
    return [init, *sorted(WORKLOADS_DIR.glob("*.c"))]


def image_inputs(
    src: KernelSource, modules: Sequence[tuple[str, Path]], sources: Sequence[Path], gcc: str
) -> dict[str, str]:
    """Every input of an image as label -> hash/version (the digest is computed over this)."""
    if not BUSYBOX.is_file():
        raise ImageError(
            f"{BUSYBOX} is missing; install busybox-static (apt-get install busybox-static)"
        )
    parts = {
        "format": str(IMAGE_FORMAT_VERSION),
        "gcc": gcc,
        "busybox": sha256_file(BUSYBOX),
        "kernel": sha256_file(src.vmlinuz),
        "kernel_release": src.release,
        "modules": ",".join(n for n, _ in modules),
    }
    for p in sources:
        parts[f"workload:{p.name}"] = sha256_file(p)
    for n, p in modules:
        parts[f"module:{n}"] = sha256_file(p)
    return parts


def _kernel_for_boot(src: KernelSource, kernel_dir: Path, log: Callable[[str], None]) -> Path:
    """An uncompressed PVH vmlinux extracted once per vmlinuz (cached), else the vmlinuz."""
    kernel_dir.mkdir(parents=True, exist_ok=True)
    key = sha256_file(src.vmlinuz)[:16]
    cached = kernel_dir / f"vmlinux-{src.release}-{key}"
    nopvh = kernel_dir / f"vmlinux-{src.release}-{key}.nopvh"
    if cached.is_file():
        return cached
    if nopvh.exists():
        return src.vmlinuz
    log(f"extracting vmlinux from {src.vmlinuz}")
    elf = extract_pvh_vmlinux(src.vmlinuz.read_bytes())
    if elf is None:
        log("no PVH-capable ELF inside the bzImage; booting vmlinuz (slower under TCG)")
        nopvh.write_text("")
        return src.vmlinuz
    write_atomic(cached, elf)
    return cached


def _initrd_entries(root_files: Mapping[str, tuple[int, bytes]]) -> list[CpioEntry]:
    dirs = [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "lib",
        "lib/modules",
        "root",
        "usr",
        "usr/bin",
        "usr/sbin",
        "run",
        "mnt",
    ]
    entries = [CpioEntry(d, 0o040755) for d in dirs]
    entries.append(CpioEntry("dev/console", 0o020600, rdev=(5, 1)))
    entries.append(CpioEntry("dev/ttyS0", 0o020660, rdev=(4, 64)))
    entries.append(CpioEntry("dev/null", 0o020666, rdev=(1, 3)))
    for name in sorted(root_files):
        mode, data = root_files[name]
        entries.append(CpioEntry(name, 0o100000 | mode, data))
    return entries


def _build(
    out: Path,
    src: KernelSource,
    modules: Sequence[tuple[str, Path]],
    sources: Sequence[Path],
    kernel_dir: Path,
    inputs: Mapping[str, str],
    digest: str,
    log: Callable[[str], None],
) -> None:
    """Build the image files into ``out`` (a fresh directory)."""
    files: dict[str, tuple[int, bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="migbench-cc-") as cc:
        for c in (p for p in sources if p.suffix == ".c"):
            exe = Path(cc) / c.stem
            _run(
                ["gcc", "-O2", "-static", "-pthread", "-o", str(exe), str(c)],
                what=f"compiling {c.name}",
                fix=f"fix {c} or install gcc and static libc (libc6-dev)",
                timeout=300,
            )
            files[f"bin/{c.stem}"] = (0o755, exe.read_bytes())
    init = next(p for p in sources if p.name == "init.sh")
    files["init"] = (0o755, init.read_bytes())
    files["bin/busybox"] = (0o755, BUSYBOX.read_bytes())
    names = []
    for name, path in modules:
        files[f"lib/modules/{name}.ko"] = (0o644, _read_module(path))
        names.append(f"/lib/modules/{name}.ko")
    files["etc/modules.list"] = (0o644, "".join(n + "\n" for n in names).encode())
    files["etc/migbench-image"] = (0o644, f"{digest}\n".encode())

    buf = io.BytesIO()
    write_newc(_initrd_entries(files), buf)
    with gzip.GzipFile(out / INITRD_NAME, "wb", compresslevel=6, mtime=0) as gz:
        gz.write(buf.getvalue())

    boot = _kernel_for_boot(src, kernel_dir, log)
    pvh = boot != src.vmlinuz
    kname = "vmlinux" if pvh else "vmlinuz"
    try:
        os.link(boot, out / kname)
    except OSError:
        shutil.copyfile(boot, out / kname)
    manifest = {
        "digest": digest,
        "format": IMAGE_FORMAT_VERSION,
        "kernel": kname,
        "kernel_release": src.release,
        "kernel_origin": src.origin,
        "pvh": pvh,
        "modules": [n for n, _ in modules],
        "inputs": dict(inputs),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    out.chmod(0o755)  # mkdtemp made it 0700


# --------------------------------------------------------------------------- fio part


def create_shared_disk(path: Path, size_mib: int) -> Path:
    """A sparse raw disk file of ``size_mib`` for the guest's virtio-blk (both QEMUs open it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    return path


def find_fio(fio_dir: Path | None = None) -> Path | None:
    """The newest cached static fio binary under ``fio_dir`` (``fio-<version>/fio``), or None."""
    found = sorted(p for p in Path(fio_dir or locations.fio_dir()).glob("fio-*/fio") if p.is_file())
    return found[-1] if found else None


def ensure_fio(fio_dir: Path | None = None, log: Callable[[str], None] = _quiet,
               binary: Path | None = None) -> Path:
    """The static fio for the guest: ``binary``, else ``$MIGBENCH_FIO``, else one built earlier
    under ``fio_dir`` (the cache's ``fio/``), else built there once by a checkout's
    ``scripts/build-fio.sh`` (an installed tool has no build script: it asks for a path).

    :raise ImageError: the given fio is not a file, or none could be found or built.
    """
    given = binary or locations.fio_binary()
    if given is not None:
        if not given.is_file():
            raise ImageError(f"fio {given} is not a file; pass --fio PATH (or set "
                             f"{locations.FIO_ENV}) to a static fio binary")
        return given
    fio_dir = Path(fio_dir or locations.fio_dir())
    fio = find_fio(fio_dir)
    if fio is not None:
        return fio
    root = locations.source_checkout()
    if root is None:
        raise ImageError(f"no static fio under {fio_dir}: pass --fio PATH (or set "
                         f"{locations.FIO_ENV}) to one built by scripts/build-fio.sh of the "
                         "source tree")
    log(f"building a static fio into {fio_dir} (scripts/build-fio.sh)")
    _run(
        ["sh", str(root / "scripts" / "build-fio.sh"), str(fio_dir)],
        what="building fio (scripts/build-fio.sh)",
        fix="run `make fio` with network access to a Debian mirror, gcc and make installed",
        timeout=1800,
    )
    fio = find_fio(fio_dir)
    if fio is None:
        raise ImageError(f"scripts/build-fio.sh left no fio-*/fio under {fio_dir}; run `make fio`")
    return fio


def fio_part_inputs(fio: Path, gcc: str) -> dict[str, str]:
    """Inputs of the fio initramfs part (its cache key)."""
    parts = {"format": str(IMAGE_FORMAT_VERSION), "gcc": gcc, "fio": sha256_file(fio)}
    for c in sorted(FIO_SOURCES_DIR.glob("*.c")):
        parts[f"fio-source:{c.name}"] = sha256_file(c)
    return parts


def _fio_part(fio: Path) -> bytes:
    """The fio part: a gzip'd newc archive with /bin/fio and the compiled fio helpers."""
    files: dict[str, tuple[int, bytes]] = {"bin/fio": (0o755, fio.read_bytes())}
    with tempfile.TemporaryDirectory(prefix="migbench-cc-") as cc:
        for c in sorted(FIO_SOURCES_DIR.glob("*.c")):
            exe = Path(cc) / c.stem
            _run(
                ["gcc", "-O2", "-static", "-o", str(exe), str(c)],
                what=f"compiling {c.name}",
                fix=f"fix {c} or install gcc and static libc (libc6-dev)",
                timeout=300,
            )
            files[f"bin/{c.stem}"] = (0o755, exe.read_bytes())
    buf = io.BytesIO()
    write_newc([CpioEntry(n, 0o100000 | m, d) for n, (m, d) in sorted(files.items())], buf)
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)


def _ensure_fio_initrd(img: GuestImage, fio: Path, log: Callable[[str], None]) -> Path:
    key = compute_digest(fio_part_inputs(fio, _gcc_version()))[:16]
    out = img.initrd.parent / f"initrd-fio-{key}.cpio.gz"
    if out.is_file():
        return out
    log(f"adding the fio part ({fio}) to {img.initrd.parent.name}")
    data = img.initrd.read_bytes() + _fio_part(fio)
    write_atomic(out, data)
    return out


def _load(d: Path, manifest: Mapping[str, object]) -> GuestImage:
    return GuestImage(
        kernel=d / str(manifest["kernel"]),
        initrd=d / INITRD_NAME,
        digest=str(manifest["digest"]),
        kernel_release=str(manifest["kernel_release"]),
        pvh=bool(manifest["pvh"]),
    )


def _cached(d: Path, digest: str) -> GuestImage | None:
    try:
        manifest = json.loads((d / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("digest") != digest:
        return None
    img = _load(d, manifest)
    if img.kernel.is_file() and img.initrd.is_file():
        return img
    return None


def ensure_image(
    cache_dir: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = _quiet,
    fio: bool = False,
    fio_dir: Path | None = None,
    fio_binary: Path | None = None,
    debian: bool = False,
) -> GuestImage:
    """Return the guest image for the current inputs, building it into ``cache_dir`` if needed.

    With ``fio=True`` the image also has :attr:`GuestImage.fio_initrd` (the static fio of
    :func:`ensure_fio`); without it, fio is neither built nor required. With ``debian=True`` it
    also has the Debian guest (:func:`harness.guest.debian.ensure_debian`).

    Raises :class:`~harness.errors.ImageError` when the kernel cannot be found or downloaded, a
    workload does not compile, or a tool is missing; the message names the fix.
    """
    img = _ensure_base_image(cache_dir, force=force, log=log)
    if debian:
        from harness.guest.debian import ensure_debian  # it builds on this module

        deb = ensure_debian(cache_dir, force=force, log=log)
        img = dataclasses.replace(img, debian_disk=deb.disk, debian_initrd=deb.initrd)
    if not fio:
        return img
    fio_bin = ensure_fio(fio_dir, log, fio_binary)
    with (Path(cache_dir) / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = _ensure_fio_initrd(img, fio_bin, log)
    return dataclasses.replace(img, fio_initrd=path)


#: Why a write into the image cache fails that a user fixes (not a bug: its traceback helps no one)
_CACHE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@contextlib.contextmanager
def cache_full(cache_dir: Path, what: str) -> Iterator[None]:
    """A build into ``cache_dir`` that fails for want of space or permission mid-way: one line
    naming the folder and the fix (the build's temporary folder is removed by the build).

    :raise ImageError: the write failed with one of :data:`_CACHE_ERRNOS`.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _CACHE_ERRNOS:
            raise
        raise ImageError(str(write_failure(
            cache_dir, what, exc,
            f"or choose another cache (--cache, ${locations.CACHE_ENV})"))) from None


@contextlib.contextmanager
def build_folder(cache_dir: Path, prefix: str, final: Path, what: str) -> Iterator[Path]:
    """A fresh folder in ``cache_dir`` to build ``what`` into, renamed to ``final`` (replacing
    it) when the block ends; removed when it fails, so that no half-built image is ever found.

    :raise ImageError: the cache filled up or turned read-only meanwhile (:func:`cache_full`).
    """
    with cache_full(cache_dir, what):
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir))
        try:
            yield tmp
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _ensure_base_image(
    cache_dir: Path, *, force: bool = False, log: Callable[[str], None] = _quiet
) -> GuestImage:
    cache_dir = Path(cache_dir)
    try:  # the first write into the cache: a read-only or full one ends here, in one line
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_file = (cache_dir / ".lock").open("w")
    except OSError as exc:
        raise ImageError(str(write_failure(
            cache_dir, "the guest image cache", exc,
            f"or choose another (--cache, ${locations.CACHE_ENV})"))) from None
    with lock_file as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        src = find_kernel(cache_dir, log)
        modules = guest_modules(src)
        sources = _workload_sources()
        inputs = image_inputs(src, modules, sources, _gcc_version())
        digest = compute_digest(inputs)
        final = cache_dir / digest[:16]
        if not force:
            img = _cached(final, digest)
            if img is not None:
                return img
        log(f"building guest image {digest[:16]} (kernel {src.release}, {len(modules)} modules)")
        with build_folder(cache_dir, f".build-{digest[:16]}-", final, "the guest image") as tmp:
            _build(tmp, src, modules, sources, cache_dir / "kernel", inputs, digest, log)
        img = _cached(final, digest)
        if img is None:
            raise ImageError(f"image {final} is incomplete after building; remove it and retry")
        log(f"guest image ready: {final}")
        return img
