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


# Intervals of the hand-written bootstrap these functions had before scipy.stats.bootstrap,
# computed once from that code (git show 184b142:harness/analysis/stats.py): (ratio CI of
# medians, diff CI of medians, ratio CI of means). Both draw the resample indices the same way
# (default_rng(BOOTSTRAP_SEED).integers(0, n, (rounds, n)), baseline then new) and both take the
# linear (Hyndman-Fan 7) percentiles, so they differ only in the last bits of the quantile
# arithmetic: rel 1e-9 is that. Monte-Carlo noise of a 2000-round interval is ~1e-2 of its width,
# so anything looser would hide a changed resampling; if a scipy release changes it, this fails
# and the reports' "reproducible byte for byte" has to be re-earned, not the literals edited.
CI = tuple[float, float] | None
OLD_INTERVALS: dict[str, tuple[tuple[list[float], list[float]], CI, CI, CI]] = {
    "separated": ((BASE, FASTER), (-0.2148148148148148, -0.18499525316455703),
                  (-21.75, -18.493750000000034), (-0.21030022357074413, -0.1888301644489721)),
    "null": ((BASE, [100.2, 100.8, 99.1, 101.9, 98.2, 100.4, 99.6, 101.4]),
             (-0.01580640990117293, 0.015617128463476293), (-1.5999999999999943, 1.5500000000000114),
             (-0.011029185619617089, 0.011633548841769658)),
    "noisy": (([50, 150, 80, 120], [60, 160, 90, 130]), (-0.5, 1.4615384615384617), (-60.0, 80.0),
              (-0.34042553191489366, 0.8888888888888888)),
    "pairs": (([100.0, 101.0], [80.0, 81.0]), (-0.20792079207920788, -0.18999999999999995),
              (-21.0, -19.0), (-0.20792079207920788, -0.18999999999999995)),
    "one_each": (([100.0], [50.0]), (-0.5, -0.5), (-50.0, -50.0), (-0.5, -0.5)),
    "one_base": (([100.0], [50.0, 55.0, 60.0]), (-0.5, -0.4), (-50.0, -40.0), (-0.5, -0.4)),
    "one_new": (([10.0, 12.0, 11.0], [9.0]), (-0.25, -0.09999999999999998), (-3.0, -1.0),
                (-0.25, -0.09999999999999998)),
    "all_equal": (([5.0] * 4, [5.0] * 6), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    "zero_base": (([0, 0, 0, 0, 0], [3, 4, 5, 3, 4]), None, (3.0, 5.0), None),
    "some_zero": (([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]), None, (-1.0, 3.0), None),
    "skewed": (([1.2, 1.3, 1.25, 4.0, 1.22, 1.31, 9.5], [1.1, 1.15, 3.2, 1.12, 1.18]),
               (-0.72, 1.4615384615384617), (-2.88, 1.9000000000000001),
               (-0.7567188193428751, 0.543763271517553)),
}


@pytest.mark.parametrize("case", sorted(OLD_INTERVALS))
def test_scipy_bootstrap_matches_the_hand_written_one(case: str) -> None:
    import numpy as np

    (base, new), ratio, diff, mean_ratio = OLD_INTERVALS[case]

    def near(got: CI, want: CI) -> bool:
        return got == want if want is None else got == pytest.approx(want, rel=1e-9, abs=1e-12)

    assert near(stats.bootstrap_ratio_ci(base, new), ratio)
    assert near(stats.bootstrap_diff_ci(base, new), diff)
    assert near(stats.bootstrap_ratio_ci(base, new, stat=np.mean), mean_ratio)


def test_bootstrap_without_values_and_with_a_different_seed() -> None:
    assert stats.bootstrap_ratio_ci([], [1.0]) is None and stats.bootstrap_diff_ci([1.0], []) is None
    # another seed draws other resamples: the interval moves, within the Monte-Carlo noise
    other = stats.bootstrap_ratio_ci(BASE, FASTER, seed=1)
    assert other is not None and other != stats.bootstrap_ratio_ci(BASE, FASTER)
    assert other == pytest.approx((-0.2148148148148148, -0.18499525316455703), abs=0.01)
