"""Per-run overhead, cold vs warm start, on the demo guest; and cold vs warm migration figures.

Run: ``.venv/bin/pytest benchmarks/test_overhead.py -s`` (about 5 minutes: real QEMU 10.0 under
TCG on the local pair). The guest and workload are matrices/demo.yaml's (512 MiB, 1 vCPU, a
writer dirtying 32 MiB/s of a 64 MiB working set, sparse); the cell is plain precopy at 1 Gbit/s,
which converges in a few seconds, so that each run is mostly what surrounds the migration.

* ``test_per_run_overhead[cold|warm]``: pytest-benchmark times a campaign of ``RUNS`` runs of the
  cell, booted (``start: cold``) or restored from a saved guest (``start: warm``). Per run, the
  overhead is the run's wall time (its record's start to finish) minus the migration's total
  time minus the configured observation after it (``observe_after_s``): boot or restore, the
  wait for a steady writer, setup and the pre-migration dirty-rate measurement, the integrity
  check, teardown. The campaign's time outside its runs (``outside_runs_s``: for warm mostly
  the one-time save, a boot to a steady writer and the save) is reported beside it. The results
  go to ``extra_info`` and are printed.
  After the warm one, the medians' ratio must meet issue 18's target, a third
  (:func:`_check_ratio`). Run both in one pytest run: the ratio needs the two side by side.
* ``test_cold_and_warm_mann_whitney``: 5 cold and 5 warm runs, interleaved, of a converging cell
  whose migration is bound by its link (400 Mbit/s, 8 MiB/s writer; at 1 Gbit/s the migration
  is bound by this 2-core machine's CPU and follows the other load on it): Mann-Whitney U
  (two-sided) finds no difference between cold and warm in total time or transferred bytes
  (p > 0.05). With 5 + 5 the smallest possible p is 0.008, so a real shift would show: a first
  version, campaigns one after the other at 1 Gbit/s on a loaded machine, found one (cold
  1.4-1.7 s, warm 1.8-2.2 s, p = 0.008), and interleaved at 400 Mbit/s two of five warm runs
  were slow: the first run after each save, during which the kernel wrote the saved file back
  (it is synced at save time since).
  tests/integration/test_warm.py has a 3 + 3 check on medians that fits the suite's time.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import mannwhitneyu

from harness.guest.image import GuestImage, ensure_image
from harness.plan.config import load_hosts, load_matrix
from harness.plan.models import HostsConfig, MatrixSpec
from harness.results import store
from harness.results.record import RunRecord
from harness.run.runner import Progress, run_matrix
from tests.integration.conftest import REPO

RUNS = 5
OBSERVE_S = 1.0
_results: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def hosts() -> HostsConfig:
    return load_hosts(REPO / "hosts.yaml")


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return ensure_image(REPO / "build" / "image")


def _spec(start: str) -> MatrixSpec:
    demo = load_matrix(REPO / "matrices" / "demo.yaml")
    return MatrixSpec.model_validate({
        "name": f"overhead-{start}", "repetitions": RUNS, "start": start,
        "guest": demo.guest.model_dump(), "workload": demo.workload.model_dump(),
        "limits": {"max_time_s": 60, "observe_after_s": OBSERVE_S},
        "migration": {"max-bandwidth": "1gbit", "downtime-limit": 300},
        "axes": {"feature": ["precopy"]},
    })


def _wall(rec: RunRecord) -> float:
    """The run's wall time: its record's start to finish (millisecond UTC stamps)."""
    return (datetime.fromisoformat(rec.finished_utc.replace("Z", "+00:00"))
            - datetime.fromisoformat(rec.started_utc.replace("Z", "+00:00"))).total_seconds()


def _overhead(rec: RunRecord) -> float:
    wall = _wall(rec)
    assert rec.metrics.total_time_ms is not None
    return wall - rec.metrics.total_time_ms / 1000 - OBSERVE_S


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_per_run_overhead(benchmark: Any, tmp_path: Path, hosts: HostsConfig,
                          image: GuestImage, start: str) -> None:
    spec = _spec(start)
    out = tmp_path / spec.name
    notes: list[str] = []

    def campaign() -> None:
        run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out,
                   Progress(note=notes.append), image)

    began = time.monotonic()
    benchmark.pedantic(campaign, rounds=1, iterations=1)
    campaign_s = time.monotonic() - began
    recs = [rec for _, rec in store.iter_runs(out)]
    assert len(recs) == RUNS
    for r in recs:
        assert r.outcome == "completed" and r.integrity.verdict == "ok", (r.error, r.integrity)
        assert r.start is not None and r.start.kind == start, r.start
    overheads = [_overhead(r) for r in recs]
    info: dict[str, Any] = {
        "runs": RUNS, "campaign_s": round(campaign_s, 2),
        "overhead_median_s": round(statistics.median(overheads), 2),
        "overheads_s": [round(o, 2) for o in overheads],
        "wall_median_s": round(statistics.median(_wall(r) for r in recs), 2),
        "total_time_ms": [r.metrics.total_time_ms for r in recs],
        "transferred_bytes": [r.metrics.transferred_bytes for r in recs],
        "boot_s": [r.boot_s for r in recs],
        "restore_s": [r.start.restore_s if r.start else None for r in recs],
        "notes": notes,
    }
    # Campaign time outside the runs: probes, preflight, and for warm the one-time save
    inside = sum(_wall(r) for r in recs)
    info["outside_runs_s"] = round(campaign_s - inside, 2)
    _results[start] = info
    if start == "warm" and "cold" in _results:
        _check_ratio()
    benchmark.extra_info.update(info)
    print(f"\n{start}: per-run overhead median {info['overhead_median_s']} s "
          f"{info['overheads_s']}, campaign {campaign_s:.1f} s, outside runs "
          f"{info['outside_runs_s']} s; {notes}")


def _check_ratio() -> None:
    """Issue 18's target: warm at most a third of cold. Where a warm run's time goes (phases
    of its records): both QEMUs started side by side and the restore, about 0.2 s; from `cont`
    the pre-migration calc-dirty-rate beside the 5-report steady check, 0.5 s (the period 64
    expected dirtied samples need at 32 MiB/s, run/dirtyrate.py); `verify` after the
    observation, QEMU's completion seen, and teardown, about 0.1 s: 0.83 s vs cold 6.08 s
    (0.14) at a load average of 4. Before: 1.44 s
    (a 1 s period, started at the first report) vs cold 3.8 s, 0.38, on a quieter machine; 1.8 s
    before the calc ran beside the steady wait. Busy machines boot slower, so the ratio is lower
    there."""
    cold, warm = _results["cold"], _results["warm"]
    ratio = warm["overhead_median_s"] / cold["overhead_median_s"]
    warm["ratio_to_cold"] = round(ratio, 2)
    print(f"\nwarm/cold per-run overhead: {ratio:.2f} ({warm['overhead_median_s']} s vs "
          f"{cold['overhead_median_s']} s; target <= 0.33)")
    assert ratio <= 1 / 3, (cold["overheads_s"], warm["overheads_s"])


def test_cold_and_warm_mann_whitney(benchmark: Any, tmp_path: Path, hosts: HostsConfig,
                                    image: GuestImage) -> None:
    """5 cold and 5 warm runs of one converging, link-bound cell, interleaved (cold, warm, cold
    ...: a campaign of one run each, so that the machine's drift hits both alike; each warm
    campaign saves its guest anew, outside the runs)."""
    base: dict[str, Any] = {
        "guest": {"vcpus": 1, "memory_mib": 512}, "axes": {"feature": ["precopy"]},
        "limits": {"max_time_s": 60, "observe_after_s": 0.5},
        "workload": {"writer": {"working_set_mib": 64, "rate_mib_s": 8, "pattern": "sparse"}},
        "migration": {"max-bandwidth": "400mbit"},
    }
    recs: dict[str, list[RunRecord]] = {"cold": [], "warm": []}

    def interleaved() -> None:
        for rep, start in ((r, s) for r in range(1, RUNS + 1) for s in ("cold", "warm")):
            spec = MatrixSpec.model_validate({**base, "name": f"mw-{start}-{rep}",
                                              "repetitions": 1, "start": start})
            out = tmp_path / spec.name
            run_matrix(tmp_path / "m.yaml", spec, REPO / "hosts.yaml", hosts, out,
                       Progress(note=lambda _: None), image)
            [rec] = [r for _, r in store.iter_runs(out)]
            assert rec.outcome == "completed", rec.error
            assert rec.start is not None and rec.start.kind == start
            recs[start].append(rec)

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    for metric in ("total_time_ms", "transferred_bytes"):
        cold = [float(getattr(r.metrics, metric)) for r in recs["cold"]]
        warm = [float(getattr(r.metrics, metric)) for r in recs["warm"]]
        p = mannwhitneyu(cold, warm, alternative="two-sided").pvalue
        print(f"\n{metric}: cold {cold} warm {warm} Mann-Whitney p={p:.3f}")
        benchmark.extra_info[metric] = {"cold": cold, "warm": warm, "p": round(float(p), 3)}
        assert p > 0.05, (metric, cold, warm, p)
