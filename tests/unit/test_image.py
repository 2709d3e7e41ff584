"""Pure helpers of harness.guest.image: no downloads, no QEMU."""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.guest import image
from harness.guest.image import (
    CpioEntry,
    KernelSource,
    compute_digest,
    extract_pvh_vmlinux,
    find_magic,
    has_pvh_note,
    image_inputs,
    module_name,
    parse_modinfo_depends,
    parse_modules_dep,
    resolve_module_order,
    write_newc,
)


def make_elf(notes: list[tuple[bytes, int, bytes]]) -> bytes:
    """A minimal 64-bit LE ELF with one PT_NOTE segment holding ``notes``."""
    blob = b""
    for name, ntype, desc in notes:
        n = name + b"\x00"
        blob += struct.pack("<III", len(n), len(desc), ntype)
        blob += n + b"\x00" * (-len(n) % 4) + desc + b"\x00" * (-len(desc) % 4)
    phoff = 64
    note_off = phoff + 56
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\x00" * 9
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, phoff, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(blob), len(blob), 4)
    return ehdr + phdr + blob


PVH_ELF = make_elf([(b"Linux", 1, b"x"), (b"Xen", 18, b"\x00\x10\x00\x01")])


def test_find_magic_offsets_and_limit() -> None:
    data = b"ab\x1f\x8b\x08cd\x1f\x8b\x08"
    assert find_magic(data, b"\x1f\x8b\x08") == [2, 7]
    assert find_magic(data, b"\x1f\x8b\x08", limit=1) == [2]
    assert find_magic(b"nothing", b"\x02\x21\x4c\x18") == []


def test_pvh_note_detection() -> None:
    assert has_pvh_note(PVH_ELF)
    assert not has_pvh_note(make_elf([(b"Xen", 17, b"")]))
    assert not has_pvh_note(make_elf([(b"Linux", 18, b"")]))
    assert not has_pvh_note(b"MZ not an elf")


@pytest.mark.parametrize("fmt", ["gzip", "xz"])
def test_extract_pvh_vmlinux_from_synthetic_bzimage(fmt: str) -> None:
    payload = gzip.compress(PVH_ELF) if fmt == "gzip" else lzma.compress(PVH_ELF)
    # A decoy magic before the real stream and trailing garbage after it, like a bzImage.
    bz = b"MZ" + b"\x00" * 100 + b"\x1f\x8b\x08junk" + payload + b"\xde\xad\xbe\xef" * 8
    assert extract_pvh_vmlinux(bz) == PVH_ELF


def test_extract_rejects_elf_without_pvh() -> None:
    bz = b"MZ" + gzip.compress(make_elf([(b"Linux", 1, b"x")])) + b"tail"
    assert extract_pvh_vmlinux(bz) is None


def test_module_name_normalises() -> None:
    assert module_name("kernel/drivers/net/virtio_net.ko") == "virtio_net"
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("x/net_failover.ko.zst") == "net_failover"


def test_parse_modules_dep_and_modinfo() -> None:
    dep = (
        "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz "
        "kernel/net/core/failover.ko.xz\n"
        "kernel/net/core/failover.ko.xz:\n"
    )
    parsed = parse_modules_dep(dep)
    assert parsed["virtio_net"] == (
        "kernel/drivers/net/virtio_net.ko.xz",
        ["net_failover", "failover"],
    )
    assert parsed["failover"][1] == []
    ko = b"\x00license=GPL\x00depends=virtio_ring,virtio,net_failover\x00name=virtio_net\x00"
    assert parse_modinfo_depends(ko) == ["virtio_ring", "virtio", "net_failover"]
    assert parse_modinfo_depends(b"\x00depends=\x00name=virtio_ring\x00") == []


DEPS = {
    "virtio": ["virtio_ring"],
    "virtio_ring": [],
    "virtio_pci_modern_dev": [],
    "virtio_pci_legacy_dev": [],
    "virtio_pci": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"],
    "virtio_console": ["virtio", "virtio_ring"],
    "virtio_blk": ["virtio", "virtio_ring"],
    "failover": [],
    "net_failover": ["failover"],
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
}


def test_module_order_puts_dependencies_first() -> None:
    order = resolve_module_order(image.GUEST_MODULES, DEPS.get)
    assert sorted(order) == sorted(DEPS)
    for i, name in enumerate(order):
        assert all(d in order[:i] for d in DEPS[name]), (name, order)
    assert order[:2] == ["virtio_ring", "virtio"]


def test_module_order_skips_builtin_and_missing() -> None:
    deps = {k: v for k, v in DEPS.items() if k != "failover"}
    order = resolve_module_order(image.GUEST_MODULES, deps.get, builtin={"virtio_ring"})
    assert "virtio_ring" not in order
    # net_failover needs the missing failover; virtio_net needs net_failover: both skipped.
    assert "net_failover" not in order and "virtio_net" not in order
    assert "virtio_blk" in order


def test_newc_archive_is_readable_by_cpio_layout() -> None:
    buf = io.BytesIO()
    write_newc(
        [CpioEntry("bin", 0o040755), CpioEntry("init", 0o100755, b"#!/bin/sh\n"),
         CpioEntry("dev/console", 0o020600, rdev=(5, 1))],
        buf,
    )  # fmt: skip
    data = buf.getvalue()
    assert data.startswith(b"070701")
    assert b"init\x00" in data and b"#!/bin/sh\n" in data
    assert b"TRAILER!!!\x00" in data
    assert len(data) % 4 == 0
    # Second header starts 4-aligned after "bin\0": 110-byte header + 4-byte name, padded to 116.
    assert data[116:122] == b"070701"
    if shutil.which("cpio"):
        listing = subprocess.run(
            ["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True, timeout=10
        )
        assert listing.stdout.decode().split() == ["bin", "init", "dev/console"]


def test_digest_is_order_independent_and_sensitive() -> None:
    a = {"kernel": "k1", "workload:writer.c": "w1"}
    b = {"workload:writer.c": "w1", "kernel": "k1"}
    assert compute_digest(a) == compute_digest(b)
    assert compute_digest(a) != compute_digest({**a, "workload:writer.c": "w2"})
    assert len(compute_digest(a)) == 64


def test_digest_changes_when_a_workload_source_changes(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"kernel")
    mod = tmp_path / "virtio.ko"
    mod.write_bytes(b"module")
    src = tmp_path / "writer.c"
    src.write_text("int main(void) { return 0; }\n")
    kernel = KernelSource(vmlinuz, tmp_path, "6.1.0-test", "test")

    def digest() -> str:
        return compute_digest(image_inputs(kernel, [("virtio", mod)], [src], "gcc 12"))

    before = digest()
    assert digest() == before
    src.write_text("int main(void) { return 1; }\n")
    assert digest() != before
    after_src = digest()
    mod.write_bytes(b"module v2")
    assert digest() != after_src


def test_initrd_for_picks_the_fio_part_only_when_fio_runs(tmp_path: Path) -> None:
    from harness.errors import ImageError
    from harness.guest.image import GuestImage, create_shared_disk, initrd_for
    from harness.plan.models import WorkloadSpec

    base = GuestImage(tmp_path / "vmlinux", tmp_path / "initrd.cpio.gz", "d", "6.1", True)
    with_fio = GuestImage(base.kernel, base.initrd, "d", "6.1", True,
                          fio_initrd=tmp_path / "initrd-fio-x.cpio.gz")
    plain = WorkloadSpec.model_validate({"writer": {}, "ping": {}})
    fio = WorkloadSpec.model_validate({"fio": {}})
    assert initrd_for(base, plain) == base.initrd
    assert initrd_for(with_fio, plain) == base.initrd
    assert initrd_for(with_fio, fio) == tmp_path / "initrd-fio-x.cpio.gz"
    with pytest.raises(ImageError, match="fio=True"):
        initrd_for(base, fio)
    assert with_fio.to_dict()["fio_initrd"] == str(tmp_path / "initrd-fio-x.cpio.gz")
    disk = create_shared_disk(tmp_path / "d" / "disk.raw", 16)
    assert disk.stat().st_size == 16 * 1024 * 1024 and disk.stat().st_blocks == 0
