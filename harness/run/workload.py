"""Guest workloads as QEMU arguments, kernel command line parts, and per-phase summaries (pure).

A :class:`~harness.plan.models.WorkloadSpec` lists any of ``writer``, ``ping`` and ``fio`` (and,
in the Debian guest, ``redis`` or ``memcached`` under load, and ``stress``); this module
turns it into what both QEMUs need (the same NIC with a fixed MAC on a tap, and the same
virtio-blk disk on a file both open), the ``mb.<name>=k:v,...`` words the guest's ``/init`` reads
(see workloads/README.md), and the guest-impact block of a run (before / during / after the
migration). It opens no files and no sockets: the network comes from :mod:`harness.hosts.netsetup`, the
probes from :mod:`harness.run.sampling.ping`, fio lines from :mod:`harness.run.sampling.fio`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import ImageError
from harness.guest.debian import root_drive_args
from harness.guest.image import GuestImage, initrd_for
from harness.hosts.netsetup import NetAttachment
from harness.plan.models import FioSpec, GuestSpec, WorkloadSpec
from harness.results.record.model import (
    DatasetCheck,
    FioImpact,
    GuestImpact,
    PingImpact,
    ServiceImpact,
)
from harness.run.sampling import fio as fio_sampling
from harness.run.sampling import ping as ping_sampling
from harness.run.sampling import servicestats
from harness.run.sampling.servicestats import RequestLike

NIC_ID = "mbnet0"
DISK_ID = "mbdisk0"


def needs_network(spec: WorkloadSpec) -> bool:
    return spec.ping is not None or spec.service() is not None


def boot_files(image: GuestImage, guest: GuestSpec, workload: WorkloadSpec,
               root_overlay: Path | None, backed: bool = True) -> tuple[Path, list[str]]:
    """The initrd a guest boots and the QEMU arguments of its root disk (none in RAM).

    The Debian guest boots its stage-1 initrd and the run's overlay (``root_overlay``) over
    this host's copy of the root disk; ``backed`` False: ``root_overlay`` is a whole disk of
    its own (the destination's under ``storage: copy``).

    :raise ImageError: a Debian guest without its image (built with ``debian=True``).
    """
    if guest.image != "debian":
        return initrd_for(image, workload), []
    if image.debian_disk is None or image.debian_initrd is None or root_overlay is None:
        raise ImageError("this cell boots the Debian guest (guest.image: debian) but the image "
                         "at hand was built without it: migbench image build --distro debian, "
                         "and ensure_image(..., debian=True) where the campaign's image is made")
    return image.debian_initrd, root_drive_args(root_overlay,
                                                image.debian_disk if backed else None)


def needs_disk(spec: WorkloadSpec) -> bool:
    return spec.fio is not None


def qemu_args(
    spec: WorkloadSpec,
    net: NetAttachment | None,
    disk_path: Path | None,
    *,
    direct_io: bool = True,
) -> list[str]:
    """Extra QEMU arguments for ``spec``: a virtio-net NIC on ``net.tap``, a virtio-blk disk.

    Call it once per QEMU with that side's attachment; the disk is the same file on both sides
    (shared storage). QEMU's image locking lets the incoming side open it: it stays inactive (no
    write lock) until the switchover, when the source has released it. ``direct_io`` (O_DIRECT,
    ``cache=none``) is what shared storage between two hosts needs; tmpfs does not support it.

    :raise ValueError: ping needs ``net``, fio needs ``disk_path``.
    """
    args: list[str] = []
    if net is not None:
        args += [
            "-netdev", f"tap,id={NIC_ID},ifname={net.tap},script=no,downscript=no",
            # romfile= empty: no iPXE option ROM needed (and none to find in a private prefix)
            "-device", f"virtio-net-pci,netdev={NIC_ID},mac={net.mac},romfile=",
        ]  # fmt: skip
    elif needs_network(spec):
        raise ValueError("workload.ping needs a network attachment (netsetup.LocalVmNetwork)")
    if disk_path is not None:
        cache = "none" if direct_io else "writeback"
        args += [
            "-drive",
            f"file={disk_path},format=raw,if=none,id={DISK_ID},cache={cache},aio=threads",
            "-device", f"virtio-blk-pci,drive={DISK_ID},serial={DISK_ID}",
        ]  # fmt: skip
    elif needs_disk(spec):
        raise ValueError("workload.fio needs a shared disk file (image.create_shared_disk)")
    return args


def fio_options(f: FioSpec) -> list[tuple[str, str]]:
    """fio options (name, value) for the guest; ``/`` stands for ``,`` on the kernel cmdline."""
    opts: list[tuple[str, str]] = [("rw", f.rw)]
    mixed = f.rw in ("randrw", "rw")
    if mixed:
        opts.append(("rwmixread", str(f.rwmixread)))
    opts += [
        ("bs", f.bs),
        ("iodepth", str(f.iodepth)),
        ("ioengine", f.ioengine),
        ("direct", "1" if f.direct else "0"),
    ]
    if f.rate_iops > 0:
        if mixed:
            # fio caps reads and writes separately: split the total by the mix.
            reads = max(1, round(f.rate_iops * f.rwmixread / 100))
            writes = max(1, f.rate_iops - reads)
            opts.append(("rate_iops", f"{reads}/{writes}"))
        else:
            opts.append(("rate_iops", str(f.rate_iops)))
    return opts


def kernel_args(spec: WorkloadSpec, net: NetAttachment | None = None, vcpus: int = 1,
                image: str = "initramfs") -> list[str]:
    """The ``mb.<name>=k:v,...`` words for the guest's ``/init`` (writer, net, ping, fio).

    In the Debian guest (``image``) fio is ``mb.datafio``: its services hook runs it on the data
    disk, ``/dev/vdb``, where ``mb.fio`` would write over ``/dev/vda``, the root disk."""
    out: list[str] = []
    w = spec.writer
    if w is not None:
        threads = w.threads if w.threads is not None else vcpus
        out.append(
            f"mb.writer=ws:{w.working_set_mib},rate:{w.rate_mib_s:g},pattern:{w.pattern},"
            f"threads:{threads}"
        )
    if net is not None:
        out.append(f"mb.net=ip:{net.guest_ip}/{net.prefix_len}")
    p = spec.ping
    if p is not None:
        out.append(f"mb.ping=mode:{p.mode},port:{p.port}" if p.mode == "udp" else "mb.ping=mode:icmp")
    if spec.fio is not None:
        word = "mb.datafio=" if image == "debian" else "mb.fio="
        out.append(word + ",".join(f"{k}:{v}" for k, v in fio_options(spec.fio)))
    service = spec.service()
    if service is not None:
        name, svc = service
        out.append(f"mb.{name}=port:{svc.port},maxmem:{svc.maxmem_mib}")
    if spec.stress is not None:
        st = spec.stress
        out.append(f"mb.stress=vm:{st.vm},bytes:{st.bytes_mib},method:{st.method}")
    return out


def ready_kinds(spec: WorkloadSpec) -> list[str]:
    """Console kinds that say each workload is up (wait for all before migrating)."""
    kinds = []
    if spec.writer is not None:
        kinds.append("writer-ready")
    if spec.ping is not None:
        kinds += ["net-ready", "ping-ready"]
    if spec.fio is not None:
        kinds.append("fio-ready")
    service = spec.service()
    if service is not None:
        kinds += ["net-ready", f"{service[0]}-ready"]
    if spec.stress is not None:
        kinds.append("stress-ready")
    return kinds


def summarise(
    spec: WorkloadSpec,
    *,
    migrate_start: float,
    switchover: float | None,
    end: float,
    probes: Sequence[ping_sampling.Probe] = (),
    fio_samples: Sequence[dict[str, Any]] = (),
    requests: Sequence[RequestLike] = (),
    dataset: dict[str, Any] | None = None,
) -> GuestImpact:
    """Guest-impact block of a run: each workload's before/during/after summary (epoch times).

    ``switchover`` is when the guest resumed on the destination (None if it never moved); the
    ``during`` phase is [migrate_start, switchover), ``after`` is [switchover, end]. ``requests``
    are the service load's (:mod:`harness.run.sampling.service`), ``dataset`` its check.
    """
    ping = fio = service = None
    if spec.ping is not None:
        ping = PingImpact.model_validate(ping_sampling.summarise(
            probes, migrate_start, switchover, end,
            interval_s=spec.ping.interval_ms / 1000, timeout_s=spec.ping.timeout_ms / 1000,
        ))  # fmt: skip
    if spec.fio is not None:
        fio = FioImpact.model_validate(
            fio_sampling.summarise(fio_samples, migrate_start, switchover, end))
    named = spec.service()
    if named is not None:
        kind, svc = named
        service = ServiceImpact.model_validate({
            "kind": kind, "rate_ops": svc.rate_ops, "clients": svc.clients,
            "timeout_ms": svc.timeout_ms,
            **servicestats.summarise(requests, migrate_start, switchover, end),
            "dataset": DatasetCheck.model_validate(dataset) if dataset is not None else None})
    return GuestImpact(ping=ping, fio=fio, service=service)


def summary_columns(impact: GuestImpact) -> dict[str, float | int | None]:
    """The ``summary.csv`` columns of a guest-impact block (None where a workload did not run)."""
    ping, fio, svc = impact.ping, impact.fio, impact.service
    return {
        "ping_lost": ping.total.lost if ping else None,
        "ping_max_gap_ms": ping.total.max_gap_ms if ping else None,
        "ping_rtt_p99_ms": ping.total.rtt_p99_ms if ping else None,
        "fio_iops_before": fio.before.iops_host_mean if fio else None,
        "fio_iops_during": fio.during.iops_host_mean if fio else None,
        "fio_lat_p99_us_before": fio.before.lat_p99_us_max if fio else None,
        "fio_lat_p99_us_during": fio.during.lat_p99_us_max if fio else None,
        "service_p99_ms": svc.during.p99_ms if svc else None,
        "service_max_gap_ms": svc.max_gap.ms if svc and svc.max_gap else None,
    }
