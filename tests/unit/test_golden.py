"""Behaviour unchanged: the real v1 campaign (tests/data/v1) rendered by the current code against
what migbench made of it before the typed run record (tests/data/golden-report, from 26aa4c4).

Every CSV the report writes, summary.csv, the CSV export, ``show``, the compare verdict and the
nightly history's identity and cell keys must carry the same figures. The only differences are
the two issue 13 asked for, listed here:

* the guest-visible downtime of a run that never switched over is undefined: the two
  not-converged runs (872aefb50589, ebde118b7008) lose theirs (7.5 and 3.7 ms, the writer's
  longest stall while the guest kept running on the source) in summary.csv, the export and show;
* ``show`` says what the integrity checks found in the corrupted run (ca53824e9fde);
* issue 16: summary.csv and the export have the diagnosis columns (``store.DIAGNOSIS_COLUMNS``,
  filled by the same function) before ``error``, and ``show`` adds each run's diagnosis lines
  and a block per cell.
* issue 17: the report judges the guest's network and services as a night does: ping max gap
  (and service p99 and service-visible downtime, which these runs do not have) join its metrics,
  a column of each metric table and a row of each per-metric table (:data:`ADDED_METRICS`).

The compare verdict's cell keys are the one cell coordinate key now (compact JSON of the same
fields): they are compared as the JSON they are.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.analysis import compare, history, regress
from harness.analysis.diagnosis import summary_columns
from harness.ci import abtest
from harness.results import store

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDEN = DATA / "golden-report"
NO_SWITCHOVER = {"872aefb50589": "7.5", "ebde118b7008": "3.7"}  # cell id: its old figure
CORRUPTED = "ca53824e9fde"
COUNTS = "(12 of 65536 pages differ; the guest crashed; the guest stopped running)"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The campaign as the golden copy was made of it, by today's code."""
    out = tmp_path_factory.mktemp("golden")
    camp = out / "camp"
    shutil.copytree(DATA / "v1", camp, ignore=shutil.ignore_patterns("README.md", "summary.csv"))
    assert cli.main(["report", str(camp), "--baseline", "old", "-o", str(out / "report")]) == 0
    assert cli.main(["export", str(camp), "--format", "csv", "-o", str(out / "export.csv")]) == 0
    store.write_summary(camp, annotate=summary_columns)
    shutil.move(camp / "summary.csv", out / "summary.csv")
    return out


def _show(camp: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(["show", str(camp)]) == 0
    return capsys.readouterr().out


def _number(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return cell


def _table(path: Path) -> list[list[Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [[_number(c) for c in row] for row in csv.reader(f)]


def _report_csvs() -> list[Path]:
    return sorted(p.relative_to(GOLDEN) for p in (GOLDEN / "report").rglob("*.csv"))


def test_the_golden_copy_is_there() -> None:
    assert len(_report_csvs()) >= 70
    assert {"report/compare.csv", "report/overview.csv",
            f"report/cells/{CORRUPTED}-runs.csv"} <= {str(p) for p in _report_csvs()}


#: Metric labels a report has judged since the golden copy was made (issue 17).
ADDED_METRICS = tuple(compare.SUMMARY_METRICS[k].label for k in (
    "ping_max_gap_ms", "service_p99_ms", "service_max_gap_ms"))


def _without_added(table: list[list[Any]]) -> tuple[list[list[Any]], int]:
    """``table`` less the added metrics' columns (a header that starts with one) and, in a
    table of a row per judged metric (stats, compare), their rows; and how many it had."""
    head = table[0] if table else []
    cols = {i for i, c in enumerate(head) if str(c).startswith(ADDED_METRICS)}
    per_metric = head[:1] in (["metric"], ["comparison"])
    rows = [r for r in table if not (per_metric and any(c in ADDED_METRICS for c in r))]
    n = len(cols) + len(table) - len(rows)
    return [[c for i, c in enumerate(r) if i not in cols] for r in rows], n


@pytest.mark.parametrize("name", _report_csvs(), ids=str)
def test_every_report_csv_has_the_same_figures(name: Path, rendered: Path) -> None:
    new, _ = _without_added(_table(rendered / name))
    assert new == _table(GOLDEN / name)


def test_the_report_judges_ping_max_gap_where_runs_pinged(rendered: Path) -> None:
    assert _without_added(_table(rendered / "report" / "overview.csv"))[1] == 1
    assert _without_added(_table(rendered / "report" / "compare.csv"))[1] >= 1


@pytest.mark.parametrize("name", ["summary.csv", "export.csv"])
def test_summary_and_export_differ_only_by_the_downtime_of_runs_without_switchover(
        name: str, rendered: Path) -> None:
    old, new = _table(GOLDEN / name), _table(rendered / name)
    diag = [new[0].index(c) for c in store.DIAGNOSIS_COLUMNS]
    assert diag == list(range(diag[0], diag[0] + len(diag))) and new[0][diag[-1] + 1] == "error"
    assert all(row[diag[0]] for row in new[1:])  # every run has a diagnosis
    if name == "export.csv":  # the same as summary.csv's
        summary = _table(rendered / "summary.csv")
        assert [row[diag[0]:diag[-1] + 1] for row in new] == [
            row[diag[0]:diag[-1] + 1] for row in summary]
    new = [row[:diag[0]] + row[diag[-1] + 1:] for row in new]
    # Metrics added after the golden copy (the service workload's, issue 17; each run's start
    # and phases, issue 18, which v1 records do not have): empty for its runs.
    added = [i for i, c in enumerate(new[0])
             if c in ("service_p99_ms", "service_max_gap_ms", *store.TIME_COLUMNS,
                      *store.STORAGE_COLUMNS)]
    assert all(row[i] == "" for row in new[1:] for i in added)
    new = [[c for i, c in enumerate(row) if i not in added] for row in new]
    assert old[0] == new[0] and len(old) == len(new)
    cid, col = old[0].index("cell_id"), old[0].index("guest_visible_downtime_ms")
    changed = set()
    for before, after in zip(old[1:], new[1:], strict=True):
        if before[cid] in NO_SWITCHOVER:
            assert before[col] == float(NO_SWITCHOVER[before[cid]]) and after[col] == ""
            assert before[old[0].index("outcome")] == "not-converged"
            before = before[:col] + [""] + before[col + 1:]
            changed.add(before[cid])
        assert after == before
    assert changed == set(NO_SWITCHOVER)


def _blocks(text: str) -> dict[str, str]:
    """Each run's block of ``show``, whitespace folded (the terminal's wrapping aside)."""
    out = {}
    for block in text.split("== ")[1:]:
        if block.startswith("cell "):  # a cell's diagnosis (issue 16)
            continue
        block = block.split("\n  diagnosis: ", 1)[0]
        cell = block.split(" / ", 1)[1].split(" ", 1)[0]
        out[cell] = " ".join(block.split())
    return out


def test_show_differs_only_by_the_integrity_counts_and_the_downtime_without_switchover(
        rendered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    camp = rendered / "shown"
    shutil.copytree(DATA / "v1", camp, ignore=shutil.ignore_patterns("README.md", "summary.csv"))
    shown = _show(camp, capsys)
    assert shown.count("\n  diagnosis: ") == 13 and shown.count("\n== cell ") == 13
    old, new = _blocks((GOLDEN / "show.txt").read_text()), _blocks(shown)
    assert old.keys() == new.keys() and len(old) == 13
    for cell, block in old.items():
        if cell in NO_SWITCHOVER:
            gone = f" guest-visible downtime: {NO_SWITCHOVER[cell]} ms"
            assert gone in block and gone not in new[cell]
            block = block.replace(gone, "")
        if cell == CORRUPTED:
            block = block.replace("integrity corrupted (RAM", f"integrity corrupted {COUNTS} (RAM")
        assert new[cell] == block, cell


def test_compare_verdict_and_history_keys_are_unchanged(rendered: Path) -> None:
    camp = rendered / "verdict"
    shutil.copytree(DATA / "v1", camp, ignore=shutil.ignore_patterns("README.md", "summary.csv"))
    records = [r for _, r in store.iter_runs(camp)]
    verdict = abtest.compare_verdict(records, "old", "new", regress.Thresholds())
    del verdict["finished_utc"]
    new = json.loads(json.dumps(verdict, sort_keys=True))
    old = json.loads((GOLDEN / "verdict.json").read_text())
    for doc in (old, new):
        for cell in doc["cells"]:
            cell["key"] = json.loads(cell["key"])  # the coordinates, whatever their spelling
    assert new == old
    golden = json.loads((GOLDEN / "history.json").read_text())
    ident = history.identity_of(records)
    assert json.loads(json.dumps(ident)) == golden["identity"]
    assert history.identity_key(ident) == golden["identity_key"]
    # a night's cells match the earlier nights' by these keys: they must not move
    assert sorted(history.group_by_cell(records)) == golden["coordinate_keys"]
