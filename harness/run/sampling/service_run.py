"""The Debian guest's parts of a run: its root overlay, and the service load's lifecycle.

:mod:`harness.run.migration` calls these at its steps: :func:`make_overlay` before the QEMUs
start, :func:`start_load` once the guest's service said it is ready (beside the ping prober),
:func:`finish_load` when the workloads are summarised (the guest still running, on the
destination after a completed migration, so the dataset is read back from there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.guest.debian import overlay_argv
from harness.guest.image import GuestImage
from harness.hosts.host import Host
from harness.hosts.netsetup import NetAttachment
from harness.plan.models import WorkloadSpec
from harness.run.cancel import Stop
from harness.run.sampling.service import Request, ServiceLoad

OVERLAY_NAME = "root-overlay.qcow2"
PRELOAD_TIMEOUT_S = 60.0


def make_overlay(host: Host, workdir: Path, image: GuestImage) -> Path:
    """A fresh qcow2 overlay on ``image``'s root disk in ``workdir`` on ``host`` (the source):
    the guest writes there, never to the cached disk. Both QEMUs of the run open it.

    :raise HarnessError: no Debian disk in the image, or qemu-img failed on the host.
    """
    if image.debian_disk is None:
        raise HarnessError("the Debian guest's root disk was not built "
                           "(migbench image build --distro debian)")
    overlay = workdir / OVERLAY_NAME
    host.mkdir(workdir)
    host.run(overlay_argv("qemu-img", image.debian_disk, overlay), timeout=60)
    return overlay


def start_load(spec: WorkloadSpec, att: NetAttachment, seed: int,
               stop: Stop | None = None) -> ServiceLoad | None:
    """Preload every key and start the fixed-rate load on the guest's service (None without
    one); its waits, and its dataset check later, wake on ``stop``.

    :raise HarnessError: the service did not answer, or the preload failed.
    """
    named = spec.service()
    if named is None:
        return None
    kind, svc = named
    load = ServiceLoad(kind, att.guest_ip, svc.port, svc, source=att.host_ip, seed=seed,
                       stop=stop)
    try:
        load.preload(PRELOAD_TIMEOUT_S)
        load.start()
    except BaseException:
        load.stop()
        load.close()
        raise
    return load


def finish_load(load: ServiceLoad | None, check: bool) -> tuple[list[Request], dict[str, Any] | None]:
    """Stop the load; with ``check``, read every key back. Its requests and the check."""
    if load is None:
        return [], None
    try:
        requests = load.stop()
        dataset = load.check_dataset() if check else None
    finally:
        load.close()
    return requests, dataset

