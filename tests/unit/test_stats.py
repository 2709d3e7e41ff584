"""harness.analysis.stats on fixed data: summaries, warnings, bootstrap CI, tests and verdicts."""

from __future__ import annotations

import pytest

from harness.analysis import stats
from harness.analysis.stats import Verdict

BASE = [100.0, 101.0, 99.0, 102.0, 98.0, 100.5, 99.5, 101.5]
FASTER = [80.0, 81.0, 79.0, 82.0, 78.0, 80.5, 79.5, 81.5]  # clearly separated, -20 %


def test_summary_median_spread_cv() -> None:
    s = stats.summarize([1, 2, 3, 4, None, float("nan")])
    assert s is not None
    assert (s.n, s.median, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    assert s.q1 == pytest.approx(1.75) and s.q3 == pytest.approx(3.25)
    assert s.cv == pytest.approx(1.2910 / 2.5, rel=1e-3)
    assert stats.summarize([]) is None
    assert stats.cv([5.0]) is None


def test_warnings_for_noise_and_few_repetitions() -> None:
    noisy = stats.summarize([100, 130, 70, 100])
    assert noisy is not None and any("variation" in w for w in noisy.warnings())
    few = stats.summarize([100, 101])
    assert few is not None and any("repetitions" in w for w in few.warnings())
    steady = stats.summarize(BASE)
    assert steady is not None and steady.warnings() == []


def test_known_significant_improvement() -> None:
    c = stats.compare(BASE, FASTER)
    assert c.verdict is Verdict.BETTER and c.verdict.significant
    assert c.change == pytest.approx(-0.2, abs=0.01)
    assert c.ci is not None and c.ci[0] < -0.15 and c.ci[1] < -0.15
    assert c.test.p is not None and c.test.p < 0.001
    assert c.test.effect == -1.0  # every new value below every baseline value
    # higher is better (throughput): the same samples are a regression
    assert stats.compare(BASE, FASTER, lower_is_better=False).verdict is Verdict.WORSE
    assert stats.compare(BASE, FASTER, method="welch").verdict is Verdict.BETTER


def test_known_null_is_no_change() -> None:
    same = [100.2, 100.8, 99.1, 101.9, 98.2, 100.4, 99.6, 101.4]
    c = stats.compare(BASE, same)
    assert c.verdict is Verdict.NO_CHANGE and not c.verdict.significant
    assert c.test.p is not None and c.test.p > 0.5
    assert c.ci is not None and -0.05 < c.ci[0] < c.ci[1] < 0.05


def test_small_significant_change_is_no_change() -> None:
    c = stats.compare(BASE, [v * 0.98 - 0.5 for v in BASE])  # ~ -2.5 %, consistent
    assert c.verdict is Verdict.NO_CHANGE


def test_too_few_or_noisy_is_inconclusive() -> None:
    assert stats.compare([100.0, 101.0], [80.0, 81.0]).verdict is Verdict.INCONCLUSIVE
    assert stats.compare([100.0], [50.0]).verdict is Verdict.INCONCLUSIVE
    assert stats.compare([], [1.0]).verdict is Verdict.INCONCLUSIVE
    noisy = stats.compare([50, 150, 80, 120], [60, 160, 90, 130])
    assert noisy.verdict is Verdict.INCONCLUSIVE


def test_bootstrap_is_reproducible() -> None:
    assert stats.bootstrap_ratio_ci(BASE, FASTER) == stats.bootstrap_ratio_ci(BASE, FASTER)


def test_zero_baseline_uses_absolute_difference() -> None:
    c = stats.compare([0, 0, 0, 0, 0], [3, 4, 5, 3, 4])
    assert c.change is None and c.diff == 4
    assert c.verdict is Verdict.WORSE


def test_minimum_p() -> None:
    assert stats.minimum_p(3, 3) == pytest.approx(0.1)
    assert stats.minimum_p(4, 4) < 0.05
