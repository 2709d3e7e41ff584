"""Non-shared storage (``storage: copy``) with real QEMU 10.0 under TCG on the local pair: the
destination's NBD export, the source's blockdev-mirror READY before the RAM migration, the
mirror completed at pre-switchover, and both disks hashed on their hosts afterwards, while fio
in the guest writes to the disk all along."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.guest.image import GuestImage
from harness.hosts.host import Host
from harness.plan.models import HostsConfig
from harness.report.model import cell_page, timeline
from harness.results import store
from harness.results.record import RunRecord
from harness.results.show import run_block
from harness.run import storage
from harness.run.vm import Vm

from .conftest import REPO, matrix, qemu_processes

pytestmark = pytest.mark.integration

DISK_MIB = 64


def _run(tmp_path: Path, hosts: HostsConfig, image: GuestImage, **fields: Any) -> RunRecord:
    from harness.run.runner import run_matrix

    spec = matrix(
        name="st", storage={"mode": "copy", "disk_mib": DISK_MIB},
        limits={"max_time_s": 60, "observe_after_s": 2},
        # fio rewrites random 4 KiB blocks of the disk at 200/s: the mirror chases them
        workload={"writer": {"working_set_mib": 16, "rate_mib_s": 4, "pattern": "text"},
                  "fio": {"rw": "randwrite", "bs": "4k", "rate_iops": 200,
                          "disk_mib": DISK_MIB}},
        migration={"max-bandwidth": "1gbit"}, axes={"feature": ["precopy"]}, **fields)
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out, None, image)
    [rec] = [rec for _, rec in store.iter_runs(out)]
    return rec


def test_copy_storage_moves_the_disk_while_the_guest_writes(tmp_path: Path, hosts: HostsConfig,
                                                            image: GuestImage) -> None:
    rec = _run(tmp_path, hosts, image)
    assert rec.outcome == "completed", rec.error
    assert rec.cell.storage is not None and rec.cell.storage.mode == "copy"
    disk = rec.integrity.disk
    assert disk is not None and disk.verdict == "ok", disk
    assert rec.integrity.verdict == "ok", rec.integrity
    assert disk.differing_chunks == 0 and disk.chunks == DISK_MIB
    assert disk.source_digest == disk.destination_digest
    # fio wrote to it: it is not the blank image the destination started with
    blank = storage.judge(storage.chunk_digests(bytes(DISK_MIB * storage.CHUNK)), [], 0)
    assert disk.source_digest != blank.source_digest
    st = rec.storage
    assert st is not None and st.disk_bytes == DISK_MIB * 1024 * 1024
    assert st.nbd is not None and st.nbd.startswith("127.0.0.1:")
    assert st.sync_s is not None and st.sync_s > 0
    assert st.bytes_at_ready is not None and st.mirrored_bytes is not None
    # the guest kept writing during the RAM migration: the job copied more after READY
    assert st.mirrored_bytes > st.bytes_at_ready, st
    assert st.total_s is not None and rec.metrics.total_time_ms is not None
    assert st.total_s >= st.sync_s + rec.metrics.total_time_ms / 1000 * 0.9
    assert st.switchover_ms is not None
    # the job's state was sampled before READY and through the RAM migration after it
    assert st.job[0].status == "running" and st.job[0].offset < st.job[0].length
    assert len([s for s in st.job if s.status == "ready" and s.t > st.sync_s]) >= 2, st.job
    # libvirt's order, in QEMU's own events and states
    src_events = [e.event for e in rec.events.source]
    assert "BLOCK_JOB_READY" in src_events and "BLOCK_JOB_COMPLETED" in src_events
    assert any(s.status == "pre-switchover" for s in rec.timeline) or any(
        e.event == "MIGRATION" and e.data.get("status") == "pre-switchover"
        for e in rec.events.source)
    assert rec.destination_status_before_cont in ("paused", "prelaunch")
    assert rec.destination_status == "running" and rec.timing_excluded is True
    # fio went on writing on the destination's own disk
    assert any(p.host == "destination" for p in rec.guest.fio)
    # show and the report: the disk sync beside the RAM figures and timeline
    block = run_block(rec)
    assert "disk copy:" in block and "synced in " in block and "mirrored in all" in block, block
    assert "disk check" in block and f"ok: 0 of {DISK_MIB} chunks of 1.0 MiB differ" in block, block
    tl = timeline(rec)
    disk_series = next(x for x in tl.series if x.name == "remaining disk (mirror)")
    assert disk_series.panel == "remaining disk (MiB)" and "remaining RAM (MiB)" in tl.panels
    # on migrate's clock: the samples before READY (if the 10 Hz poll caught one) at negative
    # times, the ones during the RAM migration after 0
    assert len(disk_series.x) == len(st.job) and max(disk_series.x) > 0
    assert min(disk_series.x) == pytest.approx(st.job[0].t - st.sync_s, abs=0.01)
    page = cell_page([rec], [])
    assert any(k == "disk copy" for k, _ in page.info)
    print(f"copy: sync {st.sync_s} s, {st.bytes_at_ready} B at ready, {st.mirrored_bytes} B "
          f"mirrored, switchover {st.switchover_ms} ms, total {st.total_s} s, RAM "
          f"{rec.metrics.total_time_ms} ms, hash {disk.seconds} s")


def test_corrupted_mirror_is_reported_corrupted(tmp_path: Path, hosts: HostsConfig,
                                                image: GuestImage,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Garbage written into the destination's image after the mirror, before the verdict."""
    real = storage.image_digests

    def corrupt_then_hash(host: Host, path: Path, size: int, *rest: Any) -> list[bytes]:
        if path.name == "disk-destination.raw":
            with open(path, "r+b") as f:
                f.seek(5 * storage.CHUNK + 512)
                f.write(b"\xde\xad\xbe\xef" * 128)
        return real(host, path, size, *rest)

    monkeypatch.setattr(storage, "image_digests", corrupt_then_hash)
    rec = _run(tmp_path, hosts, image)
    assert rec.outcome == "completed", rec.error
    disk = rec.integrity.disk
    assert disk is not None and disk.verdict == "corrupted"
    assert disk.differing_chunks == 1 and disk.first_differing == (5,)
    assert rec.integrity.verdict == "corrupted" and rec.status == "corrupted"
    assert "corrupted" in (tmp_path / "st" / "summary.csv").read_text()
    assert "disk: 1 of" in run_block(rec) and "chunks differ" in run_block(rec)


def test_failure_mid_copy_leaves_no_qemu_and_no_nbd_server(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The source QEMU dies at the switchover, with the mirror READY and the destination's NBD
    server up: the run is ``failed``, and nothing listens or runs afterwards (the autouse
    fixture counts QEMUs)."""
    seen: dict[str, str] = {}

    def die(self: storage.DiskCopy, src: Vm) -> None:
        assert self.nbd is not None
        seen["nbd"] = self.nbd
        src.kill()
        raise HarnessError("source QEMU killed by the test")

    monkeypatch.setattr(storage.DiskCopy, "switchover", die)
    rec = _run(tmp_path, hosts, image)
    assert rec.outcome == "failed" and "killed by the test" in (rec.error or ""), rec.error
    assert rec.storage is not None and rec.storage.bytes_at_ready is not None
    # this run's QEMUs are gone (the autouse fixture also counts other tests' QEMUs)
    assert [p for p in qemu_processes() if f"-{rec.cell.id[:6]}," in p] == []
    host, port = seen["nbd"].rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
        pass


def test_copy_storage_moves_the_debian_root_disk_under_redis(
        tmp_path: Path, hosts: HostsConfig) -> None:
    """The Debian guest with redis under load: its root disk (the source's overlay on the
    cached image) mirrored to the destination's blank qcow2 of the same size, the guest running
    on its own copy afterwards, and what both guests see the same (hashed through qemu-img)."""
    from harness.guest.image import ensure_image
    from harness.run.runner import run_matrix

    debian = ensure_image(REPO / "build" / "image", debian=True)  # the cached image
    assert debian.debian_disk is not None
    spec = matrix(
        name="stdeb", storage="copy", guest={"image": "debian", "memory_mib": 512},
        # verify holds the destination paused while both disks are hashed (1.5-3 s here): the
        # clients' TCP retransmissions back off meanwhile, so the first replies after it come
        # seconds later
        limits={"max_time_s": 40, "observe_after_s": 4},
        workload={"writer": None, "redis": {"clients": 2, "rate_ops": 200, "keys": 300,
                                            "value_bytes": 64, "ratio": "1:1"}},
        migration={"max-bandwidth": "1gbit"}, axes={"feature": ["precopy"]})
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out, None, debian)
    [rec] = [rec for _, rec in store.iter_runs(out)]
    assert rec.outcome == "completed", rec.error
    disk, st = rec.integrity.disk, rec.storage
    assert disk is not None and disk.verdict == "ok", disk
    assert st is not None and disk.disk_bytes == st.disk_bytes
    size = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                      str(debian.debian_disk)], capture_output=True,
                                     check=True).stdout)["virtual-size"]
    assert st.disk_bytes == size and disk.chunks == size // storage.CHUNK
    assert disk.source_digest == disk.destination_digest
    # the destination started blank: the mirror wrote the root file system into it
    blank = storage.judge(storage.chunk_digests(bytes(size)), [], 0)
    assert disk.destination_digest != blank.source_digest
    assert st.sync_s is not None and st.bytes_at_ready is not None and st.bytes_at_ready > 0
    assert st.mirrored_bytes is not None and st.switchover_ms is not None
    # each side ran on its own file: the source's overlay, the destination's blank qcow2
    assert rec.vms.source is not None and rec.vms.destination is not None
    src_cmd, dst_cmd = " ".join(rec.vms.source.argv), " ".join(rec.vms.destination.argv)
    assert "root-overlay.qcow2" in src_cmd and "backing.file.filename=" in src_cmd, src_cmd
    assert "root-destination.qcow2" in dst_cmd and "backing" not in dst_cmd, dst_cmd
    # redis answered from the destination after the switch, and kept its dataset
    svc = rec.guest_impact.service
    assert svc is not None and svc.after.completed > 0 and svc.total.errors == 0
    assert svc.dataset is not None and svc.dataset.verdict == "ok", svc.dataset
    assert rec.integrity.verdict == "ok", rec.integrity
    print(f"debian copy: {size >> 20} MiB disk, sync {st.sync_s} s ({st.bytes_at_ready} B at "
          f"ready, {st.mirrored_bytes} B in all), switchover {st.switchover_ms} ms, total "
          f"{st.total_s} s, RAM {rec.metrics.total_time_ms} ms, hash {disk.seconds} s, boot "
          f"{rec.boot_s} s, redis max gap {svc.max_gap.ms if svc.max_gap else None} ms")
