"""show and the report for a ``storage: copy`` run (issue 17): the disk sync beside the RAM figures
and timeline (pure; the real runs are checked in tests/integration/test_storage.py)."""

from __future__ import annotations

from harness.report.model import cell_page, timeline
from harness.results.record import RunRecord, read
from harness.results.show import run_block, storage_rows
from tests.record_edit import MULTIFD_100, edit

MiB = 1024 * 1024


def _copy_run(corrupted: bool = False) -> RunRecord:
    rec = read(MULTIFD_100)
    job = [{"t": 0.1, "status": "running", "offset": 0, "length": 64 * MiB},
           {"t": 0.9, "status": "ready", "offset": 64 * MiB, "length": 64 * MiB},
           {"t": 1.5, "status": "ready", "offset": 66 * MiB, "length": 68 * MiB}]
    disk = {"verdict": "corrupted" if corrupted else "ok", "disk_bytes": 64 * MiB,
            "chunk_bytes": MiB, "chunks": 64, "differing_chunks": 1 if corrupted else 0}
    return edit(rec, {
        "storage": {"mode": "copy", "disk_bytes": 64 * MiB, "nbd": "127.0.0.1:4711",
                    "sync_s": 0.9, "bytes_at_ready": 64 * MiB, "mirrored_bytes": 66 * MiB,
                    "switchover_ms": 61.0, "total_s": 3.7, "job": job},
        "integrity.disk": disk,
        "integrity.verdict": "corrupted" if corrupted else rec.integrity.verdict})


def test_show_gives_the_disk_sync_and_the_disk_check() -> None:
    rec = _copy_run()
    rows = dict(storage_rows(rec))
    assert rows["disk copy"] == ("64.0 MiB disk over NBD 127.0.0.1:4711: synced in 0.9 s "
                                 "(64.0 MiB at READY), 66.0 MiB mirrored in all, switchover "
                                 "61 ms, disk + RAM 3.7 s")
    assert rows["disk check"] == "ok: 0 of 64 chunks of 1.0 MiB differ"
    assert "disk copy:" in run_block(rec)
    bad = _copy_run(corrupted=True)
    assert "disk: 1 of 64 chunks differ" in run_block(bad)
    assert storage_rows(read(MULTIFD_100)) == []  # shared storage: nothing to say


def test_the_report_puts_the_mirror_beside_the_ram_timeline() -> None:
    rec = _copy_run()
    tl = timeline(rec)
    disk = next(s for s in tl.series if s.name == "remaining disk (mirror)")
    assert disk.panel == "remaining disk (MiB)"
    assert disk.x == [-0.8, 0.0, 0.6]  # the job's clock moved back by sync_s: migrate at 0
    assert disk.y == [64.0, 0.0, 2.0]
    page = cell_page([rec], [])
    assert ("disk copy", storage_rows(rec)[0][1]) in page.info


def test_summary_and_export_carry_the_disk_copy() -> None:
    """summary.csv and ``migbench export``'s frame: the disk sync and check of a copy run,
    empty for a run on shared storage."""
    from harness.results import store

    copy, bad, shared = _copy_run(), _copy_run(corrupted=True), read(MULTIFD_100)
    row = store.summary_row(copy)
    assert {k: row[k] for k in store.STORAGE_COLUMNS} == {
        "disk_sync_s": 0.9, "disk_mirrored_bytes": 66 * MiB, "disk_switchover_ms": 61.0,
        "disk_total_s": 3.7, "disk_differing_chunks": 0}
    assert store.summary_row(bad)["disk_differing_chunks"] == 1
    assert all(store.summary_row(shared)[k] is None for k in store.STORAGE_COLUMNS)
    assert set(store.STORAGE_COLUMNS) <= set(store.SUMMARY_COLUMNS)
    df = store.frame([copy, shared])
    assert df["disk_sync_s"].dtype == "float64" and df["disk_sync_s"].iloc[0] == 0.9
    assert df["disk_mirrored_bytes"].iloc[0] == 66 * MiB and df["disk_total_s"].isna().iloc[1]
