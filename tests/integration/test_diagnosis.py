"""Issue 16 proof on real QEMU 10.0 (TCG, local pair): calc-dirty-rate before the migration agrees
with the writer's own rate, the demo's precopy cell is diagnosed link-bound and its advice
applied completes (its stop-and-copy measured far above max-bandwidth), an XBZRLE cell with a
cache far below the working set is cache-bound, and a multifd zlib run's encoder rate per
CPU-second matches the figure advise takes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.advise import ENCODE_RATE
from harness.analysis.convergence import MiB
from harness.analysis.diagnosis import diagnose, dirty_rate_tolerance, encoder_rate, link_rates
from harness.guest.image import GuestImage
from harness.plan.models import HostsConfig
from harness.results import store
from harness.results.record import RunRecord
from harness.run.runner import run_matrix

from .conftest import REPO, matrix

pytestmark = pytest.mark.integration

#: The demo (matrices/demo.yaml), shortened: precopy cannot keep up at 200 Mbit/s.
DEMO: dict[str, Any] = {
    "guest": {"vcpus": 1, "memory_mib": 512},
    "limits": {"max_time_s": 8, "observe_after_s": 0},
    "workload": {"writer": {"working_set_mib": 64, "rate_mib_s": 32, "pattern": "sparse"}},
    "migration": {"max-bandwidth": "200mbit", "downtime-limit": 300},
}


def _run(tmp_path: Path, hosts: HostsConfig, image: GuestImage, **fields: Any
         ) -> list[RunRecord]:
    spec = matrix(**fields)
    out = tmp_path / spec.name
    run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out, None, image)
    return sorted((rec for _, rec in store.iter_runs(out)), key=lambda r: r.cell.id)


def test_calc_dirty_rate_agrees_with_the_writer_for_whole_pages_and_sparse(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    """16 MiB/s over 64 MiB: a 4 s rewrite time, so the 1 s period counts each page once; the
    writer's 'rate' counts a page per page dirtied for every pattern (sparse writes 8 bytes of
    it), which is what QEMU counts."""
    recs = _run(tmp_path, hosts, image, name="dr",
                limits={"max_time_s": 15, "observe_after_s": 0},
                workload={"writer": {"working_set_mib": 64, "rate_mib_s": 16}},
                migration={"max-bandwidth": "1gbit"},
                axes={"writer.pattern": ["random", "sparse"]})
    assert len(recs) == 2
    for rec in recs:
        assert rec.pre is not None, rec.error
        writer = rec.pre.writer_rate_mib_s
        assert writer is not None and abs(writer - 16) < 2
        got = {m.mode: m for m in rec.pre.calc_dirty_rate}
        assert set(got) == {"page-sampling"}, got  # TCG: no whole-RAM mode (dirtyrate.py)
        for m in got.values():
            assert m.dirty_rate_mib_s is not None, m.error
            assert m.period_s == 1.0 and m.pages_per_s == pytest.approx(
                m.dirty_rate_mib_s * 256, rel=1e-3)
            # within 3 standard errors of the sample (64 dirtied pages expected: +-12.5 % each)
            assert abs(m.dirty_rate_mib_s - writer) <= dirty_rate_tolerance(m, writer) * writer, (
                rec.cell.axes, m)
        labels = {e.label for e in diagnose(rec).evidence}
        assert "DIRTY RATE DISAGREES" not in labels


def test_demo_precopy_is_link_bound_and_its_advice_completes(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    [rec] = _run(tmp_path, hosts, image, name="demo", **DEMO, axes={"feature": ["precopy"]})
    assert rec.outcome == "not-converged"
    d = diagnose(rec)
    assert d.factor == "link-bound", d.lines()
    assert d.predicted is not None and d.predicted.converges is False
    bandwidth = next(a for a in d.advice if a.startswith("bandwidth: "))
    need = float(re.search(r"([\d.]+) MiB/s", bandwidth).group(1))  # type: ignore[union-attr]
    assert need * MiB > 200e6 / 8
    applied = dict(DEMO, limits={"max_time_s": 30, "observe_after_s": 0},
                   migration={**DEMO["migration"], "max-bandwidth": round(need * 1.1 * MiB)})
    [after] = _run(tmp_path, hosts, image, name="advised", **applied,
                   axes={"feature": ["precopy"]})
    assert after.outcome == "completed", (bandwidth, after.error)
    assert diagnose(after).factor == "converged"
    # the stop-and-copy is not held to max-bandwidth: over loopback it ran far above it
    switchover = link_rates(after).switchover
    assert switchover is not None and switchover > 2 * need * 1.1 * MiB, switchover


def test_xbzrle_with_a_cache_far_below_the_working_set_is_cache_bound(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    xb = dict(DEMO, migration={**DEMO["migration"], "xbzrle-cache-size": "4MiB"})
    [rec] = _run(tmp_path, hosts, image, name="xb", **xb, axes={"feature": ["xbzrle"]})
    assert rec.outcome == "not-converged"
    d = diagnose(rec)
    assert d.factor == "xbzrle-cache", d.lines()
    assert d.advice and d.advice[0].startswith("xbzrle-cache-size: ")


def test_the_encoder_rate_of_a_real_multifd_run_matches_the_measured_table(
        tmp_path: Path, hosts: HostsConfig, image: GuestImage) -> None:
    """multifd zlib level 1 on text pages, one channel, no rate limit (a cell of
    benchmarks/multifd-encoder.yaml): RAM bytes per CPU-second of the send thread as
    advise's ENCODE_RATE has it (129 MiB/s here; two benchmark runs agreed within 5 %, the
    tolerance leaves room for a busier machine), shown as evidence."""
    [rec] = _run(tmp_path, hosts, image, name="enc",
                 guest={"vcpus": 1, "memory_mib": 512},
                 limits={"max_time_s": 30, "observe_after_s": 0},
                 workload={"writer": {"working_set_mib": 128, "rate_mib_s": 16,
                                      "pattern": "text"}},
                 migration={"max-bandwidth": "unlimited", "multifd-channels": 1,
                            "multifd-compression": "zlib", "multifd-zlib-level": 1},
                 axes={"feature": ["multifd"]})
    assert rec.outcome == "completed", rec.error
    enc = encoder_rate(rec)
    assert enc is not None and enc.cls == "multifd_send"
    table = ENCODE_RATE[("zlib", 1)]["text"]
    assert 0.6 * table < enc.per_thread < 1.5 * table, enc
    d = diagnose(rec)
    assert ("max-bandwidth", "unlimited", "") in d.evidence
    assert any(e.label == "RAM compressed per CPU-second of multifd_send" for e in d.evidence)
