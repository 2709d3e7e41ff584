"""Issue 15 on real QEMU: a compression-bound cell on 7.2 with ``compress-wait-thread: false``
counts busy pages, its per-thread table lists each compress thread on the source and each
decompress thread on the destination, and a before/after slide (wait true vs false) renders.

Short runs on the local pair under TCG (two shared cores): what more threads do is not judged
here; the figures are what QEMU and /proc reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guest.image import GuestImage
from harness.plan.models import HostsConfig
from harness.report import make_report
from harness.report.featurestats import feature_stats
from harness.report.slides import by_cell
from harness.report.threads import thread_table
from harness.results import store
from harness.results.record import RunRecord
from harness.run.runner import run_matrix

from .conftest import REPO, matrix

pytestmark = pytest.mark.integration
THREADS = 2


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory, hosts: HostsConfig,
             image: GuestImage) -> Path:
    spec = matrix(
        name="slides", repetitions=1,
        guest={"vcpus": 1, "memory_mib": 512},
        # 50 Hz: the wait-false migration lasts a few hundred ms, and a thread needs two samples
        limits={"max_time_s": 8, "observe_after_s": 0.5, "sample_hz": 50},
        workload={"writer": {"working_set_mib": 64, "rate_mib_s": 16, "pattern": "text"}},
        migration={"max-bandwidth": "unlimited", "downtime-limit": 300, "compress-level": 9,
                   "compress-threads": THREADS, "decompress-threads": THREADS},
        variants={"q72": {"build": "7.2"}},
        axes={"feature": ["compress"], "compress-wait-thread": [True, False]},
    )
    out = tmp_path_factory.mktemp("slides") / "runs"
    run_matrix(Path("slides.yaml"), spec, REPO / "hosts.yaml", hosts, out, None, image)
    return out


@pytest.fixture(scope="module")
def runs(campaign: Path) -> dict[bool, list[RunRecord]]:
    keyed: dict[bool, list[RunRecord]] = {}
    for _, r in store.iter_runs(campaign):
        keyed.setdefault(bool(r.cell.axes["compress-wait-thread"]), []).append(r)
    assert set(keyed) == {True, False}, keyed
    return keyed


def test_wait_false_counts_busy_pages(runs: dict[bool, list[RunRecord]]) -> None:
    stats = feature_stats(runs[False])
    assert stats.compression is not None
    rows = {r.figure.key: r.spread for r in stats.compression.rows}
    busy, ratio = rows["busy"], rows["busy_ratio"]
    assert busy is not None and busy.median > 0
    assert ratio is not None and 0 < ratio.median <= 1  # busy over every page saved, the run


def test_each_compress_and_decompress_thread_is_a_row(runs: dict[bool, list[RunRecord]]) -> None:
    table = thread_table([("wait false", runs[False])])
    labels = {(r.side, r.key.label) for r in table.rows}
    for i in range(THREADS):
        assert ("source", f"compress {i}") in labels, sorted(labels)
        assert ("destination", f"decompress {i}") in labels, sorted(labels)
    assert not any(side == "destination" and lab.startswith("compress ") for side, lab in labels)
    assert any(ib.side == "source" and ib.role == "compress" for ib in table.imbalance)


def test_report_has_the_slide_and_the_cell_tables(campaign: Path,
                                                  runs: dict[bool, list[RunRecord]],
                                                  tmp_path: Path) -> None:
    before, after = runs[True][0].cell.id, runs[False][0].cell.id
    pages = make_report(campaign, tmp_path / "report", slide_specs=[f"{before}..{after}"])
    slide_page = tmp_path / "report" / "slides" / f"{before}-{after}.html"
    assert slide_page in pages
    html = slide_page.read_text()
    assert 'id="block-before"' in html and 'id="block-after"' in html
    assert "compress 1" in html and "decompress 1" in html
    threads = (tmp_path / "report" / "cells" / f"{after}-threads.csv").read_text()
    assert "source,compress 1,compress,1," in threads
    assert "destination,decompress 1,decompress,1," in threads
    assert by_cell([*runs[True], *runs[False]]).keys() == {before, after}
