"""Where a campaign's time goes: each run's phases and its overhead around the migration (pure).

A run's wall-clock time (:class:`~harness.results.record.model.Phases`, measured by the runner)
splits along the harness's states (:data:`~harness.results.record.model.State`): start (QEMUs
launched, the guest booted or restored), steady wait, setup, migration, observation after a
completion, teardown. The **overhead** of a run is what is neither the migration nor the
observation the matrix asked for: ``wall - migration - min(observation, observe_after_s)``
(integrity checks that outlast ``observe_after_s`` count as overhead; a run that never
completed observed nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.results import store
from harness.results.record.model import Phases, RunRecord, StateChange

#: The phase each state of a run opens (any other state, such as a restore, is part of the start).
_PHASE_OF = {"steady": "steady_s", "setup": "setup_s", "migrate": "migration_s",
             "verify": "observation_s", "teardown": "teardown_s"}


def phases(states: Sequence[StateChange], begin: float, end: float,
           boot_s: float | None = None) -> Phases:
    """The phases of a run that the runner picked up at ``begin`` and finished at ``end`` (epoch
    seconds), from its state changes.

    The guest's boot (``boot_s``, from the source QEMU's launch to the guest's first report)
    happens while the harness is in its ``steady`` state; it is moved to the start phase, so that
    the steady phase is the wait for a steady workload alone. The source launches within the
    ``boot`` state, so this counts the boot from a moment a few milliseconds late.
    """
    spans: dict[str, float] = {}
    ordered = sorted(states, key=lambda s: s.t)
    first = ordered[0].t if ordered else end
    for i, sc in enumerate(ordered):
        stop = ordered[i + 1].t if i + 1 < len(ordered) else end
        key = _PHASE_OF.get(sc.state, "start_s")
        spans[key] = spans.get(key, 0.0) + max(0.0, stop - sc.t)
    if boot_s is not None and "steady_s" in spans:
        moved = min(max(0.0, boot_s), spans["steady_s"])
        spans["start_s"] = spans.get("start_s", 0.0) + moved
        spans["steady_s"] -= moved
    return Phases(wall_s=round(max(0.0, end - begin), 3),
                  prepare_s=round(max(0.0, first - begin), 3),
                  **{k: round(v, 3) for k, v in spans.items()})


def run_overhead(rec: RunRecord) -> float | None:
    """Seconds of the run that were neither its migration nor its configured observation, or
    None for a record without phases (older files, runs that never started); as in
    ``summary.csv`` (:func:`harness.results.store.overhead_s`, the one definition)."""
    return store.overhead_s(rec)


def phase_line(rec: RunRecord) -> str | None:
    """``phases: start 3.1 s, steady 0.4 s, ... = wall 9.5 s; overhead 3.8 s (...); warm start
    (restored in 0.21 s)`` (None: none). How the source came up ends it: a run that booted where
    a warm start was asked or possible says why (a failed restore says so)."""
    p = rec.phases
    if p is None:
        return None
    names = (("prepare", p.prepare_s), ("start", p.start_s), ("steady", p.steady_s),
             ("setup", p.setup_s), ("migration", p.migration_s),
             ("observation", p.observation_s), ("teardown", p.teardown_s))
    parts = ", ".join(f"{n} {v:.1f} s" for n, v in names if v is not None)
    line = (f"phases: {parts} = wall {p.wall_s:.1f} s; overhead {run_overhead(rec) or 0.0:.1f} s "
            "(wall - migration - observation)")
    start = rec.start
    if start is None:
        return line
    if start.kind == "warm":
        restored = f" in {start.restore_s:.2f} s" if start.restore_s is not None else ""
        return f"{line}; warm start (restored{restored})"
    return f"{line}; cold start" + (f": {start.reason}" if start.reason else "")


@dataclass(frozen=True)
class CampaignTime:
    """The time of a campaign's runs that have phases."""

    runs: int
    wall_s: float
    migration_s: float
    overhead_s: float

    @property
    def outside_share(self) -> float:
        """The share of the wall-clock time spent outside migrations (0..1)."""
        return 1 - self.migration_s / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        return (f"time: {self.runs} run{'s' if self.runs != 1 else ''}, {self.wall_s:.0f} s in "
                f"all, {self.migration_s:.0f} s migrating: {self.outside_share:.0%} outside "
                f"migrations; overhead {self.overhead_s / self.runs:.1f} s per run (wall - "
                "migration - observation)")


def campaign_time(records: Sequence[RunRecord]) -> CampaignTime | None:
    """Totals over the runs that have phases, or None when none has."""
    timed = [r for r in records if r.phases is not None]
    if not timed:
        return None
    return CampaignTime(
        len(timed), sum(r.phases.wall_s for r in timed if r.phases),
        sum(r.phases.migration_s or 0.0 for r in timed if r.phases),
        sum(run_overhead(r) or 0.0 for r in timed))
