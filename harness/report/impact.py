"""What the guest saw, per repetition and phase, for a cell page's "guest impact" table (pure).

Phases are those of the run's ``guest_impact`` summaries: ``before`` the migrate command,
``during`` the migration (until the guest resumed on the destination; until the end when it never
moved) and ``after``. Ping and fio figures are the harness's own per-phase summaries
(``guest_impact.ping`` / ``guest_impact.fio`` of each run, see :mod:`harness.run.sampling.ping` and
:mod:`harness.run.sampling.fio`); the writer's figures are computed here from its reports on the host
clock, the way the run's ``guest_max_stall_ms`` is; the CPU throttle and XBZRLE figures come from
``query-migrate``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.analysis import compare, stalls
from harness.results.record import RunRecord
from harness.results.record.qmp import MigrationInfo

PHASES = ("before", "during", "after")
#: Runs whose figures enter the median: a migration that ran (completed or cannot complete) on a
#: guest that was not corrupted. Failed, skipped and corrupted runs are shown, not counted.
COUNTED = ("completed", "not-converged")


@dataclass
class ImpactRow:
    measure: str
    unit: str
    phase: str
    values: list[float | None]  # one per repetition, in the order of :attr:`GuestImpact.reps`
    counted: list[bool]  # which of ``values`` enter the median
    integer: bool = False  # a count (probes): shown without decimals

    def _used(self) -> list[float]:
        return [v for v, c in zip(self.values, self.counted, strict=True) if c and v is not None]

    @property
    def n(self) -> int:
        return len(self._used())

    @property
    def median(self) -> float | None:
        used = self._used()
        return statistics.median(used) if used else None

    @property
    def low(self) -> float | None:
        return min(self._used(), default=None)

    @property
    def high(self) -> float | None:
        return max(self._used(), default=None)


@dataclass
class GuestImpact:
    reps: list[tuple[int, str]]  # (repetition, status)
    rows: list[ImpactRow]

    @property
    def uncounted(self) -> list[tuple[int, str]]:
        return [(rep, st) for rep, st in self.reps if st not in COUNTED]


def _switchover(rec: RunRecord, t0: float | None) -> float | None:
    """Seconds from the migrate command to the guest's resume on the destination, if it moved."""
    if t0 is None or rec.outcome != "completed":
        return None
    for e in rec.events.destination:
        if e.event == "RESUME" and e.host_time >= t0 - 0.5:
            return e.host_time - t0
    return None


def _phase(t: float, switchover: float | None) -> str:
    if t < 0:
        return "before"
    return "during" if switchover is None or t < switchover else "after"


def writer_phases(rec: RunRecord, t0: float | None) -> dict[str, dict[str, float | None]]:
    """Per phase: the longest stall between writer reports and the lowest reported rate.

    A stall is the time between two consecutive reports arriving at the host, minus the
    reporting interval (:func:`harness.analysis.stalls.stalls`, as the run's
    ``guest_max_stall_ms``), attributed to the phase in which it began (as ping gaps are); over
    ``during`` and ``after`` together it is the run's ``guest_max_stall_ms``.
    """
    pts = sorted(rec.guest.writer, key=lambda p: p.t)
    sw = _switchover(rec, t0)
    out: dict[str, dict[str, float | None]] = {
        ph: {"stall": None, "rate": None} for ph in PHASES}
    for p in pts:
        ph = out[_phase(p.t, sw)]
        ph["rate"] = min(p.rate, ph["rate"]) if ph["rate"] is not None else p.rate
    for start, stall_ms in stalls.stalls(p.t for p in pts):
        ph = out[_phase(start, sw)]
        stall = round(stall_ms, 1)
        ph["stall"] = stall if ph["stall"] is None else max(stall, ph["stall"])
    return out


def max_throttle(rec: RunRecord) -> float | None:
    """The highest ``cpu-throttle-percentage`` QEMU reported (None: it reported none)."""
    answers: list[MigrationInfo] = [*rec.timeline, *([rec.final] if rec.final else [])]
    seen = [float(s.cpu_throttle_percentage) for s in answers
            if s.cpu_throttle_percentage is not None]
    return max(seen) if seen else None


def xbzrle_bytes_per_page(rec: RunRecord) -> float | None:
    """``xbzrle-cache.bytes / pages`` of the final answer, else of the last sample that has it."""
    answers: list[MigrationInfo] = [*([rec.final] if rec.final else []), *reversed(rec.timeline)]
    for s in answers:
        x = s.xbzrle_cache
        if x is not None and x.pages is not None and x.bytes is not None:
            return round(x.bytes / x.pages, 1) if x.pages else None
    return None


def _dataset_bad(rec: RunRecord) -> float | None:
    """Keys of a service's dataset missing or wrong after the migration (None: not checked)."""
    svc = rec.guest_impact.service
    d = svc.dataset if svc is not None else None
    return None if d is None or d.verdict == "unchecked" else float(d.missing + d.wrong)


def _summary(kind: str, key: str) -> Callable[[RunRecord, str], float | None]:
    """A figure of the run's per-phase ``guest_impact.<kind>`` summaries (ping or fio)."""
    def get(rec: RunRecord, phase: str) -> float | None:
        block = getattr(rec.guest_impact, kind)
        if block is None:
            return None
        v = getattr(getattr(block, phase), key)
        assert v is None or isinstance(v, (int, float))
        return v
    return get


# (measure, unit, getter(record, phase), integer)
_SUMMARY_ROWS: tuple[tuple[str, str, Callable[[RunRecord, str], float | None], bool], ...] = (
    ("ping lost", "probes", _summary("ping", "lost"), True),
    ("ping max gap", "ms", _summary("ping", "max_gap_ms"), False),
    ("ping RTT p50", "ms", _summary("ping", "rtt_p50_ms"), False),
    ("ping RTT p99", "ms", _summary("ping", "rtt_p99_ms"), False),
    ("fio IOPS (host clock, mean)", "IOPS", _summary("fio", "iops_host_mean"), False),
    ("fio p99 latency (median second)", "µs", _summary("fio", "lat_p99_us_median"), False),
    ("fio p99 latency (worst second)", "µs", _summary("fio", "lat_p99_us_max"), False),
    # redis or memcached under load (issue 17): latency from when each request was due
    ("service replies per second", "ops/s", _summary("service", "ops_s"), False),
    ("service p50 latency", "ms", _summary("service", "p50_ms"), False),
    ("service p99 latency", "ms", _summary("service", "p99_ms"), False),
    ("service p99.9 latency", "ms", _summary("service", "p999_ms"), False),
    ("service max latency", "ms", _summary("service", "max_ms"), False),
    ("service longest window without a reply", "ms", _summary("service", "max_gap_ms"), False),
    ("service errors", "requests", _summary("service", "errors"), True),
    ("service timeouts", "requests", _summary("service", "timeouts"), True),
    ("service load's own send lag p99 (this machine)", "ms",
     _summary("service", "send_lag_p99_ms"), False),
)


def guest_impact(records: Sequence[RunRecord], t0: Callable[[RunRecord], float | None]
                 ) -> GuestImpact:
    """The guest impact table of one cell (``records`` sorted by repetition).

    ``t0`` gives a record's migrate time (epoch seconds). Rows where no repetition has a figure
    are left out.
    """
    reps: list[tuple[int, str]] = [(r.repetition, compare.status(r)) for r in records]
    counted = [st in COUNTED for _, st in reps]
    rows: list[ImpactRow] = []

    def add(measure: str, unit: str, phase: str, values: list[float | None],
            integer: bool = False) -> None:
        vals = [None if v is None else float(v) for v in values]
        if any(v is not None for v in vals):
            rows.append(ImpactRow(measure, unit, phase, vals, counted, integer))

    for measure, unit, get, integer in _SUMMARY_ROWS:
        for phase in PHASES:
            add(measure, unit, phase, [get(r, phase) for r in records], integer)
    writer = [writer_phases(r, t0(r)) for r in records]
    for measure, key, unit in (("writer max stall (host clock)", "stall", "ms"),
                               ("writer lowest rate (per 100 ms report)", "rate", "MiB/s")):
        for phase in PHASES:
            add(measure, unit, phase, [w[phase][key] for w in writer])
    add("service dataset: keys missing or wrong", "keys", "after",
        [_dataset_bad(r) for r in records], True)
    add("CPU throttle reached", "%", "during", [max_throttle(r) for r in records])
    add("xbzrle bytes per page", "bytes", "during", [xbzrle_bytes_per_page(r) for r in records])
    return GuestImpact(reps, rows)
