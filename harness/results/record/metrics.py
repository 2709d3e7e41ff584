"""The metric catalogue: each figure of a run, defined once (pure).

A :class:`Metric` names a figure of :class:`~harness.results.record.model.Metrics` (or one thread class's
CPU share), says how to read it from a record, its label and unit in tables, how to scale the
stored value to that unit, whether lower is better, and how ``migbench show`` names it. The
summary (``summary.csv`` and the DataFrame), ``show``, the report, ``compare`` and the nightly
regression check all take their figures from here; each picks the metrics it lists, none defines
one.

Stored values keep the unit their field names say (``*_ms``, ``*_bytes``, ``*_mbps``); ``scale``
divides them into the display unit (total time in s, transferred in MiB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.results.record.model import CpuSide, RunRecord
from harness.results.record.threadclass import CLASSES as CPU_CLASSES


@dataclass(frozen=True)
class Metric:
    key: str  # the record's field (``metrics.<key>``) or a CPU column (``cpu_src_vcpu_pct``)
    label: str  # in tables, verdicts and heatmaps
    unit: str  # the display unit
    lower_is_better: bool
    get: Callable[[RunRecord], float | None]
    scale: float = 1.0  # divide stored values by this for the display unit
    title: str = ""  # its line in `migbench show` ("" where show has none)
    show_unit: str = ""  # the unit show prints the stored value in

    def value(self, rec: RunRecord) -> float | None:
        """The stored value of this figure in ``rec`` (None: the run has none)."""
        v = self.get(rec)
        return None if v is None else float(v)


def _field(name: str) -> Callable[[RunRecord], float | None]:
    def get(rec: RunRecord) -> float | None:
        v = getattr(rec.metrics, name)
        assert v is None or isinstance(v, (int, float)), name  # the model's numbers
        return v
    return get


def _metric(key: str, label: str, unit: str, lower_is_better: bool, scale: float = 1.0,
            title: str = "", show_unit: str = "") -> Metric:
    return Metric(key, label, unit, lower_is_better, _field(key), scale, title, show_unit)


#: Every figure of a run's ``metrics`` block, in ``summary.csv``'s order (QEMU's own rate last:
#: it is not a summary column).
CATALOGUE: dict[str, Metric] = {m.key: m for m in (
    _metric("total_time_ms", "total time", "s", True, 1000.0),
    _metric("downtime_ms", "downtime", "ms", True),
    _metric("host_pause_ms", "host pause", "ms", True, title="host-observed pause",
            show_unit="ms"),
    _metric("setup_time_ms", "setup time", "ms", True),
    _metric("transferred_bytes", "transferred", "MiB", True, 1024.0**2),
    _metric("throughput_mbps", "throughput", "Mbit/s", False, title="average throughput",
            show_unit="mbps"),
    _metric("dirty_sync_count", "dirty syncs", "passes", True),
    _metric("guest_max_stall_ms", "guest max stall", "ms", True,
            title="guest max stall (host clock)", show_unit="ms"),
    _metric("guest_max_stall_guest_clock_ms", "guest max stall (guest clock)", "ms", True,
            title="guest max stall (guest clock)", show_unit="ms"),
    _metric("guest_visible_downtime_ms", "guest-visible downtime", "ms", True,
            title="guest-visible downtime", show_unit="ms"),
    _metric("ping_lost", "ping loss", "packets", True),
    _metric("ping_max_gap_ms", "ping max gap", "ms", True),
    _metric("ping_rtt_p99_ms", "ping RTT p99", "ms", True),
    _metric("fio_iops_before", "fio IOPS before", "IOPS", False),
    _metric("fio_iops_during", "fio IOPS during", "IOPS", False),
    _metric("fio_lat_p99_us_before", "fio p99 latency before", "µs", True),
    _metric("fio_lat_p99_us_during", "fio p99 latency during", "µs", True),
    _metric("service_p99_ms", "service p99 during", "ms", True,
            title="service p99 latency during the migration", show_unit="ms"),
    _metric("service_max_gap_ms", "service-visible downtime", "ms", True,
            title="service-visible downtime (no request completed)", show_unit="ms"),
    _metric("qemu_mbps", "QEMU throughput", "Mbit/s", False),
)}

#: The figures of ``summary.csv``, in its order.
SUMMARY: tuple[Metric, ...] = tuple(m for k, m in CATALOGUE.items() if k != "qemu_mbps")

CPU_SIDES = {"source": "src", "destination": "dst"}


def cpu_column(side: str, cls: str) -> str:
    """The name of one side's CPU use by one thread class, e.g. ``cpu_src_migration_pct``
    (percent of one CPU over the migration window): a frame column and a metric key."""
    return f"cpu_{CPU_SIDES[side]}_{cls}_pct"


def _cpu(side: str, cls: str) -> Callable[[RunRecord], float | None]:
    def get(rec: RunRecord) -> float | None:
        s: CpuSide | None = getattr(rec.cpu, side) if rec.cpu is not None else None
        return s.classes.get(cls) if s is not None else None
    return get


#: Each side's CPU share per thread class.
CPU: tuple[Metric, ...] = tuple(
    Metric(cpu_column(side, cls), f"CPU {short} {cls.replace('_', ' ')}", "%", True,
           _cpu(side, cls))
    for side, short in CPU_SIDES.items() for cls in CPU_CLASSES
)
