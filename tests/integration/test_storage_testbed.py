"""``storage: copy`` over the SSH test bed: each host its own disk image in its own workdir, the
NBD export on the destination's migration address, both images hashed on their own hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.guest.image import GuestImage
from harness.plan.config import load_hosts
from harness.results import store
from harness.run.runner import run_matrix

from ._testbed import bed, no_leftover_qemu
from .conftest import matrix

pytestmark = pytest.mark.integration
__all__ = ["bed", "no_leftover_qemu"]


def test_copy_storage_over_ssh(bed: Path, tmp_path: Path, image: GuestImage) -> None:
    data: dict[str, Any] = yaml.safe_load((bed / "hosts.yaml").read_text())
    dst_work = tmp_path / "destination-work"
    data["pairs"]["testbed"]["destination"]["workdir"] = str(dst_work)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump(data))
    spec = matrix(
        name="tbst", storage={"mode": "copy", "disk_mib": 64},
        limits={"max_time_s": 60, "observe_after_s": 2},
        workload={"writer": {"working_set_mib": 16, "rate_mib_s": 4, "pattern": "text"},
                  "fio": {"rw": "randwrite", "bs": "4k", "rate_iops": 200, "disk_mib": 64}},
        migration={"max-bandwidth": "1gbit"})
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, hosts, load_hosts(hosts), out, None, image)
    [rec] = [r for _, r in store.iter_runs(out)]
    assert rec.outcome == "completed", rec.error
    assert rec.hosts.source.transport == "ssh"
    st, disk = rec.storage, rec.integrity.disk
    assert st is not None and disk is not None
    # the export listened on the destination's end of the migration link
    assert (st.nbd or "").startswith("10.250.3.2:"), st.nbd
    assert disk.verdict == "ok" and disk.differing_chunks == 0 and disk.chunks == 64, disk
    assert rec.integrity.verdict == "ok", rec.integrity
    assert st.mirrored_bytes is not None and st.bytes_at_ready is not None
    assert st.mirrored_bytes > st.bytes_at_ready
    # each image lived on its own host's workdir, and went with the run's folder
    for vm in (rec.vms.source, rec.vms.destination):
        assert vm is not None
        drive = next(a for a in vm.argv if a.startswith("file=") and "disk-" in a)
        assert f"disk-{vm.role}.raw" in drive
    assert drive.startswith(f"file={dst_work}/")
    assert list((dst_work / "tbst").iterdir()) == []
    print(f"ssh copy: sync {st.sync_s} s, {st.mirrored_bytes} B mirrored, total {st.total_s} s, "
          f"switchover {st.switchover_ms} ms, hash {disk.seconds} s")
