"""Regression detection on synthetic histories (harness.analysis.regress) and CI verdict documents."""

from __future__ import annotations

import copy
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.analysis import regress
from harness.ci.abtest import compare_verdict
from harness.ci.verdict import cell_entry, junit_xml, summarize
from harness.results.record import RunRecord, upgrade

DATA = Path(__file__).resolve().parents[1] / "data"
TEMPLATE = json.loads((DATA / "run-xbzrle.json").read_text())
TH = regress.Thresholds()


def record(total_ms: float, *, rep: int = 1, outcome: str = "completed", integrity: str = "ok",
           timing_excluded: bool = False, variant: str = "default", kernel: str | None = None,
           max_bandwidth: int | None = None, throughput: float | None = None) -> RunRecord:
    """A run record shaped like a real one (tests/data/run-xbzrle.json), with chosen figures
    (QEMU's total time is whole milliseconds: ``total_ms`` is rounded)."""
    rec = copy.deepcopy(TEMPLATE)
    rec["repetition"] = rep
    rec["outcome"] = outcome
    rec["integrity"] = integrity
    rec["timing_excluded"] = timing_excluded
    rec["cell"]["variant"] = variant
    m = rec["metrics"]
    m["total_time_ms"] = round(total_ms)
    m["throughput_mbps"] = throughput if throughput is not None else 1.6e9 / total_ms
    m["transferred_bytes"] = 198957966
    if kernel is not None:
        for facts in rec["hosts"].values():
            facts["kernel"] = kernel
    if max_bandwidth is not None:
        rec["cell"]["migration"]["parameters"]["max-bandwidth"] = max_bandwidth
        # another cell (ids hash the parameters): 12 hex digits, as the store requires
        rec["cell"]["id"] = hashlib.sha256(str(max_bandwidth).encode()).hexdigest()[:12]
    return upgrade(rec)


def night(stamp: str, values: list[float], **kw: Any) -> tuple[str, list[RunRecord]]:
    return stamp, [record(v, rep=i + 1, **kw) for i, v in enumerate(values)]


def noisy_history(n: int, *, seed: int, cv: float = 0.02, reps: int = 5, base: float = 8000.0,
                  step_at: int | None = None, step: float = 0.10,
                  outlier_at: int | None = None, outlier: float = 0.25
                  ) -> list[tuple[str, list[RunRecord]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        level = base
        if step_at is not None and i >= step_at:
            level *= 1 + step
        if outlier_at == i:
            level *= 1 + outlier
        vals = [float(v) for v in rng.normal(level, level * cv, reps)]
        out.append(night(f"2026010{i}T0300Z" if i < 10 else f"202601{i}T0300Z", vals))
    return out


def total(findings: list[regress.Finding]) -> regress.Finding:
    return next(f for f in findings if f.metric == "total_time_ms")


def verdicts(findings: list[regress.Finding]) -> set[str]:
    return {f.verdict for f in findings}


# ---------------------------------------------------------------------------------------------
# Step detection


def test_injected_step_is_found_at_the_right_night() -> None:
    hist = noisy_history(8, seed=1, step_at=5)
    # The first stepped night alone is only suspect: one night is never a regression.
    first = total(regress.evaluate_cell(hist[:6], TH))
    assert first.verdict == regress.SUSPECT, first
    # The night after confirms it: a regression whose changepoint is night 5.
    confirmed = total(regress.evaluate_cell(hist[:7], TH))
    assert confirmed.verdict == regress.REGRESSION, confirmed
    assert confirmed.method == "step"
    assert confirmed.changepoint == hist[5][0]
    assert confirmed.change is not None and 0.07 < confirmed.change < 0.13
    assert confirmed.p is not None and confirmed.p < 0.05
    # Afterwards the new level is the baseline: known step, no new failure.
    later = total(regress.evaluate_cell(hist, TH))
    assert later.verdict != regress.REGRESSION
    assert later.changepoint == hist[5][0] and "known step" in later.reason
    # The trend page's step list finds the same night.
    values = [[float(r.metrics.total_time_ms or 0) for r in recs] for _, recs in hist]
    steps = regress.all_steps(values, regress.METRICS[0], TH)
    assert [s.index for s in steps] == [5] and steps[0].verdict == regress.REGRESSION


def test_improvement_step_is_reported_as_improvement() -> None:
    hist = noisy_history(7, seed=4, step_at=5, step=-0.15)
    f = total(regress.evaluate_cell(hist, TH))
    assert f.verdict == regress.IMPROVEMENT and f.changepoint == hist[5][0]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_noise_within_the_spread_is_never_flagged(seed: int) -> None:
    hist = noisy_history(12, seed=seed, cv=0.03)
    for n in range(2, len(hist) + 1):
        found = regress.evaluate_cell(hist[:n], TH)
        flagged = [f for f in found if f.verdict in (regress.REGRESSION, regress.IMPROVEMENT)]
        assert not flagged, (n, flagged)


def test_a_single_outlier_night_is_not_a_regression() -> None:
    hist = noisy_history(10, seed=7, outlier_at=6)
    on_the_night = total(regress.evaluate_cell(hist[:7], TH))
    assert on_the_night.verdict == regress.SUSPECT  # visible, but not a failure
    for n in range(8, 11):
        f = total(regress.evaluate_cell(hist[:n], TH))
        assert f.verdict not in (regress.REGRESSION, regress.IMPROVEMENT), (n, f)
    values = [[float(r.metrics.total_time_ms or 0) for r in recs] for _, recs in hist]
    assert regress.all_steps(values, regress.METRICS[0], TH) == []


# ---------------------------------------------------------------------------------------------
# Short history: pairwise effect + significance


def test_short_history_flags_a_significant_large_change() -> None:
    hist = [night("n1", [8000, 8100, 7950]), night("n2", [8050, 7990, 8020]),
            night("n3", [9400, 9500, 9450])]
    f = total(regress.evaluate_cell(hist, TH))
    assert f.verdict == regress.REGRESSION and f.method == "pairwise"
    assert f.baseline_nights == ("n1", "n2")
    assert f.n_baseline == 6 and f.n_current == 3
    assert f.interval is not None and f.interval[0] > 0


def test_small_or_insignificant_changes_are_not_regressions() -> None:
    # +3 %: significant, but under the 5 % minimum effect.
    small = [night("n1", [8000, 8010, 7990]), night("n2", [8005, 7995, 8000]),
             night("n3", [8240, 8250, 8230])]
    assert total(regress.evaluate_cell(small, TH)).verdict == regress.NO_CHANGE
    # ... unless that metric's minimum effect is lower.
    th = regress.Thresholds(per_metric={"total_time_ms": 0.02})
    assert total(regress.evaluate_cell(small, th)).verdict == regress.REGRESSION
    # 3 vs 3 repetitions: Mann-Whitney cannot reach p < 0.05, and says so.
    two = [night("n1", [8000, 8100, 7950]), night("n2", [9400, 9500, 9450])]
    f = total(regress.evaluate_cell(two, TH))
    assert f.verdict == regress.INCONCLUSIVE and "cannot reach" in f.reason


def test_higher_is_better_for_throughput() -> None:
    base = [record(8000, rep=i, throughput=200.0 + i) for i in range(1, 4)]
    worse = [record(8000, rep=i, throughput=150.0 + i) for i in range(1, 4)]
    hist = [("n1", base), ("n2", list(base)), ("n3", worse)]
    f = next(x for x in regress.evaluate_cell(hist, TH) if x.metric == "throughput_mbps")
    assert f.verdict == regress.REGRESSION and f.change is not None and f.change < 0


# ---------------------------------------------------------------------------------------------
# Outcomes and what counts as timing data


def test_outcome_change_is_always_a_regression() -> None:
    hist = [night("n1", [8000, 8100, 7950]), night("n2", [25000] * 3, outcome="not-converged")]
    out = regress.evaluate_cell(hist, TH)
    outcome = next(f for f in out if f.metric == "outcome")
    assert outcome.verdict == regress.REGRESSION and outcome.kind == "outcome"
    assert "not-converged 3/3" in str(outcome.current)
    assert total(out).verdict == regress.NO_DATA  # no timings: not called faster or slower
    failed = [night("n1", [8000] * 3), ("n2", [record(8000), record(8000, rep=2, outcome="failed"),
                                               record(8000, rep=3)])]
    assert next(f for f in regress.evaluate_cell(failed, TH)
                if f.metric == "outcome").verdict == regress.REGRESSION


def test_corruption_is_an_integrity_regression_and_never_counted_as_fast() -> None:
    hist = [night("n1", [8000, 8100, 7950]), night("n2", [8050, 7990, 8020]),
            night("n3", [4000, 4100, 4050], integrity="corrupted")]
    out = regress.evaluate_cell(hist, TH)
    outcome = next(f for f in out if f.metric == "outcome")
    assert outcome.verdict == regress.REGRESSION and outcome.kind == "integrity"
    assert total(out).verdict == regress.NO_DATA
    # timing_excluded runs (RAM compared after migration) are left out the same way.
    excl = [night("n1", [8000] * 3), night("n2", [8000] * 3),
            night("n3", [1000] * 3, timing_excluded=True)]
    assert total(regress.evaluate_cell(excl, TH)).verdict == regress.NO_DATA


def test_outcome_improvement_is_reported() -> None:
    hist = [night("n1", [25000] * 3, outcome="not-converged"), night("n2", [8000, 8100, 7950])]
    outcome = regress.evaluate_cell(hist, TH)[0]
    assert outcome.verdict == regress.IMPROVEMENT


def test_compare_sides_shows_corrupted_before_as_integrity_difference_not_as_faster() -> None:
    before = [record(3000, rep=i, variant="7.2", integrity="corrupted") for i in (1, 2, 3)]
    after = [record(8000 + i, rep=i, variant="10.0") for i in (1, 2, 3)]
    v = compare_verdict(before + after, "7.2", "10.0", TH)
    [cell] = v["cells"]
    outcome = next(r for r in cell["results"] if r["metric"] == "outcome")
    assert outcome["kind"] == "integrity" and outcome["verdict"] == regress.IMPROVEMENT
    tt = next(r for r in cell["results"] if r["metric"] == "total_time_ms")
    assert tt["verdict"] == regress.NO_DATA and tt["baseline"] is None
    assert v["summary"]["exit_code"] == 0
    # The other way round it is a regression (exit code 2).
    back = compare_verdict(before + after, "10.0", "7.2", TH)
    assert back["summary"]["exit_code"] == 2


# ---------------------------------------------------------------------------------------------
# CI documents


def test_junit_has_one_testcase_per_cell_and_metric_and_fails_regressions(tmp_path: Path) -> None:
    hist = [night("n1", [8000, 8100, 7950]), night("n2", [8050, 7990, 8020]),
            night("n3", [9400, 9500, 9450])]
    findings = regress.evaluate_cell(hist, TH)
    cells = [cell_entry("k", "default: feature=xbzrle", "writer", ["abc"], findings)]
    verdict = {"kind": "nightly", "matrix": "demo", "cells": cells, "summary": summarize(cells),
               "baseline": {"status": "ok"}}
    assert verdict["summary"]["exit_code"] == 2
    path = tmp_path / "junit.xml"
    junit_xml(verdict).write(path, encoding="utf-8", xml_declaration=True)
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(findings)
    failed = [c for c in cases if c.find("failure") is not None]
    assert "total_time_ms" in {c.get("name") for c in failed}
    assert root.get("failures") == str(len(failed))
    msg = next(c for c in failed if c.get("name") == "total_time_ms").find("failure")
    assert msg is not None and "change +" in str(msg.get("message"))


def test_metric_effect_parsing() -> None:
    assert regress.parse_metric_effects(["total_time_ms=10", "downtime_ms=20%"]) == {
        "total_time_ms": 0.10, "downtime_ms": 0.20}
    with pytest.raises(ValueError, match="METRIC=PERCENT"):
        regress.parse_metric_effects(["bogus=3"])
    with pytest.raises(ValueError, match="not a number"):
        regress.parse_metric_effects(["total_time_ms=abc"])
