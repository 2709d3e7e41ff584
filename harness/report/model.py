"""The report model: run records in, plain data for the pages out (pure: no files, no clock).

:func:`build_report` turns the records of a campaign (as :func:`harness.results.store.iter_runs` yields
them) and, optionally, a baseline into a :class:`Report`: an overview per workload and variant,
one :class:`CellPage` per cell and a before/after comparison. Strings taken from records (QEMU
errors, guest console lines) are kept raw here; escaping is the renderer's job.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from harness.analysis import compare, stats
from harness.analysis.compare import Record
from harness.analysis.diagnosis import Diagnosis, aggregate, diagnose
from harness.analysis.overhead import campaign_time, run_overhead
from harness.analysis.stopping import RunFigures, cell_line, decide
from harness.report.featurestats import FeatureStats, feature_stats, feature_timelines
from harness.report.impact import GuestImpact, ImpactRow, guest_impact
from harness.report.predictions import Predictions, predictions
from harness.report.threads import ThreadTable, thread_table
from harness.results import store
from harness.results.record.metrics import Metric
from harness.results.record.model import STATUS_RANK, FioPoint, PingPoint
from harness.results.record.qmp import MigrationInfo, QmpReply, TimelineSample
from harness.results.record.scalars import Json
from harness.results.record.threadclass import CLASSES as CPU_CLASSES
from harness.results.show import info_migrate, storage_rows

# Heatmap metrics of the overview: (metric key, title).
OVERVIEW_METRICS = ("total_time_ms", "downtime_ms", "guest_max_stall_ms", "ping_lost")
STATUS_LABEL = {
    "completed": "completed", "not-converged": "cannot complete", "failed": "failed",
    "corrupted": "corrupted", "skipped": "skipped",
}
CONSOLE_TAIL = 30



def corruption_note(records: Sequence[Record]) -> str:
    """What the integrity checks found in corrupted runs, and what it means (pure)."""
    bad = [r for r in records if r.integrity.verdict == "corrupted"]
    if not bad:
        return ""
    ram = [(r.integrity.ram.differing_pages or 0) if r.integrity.ram else 0 for r in bad]
    stamps = sum(1 for r in bad if r.integrity.stamps is not None
                 and r.integrity.stamps.verdict == "corrupted")
    crashes = sum(1 for r in bad if r.integrity.guest_crash is not None)
    silent = sum(1 for r in bad if r.integrity.guest_silent is not None)
    found = []
    if any(ram):
        found.append(f"guest RAM differed between source and destination in {sum(1 for n in ram if n)} "
                     f"run(s) ({min(n for n in ram if n)}-{max(ram)} pages)")
    if stamps:
        found.append(f"the memory writer found stale pages on the destination in {stamps} run(s)")
    if crashes:
        found.append(f"the guest kernel crashed on the destination in {crashes} run(s)")
    if silent:
        found.append(f"the guest stopped running on the destination (no output, no answer to "
                     f"`verify`) in {silent} run(s)")
    text = ("The migration lost guest memory: " + "; ".join(found) + ". "
            if found else "The integrity checks failed. ")
    versions = sorted({(r.qemu.version or "?").split(" ")[0] for r in bad})
    accels = {r.hosts.source.accel or "" for r in bad}
    old = [v for v in versions if v[:1].isdigit() and int(v.split(".")[0]) < 9]
    if old and "tcg" in accels:
        text += (f"QEMU {', '.join(old)} under TCG loses dirty pages while the guest writes (fixed "
                 "upstream in 9.0 by \"physmem: Fix migration dirty bitmap coherency with TCG "
                 "memory access\"); such a run's speed says nothing about the feature.")
    else:
        text += f"QEMU {', '.join(versions)}: a fast migration of a corrupted guest is no result."
    return text


def fmt(value: float | None, metric: Metric | None = None, digits: int = 3) -> str:
    """A number for a table: scaled to the metric's unit, about ``digits`` significant digits."""
    if value is None:
        return "-"
    v = value / metric.scale if metric is not None else value
    if v == 0:
        return "0"
    mag = abs(v)
    if mag >= 10 ** digits:
        return f"{v:,.0f}"
    decimals = max(0, digits - 1 - int(f"{mag:e}".split("e")[1]))
    return f"{v:,.{min(decimals, 4)}f}"


def safe_id(cell_id: str) -> str:
    """The page name of a cell: its id when it is one (:data:`harness.results.store.CELL_ID`), else a
    hash of it (records are untrusted; the store refuses such ids, this guards other callers).

    Never a path (no ``/``, ``..``, ``%``, quotes or scheme) and never shared by two ids.
    """
    if store.valid_cell_id(cell_id):
        return cell_id
    return "x" + hashlib.sha256(str(cell_id).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _natural(v: object) -> tuple[int, float, str]:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", str(v))
    return (0, float(m.group(1)), str(v)) if m else (1, 0.0, str(v))


# ---------------------------------------------------------------------------------------------
# Per-cell pages


@dataclass
class Series:
    name: str
    panel: str  # panels share one time axis, one panel per unit
    x: list[float]
    y: list[float | None]
    kind: str = "line"  # "line" | "bar" (counts per time bin)


@dataclass
class Marker:
    t: float
    kind: str  # "start" | "sync" | "switchover"
    label: str


@dataclass
class Timeline:
    repetition: int
    status: str
    panels: list[str]
    series: list[Series]
    markers: list[Marker]


@dataclass
class RepRow:
    repetition: int
    status: str
    integrity: str
    timing_excluded: bool
    cells: list[str]  # display values, one per report metric ("corrupted" instead of timings)
    error: str
    file: str
    overhead: str = ""  # seconds neither migrating nor observing ("" for older records)
    start: str = ""  # warm or cold (issue 18; "" for older records)
    start_reason: str = ""  # why it booted where a warm start was possible or asked


@dataclass
class StatRow:
    metric: Metric
    summary: stats.Summary | None
    warnings: list[str]

    @property
    def cells(self) -> list[str]:
        s, m = self.summary, self.metric
        if s is None:
            return ["0", "-", "-", "-", "-"]
        return [str(s.n), fmt(s.median, m), f"{fmt(s.q1, m)} – {fmt(s.q3, m)}",
                f"{fmt(s.min, m)} – {fmt(s.max, m)}",
                "-" if s.cv is None else f"{s.cv:.1%}"]


@dataclass
class CpuTable:
    sampled: bool
    rows: list[tuple[str, str, str]]  # class, source median %, destination median %
    n: int
    corrupted: int = 0  # runs among ``n`` whose guest was corrupted (CPU cost is still real)


@dataclass
class CellPage:
    id: str
    file_id: str
    variant: str
    workload: str
    axes: dict[str, Json]
    label: str
    qemu_versions: list[str]
    status_line: str
    metrics: list[Metric]
    reps: list[RepRow]
    stat_rows: list[StatRow]
    warnings: list[str]
    info_rep: int | None
    info_note: str
    info: list[tuple[str, str]]
    other_info: list[tuple[int, list[tuple[str, str]]]]
    timelines: list[Timeline]
    cpu: CpuTable
    problems: list[tuple[int, str, str]]  # (rep, kind, text): errors, warnings, integrity
    consoles: list[tuple[int, str, list[str]]]  # (rep, role, last lines)
    parameters: list[tuple[str, str]]
    capabilities: list[str]
    impact: GuestImpact = field(default_factory=lambda: GuestImpact([], []))
    diagnosis: Diagnosis | None = None  # the repetitions' diagnosis (issue 16)
    # Filled by add_threads_and_features (talk slides 7, 9 and 12): per-thread CPU with
    # imbalance, compression/XBZRLE statistics over every repetition, and their timelines.
    threads: ThreadTable | None = None
    features: FeatureStats | None = None
    feature_timelines: list[Timeline] = field(default_factory=list)
    # repetitions {min, max, ci} (issue 18): how many runs it took, why it stopped (sure, max,
    # unanimous outcome) and the intervals reached; the runs' time outside the migrations
    repetitions: str | None = None
    stop: str | None = None
    time_line: str | None = None


def impact_text(row: ImpactRow, v: float | None) -> str:
    """One figure of the guest impact table: counts without decimals, else like :func:`fmt`."""
    if v is None:
        return "-"
    if row.integer and v == int(v):
        return f"{int(v):,}"
    return fmt(v)


def impact_summary(row: ImpactRow) -> str:
    """``median (min–max)`` of the counted repetitions, as the docs quote figures."""
    if row.median is None:
        return "-"
    text = impact_text(row, row.median)
    if row.n > 1 and row.low != row.high:
        text += f" ({impact_text(row, row.low)}–{impact_text(row, row.high)})"
    return text


def _t0(rec: Record) -> float | None:
    """Epoch time of the migrate command."""
    s = rec.migrate_start_utc
    if s:
        try:
            return datetime.fromisoformat(s).timestamp()
        except ValueError:
            pass
    for e in rec.events.source:
        if e.event == "MIGRATION" and e.data.get("status") == "setup":
            return e.host_time
    return None


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else float(f"{v:.{nd}g}")


def _filled(block: QmpReply | None) -> bool:
    """Did QEMU send ``block`` with something in it?"""
    return block is not None and bool(block.model_fields_set or block.model_extra)


_TIMELINE_FIELDS: tuple[tuple[str, str, Callable[[TimelineSample], float | None], float],
                        ...] = (
    # (series name, panel, the figure in a query-migrate sample, multiplier)
    ("remaining RAM", "remaining RAM (MiB)", lambda s: s.ram.remaining if s.ram else None,
     1 / 1024**2),
    ("throughput", "throughput (Mbit/s)", lambda s: s.ram.mbps if s.ram else None, 1.0),
    ("dirty page rate", "dirty page rate (pages/s)",
     lambda s: s.ram.dirty_pages_rate if s.ram else None, 1.0),
    ("CPU throttle", "rates (%)", lambda s: s.cpu_throttle_percentage, 1.0),
    ("xbzrle cache miss", "rates (%)",
     lambda s: s.xbzrle_cache.cache_miss_rate if s.xbzrle_cache else None, 100.0),
    ("compression busy", "rates (%)",
     lambda s: s.compression.busy_rate if s.compression else None, 100.0),
    ("xbzrle encoding", "encoding ratio (x)",
     lambda s: s.xbzrle_cache.encoding_rate if s.xbzrle_cache else None, 1.0),
    ("compression", "encoding ratio (x)",
     lambda s: s.compression.compression_rate if s.compression else None, 1.0),
)


_FIO_FIELDS: tuple[tuple[str, str, Callable[[FioPoint], float | None], float], ...] = (
    # (series name, panel, sample field, multiplier)
    ("fio IOPS (host clock)", "fio IOPS", lambda p: p.iops_host, 1.0),
    ("fio IOPS (guest clock)", "fio IOPS", lambda p: p.iops, 1.0),
    ("fio p99 completion latency", "fio completion latency (ms)", lambda p: p.lat_p99_us,
     1 / 1000),
    ("fio p50 completion latency", "fio completion latency (ms)", lambda p: p.lat_p50_us,
     1 / 1000),
)


def _fio_series(samples: Sequence[FioPoint], t0: float | None) -> list[Series]:
    """fio's per-second samples on the common axis: host arrival time minus the migrate time
    (samples carry ``t_host``, epoch arrival, and ``t_guest``, the guest's clock, which stops
    with the VM)."""
    if t0 is None:
        return []
    pts = sorted(((p.t_host - t0, p) for p in samples), key=lambda tp: tp[0])
    out = []
    for name, panel, get, mult in _FIO_FIELDS:
        xs = [(t, v) for t, p in pts if (v := get(p)) is not None]
        if xs:
            out.append(Series(name, panel, [_r(t) or 0.0 for t, _ in xs],
                              [_r(float(v) * mult) for _, v in xs]))
    return out


PING_LOSS_BIN_S = 0.1


def _bin(t: float) -> int:
    return math.floor(t / PING_LOSS_BIN_S + 1e-9)  # 0.3 / 0.1 is 2.9999999999999996


def _ping_loss_series(probes: Sequence[PingPoint], timeout_ms: float) -> list[Series]:
    """Lost probes per 100 ms bin (by send time), every bin from the first probe to the last.

    A probe is lost as the ping summary counts it: no reply, or a reply later than the timeout.
    Unanswered probes sent within the timeout before the last probe are undetermined (the
    prober stopped before their reply was due) and not counted.
    """
    if not probes:
        return []
    times = [p.t for p in probes]
    last = max(times)
    lo = _bin(min(times))
    counts = [0] * (_bin(last) - lo + 1)
    for p, t in zip(probes, times, strict=True):
        rtt = p.rtt_ms
        if (rtt is None and t < last - timeout_ms / 1000) or (rtt is not None and rtt > timeout_ms):
            counts[_bin(t) - lo] += 1
    xs = [_r((lo + i + 0.5) * PING_LOSS_BIN_S) or 0.0 for i in range(len(counts))]
    return [Series("ping lost probes", "ping lost (probes per 100 ms)", xs,
                   [float(c) for c in counts], "bar")]


def _service_series(rec: Record) -> list[Series]:
    """A service's 100 ms bins (issue 17): p99 and worst latency of the replies that arrived in
    each, and the replies per second (zero while the guest is paused)."""
    pts = rec.guest.service
    if not pts:
        return []
    svc = rec.guest_impact.service
    kind = svc.kind if svc is not None else "service"
    xs = [_r(p.t) or 0.0 for p in pts]
    return [Series(f"{kind} p99", f"{kind} latency (ms)", xs, [_r(p.p99_ms) for p in pts]),
            Series(f"{kind} max", f"{kind} latency (ms)", xs, [_r(p.max_ms) for p in pts]),
            Series(f"{kind} ops/s", f"{kind} ops/s", xs, [_r(p.ops) for p in pts])]


def _storage_series(rec: Record) -> list[Series]:
    """A ``storage: copy`` run's disk still to mirror (the job's length minus its offset) beside
    the remaining RAM. The job's clock starts with the mirror, which reaches READY ``sync_s``
    before ``migrate`` is sent (at once after READY): its samples are moved back by that much, so
    the sync before the RAM migration shows at negative times."""
    st = rec.storage
    if st is None or not st.job:
        return []
    shift = st.sync_s or 0.0
    return [Series("remaining disk (mirror)", "remaining disk (MiB)",
                   [_r(j.t - shift) or 0.0 for j in st.job],
                   [_r(max(j.length - j.offset, 0) / 1024**2) for j in st.job])]


def timeline(rec: Record) -> Timeline:
    """The series and markers of one run, on seconds since the migrate command."""
    samples = rec.timeline
    series: list[Series] = []
    for name, panel, get, mult in _TIMELINE_FIELDS:
        pts = [(s.t, get(s)) for s in samples]
        if not any(v is not None for _, v in pts):
            continue
        series.append(Series(name, panel, [_r(t) or 0.0 for t, _ in pts],
                             [None if v is None else _r(float(v) * mult) for _, v in pts]))
    guest = rec.guest
    for role in ("source", "destination"):
        wpts = [p for p in guest.writer if p.host == role]
        if wpts:
            series.append(Series(f"guest writer ({role})", "guest writer (MiB/s)",
                                 [_r(p.t) or 0.0 for p in wpts], [_r(p.rate) for p in wpts]))
    t0 = _t0(rec)
    series += _fio_series(guest.fio, t0)
    if any(p.rtt_ms is not None for p in guest.ping):
        series.append(Series("ping rtt_ms", "ping", [_r(p.t) or 0.0 for p in guest.ping],
                             [_r(p.rtt_ms) for p in guest.ping]))
    if guest.ping:
        ping = rec.guest_impact.ping
        series += _ping_loss_series(guest.ping, ping.timeout_ms if ping is not None else 1000.0)
    series += _service_series(rec)
    series += _storage_series(rec)
    markers = [Marker(0.0, "start", "migrate")]
    if t0 is not None:
        for e in rec.events.source:
            t = e.host_time - t0
            if t < -0.5:
                continue
            if e.event == "MIGRATION_PASS":
                markers.append(Marker(round(t, 3), "sync", f"sync {e.data.get('pass')}"))
            elif e.event == "STOP":
                markers.append(Marker(round(t, 3), "switchover", "switchover"))
    panels: list[str] = []
    for s in series:
        if s.panel not in panels:
            panels.append(s.panel)
    return Timeline(rec.repetition, compare.status(rec), panels, series, markers)


def _info_source(rec: Record) -> tuple[MigrationInfo, str]:
    final = rec.final or MigrationInfo()
    if _filled(final.ram):
        return final, ""
    for sample in reversed(rec.timeline):
        if _filled(sample.ram):
            merged = {k: v for k, v in sample.model_dump(mode="json").items() if k != "t"}
            merged["status"] = f"{final.status or '?'} (statistics of the last sample, " \
                               f"t = {sample.t} s)"
            return MigrationInfo.model_validate(merged), "last sample before the migration ended"
    return final, ""


def _rep_cells(rec: Record, metrics: Sequence[Metric]) -> list[str]:
    st = compare.status(rec)
    out = []
    for m in metrics:
        if st == "corrupted":
            # The figure is shown beside the verdict (struck through), never counted as a result.
            value = m.value(rec)
            out.append("corrupted" if value is None else f"corrupted:{fmt(value, m)}")
        elif st != "completed" and m.key in ("total_time_ms", "downtime_ms", "throughput_mbps"):
            out.append(STATUS_LABEL.get(st, st))
        else:
            out.append(fmt(m.value(rec), m))
    return out


def _cpu_table(records: Sequence[Record]) -> CpuTable:
    # CPU cost is a real cost even when the migration corrupted the guest (it says what the
    # feature costs); such runs are counted and flagged, not hidden.
    sampled = [r.cpu for r in records if r.cpu is not None]
    if not sampled:
        return CpuTable(False, [], 0)
    n_bad = sum(1 for r in records if r.cpu is not None and compare.status(r) == "corrupted")
    classes = list(CPU_CLASSES)
    for cpu in sampled:
        for side in (cpu.source, cpu.destination):
            for k in (side.classes if side is not None else {}):
                if k not in classes:
                    classes.append(k)
    rows = []
    for cls in classes:
        cols = []
        for role in ("source", "destination"):
            vals = stats.clean([(side.classes.get(cls) if side is not None else None)
                                for side in (getattr(cpu, role) for cpu in sampled)])
            s = stats.summarize(vals)
            cols.append("-" if s is None else f"{s.median:.1f}"
                        + (f" ({s.min:.1f}–{s.max:.1f})" if s.max > s.min else ""))
        rows.append((cls.replace("_", " "), cols[0], cols[1]))
    return CpuTable(True, rows, len(sampled), n_bad)


#: Figures of each block drawn over time (the counters that grow and QEMU's per-period rates);
#: the rest stay in the table.
FEATURE_TIMELINE_KEYS = {
    "compression": ("pages", "busy", "busy_rate", "compression_rate"),
    "xbzrle": ("pages", "cache_miss", "cache_miss_rate", "overflow", "encoding_rate"),
}


def feature_panels(records: Sequence[Record]) -> list[Timeline]:
    """One timeline per block (compression, XBZRLE): a panel per figure, a line per repetition,
    so that the repetitions of a figure share an axis (pure)."""
    by_block: dict[str, list[Series]] = {}
    for fs in feature_timelines(records):
        if fs.key not in FEATURE_TIMELINE_KEYS.get(fs.block, ()):
            continue
        by_block.setdefault(fs.block, []).append(Series(
            f"rep {fs.repetition}: {fs.label}", fs.label, [_r(t) or 0.0 for t in fs.t],
            [_r(v) for v in fs.y]))
    out = []
    for block in FEATURE_TIMELINE_KEYS:
        series = by_block.get(block)
        if not series:
            continue
        panels: list[str] = []
        for s in series:
            if s.panel not in panels:
                panels.append(s.panel)
        out.append(Timeline(0, block, panels, series, [Marker(0.0, "start", "migrate")]))
    return out


def add_threads_and_features(page: CellPage, records: Sequence[Record]) -> None:
    """Fill ``page``'s per-thread CPU table, feature statistics and their timelines."""
    recs = sorted(records, key=lambda r: r.repetition)
    if any(r.cpu is not None for r in recs):
        page.threads = thread_table([("cell", recs)])
    stats_ = feature_stats(recs)
    if stats_.compression is not None or stats_.xbzrle is not None:
        page.features = stats_
    page.feature_timelines = feature_panels(recs)


def _params(rec: Record) -> tuple[dict[str, Json], list[str]]:
    applied = rec.applied.source if rec.applied is not None else None
    params: dict[str, Json] = dict(applied.parameters) if applied is not None else {}
    caps = sorted(k for k, v in applied.capabilities.items() if v) if applied is not None else []
    return params, caps


#: The integrity checks in the order a run makes them (the RAM comparison before the guest's
#: own check; a silent or crashed guest is found last).
_CHECKS = ("ram", "stamps", "guest_silent", "guest_crash")


def cell_page(records: Sequence[Record], metrics: Sequence[Metric]) -> CellPage:
    """The page of one cell from all its repetitions (same cell id)."""
    recs = sorted(records, key=lambda r: r.repetition)
    first = recs[0]
    cell = first.cell
    reps = [RepRow(r.repetition, compare.status(r), r.integrity.verdict, r.timing_excluded,
                   _rep_cells(r, metrics), r.error or "", f"{r.repetition}.json",
                   _seconds(run_overhead(r)), r.start.kind if r.start else "",
                   (r.start.reason or "") if r.start else "") for r in recs]
    stat_rows, warnings = _cell_stats(recs, metrics)
    info_rec, note = _info_run(recs)
    src, extra = _info_source(info_rec)
    info_note = "; ".join(x for x in (note, extra) if x)
    other_info = [(r.repetition, info_migrate(_info_source(r)[0]) + storage_rows(r))
                  for r in recs if r is not info_rec]
    problems, consoles = _cell_problems(recs)
    versions = sorted({r.qemu.version or "?" for r in recs})
    counts = compare.status_counts(recs)
    params, caps = _params(first)
    requested = set(cell.migration.parameters)
    return CellPage(
        id=cell.id, file_id=safe_id(cell.id), variant=cell.variant,
        workload=compare.workload_label(first), axes=dict(cell.axes),
        label=compare.axes_label(first), qemu_versions=versions,
        status_line=compare.describe_counts(counts), metrics=list(metrics), reps=reps,
        stat_rows=stat_rows, warnings=warnings,
        info_rep=info_rec.repetition, info_note=info_note,
        info=info_migrate(src) + storage_rows(info_rec), other_info=other_info,
        timelines=[timeline(r) for r in recs], cpu=_cpu_table(recs), problems=problems,
        consoles=consoles,
        parameters=[(k, str(params[k])) for k in sorted(params, key=lambda k: (k not in requested, k))],
        capabilities=caps, impact=guest_impact(recs, _t0),
        repetitions=cell_line(recs), stop=_stop(recs), time_line=_time_line(recs),
    )


def _seconds(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def _stop(recs: Sequence[Record]) -> str | None:
    """Why a cell under ``repetitions: {min, max, ci}`` stopped (sure, max, unanimous outcome;
    ``open`` if it has not), None for a fixed number of repetitions."""
    rule = next((r.repetitions for r in recs if r.repetitions is not None), None)
    if rule is None:
        return None
    d = decide(rule, [RunFigures.of(r) for r in sorted(recs, key=lambda r: r.repetition)])
    return d.reason if d.stop else "open"


def _cell_stats(recs: Sequence[Record], metrics: Sequence[Metric]
                ) -> tuple[list[StatRow], list[str]]:
    """Each metric's statistics over the cell's runs, and the page's warnings about them."""
    stat_rows = []
    warnings: list[str] = []
    for m in metrics:
        s = stats.summarize(compare.values(recs, m))
        w = stats.sample_warnings(s)
        stat_rows.append(StatRow(m, s, w))
        warnings += [f"{m.label}: {x}" for x in w]
    excluded = sum(1 for r in recs if r.timing_excluded)
    if excluded:
        warnings.append(f"{excluded} run(s) kept out of timing statistics (timing_excluded: "
                        "their RAM was compared after migration)")
    corrupted = sum(1 for r in recs if compare.status(r) == "corrupted")
    if corrupted:
        warnings.insert(0, f"{corrupted} of {len(recs)} run(s) corrupted the guest: their "
                           "timings are not shown and not counted. " + corruption_note(recs))
    return stat_rows, warnings


def _info_run(recs: Sequence[Record]) -> tuple[Record, str]:
    """The run whose info-migrate block the page shows: the median run (by total time), else
    the last run; and why that one."""
    usable = sorted((r for r in recs if compare.usable(r) and r.metrics.total_time_ms is not None),
                    key=lambda r: float(r.metrics.total_time_ms or 0))
    if usable:
        return (usable[(len(usable) - 1) // 2],
                "the run with the median total time" if len(usable) > 1 else "")
    # e.g. completed but corrupted, or not converged: say which, not "none completed"
    why = compare.describe_counts(compare.status_counts(recs))
    excluded = sum(1 for r in recs if r.timing_excluded)
    if excluded:
        why += f"; {excluded} timing excluded"
    return recs[-1], f"the last run, as no run has usable timings: {why}"


def _cell_problems(recs: Sequence[Record]
                   ) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, list[str]]]]:
    """Per run: errors, warnings, failed integrity checks and QEMU log tails; console tails."""
    problems: list[tuple[int, str, str]] = []
    consoles: list[tuple[int, str, list[str]]] = []
    for r in recs:
        rep = r.repetition
        if r.error:
            problems.append((rep, "error", r.error))
        for warning in r.warnings:
            problems.append((rep, "warning", warning))
        for check in _CHECKS:
            found = getattr(r.integrity, check)
            if found is None:
                continue
            detail = found.model_dump(mode="json", exclude_none=True)
            if detail.get("verdict") != "ok":
                text = ", ".join(f"{k}={v}" for k, v in detail.items() if k != "lines")
                problems.append((rep, f"integrity {check}", text))
                for line in detail.get("lines") or []:
                    problems.append((rep, f"integrity {check}", str(line)))
        for role, vm in (("source", r.vms.source), ("destination", r.vms.destination)):
            if vm is not None and vm.qemu_log_tail:
                problems.append((rep, f"QEMU log ({role})", vm.qemu_log_tail))
        for role, lines in (("source", r.console.source), ("destination", r.console.destination)):
            texts = [ln.line for ln in lines if ln.line.strip()]
            if texts:
                consoles.append((rep, role, texts[-CONSOLE_TAIL:]))
    return problems, consoles


# ---------------------------------------------------------------------------------------------
# Overview


@dataclass
class Heatmap:
    title: str
    x_title: str
    y_title: str
    x: list[str]
    y: list[str]
    z: list[list[float | None]]
    text: list[list[str]]
    links: list[list[str]]  # cell page file ids ("" where there is no cell)
    kind: str  # "status" or "metric"
    unit: str = ""


@dataclass
class OverviewRow:
    cell: CellPage
    status: str  # worst status label
    values: list[str]


@dataclass
class OverviewGroup:
    workload: str
    variant: str
    qemu_versions: list[str]
    heatmaps: list[Heatmap]
    rows: list[OverviewRow]
    axes: list[str]

    @property
    def metrics(self) -> list[Metric]:
        return [m for m in self._metrics if not m.key.startswith("cpu_")]

    _metrics: list[Metric] = field(default_factory=list)


def _worst(recs: Sequence[Record]) -> str:
    return min((compare.status(r) for r in recs), key=lambda s: STATUS_RANK.get(s, 1))


def _cell_text(page: CellPage, recs: Sequence[Record], m: Metric) -> tuple[float | None, str]:
    s = stats.summarize(compare.values(recs, m))
    counts = compare.status_counts(recs)
    if s is None:
        worst = _worst(recs)
        if worst == "skipped":
            reason = next((r.error for r in recs if r.error), "")
            return None, "skipped" + (f": {reason}" if reason else "")
        if worst == "completed":
            return None, "-"
        return None, STATUS_LABEL.get(worst, worst)
    text = fmt(s.median, m)
    bad = {k: v for k, v in counts.items() if k != "completed"}
    if bad:
        text += " (" + ", ".join(f"{v} {STATUS_LABEL.get(k, k)}" for k, v in bad.items()) + ")"
    return s.median / m.scale, text


def _grid(pages: Sequence[CellPage]) -> tuple[list[str], str, list[str], str,
                                              dict[str, tuple[int, int]]]:
    keys: list[str] = []
    for p in pages:
        for k in p.axes:
            if k not in keys:
                keys.append(k)
    if not keys:
        return ["base"], "", ["base"], "", {p.id: (0, 0) for p in pages}
    xk, yks = keys[-1], keys[:-1]
    xs = sorted({str(p.axes.get(xk, "-")) for p in pages}, key=_natural)

    def ylab(p: CellPage) -> str:
        return ", ".join(f"{k}={p.axes.get(k, '-')}" for k in yks) if yks else "all"

    ys = sorted({ylab(p) for p in pages},
                key=lambda s: [_natural(x.split("=", 1)[-1]) for x in s.split(", ")])
    pos = {p.id: (ys.index(ylab(p)), xs.index(str(p.axes.get(xk, "-")))) for p in pages}
    return xs, xk, ys, ", ".join(yks), pos


def overview_group(workload: str, variant: str, pages: Sequence[CellPage],
                   by_cell: dict[str, list[Record]], metrics: Sequence[Metric]) -> OverviewGroup:
    xs, xk, ys, yk, pos = _grid(pages)
    heatmaps: list[Heatmap] = []

    def empty() -> tuple[list[list[float | None]], list[list[str]], list[list[str]]]:
        return ([[None] * len(xs) for _ in ys], [[""] * len(xs) for _ in ys],
                [[""] * len(xs) for _ in ys])

    z, text, links = empty()
    for p in pages:
        i, j = pos[p.id]
        worst = _worst(by_cell[p.id])
        z[i][j] = float(STATUS_RANK.get(worst, 1))
        text[i][j] = STATUS_LABEL.get(worst, worst)
        if worst == "skipped":
            reason = next((r.error for r in by_cell[p.id] if r.error), "")
            text[i][j] = "skipped" + (f": {reason}" if reason else "")
        links[i][j] = p.file_id
    heatmaps.append(Heatmap("outcome", xk, yk, xs, ys, z, text, links, "status"))
    by_key = {m.key: m for m in metrics}
    for key in OVERVIEW_METRICS:
        m = by_key.get(key)
        if m is None:
            continue
        z, text, links = empty()
        for p in pages:
            i, j = pos[p.id]
            z[i][j], text[i][j] = _cell_text(p, by_cell[p.id], m)
            links[i][j] = p.file_id
        heatmaps.append(Heatmap(f"{m.label} ({m.unit})", xk, yk, xs, ys, z, text, links,
                                "metric", m.unit))
    rows = []
    for p in sorted(pages, key=lambda p: pos[p.id]):
        recs = by_cell[p.id]
        rows.append(OverviewRow(p, STATUS_LABEL.get(_worst(recs), _worst(recs)),
                                [_cell_text(p, recs, m)[1] for m in metrics
                                 if not m.key.startswith("cpu_")]))
    versions = sorted({v for p in pages for v in p.qemu_versions})
    axes: list[str] = []
    for p in pages:
        axes += [k for k in p.axes if k not in axes]
    return OverviewGroup(workload, variant, versions, heatmaps, rows, axes, list(metrics))


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass
class ComparisonSection:
    title: str
    base_name: str
    new_name: str
    cells: list[compare.CellComparison]
    unmatched: list[str]

    @property
    def outcome_changes(self) -> list[compare.CellComparison]:
        return [c for c in self.cells if c.outcome is not None]


def verdict_text(c: stats.Comparison) -> str:
    return c.verdict.value


def change_text(row: compare.MetricRow) -> tuple[str, str]:
    """(change, CI) as display strings: relative in %, else absolute in the metric's unit."""
    c, m = row.comparison, row.metric
    if c.change is not None:
        ci = "-" if c.ci is None else f"[{c.ci[0]:+.1%}, {c.ci[1]:+.1%}]"
        return f"{c.change:+.1%}", ci
    if c.diff is None:
        return "-", "-"
    ci = "-" if c.ci is None else f"[{fmt(c.ci[0], m)}, {fmt(c.ci[1], m)}] {m.unit}"
    return f"{'+' if c.diff >= 0 else ''}{fmt(c.diff, m)} {m.unit}", ci


# ---------------------------------------------------------------------------------------------
# Whole report


@dataclass
class Report:
    title: str
    source: str
    campaigns: list[str]
    n_runs: int
    n_cells: int
    metrics: list[Metric]
    hosts: list[dict[str, str]]
    qemu: list[tuple[str, str, int]]  # variant, version, runs
    commits: list[str]
    common_params: list[tuple[str, str]]
    varying_params: list[str]
    param_rows: list[tuple[CellPage, list[str]]]
    groups: list[OverviewGroup]
    cells: list[CellPage]
    comparisons: list[ComparisonSection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    predictions: Predictions | None = None  # the convergence model against what happened
    time_line: str | None = None  # the runs' time outside migrations (records with phases)

    @property
    def has_comparison(self) -> bool:
        return bool(self.comparisons)


def _hosts(records: Sequence[Record]) -> list[dict[str, str]]:
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for r in records:
        for role, facts in (("source", r.hosts.source), ("destination", r.hosts.destination)):
            row = {"role": role}
            for k in ("name", "hostname", "transport", "kernel", "cpu_model", "cpus", "accel",
                      "accel_reason"):
                v = getattr(facts, k)
                row[k] = "-" if v is None else str(v)
            seen.setdefault(tuple(row.values()), row)
    return list(seen.values())


def build_report(
    records: Sequence[Record], *, title: str, source: str = "",
    baseline: Sequence[Record] | None = None, baseline_name: str = "",
    baseline_variant: str | None = None, method: str = "mannwhitney",
) -> Report:
    """Build the report of ``records``.

    With ``baseline_variant``, each other variant of ``records`` is compared with that variant;
    with ``baseline`` (the records of another results folder), the folders are compared.
    """
    metrics = compare.present_metrics(records)
    by_cell: dict[str, list[Record]] = {}
    for r in records:
        by_cell.setdefault(r.cell.id, []).append(r)
    pages = {cid: cell_page(recs, metrics) for cid, recs in by_cell.items()}
    diagnoses = {id(r): diagnose(r) for r in records}
    for cid, page in pages.items():
        page.diagnosis = aggregate([diagnoses[id(r)] for r in by_cell[cid]])
    for cid, page in pages.items():
        add_threads_and_features(page, by_cell[cid])
    groups_map: dict[tuple[str, str], list[CellPage]] = {}
    for page in pages.values():
        groups_map.setdefault((page.workload, page.variant), []).append(page)
    groups = [overview_group(w, v, ps, by_cell, metrics)
              for (w, v), ps in sorted(groups_map.items())]

    qemu = Counter((r.cell.variant, r.qemu.version or "?") for r in records)
    params_by_cell = {cid: _params(recs[0])[0] for cid, recs in by_cell.items()}
    all_keys = sorted({k for p in params_by_cell.values() for k in p})
    common, varying = [], []
    for k in all_keys:
        vals = {repr(p.get(k)) for p in params_by_cell.values()}
        if len(vals) == 1:
            common.append((k, str(next(iter(params_by_cell.values())).get(k))))
        else:
            varying.append(k)
    ordered = [p for g in groups for p in (row.cell for row in g.rows)]
    param_rows = [(p, [str(params_by_cell[p.id].get(k, "-")) for k in varying]) for p in ordered]

    comparisons = []
    if baseline_variant is not None:
        base = [r for r in records if r.cell.variant == baseline_variant]
        for variant, recs in compare.split_variant(records, baseline_variant):
            cells, unmatched = compare.compare_sides(base, recs, method=method)
            comparisons.append(ComparisonSection(f"{variant} vs {baseline_variant}",
                                                 baseline_variant, variant, cells, unmatched))
    elif baseline is not None:
        same = set(compare.variants(baseline)) == set(compare.variants(records))
        cells, unmatched = compare.compare_sides(baseline, records, with_variant=same,
                                                 method=method)
        comparisons.append(ComparisonSection(f"{source or 'results'} vs {baseline_name}",
                                             baseline_name, source or "results", cells, unmatched))
    warnings = []
    n_corrupted = sum(1 for r in records if r.integrity.verdict == "corrupted")
    if n_corrupted:
        warnings.append(f"{n_corrupted} of {len(records)} runs corrupted the guest. "
                        + corruption_note(records))
    few = [p for p in pages.values() if any("repetition" in w for w in p.warnings)]
    noisy = [p for p in pages.values() if any("variation" in w for w in p.warnings)]
    if few:
        warnings.append(f"{len(few)} of {len(pages)} cells have fewer than {stats.MIN_REPS} "
                        "usable repetitions: their medians are indicative only")
    if noisy:
        warnings.append(f"{len(noisy)} of {len(pages)} cells have a coefficient of variation of "
                        f"{stats.CV_WARN:.0%} or more in some metric: see the warnings on their "
                        "pages and add repetitions")
    return Report(
        title=title, source=source,
        campaigns=sorted({r.campaign for r in records}),
        n_runs=len(records), n_cells=len(pages), metrics=metrics, hosts=_hosts(records),
        qemu=[(v, ver, n) for (v, ver), n in sorted(qemu.items())],
        commits=sorted({(r.harness.commit if r.harness else "?")[:12] for r in records}),
        common_params=common, varying_params=varying, param_rows=param_rows,
        groups=groups, cells=ordered, comparisons=comparisons,
        warnings=warnings,
        predictions=predictions(records, [diagnoses[id(r)] for r in records]),
        time_line=_time_line(records),
    )


def _time_line(records: Sequence[Record]) -> str | None:
    spent = campaign_time(records)
    return spent.line() if spent is not None else None
