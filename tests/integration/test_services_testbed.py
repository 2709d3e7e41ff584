"""The Debian guest with redis under load over the SSH test bed: the root disk uploaded to the
hosts by hash, each QEMU opening its own host's copy of the base under the run's one overlay, and
the load from this machine through the bed's VM network. About a minute (the first upload of the
qcow2 included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guest.image import GuestImage, ensure_image
from harness.plan.config import load_hosts
from harness.results import store
from harness.run.runner import run_matrix

from ._testbed import bed, no_leftover_qemu
from .conftest import REPO, matrix

pytestmark = pytest.mark.integration
__all__ = ["bed", "no_leftover_qemu"]


def test_redis_guest_over_ssh(bed: Path, tmp_path: Path) -> None:
    image: GuestImage = ensure_image(REPO / "build" / "image", debian=True)
    hosts = bed / "hosts.yaml"
    spec = matrix(
        name="tbredis", guest={"image": "debian", "memory_mib": 512},
        limits={"max_time_s": 60, "observe_after_s": 2},
        workload={"writer": {"working_set_mib": 16, "rate_mib_s": 8, "pattern": "random"},
                  "redis": {"clients": 2, "rate_ops": 300, "keys": 1000, "ratio": "1:3"}},
        migration={"max-bandwidth": "1gbit", "postcopy-after-syncs": 1},
        axes={"feature": ["postcopy"]})
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, hosts, load_hosts(hosts), out, None, image)
    [rec] = [r for _, r in store.iter_runs(out)]
    assert rec.outcome == "completed", rec.error
    assert rec.hosts.source.transport == "ssh"
    svc = rec.guest_impact.service
    assert svc is not None and svc.dataset is not None
    assert svc.dataset.verdict == "ok" and svc.dataset.keys == 1000
    assert svc.during.completed > 0 and svc.after.completed > 0 and svc.total.errors == 0
    assert svc.max_gap is not None
    # Each QEMU's backing file is its own host's uploaded copy (images/<digest>/root.qcow2);
    # the overlay is the run's, the same path on both sides (shared storage).
    drives = {}
    for vm in (rec.vms.source, rec.vms.destination):
        assert vm is not None
        drives[vm.role] = next(a for a in vm.argv if a.startswith("driver=qcow2,node-name="))
    for role, drive in drives.items():
        spec_h = load_hosts(hosts).pairs["testbed"].source if role == "source" else \
            load_hosts(hosts).pairs["testbed"].destination
        base = spec_h.workdir / "images" / image.digest[:16] / "root.qcow2"
        assert f"backing.file.filename={base}" in drive, drive
    overlays = {d.split("file.filename=")[1].split(",")[0] for d in drives.values()}
    assert len(overlays) == 1 and next(iter(overlays)).endswith("root-overlay.qcow2")
    print(f"ssh redis postcopy: total {rec.metrics.total_time_ms} ms, downtime "
          f"{rec.metrics.downtime_ms} ms, p99 during {svc.during.p99_ms} ms, longest window "
          f"without a reply {svc.max_gap.ms} ms")
