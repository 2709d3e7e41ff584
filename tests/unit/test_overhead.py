"""Phase durations of a run and the overhead around its migration (pure)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.overhead import campaign_time, phase_line, phases, run_overhead
from harness.results import store
from harness.results.record.codec import dump, loads
from harness.results.record.model import Phases, RunRecord, StartInfo, StateChange

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = 1_700_000_000.0


def states(*pairs: tuple[str, float]) -> list[StateChange]:
    return [StateChange.model_validate({"state": s, "t": T0 + t}) for s, t in pairs]


def completed() -> list[StateChange]:
    return states(("boot", 0.2), ("steady", 0.4), ("setup", 3.9), ("migrate", 4.9),
                  ("verify", 7.6), ("teardown", 10.8))


def test_phases_follow_the_states_and_move_the_boot_to_the_start() -> None:
    p = phases(completed(), T0, T0 + 11.5, boot_s=3.0)
    assert p.wall_s == 11.5 and p.prepare_s == 0.2
    assert p.start_s == pytest.approx(0.2 + 3.0) and p.steady_s == pytest.approx(0.5)
    assert p.setup_s == 1.0 and p.migration_s == 2.7 and p.observation_s == 3.2
    assert p.teardown_s == 0.7


def test_a_run_that_did_not_converge_has_no_observation() -> None:
    p = phases(states(("boot", 0.0), ("steady", 0.1), ("setup", 2.0), ("migrate", 3.0),
                      ("teardown", 15.0)), T0, T0 + 16.0, boot_s=1.5)
    assert p.observation_s is None and p.migration_s == 12.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 30), min_size=1, max_size=6), st.floats(0, 5), st.floats(0, 5),
       st.one_of(st.none(), st.floats(0, 10)))
def test_phases_add_up_to_the_wall_time(gaps: list[float], before: float, after: float,
                                        boot: float | None) -> None:
    names = ["boot", "steady", "setup", "migrate", "verify", "teardown"][:len(gaps)]
    t, pairs = before, []
    for name, gap in zip(names, gaps):
        pairs.append((name, t))
        t += gap
    p = phases(states(*pairs), T0, T0 + t + after, boot_s=boot)
    parts = [p.prepare_s, p.start_s, p.steady_s, p.setup_s, p.migration_s, p.observation_s,
             p.teardown_s]
    assert sum(v for v in parts if v is not None) == pytest.approx(p.wall_s, abs=0.01)
    assert all(v is None or v >= 0 for v in parts)


def record(phases_: Phases | None, observe: float = 3.0) -> RunRecord:
    rec = store.load_run(DATA / "campaign-seed" / "38edd36b762e" / "1.json")
    limits = rec.cell.limits.model_copy(update={"observe_after_s": observe})
    cell = rec.cell.model_copy(update={"limits": limits})
    return rec.model_copy(update={"phases": phases_, "cell": cell})


def test_overhead_is_wall_minus_migration_minus_configured_observation() -> None:
    p = phases(completed(), T0, T0 + 11.5, boot_s=3.0)
    rec = record(p, observe=3.0)
    assert run_overhead(rec) == pytest.approx(11.5 - 2.7 - 3.0)
    # integrity checks beyond the configured observation are overhead too
    assert run_overhead(record(p, observe=2.0)) == pytest.approx(11.5 - 2.7 - 2.0)
    line = phase_line(rec)
    assert line is not None and "migration 2.7 s" in line and "overhead 5.8 s" in line
    total = campaign_time([rec, rec, record(None)])
    assert total is not None and total.runs == 2 and total.wall_s == 23.0
    assert total.outside_share == pytest.approx(1 - 5.4 / 23.0)
    assert "77% outside migrations" in total.line()
    assert run_overhead(record(None)) is None and campaign_time([record(None)]) is None


def test_the_phase_line_says_how_the_source_came_up() -> None:
    rec = record(phases(completed(), T0, T0 + 11.5, boot_s=3.0))
    warm = phase_line(rec.model_copy(update={"start": StartInfo(kind="warm", restore_s=0.213)}))
    assert warm is not None and warm.endswith("; warm start (restored in 0.21 s)")
    why = "restoring the saved guest failed, this run booted: QEMU said: Not a migration stream"
    cold = phase_line(rec.model_copy(update={"start": StartInfo(kind="cold", reason=why)}))
    assert cold is not None and cold.endswith(f"; cold start: {why}")
    plain = phase_line(rec.model_copy(update={"start": StartInfo(kind="cold")}))
    assert plain is not None and plain.endswith("; cold start")


def test_old_records_load_without_phases_and_new_ones_keep_them() -> None:
    rec = store.load_run(DATA / "campaign-seed" / "38edd36b762e" / "1.json")
    assert rec.phases is None and rec.repetitions is None
    data = json.loads(dump(record(phases(completed(), T0, T0 + 11.5))))
    again = loads(json.dumps(data))
    assert again.phases is not None and again.phases.migration_s == 2.7


def test_summary_and_export_carry_the_start_and_the_phases(tmp_path: Path) -> None:
    """summary.csv and `migbench export` name each run's start kind (and why it booted) and its
    phases with the overhead; an old record without them leaves the cells empty."""
    p = phases(completed(), T0, T0 + 11.5, boot_s=3.0)
    restore_failed = "restoring the saved guest failed, this run booted:\nbad magic"
    for rep, start in ((1, StartInfo(kind="warm", state="k", restore_s=0.2)),
                       (2, StartInfo(kind="cold", reason=restore_failed))):
        store.write_run(tmp_path, record(p).model_copy(update={"repetition": rep,
                                                               "start": start}))
    store.write_run(tmp_path, record(None).model_copy(update={"repetition": 3}))
    store.write_summary(tmp_path)
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["start"] for r in rows] == ["warm", "cold", ""]
    assert rows[1]["start_reason"] == restore_failed.replace("\n", " ")
    assert rows[0]["overhead_s"] == "5.8" and rows[0]["wall_s"] == "11.5"
    assert (rows[0]["phase_start_s"], rows[0]["phase_migration_s"]) == ("3.2", "2.7")
    assert rows[2]["overhead_s"] == rows[2]["phase_steady_s"] == ""
    df = store.load(tmp_path)
    assert list(df["start"])[:2] == ["warm", "cold"] and pd.isna(list(df["start"])[2])
    assert df["overhead_s"].dtype == "float64" and df["phase_setup_s"].iloc[0] == 1.0
    for fmt in ("csv", "parquet"):
        back = store.export(tmp_path, fmt)
        again = pd.read_csv(back) if fmt == "csv" else pd.read_parquet(back)
        assert list(again["overhead_s"])[:2] == [5.8, 5.8], fmt
        assert list(again["start"])[:2] == ["warm", "cold"], fmt


def test_the_cell_page_names_each_runs_start_and_why_it_booted(tmp_path: Path) -> None:
    """The report, like show and summary.csv, says per run whether it was restored or booted,
    and why it booted (text from QEMU's log: escaped)."""
    from harness.report import make_report

    camp, old = tmp_path / "camp", tmp_path / "old"
    camp.mkdir()
    old.mkdir()
    p = phases(completed(), T0, T0 + 11.5, boot_s=3.0)
    why = "restoring the saved guest failed, this run booted: <b>bad</b> magic"
    for rep, start in ((1, StartInfo(kind="warm", state="k", restore_s=0.2)),
                       (2, StartInfo(kind="cold", reason=why))):
        store.write_run(camp, record(p).model_copy(update={"repetition": rep, "start": start}))
    make_report(camp, tmp_path / "report")
    page = next((tmp_path / "report" / "cells").glob("*.html")).read_text()
    cells = re.findall(r'<td class="start">(.*?)</td>', page)
    assert cells[0] == "warm" and cells[1].startswith("cold <span class=\"note\">(")
    assert "&lt;b&gt;bad&lt;/b&gt; magic" in cells[1] and "<b>bad</b>" not in page
    # an older record (no start) draws no start column
    store.write_run(old, record(p))
    make_report(old, tmp_path / "report-old")
    assert 'class="start"' not in next((tmp_path / "report-old" / "cells").glob("*.html")).read_text()
