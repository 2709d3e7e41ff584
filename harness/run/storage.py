"""Non-shared storage (``storage: copy``): the guest's disk copied with the migration, as
libvirt's ``--copy-storage-all`` does it.

Each host has its own disk image of the same size (the destination's blank). Before the RAM
migration the destination exports its image over NBD on its migration address
(``nbd-server-start`` + ``block-export-add``, writable), the source mirrors its disk there
(``blockdev-add`` of an NBD node, ``blockdev-mirror`` with ``sync: full``) and the RAM
migration starts once the job is READY, so the guest's writes go to both disks from then on.
The source runs with ``pause-before-switchover``: at ``pre-switchover`` (the guest stopped)
the ready mirror is cancelled, which on a READY job completes it with the target in sync, its
NBD node is removed and the migration continues; after the migration the destination stops
its NBD server. The order is libvirt's: the destination never runs on a disk the source still
writes to.

The integrity check hashes both images on their own hosts (per MiB, BLAKE2b: only digests
travel) while both guests are paused: the destination is held with ``-S`` until then.

The disk moved is the initramfs guest's data disk (a raw file, fio's), or the Debian guest's
root disk: the source boots a qcow2 overlay on its copy of the cached image, the destination a
blank qcow2 of the image's virtual size (no backing file: the mirror fills all of it), and the
check hashes what the guest sees (``qemu-img convert`` to a sparse raw file beside each image,
hashed, removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.guest.debian import ROOT_DEVICE_ID, blank_argv, virtual_size_argv
from harness.guest.image import GuestImage
from harness.hosts.host import Host
from harness.plan.matrix import Cell
from harness.results.record.model import DiskCheck, MirrorSample, StorageRun
from harness.run.cancel import Stop
from harness.run.sampling.service_run import make_overlay
from harness.run.vm import Vm
from harness.run.workload import DISK_ID

CHUNK = 1024 * 1024
JOB = "mbmirror"  # the source's mirror job
TARGET = "mbmirror-target"  # the source's NBD node, the mirror's target
EXPORT = DISK_ID  # the destination's NBD export name
DEFAULT_DISK_MIB = 256

#: ``python3 -c SCRIPT IMAGE`` on the host that holds the image: one hex BLAKE2b digest per MiB,
#: the same as :func:`chunk_digests` (the image stays; only digests travel).
HASH_CHUNKS_PY = (
    "import hashlib,sys\n"
    "with open(sys.argv[1],'rb') as f:\n"
    "    while True:\n"
    "        b=f.read(1048576)\n"
    "        if not b: break\n"
    "        sys.stdout.write(hashlib.blake2b(b,digest_size=16).hexdigest()+'\\n')\n"
)


def disk_mib(cell: Cell) -> int | None:
    """The size of the disk a ``storage: copy`` cell moves, or None for shared storage (pure)."""
    if cell.storage.mode != "copy":
        return None
    fio = cell.workload.fio
    return cell.storage.disk_mib or (fio.disk_mib if fio is not None else DEFAULT_DISK_MIB)


def chunk_digests(data: bytes) -> list[bytes]:
    """:data:`HASH_CHUNKS_PY`'s digests of ``data`` (for tests and local use)."""
    return [hashlib.blake2b(data[i:i + CHUNK], digest_size=16).digest()
            for i in range(0, len(data), CHUNK)]


def judge(source: list[bytes], destination: list[bytes], disk_bytes: int,
          seconds: float | None = None) -> DiskCheck:
    """The disk check from both sides' chunk digests (pure): ``corrupted`` if any chunk
    differs or the sizes differ."""
    diff = [i for i, (a, b) in enumerate(zip(source, destination)) if a != b]
    diff.extend(range(min(len(source), len(destination)), max(len(source), len(destination))))

    def whole(d: list[bytes]) -> str:
        return hashlib.blake2b(b"".join(d), digest_size=16).hexdigest()

    return DiskCheck(verdict="corrupted" if diff else "ok", disk_bytes=disk_bytes,
                     chunk_bytes=CHUNK, chunks=len(source), differing_chunks=len(diff),
                     first_differing=tuple(diff[:20]), source_digest=whole(source),
                     destination_digest=whole(destination), seconds=seconds)


def image_digests(host: Host, path: Path, size: int, fmt: str = "raw",
                  stop: Stop | None = None) -> list[bytes]:
    """Chunk digests of what a guest sees in the image at ``path``, hashed on ``host`` itself
    (a qcow2 and its backing chain through a sparse raw copy beside it, removed after); both
    commands end at once when ``stop`` is set."""
    timeout = 60 + size / (20 * CHUNK)  # at least 20 MiB/s
    flat = path
    if fmt != "raw":
        flat = path.with_name(path.name + ".flat.raw")
        # -U: the paused QEMUs still hold their images' locks
        host.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path), str(flat)],
                 timeout=timeout, stop=stop)
    try:
        out = host.run([host.python, "-c", HASH_CHUNKS_PY, str(flat)], timeout=timeout,
                       stop=stop)
    finally:
        if flat != path:
            host.run(["rm", "-f", "--", str(flat)], timeout=30, check=False)
    return [bytes.fromhex(line) for line in out.split()]


def create_image(host: Host, path: Path, size: int) -> Path:
    """A sparse raw image of ``size`` bytes at ``path`` on ``host`` (all zeroes)."""
    host.mkdir(path.parent)
    host.run(["truncate", "-s", str(size), "--", str(path)], timeout=30)
    return path


@dataclass
class DiskCopy:
    """One run's disk copy: both images, the export, the mirror job and what they did."""

    cell: Cell
    images: dict[str, Path]  # role -> image path on that role's host
    size: int
    stop: Stop = field(default_factory=Stop)
    fmt: str = "raw"  # the images' format: qcow2 for the Debian root disk
    device: str = DISK_ID  # the source's disk to mirror (a -drive id, or a -blockdev node)
    nbd: str | None = None
    started: float = 0.0  # epoch time of blockdev-mirror
    ready_t: float | None = None
    bytes_at_ready: int | None = None
    mirrored_bytes: int | None = None
    switchover_ms: float | None = None
    job: list[MirrorSample] = field(default_factory=list)
    error: str | None = None
    _exporting: bool = False
    _mirroring: bool = False

    @classmethod
    def create(cls, cell: Cell, hosts: dict[str, Host], folders: dict[str, Path],
               stop: Stop, guest_images: dict[str, GuestImage] | None = None) -> DiskCopy:
        """Both images, each on its own host in ``folders[role]`` (the destination's blank);
        the Debian guest's root disk from ``guest_images[role]`` (each host's own image)."""
        if cell.guest.image == "debian":
            assert guest_images is not None
            return cls._create_root(cell, hosts, folders, stop, guest_images)
        size = (disk_mib(cell) or DEFAULT_DISK_MIB) * CHUNK
        images = {role: create_image(hosts[role], folders[role] / f"disk-{role}.raw", size)
                  for role in ("source", "destination")}
        return cls(cell, images, size, stop)

    @classmethod
    def _create_root(cls, cell: Cell, hosts: dict[str, Host], folders: dict[str, Path],
                     stop: Stop, guest_images: dict[str, GuestImage]) -> DiskCopy:
        src_image = guest_images["source"]
        source = make_overlay(hosts["source"], folders["source"], src_image)
        assert src_image.debian_disk is not None  # make_overlay checked
        info = json.loads(hosts["source"].run(
            virtual_size_argv("qemu-img", src_image.debian_disk), timeout=60))
        size = int(info["virtual-size"])
        blank = folders["destination"] / "root-destination.qcow2"
        hosts["destination"].mkdir(blank.parent)
        hosts["destination"].run(blank_argv("qemu-img", blank, size), timeout=60)
        return cls(cell, {"source": source, "destination": blank}, size, stop, fmt="qcow2",
                   device=ROOT_DEVICE_ID)

    @property
    def moves_root(self) -> bool:
        """The disk moved is the Debian guest's root disk (not a data disk)."""
        return self.device == ROOT_DEVICE_ID

    def root_disk(self, role: str) -> tuple[Path | None, bool]:
        """The root disk ``role`` boots and whether it is backed by the cached image (the
        source's overlay is, the destination's blank is not); (None, True) for a data disk."""
        if not self.moves_root:
            return None, True
        return self.images[role], role == "source"

    def data_disk(self, role: str) -> Path | None:
        """The data disk ``role``'s QEMU opens (fio's), None when the root disk moves."""
        return None if self.moves_root else self.images[role]

    @property
    def holds_destination(self) -> bool:
        """The destination starts paused (-S) and stays so until both disks are hashed."""
        return self.cell.storage.verify

    def image(self, role: str) -> Path:
        return self.images[role]

    def capabilities(self) -> list[dict[str, Any]]:
        """The source's extra migration capability: stop at pre-switchover for the mirror."""
        return [{"capability": "pause-before-switchover", "state": True}]

    def export(self, dst: Vm, address: str, port: int) -> None:
        """The destination's writable NBD export of its disk on ``address:port``."""
        dst.qmp.execute("nbd-server-start", {
            "addr": {"type": "inet", "data": {"host": address, "port": str(port)}}})
        self._exporting = True
        self.nbd = f"{address}:{port}"
        node = ROOT_DEVICE_ID if self.moves_root else _node_name(dst)
        dst.qmp.execute("block-export-add", {"type": "nbd", "id": EXPORT, "node-name": node,
                                             "name": EXPORT, "writable": True})

    def sync(self, src: Vm, address: str, port: int) -> None:
        """Mirror the source's disk to the export and wait until the job is READY.

        :raise HarnessError: the job failed, or was not READY within ``sync_timeout_s``.
        """
        src.qmp.execute("blockdev-add", {
            "driver": "nbd", "node-name": TARGET, "export": EXPORT,
            "server": {"type": "inet", "host": address, "port": str(port)}})
        self.started = time.time()
        src.qmp.execute("blockdev-mirror", {"job-id": JOB, "device": self.device,
                                            "target": TARGET, "sync": "full"})
        self._mirroring = True
        limit = self.cell.storage.sync_timeout_s
        deadline = time.monotonic() + limit
        while True:
            job = self.sample(src)
            if job is None:
                raise HarnessError(f"disk mirror ended before it was ready: {_ended(src)}")
            if job.get("ready"):
                self.ready_t = time.time()
                self.bytes_at_ready = int(job.get("offset", 0))
                return
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"disk mirror not ready within storage.sync_timeout_s={limit:g} "
                    f"({job.get('offset', 0)} of {job.get('len', 0)} bytes): raise it, or "
                    "give the migration network more bandwidth")
            self.stop.sleep(0.1)

    def sample(self, src: Vm) -> dict[str, Any] | None:
        """The mirror's ``query-block-jobs`` answer, kept as a sample; None once it is gone."""
        jobs = [j for j in src.qmp.execute("query-block-jobs") if j.get("device") == JOB]
        if not jobs:
            return None
        j = jobs[0]
        self.job.append(MirrorSample(t=round(time.time() - self.started, 4),
                                     status=str(j.get("status", "")),
                                     offset=int(j.get("offset", 0)), length=int(j.get("len", 0))))
        return dict(j)

    def switchover(self, src: Vm) -> None:
        """At ``pre-switchover`` (the guest stopped): complete the ready mirror, drop its
        target and let the migration continue.

        :raise HarnessError: the mirror is gone or failed (the migration is cancelled first:
            the destination's disk would be incomplete).
        """
        began = time.time()
        job = self.sample(src)
        if job is None or not job.get("ready"):
            src.qmp.execute("migrate_cancel")
            raise HarnessError("disk mirror was not ready at the switchover: "
                               + (_ended(src) if job is None else str(job.get("status"))))
        src.qmp.execute("block-job-cancel", {"device": JOB})
        done = src.qmp.wait_event("BLOCK_JOB_COMPLETED", 60.0, after=began - 0.001)
        if done is None:
            src.qmp.execute("migrate_cancel")
            raise HarnessError("disk mirror did not complete within 60 s at the switchover")
        self._mirroring = False
        self.mirrored_bytes = int(done.data.get("offset", 0))
        if done.data.get("error"):
            src.qmp.execute("migrate_cancel")
            raise HarnessError(f"disk mirror failed at the switchover: {done.data['error']}")
        src.qmp.execute("blockdev-del", {"node-name": TARGET})
        src.qmp.execute("migrate-continue", {"state": "pre-switchover"})
        self.switchover_ms = round((time.time() - began) * 1000, 1)

    def after_switch(self, src: Vm, dst: Vm) -> DiskCheck | None:
        """After the migration: the destination's NBD server stopped, then (``verify``) both
        images hashed on their hosts, both guests paused."""
        dst.qmp.execute("nbd-server-stop")
        self._exporting = False
        if not self.cell.storage.verify:
            return None
        began = time.time()
        with ThreadPoolExecutor(max_workers=2) as pool:
            digests = list(pool.map(lambda vm: image_digests(
                vm.host, self.image(vm.cfg.role), self.size, self.fmt, self.stop), (src, dst)))
        return judge(digests[0], digests[1], self.size, round(time.time() - began, 2))

    def abort(self, src: Vm | None, dst: Vm | None) -> None:
        """On a failed run, before the QEMUs quit: cancel the mirror, stop the NBD server
        (libvirt's order; never raises)."""
        if self._mirroring and src is not None and src.alive():
            with contextlib.suppress(HarnessError):
                src.qmp.execute("block-job-cancel", {"device": JOB, "force": True},
                                timeout=5.0, wake_on_stop=False)
            self._mirroring = False
        if self._exporting and dst is not None and dst.alive():
            with contextlib.suppress(HarnessError):
                dst.qmp.execute("nbd-server-stop", timeout=5.0, wake_on_stop=False)
            self._exporting = False

    def record(self, completed_at: float | None) -> StorageRun:
        """What the disk copy did; ``completed_at``: epoch time the migration completed."""
        return StorageRun(
            disk_bytes=self.size, nbd=self.nbd,
            sync_s=round(self.ready_t - self.started, 3) if self.ready_t else None,
            bytes_at_ready=self.bytes_at_ready, mirrored_bytes=self.mirrored_bytes,
            switchover_ms=self.switchover_ms,
            total_s=round(completed_at - self.started, 3)
            if completed_at and self.started else None,
            job=tuple(self.job), error=self.error)


def _node_name(vm: Vm) -> str:
    """The block node behind the guest's disk (``-drive`` names it; the export needs it)."""
    for dev in vm.qmp.execute("query-block"):
        if dev.get("device") == DISK_ID and dev.get("inserted"):
            return str(dev["inserted"]["node-name"])
    raise HarnessError(f"{vm.cfg.role}: no disk {DISK_ID!r} to export over NBD")


def _ended(src: Vm) -> str:
    """Why the mirror job is gone, from its BLOCK_JOB_COMPLETED/CANCELLED event."""
    for ev in reversed(src.qmp.events()):
        if ev.name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR") \
                and ev.data.get("device") == JOB:
            return f"{ev.name} {ev.data.get('error') or ev.data.get('operation') or ''}".strip()
    return "no such job"
