"""``storage: shared | copy``: the matrix option, the cells and records it makes, and the pure
disk comparison (the QMP flow itself is proven by tests/integration/test_storage.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.guest import debian
from harness.hosts.host import LocalHost
from harness.plan.matrix import expand
from harness.plan.models import HostSpec, MatrixSpec
from harness.results.record.model import CellRecord, DiskCheck, Integrity
from harness.run import storage


def _spec(**fields: object) -> MatrixSpec:
    return MatrixSpec.model_validate({"name": "t", **fields})


def test_shared_is_the_default_and_keeps_cell_ids_and_records() -> None:
    plain = expand(_spec(), "10.0")[0]
    shared = expand(_spec(storage="shared"), "10.0")[0]
    assert plain.id == shared.id and "storage" not in plain.to_dict()
    assert CellRecord.model_validate(plain.to_dict()).storage is None
    assert storage.disk_mib(plain) is None


def test_copy_shorthand_sizes_and_cell_record() -> None:
    copy = expand(_spec(storage="copy"), "10.0")[0]
    assert copy.storage.mode == "copy" and copy.id != expand(_spec(), "10.0")[0].id
    assert storage.disk_mib(copy) == storage.DEFAULT_DISK_MIB
    rec = CellRecord.model_validate(json.loads(json.dumps(copy.to_dict())))
    assert rec.storage is not None and rec.storage.mode == "copy" and rec.storage.verify
    fio = {"writer": None, "fio": {"rw": "randwrite", "disk_mib": 128}}
    assert storage.disk_mib(expand(_spec(storage="copy", workload=fio), "10.0")[0]) == 128
    sized = _spec(storage={"mode": "copy", "disk_mib": 64})
    assert storage.disk_mib(expand(sized, "10.0")[0]) == 64


@pytest.mark.parametrize("value, words", [
    ("nfs", ["storage.mode", "shared", "copy"]),
    ({"mode": "copy", "disk_mib": 8}, ["storage.disk_mib", "16"]),
    ({"mode": "copy", "verify": "yes"}, ["storage.verify"]),
    ({"mode": "copy", "speed": 1}, ["storage.speed"]),
])
def test_bad_storage_is_refused_naming_the_key(value: object, words: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        _spec(storage=value)
    for w in words:
        assert w in str(err.value)


def test_copy_takes_the_debian_guest_whose_root_disk_has_its_image_size() -> None:
    cell = expand(_spec(storage="copy", guest={"image": "debian"}, workload={"writer": None}),
                  "10.0")[0]
    assert cell.storage.mode == "copy" and cell.guest.image == "debian"
    with pytest.raises(ValidationError, match=r"storage.disk_mib=64 with guest.image: debian.*"
                                              r"leave disk_mib out"):
        _spec(storage={"mode": "copy", "disk_mib": 64}, guest={"image": "debian"},
              workload={"writer": None})


def test_qcow2_digests_are_of_what_the_guest_sees(tmp_path: Path) -> None:
    """A qcow2 overlay over a qcow2 base is hashed as the raw disk the guest reads (the Debian
    root disk under storage: copy), and the flat copy is removed."""
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    mib = storage.CHUNK
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {mib} 4096", str(base)],
                   check=True, capture_output=True)
    subprocess.run(debian.overlay_argv("qemu-img", base, top), check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0xa5 {3 * mib + 512} 512",
                    str(top)], check=True, capture_output=True)
    raw = bytearray(4 * mib)
    raw[mib:mib + 4096] = b"\x5a" * 4096
    raw[3 * mib + 512:3 * mib + 1024] = b"\xa5" * 512
    host = LocalHost("source", HostSpec())
    assert storage.image_digests(host, top, len(raw), "qcow2") == storage.chunk_digests(bytes(raw))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.qcow2", "top.qcow2"]
    blank = tmp_path / "blank.qcow2"
    subprocess.run(debian.blank_argv("qemu-img", blank, 4 * mib), check=True)
    digests = storage.image_digests(host, blank, 4 * mib, "qcow2")
    assert digests == storage.chunk_digests(bytes(4 * mib))


def test_disk_size_given_twice_must_agree() -> None:
    with pytest.raises(ValidationError, match=r"storage.disk_mib=64 differs from "
                                              r"workload.fio.disk_mib=128"):
        _spec(storage={"mode": "copy", "disk_mib": 64},
              workload={"fio": {"rw": "randwrite", "disk_mib": 128}})


@settings(max_examples=15, deadline=None)  # a subprocess per example
@given(st.binary(max_size=3 * storage.CHUNK + 17))
def test_hash_script_and_python_digests_agree(data: bytes) -> None:
    # the script that runs on the image's host gives the digests the harness compares
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run([sys.executable, "-c", storage.HASH_CHUNKS_PY, f.name],
                             capture_output=True, text=True, check=True).stdout
    assert [bytes.fromhex(x) for x in out.split()] == storage.chunk_digests(data)


def test_judge_finds_the_differing_chunk_and_a_size_mismatch() -> None:
    a = bytearray(4 * storage.CHUNK)
    b = bytearray(a)
    same = storage.judge(storage.chunk_digests(bytes(a)), storage.chunk_digests(bytes(b)), len(a))
    assert same.verdict == "ok" and same.differing_chunks == 0 and same.chunks == 4
    assert same.source_digest == same.destination_digest
    b[2 * storage.CHUNK + 5] = 1
    bad = storage.judge(storage.chunk_digests(bytes(a)), storage.chunk_digests(bytes(b)), len(a))
    assert bad.verdict == "corrupted" and bad.first_differing == (2,)
    short = storage.judge(storage.chunk_digests(bytes(a)), storage.chunk_digests(bytes(a[:-1])),
                          len(a))
    assert short.verdict == "corrupted" and short.first_differing == (3,)


def test_a_corrupted_disk_makes_the_run_corrupted() -> None:
    disk = DiskCheck(verdict="corrupted", differing_chunks=1)
    assert Integrity.judge(disk=disk).verdict == "corrupted"
    assert Integrity.judge(disk=DiskCheck(verdict="ok")).verdict == "ok"
