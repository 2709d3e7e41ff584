"""Repetitions that stop when sure: the matrix setting, the rule, and the schedule of runs (pure)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.stats import t_interval
from harness.analysis.stopping import MAX, SURE, UNANIMOUS, RunFigures, decide, first_stop
from harness.errors import ConfigError
from harness.plan.config import load_matrix
from harness.plan.matrix import Cell, expand
from harness.plan.models import MatrixSpec
from harness.plan.repetitions import Repetitions
from harness.run.runner import run_order
from harness.run.schedule import WAIT, AdaptiveSchedule

RULE = Repetitions(min=3, max=10, ci=0.05)


def done(total: float = 2700.0, down: float = 40.0, status: str = "completed") -> RunFigures:
    timed = status == "completed"
    return RunFigures(status, timed, {"total_time_ms": total if timed else None,
                                      "downtime_ms": down if timed else None})


# -- the matrix setting

def write(tmp_path: Path, reps: Any) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "repetitions": reps}))
    return path


def test_plain_number_keeps_its_meaning(tmp_path: Path) -> None:
    spec = load_matrix(write(tmp_path, 4))
    assert spec.repetitions == 4 and isinstance(spec.repetitions, int)


def test_mapping_with_a_percentage(tmp_path: Path) -> None:
    spec = load_matrix(write(tmp_path, {"min": 2, "max": 6, "ci": "2.5%"}))
    assert spec.repetitions == Repetitions(min=2, max=6, ci=0.025)
    assert str(spec.repetitions) == "2..6"
    assert load_matrix(write(tmp_path, {"ci": 0.1})).repetitions == Repetitions(ci=0.1)


@pytest.mark.parametrize(("reps", "expected"), [
    ({"min": 0}, "repetitions.min: Input should be greater than or equal to 1"),
    ({"min": 4, "max": 3}, "repetitions: max (3) is below min (4): make max at least min"),
    ({"max": 1001}, "repetitions.max: Input should be less than or equal to 1000"),
    ({"ci": "0%"}, "repetitions.ci: '0%' must be above 0% and below 100%"),
    ({"ci": "100%"}, "repetitions.ci: '100%' must be above 0% and below 100%"),
    ({"ci": 5}, "repetitions.ci: 5 is ambiguous: write it as a percentage (e.g. 5%)"),
    ({"ci": "five"}, "repetitions.ci: 'five' is not a percentage: write e.g. 5%"),
    ({"ci": True}, "repetitions.ci: True is not a percentage"),
    ({"min": 3, "mx": 5}, "repetitions.mx: unknown key"),
    (True, "repetitions: a boolean where a whole number belongs"),
    (0, "repetitions: Input should be greater than 0"),
])
def test_bad_settings_are_one_line_errors_naming_file_and_key(tmp_path: Path, reps: Any,
                                                               expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_matrix(write(tmp_path, reps))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "m.yaml") in msg and expected in msg, msg


# -- the interval and the rule

def test_t_interval_is_students() -> None:
    iv = t_interval([10.0, 12.0, 14.0])
    assert iv is not None and iv.mean == 12.0
    # t(0.975, 2) = 4.3027; s = 2; half-width = 4.3027 * 2 / sqrt(3)
    assert iv.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)
    assert t_interval([1.0]) is None and t_interval([None, 3.0]) is None
    same = t_interval([5.0, 5.0, 5.0])
    assert same is not None and same.relative == 0.0


def test_not_before_min() -> None:
    d = decide(RULE, [done(), done()])
    assert not d.stop and d.reason == ""


def test_steady_completed_cell_is_sure_at_min() -> None:
    d = decide(RULE, [done(2700, 40), done(2705, 40.5), done(2698, 39.8)])
    assert d.stop and d.reason == SURE and d.outcome == "completed"
    assert "total time 2701 ms ±0.3 %" in d.text() and d.text().startswith("3 runs, stopped: sure")


def test_noisy_downtime_keeps_it_going_then_max() -> None:
    runs = [done(2700, down) for down in (3, 7, 3, 6, 4, 7, 3, 6, 5, 3)]
    assert not decide(RULE, runs[:9]).stop
    d = decide(RULE, runs)
    assert d.stop and d.reason == MAX and "downtime" in d.text()


def test_unanimous_outcome_without_timings_stops_at_min() -> None:
    d = decide(RULE, [done(status="not-converged")] * 3)
    assert d.stop and d.reason == UNANIMOUS and d.outcome == "not-converged"
    assert "unanimous outcome (not-converged)" in d.text()
    assert decide(RULE, [done(status="skipped")] * 3).reason == UNANIMOUS


def test_mixed_outcome_never_stops_before_max() -> None:
    runs = [done(), done(status="not-converged")] * 5
    for k in range(3, 10):
        assert not decide(RULE, runs[:k]).stop
    assert decide(RULE, runs).reason == MAX


def test_timing_excluded_cell_stops_on_its_outcome() -> None:
    excluded = RunFigures("completed", False, {"total_time_ms": 9000.0, "downtime_ms": 300.0})
    assert decide(RULE, [excluded] * 3).reason == UNANIMOUS


def test_first_stop_finds_the_run_it_was_sure() -> None:
    runs = [done(2700, 40), done(2700, 40), done(2700, 40), done(2700, 80), done(2700, 40)]
    assert first_stop(RULE, runs) == 3
    assert first_stop(RULE, [done(2700, d) for d in (3, 7, 3)]) is None


FIGURE = st.floats(min_value=1, max_value=1e6, allow_nan=False)
STATUS = st.sampled_from(["completed", "not-converged", "failed", "corrupted"])
RUN = st.builds(lambda s, t, d: done(t, d, s), STATUS, FIGURE, FIGURE)
RULES = st.builds(lambda lo, extra, ci: Repetitions(min=lo, max=lo + extra, ci=ci),
                  st.integers(1, 6), st.integers(0, 6), st.floats(0.001, 0.999))


@settings(max_examples=300, deadline=None)
@given(RULES, st.lists(RUN, max_size=14))
def test_rule_invariants(rule: Repetitions, runs: list[RunFigures]) -> None:
    d = decide(rule, runs)
    n = len(runs)
    if n < rule.min:
        assert not d.stop  # min always runs
    if n >= rule.max:
        assert d.stop  # never beyond max
    if d.stop and d.reason in (SURE, UNANIMOUS):
        assert len({r.status for r in runs}) == 1  # sure only of one outcome
    if d.reason == SURE:
        for iv in d.intervals.values():
            assert iv is not None and iv.relative is not None and iv.relative <= rule.ci
    if not d.stop:
        assert rule.min <= n < rule.max or n < rule.min


@settings(max_examples=200, deadline=None)
@given(st.floats(1, 1e5), st.lists(st.floats(-0.5, 0.5), min_size=3, max_size=10),
       st.floats(0.01, 0.5))
def test_a_tighter_sample_is_never_less_sure(base: float, jitter: list[float],
                                             ci: float) -> None:
    rule = Repetitions(min=3, max=20, ci=ci)
    wide = [done(base * (1 + j), base * (1 + j)) for j in jitter]
    tight = [done(base * (1 + j / 10), base * (1 + j / 10)) for j in jitter]
    if decide(rule, wide).reason == SURE:
        assert decide(rule, tight).reason == SURE


# -- the schedule

def cells(**axes: Any) -> list[Cell]:
    spec = MatrixSpec(name="t", axes=axes or {"feature": ["precopy", "xbzrle"]})
    return expand(spec, "10.0")


def drain(s: AdaptiveSchedule, outcome: dict[str, list[RunFigures]]) -> list[tuple[str, int]]:
    """Run the schedule with one worker; each cell's n-th run gives ``outcome[id][n-1]``."""
    order = []
    while (item := s.next()) is not None:
        assert item is not WAIT
        assert isinstance(item, tuple)
        cell, rep = item
        s.started(cell, rep)
        order.append((cell.id, rep))
        s.finished(cell, rep, outcome[cell.id][rep - 1])
    return order


def test_cells_order_runs_each_cell_until_it_stops() -> None:
    a, b = cells()
    rule = Repetitions(min=2, max=5, ci=0.05)
    s = AdaptiveSchedule([a, b], rule, "cells")
    outcome = {a.id: [done(status="not-converged")] * 5,
               b.id: [done(2700, d) for d in (3, 7, 3, 6, 4)]}
    order = drain(s, outcome)
    assert order == [(a.id, 1), (a.id, 2), (b.id, 1), (b.id, 2), (b.id, 3), (b.id, 4), (b.id, 5)]
    assert s.decision(a.id).reason == UNANIMOUS and s.decision(b.id).reason == MAX
    assert s.planned() == (7, 7, 7) and not s.pending()


def test_interleaved_rounds_keep_open_cells_alternating() -> None:
    cs = cells(feature=["precopy", "xbzrle", "multifd"])
    rule = Repetitions(min=1, max=4, ci=0.05)
    s = AdaptiveSchedule(cs, rule, "interleaved")
    outcome = {cs[0].id: [done(2700, 40)] * 4,  # sure after 2 (needs 2 values)
               cs[1].id: [done(2700, d) for d in (3, 7, 3, 6)],
               cs[2].id: [done(2700, d) for d in (3, 9, 2, 8)]}
    order = [(next(i for i, c in enumerate(cs) if c.id == cid), rep)
             for cid, rep in drain(s, outcome)]
    assert order == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2), (1, 3), (2, 3),
                     (1, 4), (2, 4)]


def test_variants_of_a_point_stop_together() -> None:
    spec = MatrixSpec.model_validate({
        "name": "t", "variants": {"old": {}, "new": {"qemu_args": ["-cpu", "max"]}},
        "order": "interleaved", "repetitions": {"min": 2, "max": 5, "ci": "5%"}})
    old, new = expand(spec, "10.0")
    assert isinstance(spec.repetitions, Repetitions)
    s = AdaptiveSchedule([old, new], spec.repetitions, "interleaved")
    outcome = {old.id: [done(2700, 40)] * 5, new.id: [done(2700, d) for d in (3, 7, 3, 9, 5)]}
    order = drain(s, outcome)
    # old is sure after 2 runs, but runs on beside new (A B A B ...) until new stops at max
    assert [cid == old.id for cid, _ in order] == [True, False] * 5
    assert first_stop(spec.repetitions, [outcome[old.id][i] for i in range(5)]) == 2


def test_a_plain_number_keeps_the_fixed_run_order() -> None:
    a, b = cells()
    assert run_order([a, b], 2, "interleaved") == [(a, 1), (b, 1), (a, 2), (b, 2)]
    assert run_order([a, b], 2, "cells") == [(a, 1), (a, 2), (b, 1), (b, 2)]


def test_two_workers_wait_for_the_runs_a_decision_rests_on() -> None:
    (a,) = cells(feature=["precopy"])
    s = AdaptiveSchedule([a], Repetitions(min=2, max=4, ci=0.05), "cells")
    first, second = s.next(), None
    assert first == (a, 1)
    s.started(a, 1)
    second = s.next()
    assert second == (a, 2)
    s.started(a, 2)
    assert s.next() is WAIT  # repetition 3 depends on 1 and 2
    s.finished(a, 1, done(2700, 3))
    assert s.next() is WAIT
    assert s.finished(a, 2, done(2700, 9)) == []  # not sure: the cell stays open
    assert s.next() == (a, 3)


def test_resume_continues_from_the_stored_runs() -> None:
    a, b = cells()
    rule = Repetitions(min=3, max=5, ci=0.05)
    s = AdaptiveSchedule([a, b], rule, "cells")
    # a stopped before (unanimous); b has runs 1, 2 and 4 (3 was interrupted)
    for rep in (1, 2, 3):
        s.stored(a.id, rep, done(status="not-converged"))
    for rep, down in ((1, 3), (2, 8), (4, 3)):
        s.stored(b.id, rep, done(2700, down))
    assert s.planned() == (6, 6, 8)  # a: 3 (stopped); b: 3 stored, 3 to 5 in all
    assert s.next() == (b, 3)  # the gap first, within min
    s.started(b, 3)
    s.finished(b, 3, done(2700, 7))
    assert s.next() == (b, 5)  # repetition 4 is stored: 5 is the next, decided on 1-4
    s.started(b, 5)
    stopped = s.finished(b, 5, done(2700, 4))
    assert [(c.id, d.reason) for c, d in stopped] == [(b.id, MAX)]
    assert s.next() is None and not s.pending()


def test_a_run_that_was_not_saved_runs_again() -> None:
    (a,) = cells(feature=["precopy"])
    s = AdaptiveSchedule([a], Repetitions(min=1, max=3, ci=0.05), "cells")
    assert s.next() == (a, 1)
    s.started(a, 1)
    s.finished(a, 1, None)  # interrupted: not stored
    assert s.next() == (a, 1)


# -- what the report and show say (records of a real campaign, given the rule and phases)

def adaptive_campaign(tmp_path: Path) -> Path:
    """tests/data/v1 as if it had run under repetitions {min: 1, max: 3, ci: 5%}, with phases."""
    from harness.results import store
    from harness.results.record.codec import dump
    from harness.results.record.model import Phases, RepetitionRule

    src = Path(__file__).resolve().parents[1] / "data" / "v1"
    out = tmp_path / "camp"
    for _, rec in store.iter_runs(src):
        rec = rec.model_copy(update={
            "repetitions": RepetitionRule(min=1, max=3, ci=0.05),
            "phases": Phases(wall_s=10.0, start_s=3.0, steady_s=0.5, setup_s=1.0,
                             migration_s=2.5, observation_s=2.0, teardown_s=1.0)})
        path = out / rec.cell.id / f"{rec.repetition}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump(rec))
    return out


def test_report_and_show_say_how_many_runs_and_why(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli
    from harness.analysis.compare import Record
    from harness.report.model import cell_page
    from harness.results import store

    camp = adaptive_campaign(tmp_path)
    records: list[Record] = store.records(camp)
    by_cell: dict[str, list[Record]] = {}
    for r in records:
        by_cell.setdefault(r.cell.id, []).append(r)
    stops = {}
    for recs in by_cell.values():
        page = cell_page(recs, [])
        assert page.repetitions is not None and page.time_line is not None
        stops[page.stop] = page.repetitions
        assert page.reps[0].overhead == f"{10.0 - 2.5 - min(2.0, recs[0].cell.limits.observe_after_s):.1f}"
    # one run each in v1: a completed cell has no interval yet, a failed one is unanimous
    assert "unanimous outcome" in stops and "open" in stops
    assert "1 run, stopped: unanimous outcome" in stops["unanimous outcome"]
    assert cli.main(["report", str(camp), "-o", str(tmp_path / "rep")]) == 0
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "unanimous outcome" in index and "outside migrations" in index
    capsys.readouterr()
    assert cli.main(["show", str(camp)]) == 0
    shown = capsys.readouterr().out
    assert "repetitions 1..3: 1 run, stopped: unanimous outcome" in shown
    assert "overhead" in shown and "75% outside migrations" in shown


def test_compare_verdict_notes_each_sides_runs(tmp_path: Path) -> None:
    from harness.analysis import regress
    from harness.ci.abtest import compare_verdict
    from harness.results import store

    records = store.records(adaptive_campaign(tmp_path))
    variants = sorted({r.cell.variant for r in records})
    assert len(variants) == 2
    v = compare_verdict(records, variants[0], variants[1], regress.Thresholds())
    notes = [n for c in v["cells"] for n in c["notes"]]
    assert any(n.startswith(f"{variants[0]}: repetitions 1..3: 1 run") for n in notes)
    assert any(n.startswith(f"{variants[1]}: repetitions 1..3: 1 run") for n in notes)


def test_the_progress_columns_show_the_planned_range() -> None:
    from rich.progress import Progress

    from harness.cli import RunCountColumn, RunEtaColumn

    with Progress(RunCountColumn(), RunEtaColumn(), disable=True) as bar:
        task = bar.add_task("x", total=20, first_start=None, resumed=0)
        t = bar.tasks[task]
        assert RunCountColumn().render(t).plain == " 0/20"
        bar.update(task, completed=2, planned_lo=6, first_start=t.get_time() - 20.0)
        assert RunCountColumn().render(t).plain == "2/6..20"
        # 10 s a run so far: 4 to 18 runs left
        assert RunEtaColumn().render(t).plain in ("0:00:40..0:03:00", "0:00:41..0:03:01")


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from(["cells", "interleaved"]), st.integers(1, 3),
       st.integers(0, 3), st.integers(1, 3))
def test_schedule_invariants_with_several_workers(data: st.DataObject, order: str, lo: int,
                                                  extra: int, workers: int) -> None:
    """Any finishing order of up to 3 concurrent runs: no repetition twice, every cell between
    min and max runs and stopped by the rule, the variants of a point with equal counts."""
    spec = MatrixSpec.model_validate({
        "name": "t", "variants": {"a": {}, "b": {"qemu_args": ["-cpu", "max"]}},
        "axes": {"feature": ["precopy", "xbzrle"]}, "order": order})
    cs = expand(spec, "10.0")
    rule = Repetitions(min=lo, max=lo + extra, ci=0.05)
    s = AdaptiveSchedule(cs, rule, order)
    running: list[tuple[Cell, int]] = []
    seen: set[tuple[str, int]] = set()
    for _ in range(200):
        while len(running) < workers:
            item = s.next()
            if item is None or item is WAIT:
                break
            assert isinstance(item, tuple)
            cell, rep = item
            assert (cell.id, rep) not in seen and 1 <= rep <= rule.max
            seen.add((cell.id, rep))
            s.started(cell, rep)
            running.append(item)
        if not running:
            assert s.next() is None
            break
        cell, rep = running.pop(data.draw(st.integers(0, len(running) - 1)))
        s.finished(cell, rep, data.draw(RUN))
    else:
        raise AssertionError("the schedule did not end")
    counts = {c.id: len(s.done[c.id]) for c in cs}
    for c in cs:
        assert rule.min <= counts[c.id] <= rule.max
        assert s.decision(c.id).stop  # it stopped because the rule says so
    if order == "interleaved":
        for feature in ("precopy", "xbzrle"):
            pair = [counts[c.id] for c in cs if c.feature == feature]
            assert len(set(pair)) == 1, pair
    assert not s.pending()


def test_an_absolute_floor_stops_a_cell_whose_downtime_is_a_few_milliseconds() -> None:
    """Downtimes of 3-7 ms (measured here at 200 Mbit/s) never fit ±5 %; with ``ci_ms: 5`` their
    interval (about ±3 ms over 5 runs) is within the floor, and total time still needs ±5 %."""
    runs = [done(5700 + d, down) for d, down in [(0, 3), (40, 7), (20, 5), (60, 4), (30, 6)]]
    assert decide(RULE, runs).reason == ""  # relative only: not sure yet
    floored = Repetitions(min=3, max=10, ci=0.05, ci_ms=5)
    d = decide(floored, runs)
    assert d.stop and d.reason == SURE, d.text()
    assert "or ±5 ms" in d.text() and "±5 ms" in floored.describe()
    # the floor does not excuse a noisy total time
    noisy = [done(t, 5) for t in (3000, 6000, 4500, 7000, 2500)]
    assert decide(floored, noisy).reason == ""


def test_ci_ms_is_validated_in_the_matrix(tmp_path: Path) -> None:
    spec = load_matrix(write(tmp_path, {"min": 2, "max": 6, "ci": "5%", "ci_ms": 4}))
    assert isinstance(spec.repetitions, Repetitions) and spec.repetitions.ci_ms == 4
    for bad in (-1, ".inf", "x", True):
        with pytest.raises(ConfigError, match="ci_ms"):
            load_matrix(write(tmp_path, {"ci_ms": bad if bad != ".inf" else float("inf")}))
