"""When a cell has had enough repetitions: the rule of ``repetitions: {min, max, ci}`` (pure).

After ``min`` runs a cell stops when

* its outcome is unanimous (every run the same status: completed, not-converged, failed,
  skipped or corrupted), and
* for a completed cell, the 95 % interval of the mean of each primary metric (QEMU's total time
  and downtime) has a half-width of at most ``ci`` of that mean, or of at most ``ci_ms``
  milliseconds when the rule has that floor (whichever allows more: a downtime of a few
  milliseconds varies by several between runs, and no relative target is reached there);

or when it reaches ``max`` runs. Why it stopped is one of :data:`SURE` (the intervals are within
the target), :data:`UNANIMOUS` (the same outcome every time and no timing to pin down: it did not
converge, failed, was skipped or corrupted, or its timings are excluded because RAM was compared
after the run) and :data:`MAX`. A mixed outcome never stops before ``max``: how often a cell
converges is then part of the answer, and a few runs cannot tell it.

The interval is Student's t interval of the mean (:func:`harness.analysis.stats.t_interval`), the
one :mod:`~harness.analysis.stats` has for small samples: with 3 to 10 runs a percentile bootstrap
returns little more than the sample's own extremes and would stop a cell too early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from harness.analysis.stats import MeanInterval, t_interval
from harness.results.record.model import RunRecord

#: The metrics whose interval decides (RunRecord.metrics fields), with their label.
PRIMARY: dict[str, str] = {"total_time_ms": "total time", "downtime_ms": "downtime"}
LEVEL = 0.95
SURE = "sure"
UNANIMOUS = "unanimous outcome"
MAX = "max"


class Rule(Protocol):
    """``repetitions: {min, max, ci}`` (:class:`harness.plan.repetitions.Repetitions`, or the
    copy a run record keeps)."""

    @property
    def min(self) -> int: ...
    @property
    def max(self) -> int: ...
    @property
    def ci(self) -> float: ...
    @property
    def ci_ms(self) -> float | None: ...


@dataclass(frozen=True)
class RunFigures:
    """What the rule looks at in one run."""

    status: str  # the outcome, or ``corrupted``
    timed: bool  # its timings count (completed, integrity not corrupted, timing not excluded)
    metrics: dict[str, float | None] = field(default_factory=dict)  # PRIMARY keys

    @classmethod
    def of(cls, rec: RunRecord) -> RunFigures:
        status = rec.status
        return cls(status, status == "completed" and not rec.timing_excluded,
                   {k: getattr(rec.metrics, k) for k in PRIMARY})


@dataclass(frozen=True)
class Decision:
    """Whether a cell stops after ``runs`` runs, why, and the intervals it reached."""

    runs: int
    stop: bool
    reason: str  # SURE, UNANIMOUS, MAX, or "" (go on)
    outcome: str | None  # the status every run had, None when they differ
    intervals: dict[str, MeanInterval | None]  # PRIMARY key -> interval (None: < 2 values)
    target: float
    target_ms: float | None = None

    def interval_text(self) -> str:
        """``total time 2712 ms ±1.8 %, downtime 41 ms ±62 %`` (what the intervals reached)."""
        parts = []
        for key, iv in self.intervals.items():
            label = PRIMARY[key]
            if iv is None:
                continue
            rel = iv.relative
            spread = f"±{rel * 100:.1f} %" if rel is not None else f"±{iv.half_width:.0f} ms"
            parts.append(f"{label} {iv.mean:.0f} ms {spread}")
        return ", ".join(parts)

    def text(self) -> str:
        """One line: ``4 runs, stopped: sure (total time 2712 ms ±1.8 %, ...)``."""
        head = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        if self.stop:
            floor = f" or ±{self.target_ms:g} ms" if self.target_ms else ""
            why = "stopped: " + {SURE: f"sure (95 % interval within ±{self.target * 100:g} %"
                                       f"{floor})",
                                 UNANIMOUS: f"unanimous outcome ({self.outcome})",
                                 MAX: "max reached, not sure"}[self.reason]
        else:
            why = "not sure yet"
        detail = self.interval_text()
        return f"{head}, {why}" + (f"; {detail}" if detail else "")


def intervals(runs: Sequence[RunFigures]) -> dict[str, MeanInterval | None]:
    """The 95 % t interval of each primary metric over the timed runs."""
    timed = [r for r in runs if r.timed]
    return {key: t_interval([r.metrics.get(key) for r in timed], level=LEVEL)
            for key in PRIMARY}


def decide(rule: Rule, runs: Sequence[RunFigures]) -> Decision:
    """Does a cell with these finished runs stop, and why (see the module docstring)."""
    n = len(runs)
    statuses = {r.status for r in runs}
    outcome = next(iter(statuses)) if len(statuses) == 1 else None
    ivs = intervals(runs)

    def result(stop: bool, reason: str) -> Decision:
        return Decision(n, stop, reason, outcome, ivs, rule.ci, rule.ci_ms)

    if n < rule.min:
        return result(False, "")
    if outcome is not None:
        timed = [r for r in runs if r.timed]
        # A metric no run has (a completed run always has both here) does not hold a cell back.
        judged = [k for k in PRIMARY if any(r.metrics.get(k) is not None for r in timed)]
        if not judged:
            return result(True, UNANIMOUS)
        if all(_within(ivs[k], rule.ci, rule.ci_ms) for k in judged):
            return result(True, SURE)
    if n >= rule.max:
        return result(True, MAX)
    return result(False, "")


def _within(iv: MeanInterval | None, target: float, target_ms: float | None = None) -> bool:
    if iv is None:
        return False
    if target_ms is not None and iv.half_width <= target_ms:
        return True
    rel = iv.relative
    return rel is not None and rel <= target


def first_stop(rule: Rule, runs: Sequence[RunFigures]) -> int | None:
    """After how many of ``runs`` (in repetition order) the rule would first have stopped the
    cell, or None if it never would: a cell that ran on beyond that kept pace with the other
    variants of its point (interleaved order), or had more runs stored from before."""
    for k in range(rule.min, len(runs) + 1):
        if decide(rule, runs[:k]).stop:
            return k
    return None


def cell_line(records: Sequence[RunRecord]) -> str | None:
    """How many runs a cell took under ``repetitions: {min, max, ci}`` and why it stopped, from
    its run records (None for a fixed number of repetitions): ``repetitions: 4 runs, stopped:
    sure (...); total time 2712 ms ±1.8 %, ...``."""
    rule = next((r.repetitions for r in records if r.repetitions is not None), None)
    if rule is None:
        return None
    runs = [RunFigures.of(r) for r in sorted(records, key=lambda r: r.repetition)]
    d = decide(rule, runs)
    line = f"repetitions {rule.min}..{rule.max}: {d.text()}"
    first = first_stop(rule, runs)
    if first is not None and first < len(runs):
        line += (f" (sure enough after {first}: it ran on beside the other variants of its "
                 "point, or had more runs stored)")
    return line
