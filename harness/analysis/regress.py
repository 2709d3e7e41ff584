"""Pure regression detection over a history of nights: outcome changes, metric verdicts, steps.

Input is, per cell, the chronological list of nights that ran it (the last one is the night being
judged) with each night's run records; output is a list of :class:`Finding`. Nothing here reads
files, and every rule is one a CI user can check by hand:

* **Timing data** are the runs :func:`harness.analysis.compare.usable` accepts: completed, integrity not
  corrupted, not ``timing_excluded``.
* **Outcome changes** (completed -> not-converged / failed, ok -> corrupted) between the previous
  night and this one are always findings: worse is a regression, better an improvement.
* **Short history** (fewer than ``step_nights`` nights with data, this one included): this
  night's repetitions against those of all earlier nights, pooled. A metric regresses when the
  change of medians passes the metric's minimum effect *and* a two-sided Mann-Whitney U test
  (:func:`harness.analysis.stats.compare`) is significant at ``alpha``.
* **Long history**: single-changepoint search on the nightly medians (least absolute deviation of
  a two-level fit), the latest step first. A step counts when the pooled repetitions before and
  after pass the same effect + significance test *and* it persists: at least ``persist`` nights
  after the changepoint, each with its median shifted the same way by at least half the minimum
  effect. So one noisy night is never a regression. A step is reported as a regression (or
  improvement) on the night it becomes confirmed; afterwards it is "known" and the new level is
  the baseline. A change seen only on this night is ``suspect`` (needs one more night), not a
  failure.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.analysis import compare, stats
from harness.analysis.compare import Record
from harness.results.record.metrics import Metric

REGRESSION = "regression"
IMPROVEMENT = "improvement"
SUSPECT = "suspect"
NO_CHANGE = "no change"
INCONCLUSIVE = "inconclusive"
NO_DATA = "no data"


# The metrics a nightly judges, in report order: every summary metric.
METRICS: tuple[Metric, ...] = tuple(compare.SUMMARY_METRICS.values())
METRIC_KEYS = tuple(m.key for m in METRICS)


@dataclass(frozen=True)
class Thresholds:
    """What counts as a change. ``per_metric`` overrides ``min_effect`` (fractions: 0.05 = 5 %)."""

    min_effect: float = stats.MIN_EFFECT
    per_metric: Mapping[str, float] = field(default_factory=dict)
    alpha: float = stats.ALPHA
    persist: int = 2  # nights a step must last before it is a regression
    step_nights: int = 4  # nights with data from which step detection replaces pairwise tests

    def effect(self, key: str) -> float:
        return float(self.per_metric.get(key, self.min_effect))

    def to_dict(self) -> dict[str, Any]:
        return {"min_effect": self.min_effect, "per_metric": dict(self.per_metric),
                "alpha": self.alpha, "persist": self.persist, "step_nights": self.step_nights}


@dataclass(frozen=True)
class Finding:
    """The verdict on one metric (or the outcome) of one cell for the night being judged."""

    metric: str  # a metric key, or "outcome"
    kind: str  # "metric" | "outcome" | "integrity"
    verdict: str  # REGRESSION, IMPROVEMENT, SUSPECT, NO_CHANGE, INCONCLUSIVE, NO_DATA
    method: str  # "pairwise" | "step" | "outcome" | "none"
    reason: str
    baseline: float | str | None = None  # median (metrics) or status counts (outcome)
    current: float | str | None = None
    change: float | None = None  # relative change of medians
    interval: tuple[float, float] | None = None  # 95 % CI of ``change`` (or of the difference)
    p: float | None = None
    n_baseline: int = 0
    n_current: int = 0
    changepoint: str | None = None  # night id where a step starts
    baseline_nights: tuple[str, ...] = ()
    label: str = ""
    unit: str = ""
    scale: float = 1.0

    @property
    def failed(self) -> bool:
        return self.verdict == REGRESSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "label": self.label, "unit": self.unit, "scale": self.scale,
            "kind": self.kind,
            "verdict": self.verdict, "method": self.method, "reason": self.reason,
            "baseline": self.baseline, "current": self.current, "change": self.change,
            "interval": list(self.interval) if self.interval else None, "p": self.p,
            "n_baseline": self.n_baseline, "n_current": self.n_current,
            "changepoint": self.changepoint, "baseline_nights": list(self.baseline_nights),
        }


Night = tuple[str, Sequence[Record]]  # (night id, the cell's records of that night)


# ---------------------------------------------------------------------------------------------
# Outcomes


def outcome_finding(previous: Night | None, current: Night) -> Finding:
    """Outcome / integrity change from the previous night to this one."""
    cur = compare.describe_counts(compare.status_counts(current[1]))
    if previous is None:
        return Finding("outcome", "outcome", NO_DATA, "none", "no earlier night", None, cur)
    prev = compare.describe_counts(compare.status_counts(previous[1]))
    change = compare.outcome_change(previous[1], current[1])
    if change is None:
        return Finding("outcome", "outcome", NO_CHANGE, "outcome", "same set of outcomes",
                       prev, cur, baseline_nights=(previous[0],), n_baseline=len(previous[1]),
                       n_current=len(current[1]))
    verdict = IMPROVEMENT if change.direction == "better" else REGRESSION
    kind = "integrity" if change.integrity else "outcome"
    return Finding("outcome", kind, verdict, "outcome",
                   f"{kind} changed ({change.direction}): {change.before} -> {change.after}",
                   change.before, change.after, baseline_nights=(previous[0],),
                   n_baseline=len(previous[1]), n_current=len(current[1]))


# ---------------------------------------------------------------------------------------------
# Metrics


def _from_comparison(metric: Metric, cmp: stats.Comparison, method: str, nights: Sequence[str],
                     verdict: str, reason: str, changepoint: str | None = None) -> Finding:
    return Finding(
        metric.key, "metric", verdict, method, reason,
        cmp.base.median if cmp.base else None, cmp.new.median if cmp.new else None,
        cmp.change, cmp.ci, cmp.test.p, cmp.base.n if cmp.base else 0,
        cmp.new.n if cmp.new else 0, changepoint, tuple(nights), metric.label, metric.unit,
        metric.scale)


def _direction(v: stats.Verdict) -> str:
    return {stats.Verdict.WORSE: REGRESSION, stats.Verdict.BETTER: IMPROVEMENT,
            stats.Verdict.NO_CHANGE: NO_CHANGE}.get(v, INCONCLUSIVE)


def pairwise(metric: Metric, baseline: Sequence[tuple[str, list[float]]], current: list[float],
             th: Thresholds) -> Finding:
    """This night against all earlier nights pooled: effect + Mann-Whitney U."""
    base = [v for _, vs in baseline for v in vs]
    names = [n for n, vs in baseline if vs]
    cmp = stats.compare(base, current, lower_is_better=metric.lower_is_better, alpha=th.alpha,
                        min_effect=th.effect(metric.key))
    verdict = _direction(cmp.verdict)
    reason = cmp.reason
    if cmp.base and cmp.new and stats.minimum_p(cmp.base.n, cmp.new.n) >= th.alpha:
        reason += (f"; with {cmp.base.n} vs {cmp.new.n} values the test cannot reach "
                   f"p < {th.alpha:g}: more repetitions or nights are needed")
    return _from_comparison(metric, cmp, "pairwise", names, verdict, reason)


@dataclass(frozen=True)
class Step:
    index: int  # first night of the new level
    comparison: stats.Comparison
    verdict: str  # REGRESSION or IMPROVEMENT


def _l1(xs: Sequence[float]) -> float:
    if not xs:
        return 0.0
    med = statistics.median(xs)
    return sum(abs(x - med) for x in xs)


def find_step(series: Sequence[list[float]], metric: Metric, th: Thresholds) -> Step | None:
    """The best single changepoint of ``series`` (values per night, all non-empty), if real."""
    n = len(series)
    if n < th.persist + 1:
        return None
    medians = [statistics.median(vs) for vs in series]
    best_k, best_cost = -1, float("inf")
    for k in range(1, n - th.persist + 1):
        cost = _l1(medians[:k]) + _l1(medians[k:])
        if cost < best_cost - 1e-12:
            best_k, best_cost = k, cost
    if best_k < 0:
        return None
    before = [v for vs in series[:best_k] for v in vs]
    after = [v for vs in series[best_k:] for v in vs]
    effect = th.effect(metric.key)
    cmp = stats.compare(before, after, lower_is_better=metric.lower_is_better, alpha=th.alpha,
                        min_effect=effect)
    if not cmp.verdict.significant or cmp.base is None:
        return None
    base_med = cmp.base.median
    sign = 1.0 if (cmp.diff or 0.0) > 0 else -1.0
    for m in medians[best_k:]:  # persistence: every night after the changepoint moved
        shift = (m - base_med) * sign
        if base_med != 0 and shift / abs(base_med) < effect / 2:
            return None
        if base_med == 0 and shift <= 0:
            return None
    return Step(best_k, cmp, _direction(cmp.verdict))


def latest_step(series: Sequence[list[float]], metric: Metric, th: Thresholds) -> Step | None:
    """The most recent confirmed step (a later step inside the new level wins over an older one)."""
    step = find_step(series, metric, th)
    offset = 0
    while step is not None:
        later = find_step(series[offset + step.index:], metric, th)
        if later is None:
            break
        offset += step.index
        step = later
    if step is None:
        return None
    return Step(offset + step.index, step.comparison, step.verdict)


def all_steps(series: Sequence[list[float]], metric: Metric, th: Thresholds) -> list[Step]:
    """Every step, oldest first (for the trend page)."""
    out: list[Step] = []
    offset = 0
    while True:
        step = find_step(series[offset:], metric, th)
        if step is None:
            return out
        offset += step.index
        out.append(Step(offset, step.comparison, step.verdict))


def metric_finding(metric: Metric, nights: Sequence[Night], th: Thresholds) -> Finding:
    """The verdict on ``metric`` for the last of ``nights``."""
    names = [n for n, _ in nights]
    series = [(n, compare.values(recs, metric)) for n, recs in nights]
    current = series[-1][1]
    earlier = [(n, vs) for n, vs in series[:-1] if vs]
    if not current or not earlier:
        side = "this night" if not current else "earlier nights"
        return Finding(metric.key, "metric", NO_DATA, "none",
                       f"no timing data on {side} (only completed, uncorrupted runs count)",
                       None, statistics.median(current) if current else None,
                       n_current=len(current), label=metric.label, unit=metric.unit,
                       scale=metric.scale, baseline_nights=tuple(n for n, _ in earlier))
    with_data = earlier + [(names[-1], current)]
    if len(with_data) < th.step_nights:
        return pairwise(metric, earlier, current, th)
    values = [vs for _, vs in with_data]
    ids = [n for n, _ in with_data]
    step = latest_step(values, metric, th)
    last = len(values) - 1
    if step is not None and step.index == len(values) - th.persist:
        return _from_comparison(
            metric, step.comparison, "step", ids[:step.index], step.verdict,
            f"step at night {ids[step.index]} confirmed by {th.persist} nights: "
            + step.comparison.reason, changepoint=ids[step.index])
    # No newly confirmed step: judge this night against the current level (since the last step).
    start = step.index if step is not None else 0
    base = [v for vs in values[start:last] for v in vs]
    cmp = stats.compare(base, current, lower_is_better=metric.lower_is_better, alpha=th.alpha,
                        min_effect=th.effect(metric.key))
    verdict = _direction(cmp.verdict)
    note = (f"known step at night {ids[step.index]} ({step.verdict}); " if step is not None
            else "")
    if verdict in (REGRESSION, IMPROVEMENT):
        return _from_comparison(
            metric, cmp, "step", ids[start:last], SUSPECT,
            note + f"this night differs ({verdict}: {cmp.reason}) but a change must last "
            f"{th.persist} nights to count", changepoint=ids[step.index] if step else None)
    return _from_comparison(metric, cmp, "step", ids[start:last], verdict, note + cmp.reason,
                            changepoint=ids[step.index] if step else None)


def evaluate_cell(nights: Sequence[Night], th: Thresholds,
                  metrics: Sequence[Metric] = METRICS) -> list[Finding]:
    """Outcome + metric findings for the last night of a cell's ``nights`` (chronological)."""
    if not nights:
        return []
    previous = nights[-2] if len(nights) > 1 else None
    out = [outcome_finding(previous, nights[-1])]
    if previous is None:
        return out
    for metric in metrics:
        if not any(compare.values(recs, metric) for _, recs in nights):
            continue  # never measured (no ping configured ...)
        out.append(metric_finding(metric, nights, th))
    return out


def compare_sides(base: Sequence[Record], new: Sequence[Record], th: Thresholds,
                  metrics: Sequence[Metric] = METRICS,
                  names: tuple[str, str] = ("before", "after")) -> list[Finding]:
    """Before/after verdicts of one cell (two variants run interleaved): outcome + metrics."""
    out = [outcome_finding((names[0], base), (names[1], new))]
    for metric in metrics:
        va, vb = compare.values(base, metric), compare.values(new, metric)
        if not va and not vb:
            if metric.key in ("total_time_ms", "downtime_ms"):
                out.append(Finding(metric.key, "metric", NO_DATA, "none",
                                   "no completed, uncorrupted runs on either side",
                                   label=metric.label, unit=metric.unit, scale=metric.scale))
            continue
        if not va or not vb:
            side = names[0] if not va else names[1]
            out.append(Finding(metric.key, "metric", NO_DATA, "none",
                               f"no completed, uncorrupted runs on the {side} side: "
                               "timings are not compared",
                               statistics.median(va) if va else None,
                               statistics.median(vb) if vb else None, n_baseline=len(va),
                               n_current=len(vb), label=metric.label, unit=metric.unit,
                               scale=metric.scale))
            continue
        out.append(pairwise(metric, [(names[0], va)], vb, th))
    return out


def summarize(findings: Sequence[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
    return counts


def parse_metric_effects(items: Sequence[str]) -> dict[str, float]:
    """``["total_time_ms=10", "downtime_ms=20%"]`` -> fractions.

    :raise ValueError: an unknown metric or a value that is not a positive number.
    """
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in METRIC_KEYS:
            raise ValueError(f"--metric-effect {item!r}: use METRIC=PERCENT with METRIC one of "
                             f"{', '.join(METRIC_KEYS)}")
        try:
            pct = float(value.strip().rstrip("%"))
        except ValueError:
            raise ValueError(f"--metric-effect {item!r}: {value!r} is not a number") from None
        if not pct > 0:
            raise ValueError(f"--metric-effect {item!r}: the percentage must be positive")
        out[key] = pct / 100.0
    return out
