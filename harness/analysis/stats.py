"""Pure statistics for repeated measurements: summaries, confidence intervals, verdicts.

Nothing here reads files or knows about QEMU. Samples are plain sequences of floats; ``None`` and
NaN values are dropped by the caller (see :func:`clean`).

The before/after verdict (:func:`compare`) follows what a performance talk needs:

* the change is the ratio of medians, ``median(new) / median(base) - 1``;
* its 95 % confidence interval comes from a percentile bootstrap of that ratio
  (``scipy.stats.bootstrap``) with a fixed seed, so a report is reproducible byte for byte;
* significance is a two-sided Mann-Whitney U test (or Welch's t test) at ``alpha``;
* a difference is **better** or **worse** only when it is significant *and* at least
  ``min_effect`` (5 % by default); it is **no change** when the test finds nothing and the
  interval lies inside +-``min_effect`` (or when a significant change is smaller than that);
  otherwise it is **inconclusive** (too few repetitions or too much noise to tell).
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CV_WARN = 0.10  # coefficient of variation at or above which a sample is called noisy
MIN_REPS = 3  # fewer repetitions than this get a warning
ALPHA = 0.05
MIN_EFFECT = 0.05
BOOTSTRAP_SEED = 20240611
BOOTSTRAP_ROUNDS = 2000

Array = npt.NDArray[np.float64]


def percentile(values: Sequence[float] | npt.NDArray[np.float64], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) of ``values``, None when there are none.

    Linear interpolation between the two nearest ranks: the value at rank ``(n - 1) q / 100``
    of the sorted values, a fractional rank falling between its neighbours (Hyndman and Fan's
    definition 7, the default of numpy and R). The one definition of the harness: quartiles
    and the ping prober's RTT percentiles use it, and the bootstrap intervals get the same
    from ``scipy.stats.bootstrap`` (``scipy.stats.quantile``, method ``linear``).
    """
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def clean(values: Sequence[float | int | None]) -> list[float]:
    """The finite numbers of ``values`` as floats."""
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


@dataclass(frozen=True)
class Summary:
    """Median and spread of one sample."""

    n: int
    median: float
    mean: float
    q1: float
    q3: float
    min: float
    max: float
    cv: float | None  # sample stdev / mean; None when undefined (n < 2 or mean 0)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def warnings(self) -> list[str]:
        return sample_warnings(self)


def summarize(values: Sequence[float | int | None]) -> Summary | None:
    """Summary of the finite values, or None when there are none."""
    xs = clean(values)
    if not xs:
        return None
    q1, q3 = percentile(xs, 25), percentile(xs, 75)
    assert q1 is not None and q3 is not None
    return Summary(
        n=len(xs),
        median=float(statistics.median(xs)),
        mean=statistics.fmean(xs),
        q1=q1,
        q3=q3,
        min=min(xs),
        max=max(xs),
        cv=cv(xs),
    )


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (sample standard deviation over mean)."""
    xs = clean(values)
    if len(xs) < 2:
        return None
    mean = statistics.fmean(xs)
    if mean == 0:
        return None
    return abs(statistics.stdev(xs) / mean)


def sample_warnings(s: Summary | None) -> list[str]:
    """Why a sample's figures should not be trusted yet ("" when they can be)."""
    if s is None:
        return []
    out = []
    if s.n < MIN_REPS:
        out.append(f"only {s.n} repetition{'s' if s.n != 1 else ''} (fewer than {MIN_REPS})")
    if s.cv is not None and s.cv >= CV_WARN:
        out.append(f"coefficient of variation {s.cv:.0%} (>= {CV_WARN:.0%})")
    return out


@dataclass(frozen=True)
class MeanInterval:
    """A confidence interval of one sample's mean."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def relative(self) -> float | None:
        """The half-width over the mean's magnitude (0.05 = ±5 %); None for a zero mean."""
        if self.mean == 0:
            return 0.0 if self.half_width == 0 else None
        return self.half_width / abs(self.mean)


def t_interval(values: Sequence[float | int | None], *, level: float = 0.95
               ) -> MeanInterval | None:
    """Student's t interval of the mean of one sample: ``mean ± t(n-1) · s / √n``.

    The interval for small samples (3 to 10 repetitions): the t distribution widens it for what
    ``n - 1`` degrees of freedom cannot know about the spread, where a percentile bootstrap of so
    few values can only return their own extremes (at n = 3, at most 3 distinct medians) and
    covers the truth far less often than it says. None for fewer than 2 finite values.
    """
    xs = clean(values)
    if len(xs) < 2:
        return None
    mean = statistics.fmean(xs)
    sd = statistics.stdev(xs)
    from scipy import stats as sp  # type: ignore[import-untyped]  # slow to import: when needed

    half = float(sp.t.ppf(0.5 + level / 2, len(xs) - 1)) * sd / math.sqrt(len(xs))
    return MeanInterval(len(xs), mean, mean - half, mean + half)


def bootstrap_ratio_ci(
    base: Sequence[float], new: Sequence[float], *, level: float = 0.95,
    rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED,
    stat: Callable[..., float] = np.median,
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI of ``stat(new) / stat(base) - 1`` (a relative change).

    Returns None when a side is empty or the baseline statistic can be zero.
    """
    def ratio(a: Array, b: Array, axis: int) -> Array:
        return np.asarray(stat(b, axis=axis) / stat(a, axis=axis) - 1.0)

    estimates = _bootstrap(base, new, ratio, level=level, rounds=rounds, seed=seed)
    # A resample whose baseline statistic is 0 gives inf or nan: no relative change exists then.
    if estimates is None or not np.all(np.isfinite(estimates[2])):
        return None
    return estimates[0], estimates[1]


def bootstrap_diff_ci(
    base: Sequence[float], new: Sequence[float], *, level: float = 0.95,
    rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float] | None:
    """Percentile-bootstrap CI of ``median(new) - median(base)`` (an absolute change)."""
    def diff(a: Array, b: Array, axis: int) -> Array:
        return np.asarray(np.median(b, axis=axis) - np.median(a, axis=axis))

    estimates = _bootstrap(base, new, diff, level=level, rounds=rounds, seed=seed)
    return None if estimates is None else (estimates[0], estimates[1])


def _bootstrap(
    base: Sequence[float], new: Sequence[float], statistic: Callable[[Array, Array, int], Array],
    *, level: float, rounds: int, seed: int,
) -> tuple[float, float, Array] | None:
    """``scipy.stats.bootstrap`` of ``statistic(base, new)``, each side resampled on its own.

    The percentile method (not scipy's default BCa): the interval is the central ``level`` of
    the resampled statistics, as this module has always reported, and BCa's jackknife is
    undefined for the degenerate samples benchmarks give (all repetitions equal). The generator
    is ``default_rng(seed)``, so a report is reproducible byte for byte.

    scipy refuses a side of one value; every resample of it is that value, so it is passed to
    ``statistic`` as is and only the other side is resampled (drawing indices of a one-value
    side takes nothing from the generator, so the intervals are the ones of resampling it).
    Returns (low, high, the resampled statistics), or None when a side is empty.
    """
    a, b = np.asarray(clean(base)), np.asarray(clean(new))
    if a.size == 0 or b.size == 0:
        return None
    if a.size == 1 and b.size == 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            point = float(statistic(a, b, -1))
        return point, point, np.asarray([point])
    from scipy import stats as sp  # slow to import: when needed

    data: tuple[Array, ...]
    fn: Callable[..., Array]
    if a.size == 1:
        data, fn = (b,), lambda y, axis: statistic(a, y, axis)
    elif b.size == 1:
        data, fn = (a,), lambda x, axis: statistic(x, b, axis)
    else:
        data, fn = (a, b), statistic
    # inf and nan (a zero baseline) are the caller's to judge, scipy's standard error included.
    with np.errstate(divide="ignore", invalid="ignore"):
        res = sp.bootstrap(data, fn, n_resamples=rounds, vectorized=True, paired=False,
                           axis=-1, confidence_level=level, method="percentile",
                           rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(ci.low), float(ci.high), np.asarray(res.bootstrap_distribution)


@dataclass(frozen=True)
class TestResult:
    p: float | None  # None when the test cannot be run (a side with fewer than 2 values)
    effect: float | None  # Cliff's delta in [-1, 1]: P(new > base) - P(new < base)
    method: str


def cliffs_delta(base: Sequence[float], new: Sequence[float]) -> float | None:
    a, b = clean(base), clean(new)
    if not a or not b:
        return None
    gt = sum(1 for y in b for x in a if y > x)
    lt = sum(1 for y in b for x in a if y < x)
    return (gt - lt) / (len(a) * len(b))


def mann_whitney(base: Sequence[float], new: Sequence[float]) -> TestResult:
    """Two-sided Mann-Whitney U test (exact for small samples without ties)."""
    a, b = clean(base), clean(new)
    if len(a) < 2 or len(b) < 2:
        return TestResult(None, cliffs_delta(a, b), "Mann-Whitney U")
    if len(set(a) | set(b)) == 1:
        return TestResult(1.0, 0.0, "Mann-Whitney U")
    from scipy import stats as sp

    res = sp.mannwhitneyu(b, a, alternative="two-sided")
    return TestResult(float(res.pvalue), cliffs_delta(a, b), "Mann-Whitney U")


def welch(base: Sequence[float], new: Sequence[float]) -> TestResult:
    """Two-sided Welch's t test (unequal variances)."""
    a, b = clean(base), clean(new)
    if len(a) < 2 or len(b) < 2:
        return TestResult(None, cliffs_delta(a, b), "Welch's t")
    if statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0:
        return TestResult(1.0 if a[0] == b[0] else 0.0, cliffs_delta(a, b), "Welch's t")
    from scipy import stats as sp

    res = sp.ttest_ind(b, a, equal_var=False)
    p = float(res.pvalue)
    return TestResult(p if math.isfinite(p) else None, cliffs_delta(a, b), "Welch's t")


class Verdict(enum.Enum):
    BETTER = "better"
    WORSE = "worse"
    NO_CHANGE = "no change"
    INCONCLUSIVE = "inconclusive"

    @property
    def significant(self) -> bool:
        return self in (Verdict.BETTER, Verdict.WORSE)


@dataclass(frozen=True)
class Comparison:
    """A before/after comparison of one metric."""

    base: Summary | None
    new: Summary | None
    change: float | None  # relative change of medians (0.1 = +10 %); None if base median is 0
    ci: tuple[float, float] | None  # CI of ``change``, or of the absolute difference if change is None
    diff: float | None  # median(new) - median(base)
    test: TestResult
    verdict: Verdict
    reason: str  # one line: why this verdict

    @property
    def ci_is_relative(self) -> bool:
        return self.change is not None


def compare(
    base: Sequence[float | int | None], new: Sequence[float | int | None], *,
    lower_is_better: bool = True, alpha: float = ALPHA, min_effect: float = MIN_EFFECT,
    method: str = "mannwhitney",
) -> Comparison:
    """Compare two samples of one metric; see the module docstring for the rules."""
    a, b = clean(base), clean(new)
    sa, sb = summarize(a), summarize(b)
    test = (welch if method == "welch" else mann_whitney)(a, b)
    if sa is None or sb is None:
        side = "baseline" if sa is None else "new"
        return Comparison(sa, sb, None, None, None, test, Verdict.INCONCLUSIVE,
                          f"no values on the {side} side")
    diff = sb.median - sa.median
    change: float | None = None
    ci: tuple[float, float] | None
    if sa.median != 0:
        change = diff / abs(sa.median)
        ci = bootstrap_ratio_ci(a, b)
        if ci is None:  # a resample hit a zero median: fall back to the absolute difference
            change = None
            ci = bootstrap_diff_ci(a, b)
    else:
        ci = bootstrap_diff_ci(a, b)
    if test.p is None or min(sa.n, sb.n) < MIN_REPS:
        return Comparison(sa, sb, change, ci, diff, test, Verdict.INCONCLUSIVE,
                          f"fewer than {MIN_REPS} repetitions on a side")
    # Relative size of the change; for a zero baseline, any non-zero change counts as large.
    size = abs(change) if change is not None else (math.inf if diff != 0 else 0.0)
    significant = test.p < alpha
    if significant and size >= min_effect:
        improved = (diff < 0) if lower_is_better else (diff > 0)
        verdict = Verdict.BETTER if improved else Verdict.WORSE
        reason = f"p = {test.p:.3g} < {alpha:g} and |change| >= {min_effect:.0%}"
    elif significant:
        verdict = Verdict.NO_CHANGE
        reason = f"significant (p = {test.p:.3g}) but smaller than {min_effect:.0%}"
    elif change is not None and ci is not None and -min_effect < ci[0] and ci[1] < min_effect:
        verdict = Verdict.NO_CHANGE
        reason = f"p = {test.p:.3g}; the interval lies within +-{min_effect:.0%}"
    elif change is None and diff == 0 and sa.max == sa.min == sb.max == sb.min:
        verdict = Verdict.NO_CHANGE
        reason = "identical values"
    else:
        verdict = Verdict.INCONCLUSIVE
        reason = f"p = {test.p:.3g} >= {alpha:g} and the interval is wider than +-{min_effect:.0%}"
    return Comparison(sa, sb, change, ci, diff, test, verdict, reason)


def minimum_p(n_base: int, n_new: int) -> float:
    """Smallest two-sided p the exact Mann-Whitney test can give for these sample sizes."""
    if n_base < 1 or n_new < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_base))
