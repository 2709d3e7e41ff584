"""The predictions section: the model's outcome and figures against the stored real runs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from harness.analysis.diagnosis import Diagnosis, Figures, diagnose
from harness.report.model import build_report
from harness.report.predictions import COMPLETES, NOT_CONVERGED, UNKNOWN, predictions
from harness.report.render import render
from harness.results import store

DATA = Path(__file__).resolve().parent.parent / "data"


def _records() -> list[store.RunRecord]:
    return store.records(DATA / "v1") + store.records(DATA / "campaign-seed")


def test_confusion_and_errors_on_the_stored_runs() -> None:
    """As measured when the model was written (docs): 12 of 13 valid outcomes right before the
    run, total time +6 % median, downtime +234 ms median (QEMU lifts max-bandwidth for the
    stop-and-copy over loopback; the model does not)."""
    recs = _records()
    p = predictions(recs)
    assert dict(p.table()) == {COMPLETES: [10, 0], NOT_CONVERGED: [1, 2], UNKNOWN: [0, 0]}
    assert p.scored == 13 and p.correct == 12
    assert p.left_out == {"not-migrated": 1, "corrupted": 1, "failed": 1}
    assert p.total_time_pct.n == 10 and p.total_time_pct.median is not None
    assert 0 < p.total_time_pct.median < 15
    assert p.downtime_ms.median is not None and 150 < p.downtime_ms.median < 300
    assert p.text("total_time_pct", "%").endswith("10 runs")
    # the link measured by the other runs (1.2-1.3 GiB/s over loopback) in place of the 50 MB/s
    # max-bandwidth for the stop-and-copy: the downtime error falls from +234 ms to ~0
    assert p.linked_downtime_ms.n == 10 and p.linked_downtime_ms.median is not None
    assert abs(p.linked_downtime_ms.median) < 20
    assert p.linked_early_downtime_ms.median is not None
    assert abs(p.linked_early_downtime_ms.median) < abs(p.early_downtime_ms.median or 0)
    head, rows = p.csv()
    assert len(rows) == 13 and head[3] == "predicted_outcome"


def test_a_mispredicted_outcome_is_not_a_time_error() -> None:
    rec = store.load_run(sorted((DATA / "v1").glob("*/1.json"))[0])
    d = diagnose(rec)
    measured = Figures(True, 10.0, 0.05, 3)
    wrong = Diagnosis("converged", "", (), (), Figures(False, None, None, None), None, None,
                      measured)
    right = Diagnosis("converged", "", (), (), Figures(True, 12.0, 0.15, 3), None, None,
                      measured)
    p = predictions([rec, rec], [wrong, right])  # the linked figures: the records' own
    assert p.confusion == {(NOT_CONVERGED, "completed"): 1, (COMPLETES, "completed"): 1}
    assert p.total_time_pct.n == 1 and round(p.total_time_pct.median or 0) == 20
    assert round(p.downtime_ms.median or 0) == 100
    assert d.factor  # the real record is diagnosed on its own too


def test_the_report_has_the_section_and_each_cell_its_diagnosis() -> None:
    recs = _records()
    report = build_report(recs, title="t")
    assert report.predictions is not None and report.predictions.scored == 13
    assert all(page.diagnosis is not None for page in report.cells)


def test_the_report_writes_predictions_csv_beside_the_other_tables(tmp_path: Path) -> None:
    """predictions.csv: one row per scored run, the prediction before it beside the measured
    figures, linked from the index's Predictions section like every other table."""
    recs = _records()
    report = build_report(recs, title="t")
    render(report, tmp_path)
    with open(tmp_path / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert report.predictions is not None and len(rows) == report.predictions.scored == 13
    by_run = {(r["cell_id"], r["repetition"]): r for r in rows}
    nc = by_run[("ebde118b7008", "1")]  # the link-bound precopy run (tests/data/v1)
    assert (nc["diagnosis"], nc["actual_outcome"], nc["total_time_s"]) == (
        "link-bound", "not converged", "")
    done = [r for r in rows if r["actual_outcome"] == "completed"]
    assert len(done) == 11 and all(float(r["total_time_s"]) > 0 for r in done)
    assert all(float(r["predicted_total_time_s"]) > 0 for r in done
               if r["predicted_outcome"] == "completes")
    rec = next(r for r in recs if r.cell.id == done[0]["cell_id"]
               and r.repetition == int(done[0]["repetition"]))
    assert rec.metrics.total_time_ms is not None
    assert float(done[0]["total_time_s"]) == round(rec.metrics.total_time_ms / 1000, 3)
    index = (tmp_path / "index.html").read_text()
    linked = set(re.findall(r'class="csv" href="([^"]+)"', index))
    assert "predictions.csv" in linked
    assert all((tmp_path / name).exists() for name in linked), linked


def test_a_runs_own_link_figure_never_feeds_its_prediction() -> None:
    """One run alone has no link figure from others: its linked rows stay empty."""
    rec = store.load_run(DATA / "v1" / "c2ae7ae07f48" / "1.json")
    p = predictions([rec])
    assert p.total_time_pct.n == 1 and p.linked_total_time_pct.n == 0
    assert p.text("linked_downtime_ms", "ms") == "-"
