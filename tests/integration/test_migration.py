"""One real migration end to end: QEMU 10.0 and 7.2 under TCG, on the local host pair."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.guest.image import GuestImage
from harness.plan.models import HostsConfig
from harness.results import store
from harness.results.record import RunRecord, dump
from harness.run.runner import Progress, run_matrix

from .conftest import REPO, matrix, qemu_processes

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, hosts: HostsConfig, image: GuestImage, progress: Progress | None = None,
         **fields: Any) -> list[RunRecord]:
    spec = matrix(**fields)
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out, progress, image)
    return [rec for _, rec in store.iter_runs(out)]


def test_precopy_on_qemu10_completes_with_integrity_ok(tmp_path: Path, hosts: HostsConfig,
                                                       image: GuestImage) -> None:
    [rec] = _run(
        tmp_path, hosts, image, name="p10", integrity="ram",
        limits={"max_time_s": 60, "observe_after_s": 2},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 8, "pattern": "sparse"}},
        migration={"max-bandwidth": "400mbit"},
        variants={"q10": {"build": "10.0"}}, axes={"feature": ["precopy"]},
    )
    assert rec.outcome == "completed", rec.error
    assert rec.qemu.version is not None and rec.qemu.version.startswith("10.0")
    # the build id of each side's binary, from the capability probe (the nightly identity)
    assert rec.qemu.source_build_id is not None
    assert rec.qemu.source_build_id.startswith("sha256:")
    assert rec.qemu.destination_build_id == rec.qemu.source_build_id
    assert rec.source_status == "postmigrate"
    assert rec.destination_status == "running"
    # Both integrity checks ran and passed.
    ram, stamps = rec.integrity.ram, rec.integrity.stamps
    assert rec.integrity.verdict == "ok"
    assert ram is not None and ram.verdict == "ok"
    assert ram.differing_pages == 0
    assert stamps is not None and stamps.verdict == "ok"
    assert stamps.pages == 64 * 256
    assert rec.timing_excluded is True
    # The timeline has >= 10 samples per second of migration, each a full query-migrate answer.
    m = rec.metrics
    assert m.total_time_ms is not None
    total_s = m.total_time_ms / 1000
    active = [s for s in rec.timeline if s.status in ("active", "device", "completed")]
    assert len(active) >= 10 * total_s, (len(active), total_s)
    assert all(s.ram is not None for s in active if s.status == "active")
    # What QEMU actually used was read back and stored.
    assert rec.applied is not None
    assert rec.applied.source.parameters["max-bandwidth"] == 50_000_000
    assert rec.applied.source.capabilities["events"] is True
    assert m.transferred_bytes is not None and m.transferred_bytes > 64 * 1024**2
    assert m.dirty_sync_count is not None and m.dirty_sync_count >= 2
    assert m.downtime_ms is not None and m.host_pause_ms is not None
    events = {e.event for e in rec.events.source}
    assert {"STOP", "MIGRATION", "MIGRATION_PASS"} <= events
    assert "RESUME" in {e.event for e in rec.events.destination}
    # The writer kept reporting on the destination after switchover.
    assert any(p.host == "destination" for p in rec.guest.writer)
    # Written as the record's canonical bytes, readable by everyone (one mode for results).
    [path] = (tmp_path / "p10").glob("*/1.json")
    assert path.read_bytes() == dump(rec) and path.stat().st_mode & 0o777 == 0o644
    rows = list(csv.DictReader(open(tmp_path / "p10" / "summary.csv")))
    assert rows[0]["outcome"] == "completed" and rows[0]["integrity"] == "ok"


def test_stamp_check_without_ram_mode_keeps_timing(tmp_path: Path, hosts: HostsConfig,
                                                   image: GuestImage) -> None:
    [rec] = _run(
        tmp_path, hosts, image, name="stamps",
        limits={"max_time_s": 60, "observe_after_s": 1},
        workload={"writer": {"working_set_mib": 32, "rate_mib_s": 16, "pattern": "text"}},
        migration={"max-bandwidth": "1gbit"}, axes={"feature": ["precopy"]},
    )
    assert rec.outcome == "completed", rec.error
    assert rec.integrity.verdict == "ok" and rec.integrity.ram is None
    assert rec.timing_excluded is False
    m = rec.metrics
    # QEMU's downtime, the host-observed pause and the guest's stall are all measured.
    assert m.downtime_ms is not None and 0 < m.downtime_ms < 2000
    assert m.host_pause_ms is not None and m.host_pause_ms >= m.downtime_ms * 0.5
    assert m.guest_max_stall_ms is not None


def test_qemu72_loses_dirty_pages_and_ram_check_catches_it(tmp_path: Path, hosts: HostsConfig,
                                                           image: GuestImage) -> None:
    """Debian 12's QEMU 7.2 loses dirty pages under TCG (fixed upstream in 9.0); QEMU 10.0
    migrates the same writing guest intact."""
    runs = _run(
        tmp_path, hosts, image, name="q72", integrity="ram", repetitions=2,
        limits={"max_time_s": 60, "observe_after_s": 1},
        workload={"writer": {"working_set_mib": 128, "rate_mib_s": 16, "pattern": "random"}},
        migration={"max-bandwidth": "400mbit"},
        variants={"q72": {"build": "7.2"}, "q10": {"build": "10.0"}}, axes={"feature": ["precopy"]},
    )
    recs = [r for r in runs if r.cell.variant == "q72"]
    good = [r for r in runs if r.cell.variant == "q10"]
    assert all((r.qemu.version or "").startswith("7.2") for r in recs)
    assert all((r.qemu.version or "").startswith("10.0") for r in good)
    for r in good:  # the same guest, the same checks: intact on 10.0
        assert r.outcome == "completed", r.error
        assert (r.metrics.dirty_sync_count or 0) >= 3
        assert r.integrity.verdict == "ok", r.integrity
        assert r.integrity.ram is not None and r.integrity.ram.differing_pages == 0
    completed = [r for r in recs if r.outcome == "completed"]
    assert completed, [r.error for r in recs]
    assert all((r.metrics.dirty_sync_count or 0) >= 3 for r in completed)
    corrupted = [r for r in completed if r.integrity.verdict == "corrupted"]
    assert corrupted, [r.integrity for r in completed]
    ram = corrupted[0].integrity.ram
    assert ram is not None and (ram.differing_pages or 0) > 0
    assert "corrupted" in (tmp_path / "q72" / "summary.csv").read_text()


def test_migration_that_cannot_converge_is_cancelled(tmp_path: Path, hosts: HostsConfig,
                                                     image: GuestImage) -> None:
    [rec] = _run(
        tmp_path, hosts, image, name="nc",
        limits={"max_time_s": 8, "observe_after_s": 0},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 48, "pattern": "random"}},
        migration={"max-bandwidth": "200mbit"}, axes={"feature": ["precopy"]},
    )
    assert rec.outcome == "not-converged"
    assert "max_time_s=8" in (rec.error or "")
    assert rec.final is not None and rec.final.status == "cancelled"
    assert rec.source_status == "running"  # the guest keeps running on the source
    assert rec.metrics.total_time_ms is None
    assert (rec.metrics.dirty_sync_count or 0) >= 2
    assert 7.5 <= rec.timeline[-1].t < 20
    # no switchover happened: the guest's stalls were no downtime
    assert rec.metrics.guest_max_stall_ms is not None
    assert rec.metrics.guest_visible_downtime_ms is None


def test_migration_is_cancelled_after_max_dirty_syncs(tmp_path: Path, hosts: HostsConfig,
                                                      image: GuestImage) -> None:
    [rec] = _run(
        tmp_path, hosts, image, name="ncs",
        limits={"max_time_s": 60, "max_dirty_syncs": 3, "observe_after_s": 0},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 48, "pattern": "random"}},
        migration={"max-bandwidth": "200mbit"}, axes={"feature": ["precopy"]},
    )
    assert rec.outcome == "not-converged"
    assert "max_dirty_syncs=3" in (rec.error or "")
    assert rec.final is not None and rec.final.status == "cancelled"
    assert rec.source_status == "running"
    active = [s.ram for s in rec.timeline if s.status == "active" and s.ram]
    # cancelled at the first sample past the limit, long before max_time_s
    assert active[-1].dirty_sync_count == 4
    assert rec.timeline[-1].t < 40


def test_destination_killed_mid_migration_fails_and_next_cell_runs(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    killed: list[int] = []

    def state(name: str) -> None:
        if name == "migrate" and not killed:
            def kill() -> None:
                time.sleep(1.0)
                out = subprocess.run(["pgrep", "-f", "qemu-system.*-name mb-des-.*migbench/kill/"],
                                     capture_output=True, text=True).stdout.split()
                for pid in out:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
            threading.Thread(target=kill, daemon=True).start()

    recs = _run(
        tmp_path, hosts, image, Progress(state=state), name="kill",
        limits={"max_time_s": 60, "observe_after_s": 0},
        workload={"writer": {"working_set_mib": 32, "rate_mib_s": 4, "pattern": "random"}},
        axes={"feature": ["precopy"], "max-bandwidth": ["40mbit", "1gbit"]},
    )
    assert killed
    by_bw = {r.cell.axes["max-bandwidth"]: r for r in recs}
    failed = by_bw["40mbit"]
    assert failed.outcome == "failed"
    assert failed.error and "destination QEMU on destination (local) exited with code" in (
        failed.error)
    assert failed.vms.destination is not None
    assert failed.vms.destination.exit_code == -signal.SIGKILL
    assert failed.source_status == "running"  # the source guest kept running
    assert by_bw["1gbit"].outcome == "completed"
    assert qemu_processes() == []


def _qemu_children(pid: int) -> list[str]:
    """The harness QEMUs that process ``pid`` started (not another test's)."""
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "qemu-system.*-name mb-"],
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_cleans_up_and_rerun_resumes(sig: int, tmp_path: Path, hosts: HostsConfig,
                                            image: GuestImage) -> None:
    mfile = tmp_path / "sig.yaml"
    mfile.write_text(
        "name: sig\nrepetitions: 2\nlimits: {max_time_s: 60, observe_after_s: 0}\n"
        "workload: {writer: {working_set_mib: 32, rate_mib_s: 4, pattern: text}}\n"
        "migration: {max-bandwidth: 1gbit}\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(mfile), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/1.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob("*/1.json")), "first run did not finish"
    # Signal while the second run is under way: its QEMUs (children of this harness; the first
    # run's are gone before its file is written) are up. A fixed sleep raced with a fast run.
    while not _qemu_children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _qemu_children(proc.pid), "the second run did not start"
    time.sleep(1.0)  # into the guest's boot and workload
    assert _qemu_children(proc.pid) and not list(out.glob("*/2.json"))
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted: stopping the runs on pair" in output  # it stopped a run in progress
    assert qemu_processes() == []
    assert not list(out.glob("*/2.json"))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming: 1 of 2" in done.stdout
    files = sorted(p.name for p in out.glob("*/*.json"))
    assert files == ["1.json", "2.json"]


def test_combination_refused_by_qemu_is_a_failed_run_with_qemu_text(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    """QEMU 7.2 accepts multifd with postcopy; 10.0 refuses it: a failed run with QEMU's words."""
    [rec] = _run(
        tmp_path, hosts, image, name="refused",
        limits={"max_time_s": 20, "observe_after_s": 0},
        workload={"writer": {"working_set_mib": 16, "rate_mib_s": 4, "pattern": "text"}},
        migration={"max-bandwidth": "1gbit"}, axes={"feature": ["multifd+postcopy"]},
    )
    assert rec.outcome == "failed" and rec.error is not None
    assert "migrate-set-capabilities" in rec.error
    assert "Postcopy is not yet compatible with multifd" in rec.error
