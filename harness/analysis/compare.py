"""Pure before/after comparison of run records: cell matching, outcome changes, metric verdicts.

Records are the run records :func:`harness.results.store.iter_runs` yields. Two sides are compared cell by
cell, where a cell is identified by its matrix axes and workload, *not* by its variant (the
variant is what differs between the sides: a QEMU build or a configuration).

Rules shared with the report:

* a run's **status** is ``corrupted`` when its integrity check found damage, whatever its timing;
  otherwise its outcome (``completed``, ``not-converged``, ``failed``, ``skipped``);
* only ``completed`` runs that are not corrupted and not ``timing_excluded`` feed the metric
  statistics (a corrupted run is never shown as fast);
* outcome and integrity changes are listed before metric changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from harness.analysis import stats
from harness.plan import models
from harness.plan.matrix import coordinate_key
from harness.results.record import RunRecord
from harness.results.record.metrics import CATALOGUE, CPU, Metric
from harness.results.record.model import STATUS_RANK, Status

Record = RunRecord


#: The metrics a comparison or a night judges, in report order.
SUMMARY_METRICS: dict[str, Metric] = {k: CATALOGUE[k] for k in (
    "total_time_ms", "downtime_ms", "transferred_bytes", "throughput_mbps",
    "guest_max_stall_ms", "host_pause_ms", "guest_visible_downtime_ms", "ping_lost",
    "ping_max_gap_ms", "service_p99_ms", "service_max_gap_ms")}

# A report judges what a night judges of the guest's network and services too (issue 17), each
# only where its records have it (present_metrics).
BASE_METRICS: tuple[Metric, ...] = tuple(SUMMARY_METRICS[k] for k in (
    "total_time_ms", "downtime_ms", "transferred_bytes", "throughput_mbps",
    "guest_max_stall_ms", "ping_lost", "ping_max_gap_ms", "service_p99_ms",
    "service_max_gap_ms"))

# Keyed like the store's per-class CPU columns, so a metric and its DataFrame column share a name.
CPU_METRICS: tuple[Metric, ...] = CPU

ALL_METRICS = BASE_METRICS + CPU_METRICS


def status(rec: Record) -> Status:
    """``corrupted`` if integrity failed, else the outcome (:attr:`RunRecord.status`)."""
    return rec.status


def usable(rec: Record) -> bool:
    """May this run's figures enter timing statistics?"""
    return status(rec) == "completed" and not rec.timing_excluded


def values(records: Iterable[Record], metric: Metric) -> list[float]:
    out = []
    for rec in records:
        if usable(rec):
            v = metric.value(rec)
            if v is not None:
                out.append(v)
    return out


def present_metrics(records: Sequence[Record]) -> list[Metric]:
    """The metrics at least one usable record has (CPU and ping only once they are sampled)."""
    return [m for m in ALL_METRICS
            if m.key in ("total_time_ms", "downtime_ms") or values(records, m)]


def cell_key(rec: Record, with_variant: bool = False) -> str:
    """A cell's identity for matching across variants and folders: its coordinates without the
    matrix name (:func:`harness.plan.matrix.coordinate_key`), and without the variant unless asked."""
    return coordinate_key(rec.cell, variant=with_variant, matrix=False)


def axes_label(rec: Record) -> str:
    return ", ".join(f"{k}={v}" for k, v in rec.cell.axes.items()) or "base"


def status_counts(records: Iterable[Record]) -> dict[str, int]:
    return dict(Counter(status(r) for r in records))


def describe_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "no runs"
    order = sorted(counts, key=lambda s: STATUS_RANK.get(s, -1), reverse=True)
    return ", ".join(f"{s} {counts[s]}/{total}" for s in order)


@dataclass(frozen=True)
class OutcomeChange:
    before: str  # described counts, e.g. "not-converged 2/2"
    after: str
    direction: str  # "better" | "worse" | "mixed"
    integrity: bool  # an integrity change (ok <-> corrupted) rather than an outcome change


def _share(counts: dict[str, int], status_: str) -> Fraction:
    return Fraction(counts.get(status_, 0), sum(counts.values()))


def _majority(counts: dict[str, int]) -> str:
    # ties go to the worse status: "completed 1/2, failed 1/2" is not a completed cell
    return max(counts, key=lambda s: (counts[s], -STATUS_RANK.get(s, 0)))


def outcome_change(base: Sequence[Record], new: Sequence[Record]) -> OutcomeChange | None:
    """How the outcomes changed between the sides, or None when they did not.

    A change is any of: a status present on one side only; a different share of ``completed``
    runs (completed and not corrupted) or of ``corrupted`` runs; a different most common status.
    So "completed 3/3 -> completed 1/3, not-converged 2/3" is a change, while the same shares
    over a different number of repetitions ("completed 3/3 -> completed 5/5") are not.
    """
    cb, cn = status_counts(base), status_counts(new)
    if not cb or not cn:
        return None
    shares_differ = {s: _share(cb, s) != _share(cn, s) for s in ("completed", "corrupted")}
    if (set(cb) == set(cn) and not any(shares_differ.values())
            and _majority(cb) == _majority(cn)):
        return None

    def score(c: dict[str, int]) -> float:
        return sum(STATUS_RANK.get(s, 0) * n for s, n in c.items()) / sum(c.values())

    sb, sn = score(cb), score(cn)
    direction = "better" if sn > sb else "worse" if sn < sb else "mixed"
    integrity = shares_differ["corrupted"]
    return OutcomeChange(describe_counts(cb), describe_counts(cn), direction, integrity)


@dataclass(frozen=True)
class MetricRow:
    metric: Metric
    comparison: stats.Comparison
    warnings: list[str]


@dataclass
class CellComparison:
    key: str
    label: str  # axes
    workload: str
    base_variant: str
    new_variant: str
    base_cells: list[str]
    new_cells: list[str]
    base_n: int
    new_n: int
    outcome: OutcomeChange | None
    rows: list[MetricRow] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return sorted({w for r in self.rows for w in r.warnings})

    @property
    def sort_key(self) -> tuple[int, str, str]:
        # Outcome changes first (worse before better), then the rest in axes order.
        rank = 2
        if self.outcome is not None:
            rank = 0 if self.outcome.direction == "worse" else 1
        return (rank, self.workload, self.label)


def workload_label(rec: Record) -> str:
    return models.workload_label(rec.cell.workload)


def compare_sides(
    base: Sequence[Record], new: Sequence[Record], *, with_variant: bool = False,
    method: str = "mannwhitney", min_effect: float = stats.MIN_EFFECT,
) -> tuple[list[CellComparison], list[str]]:
    """Match cells of ``base`` and ``new`` and compare them.

    Returns the comparisons (outcome changes first) and the labels of cells present on one side
    only.
    """
    groups: dict[str, tuple[list[Record], list[Record]]] = {}
    for rec in base:
        groups.setdefault(cell_key(rec, with_variant), ([], []))[0].append(rec)
    for rec in new:
        groups.setdefault(cell_key(rec, with_variant), ([], []))[1].append(rec)
    _pair_by_feature(groups, with_variant)
    out: list[CellComparison] = []
    unmatched: list[str] = []
    for key, (b, n) in groups.items():
        any_rec = (b or n)[0]
        if not b or not n:
            side = "baseline" if b else "new side"
            unmatched.append(f"{workload_label(any_rec)}: {axes_label(any_rec)} "
                             f"(only on the {side})")
            continue
        cc = CellComparison(
            key=key, label=axes_label(any_rec), workload=workload_label(any_rec),
            base_variant=_variants(b), new_variant=_variants(n),
            base_cells=sorted({r.cell.id for r in b}),
            new_cells=sorted({r.cell.id for r in n}),
            base_n=len(b), new_n=len(n), outcome=outcome_change(b, n),
        )
        for metric in present_metrics(list(b) + list(n)):
            va, vb = values(b, metric), values(n, metric)
            if not va and not vb or (metric.key.startswith("cpu_") and not (va and vb)):
                continue  # CPU sampled on one side only: nothing to say
            cmp = stats.compare(va, vb, lower_is_better=metric.lower_is_better,
                                method=method, min_effect=min_effect)
            warns = []
            for side, summary in (("baseline", cmp.base), ("new", cmp.new)):
                for w in stats.sample_warnings(summary):
                    # the repetition count is the same for every metric: say it once per side
                    warns.append(f"{side}: {w}" if "repetition" in w
                                 else f"{metric.label} {side}: {w}")
            cc.rows.append(MetricRow(metric, cmp, warns))
        out.append(cc)
    out.sort(key=lambda c: c.sort_key)
    return out, sorted(unmatched)


def _feature_key(rec: Record, with_variant: bool) -> str:
    return coordinate_key(rec.cell, variant=with_variant, matrix=False,
                          axes={"feature": rec.cell.migration.feature})


def _pair_by_feature(groups: dict[str, tuple[list[Record], list[Record]]],
                     with_variant: bool) -> None:
    """Pair cells left alone on each side when their axes differ but their feature does not.

    Matrices evolve (an axis dropped because it does nothing for a feature): a cell that is the
    only one of its feature + workload on each side is still the same experiment.
    """
    lone: dict[str, tuple[list[str], list[str]]] = {}
    for key, (b, n) in groups.items():
        if bool(b) != bool(n):
            fk = _feature_key((b or n)[0], with_variant)
            lone.setdefault(fk, ([], []))[0 if b else 1].append(key)
    for bk, nk in lone.values():
        if len(bk) == 1 and len(nk) == 1:
            groups[nk[0]][0].extend(groups.pop(bk[0])[0])


def _variants(records: Sequence[Record]) -> str:
    return ", ".join(sorted({r.cell.variant for r in records}))


def split_variant(records: Sequence[Record], baseline: str) -> list[tuple[str, list[Record]]]:
    """Group the non-baseline records by variant, for comparing each against ``baseline``."""
    groups: dict[str, list[Record]] = {}
    for rec in records:
        v = rec.cell.variant
        if v != baseline:
            groups.setdefault(v, []).append(rec)
    return sorted(groups.items())


def variants(records: Iterable[Record]) -> list[str]:
    return sorted({r.cell.variant for r in records})
