"""Compression and XBZRLE statistics over every repetition of a cell (pure): the talk's slides 7
and 12, the figures that tell whether a feature works.

QEMU reports two kinds of figure, and they must not be mixed up:

* **counters since the migration started**: compression ``pages``, ``busy``,
  ``compressed-size``; XBZRLE ``cache-size``, ``bytes``, ``pages``, ``cache-miss``,
  ``overflow``;
* **rates of the last period only**: ``busy-rate``, ``compression-rate``, ``cache-miss-rate``,
  ``encoding-rate``. QEMU recomputes them in ``migration_update_rates`` at a dirty-bitmap sync
  (at most once a second) from the counters' growth since the previous one, over the pages saved
  in that period. The last value therefore describes the last period (often the short final one)
  and not the run; ``cache-miss-rate`` is *not* cumulative.

So this module also derives each rate over the whole run from the counters (``ours`` below):

* busy ratio = ``busy / pages saved``: QEMU's busy-rate summed over every period. Pages saved
  = ``ram.normal + ram.duplicate + compression.pages + xbzrle-cache.pages`` (QEMU's
  ``ram_get_total_transferred_pages``): a page QEMU finds no free compress thread for goes out
  uncompressed (in ``normal``, or ``duplicate`` if zero) and counts as ``busy``; QEMU counts
  ``busy`` only with ``compress-wait-thread: false`` (with ``true`` the migration thread waits);
* compression ratio = ``pages x page size / compressed-size``;
* miss ratio = ``cache-miss / pages saved``: QEMU's cache-miss-rate summed over every period;
* encoding ratio = ``xbzrle pages x page size / xbzrle bytes``, and bytes per XBZRLE page.

Each run's figures come from QEMU's last answer that has them (:func:`last_info`): the final one
of a completed run, the last sample before the cancel of a cancelled one (QEMU's answer after a
cancel carries no statistics). Every repetition that has the block counts, corrupted ones too
(QEMU's counters say what it did, whatever happened to the guest); the table says how many.
The peak per-period rates come from the 20 Hz timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.output import csv_row
from harness.report.threads import Spread
from harness.results.record import RunRecord
from harness.results.record.qmp import CompressionStats, MigrationInfo, XbzrleStats

PAGE_SIZE = 4096  # x86's target page, for an answer without ram.page-size


def last_info(rec: RunRecord) -> tuple[MigrationInfo | None, float | None]:
    """QEMU's last ``query-migrate`` answer with figures in it, and its time after the migrate
    command (None for the final answer, which is taken after the migration ended).

    A completed run's final answer; for a cancelled or failed run, the last timeline sample
    that has a ``ram`` block (after a cancel QEMU answers only ``status``). None: no answer had
    figures (skipped, or failed before the migration started).
    """
    if rec.final is not None and rec.final.ram is not None:
        return rec.final, None
    for sample in reversed(rec.timeline):
        if sample.ram is not None:
            return sample, sample.t
    return None, None


def pages_saved(info: MigrationInfo) -> int | None:
    """Every page QEMU has saved so far (QEMU's ``ram_get_total_transferred_pages``)."""
    ram = info.ram
    if ram is None or ram.normal is None or ram.duplicate is None:
        return None
    extra = [b.pages for b in (info.compression, info.xbzrle_cache) if b is not None]
    return ram.normal + ram.duplicate + sum(p for p in extra if p is not None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _page(info: MigrationInfo) -> int:
    size = info.ram.page_size if info.ram is not None else None
    return size if size else PAGE_SIZE


Getter = Callable[[MigrationInfo], float | None]


@dataclass(frozen=True)
class Figure:
    """One figure of a block: as QEMU reported it (a counter, the last period's rate, the
    highest period's rate in the timeline), or ours (derived from counters over the run)."""

    key: str
    label: str
    unit: str
    kind: str  # "qemu counter" | "qemu last period" | "qemu peak period" | "ours: <formula>"
    get: Getter | None = None  # None: a peak, read from the timeline


def _c(get: Callable[[CompressionStats], float | None]) -> Getter:
    return lambda i: None if i.compression is None else get(i.compression)


def _x(get: Callable[[XbzrleStats], float | None]) -> Getter:
    return lambda i: None if i.xbzrle_cache is None else get(i.xbzrle_cache)


COMPRESSION: tuple[Figure, ...] = (
    Figure("pages", "compression pages", "pages", "qemu counter", _c(lambda c: c.pages)),
    Figure("busy", "compression busy", "pages", "qemu counter", _c(lambda c: c.busy)),
    Figure("busy_ratio", "busy ratio, whole run", "", "ours: busy / pages saved",
           lambda i: _ratio(_c(lambda c: c.busy)(i), pages_saved(i))),
    Figure("busy_rate", "busy rate, last period", "", "qemu last period", _c(lambda c: c.busy_rate)),
    Figure("busy_rate_peak", "busy rate, peak period", "", "qemu peak period"),
    Figure("compressed_size", "compressed size", "bytes", "qemu counter",
           _c(lambda c: c.compressed_size)),
    Figure("compression_ratio", "compression ratio, whole run", "",
           "ours: pages x page size / compressed size",
           lambda i: _ratio(None if i.compression is None or i.compression.pages is None
                            else i.compression.pages * _page(i),
                            _c(lambda c: c.compressed_size)(i))),
    Figure("compression_rate", "compression rate, last period", "", "qemu last period",
           _c(lambda c: c.compression_rate)),
)

XBZRLE: tuple[Figure, ...] = (
    Figure("cache_size", "cache size", "bytes", "qemu counter", _x(lambda x: x.cache_size)),
    Figure("bytes", "xbzrle bytes", "bytes", "qemu counter", _x(lambda x: x.bytes)),
    Figure("pages", "xbzrle pages", "pages", "qemu counter", _x(lambda x: x.pages)),
    Figure("cache_miss", "cache misses", "pages", "qemu counter", _x(lambda x: x.cache_miss)),
    Figure("miss_ratio", "miss ratio, whole run", "", "ours: misses / pages saved",
           lambda i: _ratio(_x(lambda x: x.cache_miss)(i), pages_saved(i))),
    Figure("cache_miss_rate", "cache miss rate, last period", "", "qemu last period",
           _x(lambda x: x.cache_miss_rate)),
    Figure("cache_miss_rate_peak", "cache miss rate, peak period", "", "qemu peak period"),
    Figure("overflow", "overflow", "pages", "qemu counter", _x(lambda x: x.overflow)),
    Figure("encoding_ratio", "encoding ratio, whole run", "",
           "ours: pages x page size / bytes",
           lambda i: _ratio(None if i.xbzrle_cache is None or i.xbzrle_cache.pages is None
                            else i.xbzrle_cache.pages * _page(i),
                            _x(lambda x: x.bytes)(i))),
    Figure("bytes_per_page", "bytes per xbzrle page", "bytes", "ours: bytes / pages",
           lambda i: _ratio(_x(lambda x: x.bytes)(i), _x(lambda x: x.pages)(i))),
    Figure("encoding_rate", "encoding rate, last period", "", "qemu last period",
           _x(lambda x: x.encoding_rate)),
    Figure("encoding_rate_peak", "encoding rate, peak period", "", "qemu peak period"),
)

_PEAK_OF = {"busy_rate_peak": "busy_rate", "cache_miss_rate_peak": "cache_miss_rate",
            "encoding_rate_peak": "encoding_rate"}


@dataclass(frozen=True)
class FigureRow:
    figure: Figure
    spread: Spread | None  # median and range over the runs that had it


@dataclass(frozen=True)
class BlockStats:
    """One block (compression or xbzrle) over a cell's runs."""

    name: str  # "compression" | "xbzrle"
    runs: int  # runs whose answer had the block
    corrupted: int  # of those, runs whose guest was corrupted
    cancelled: int  # of those, runs read from their last sample (not a final answer)
    rows: tuple[FigureRow, ...]


@dataclass(frozen=True)
class FeatureStats:
    """The compression and XBZRLE statistics of one cell (a block is None if no run had it)."""

    compression: BlockStats | None
    xbzrle: BlockStats | None

    def lines(self) -> list[str]:
        """Fixed-width text: one line per figure, ``median (min-max)`` and what kind it is."""
        out = []
        for block in (self.compression, self.xbzrle):
            if block is None:
                continue
            extra = [f"{block.corrupted} corrupted" if block.corrupted else "",
                     f"{block.cancelled} from the last sample before the cancel"
                     if block.cancelled else ""]
            out.append(f"{block.name} over {block.runs} run{'s' if block.runs != 1 else ''}"
                       + "".join(f"; {e}" for e in extra if e))
            for r in block.rows:
                text = figure_text(r.figure, r.spread)
                out.append(f"  {r.figure.label:<30}{text:>26}  {r.figure.kind}")
        return out

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        """(header, rows): one row per figure."""
        header = ["block", "figure", "label", "unit", "kind", "median", "min", "max", "runs"]
        rows = []
        for block in (self.compression, self.xbzrle):
            if block is None:
                continue
            for r in block.rows:
                s = r.spread
                rows.append(csv_row([block.name, r.figure.key, r.figure.label, r.figure.unit,
                                     r.figure.kind, *((s.median, s.lo, s.hi, s.n) if s else
                                                      (None, None, None, 0))]))
        return header, rows


def figure_text(f: Figure, s: Spread | None) -> str:
    """``median (min-max)`` for a table: sizes in KiB (as ``info migrate`` shows them), counts
    whole, ratios with two decimals; ``-`` for none."""
    if s is None:
        return "-"
    if f.unit == "bytes" and f.key != "bytes_per_page":
        return Spread(s.n, s.median / 1024, s.lo / 1024, s.hi / 1024).text(0) + " KiB"
    return s.text(0 if f.unit in ("pages", "bytes") else 2)


def _peak(rec: RunRecord, figures: Sequence[Figure], key: str) -> float | None:
    get = next(f.get for f in figures if f.key == key)
    assert get is not None
    vals = [v for v in (get(s) for s in rec.timeline) if v is not None]
    return max(vals) if vals else None


def _block(name: str, figures: Sequence[Figure], runs: Sequence[RunRecord]) -> BlockStats | None:
    has: Callable[[MigrationInfo], bool] = (
        (lambda i: i.compression is not None) if name == "compression"
        else (lambda i: i.xbzrle_cache is not None))
    used: list[tuple[RunRecord, MigrationInfo, float | None]] = []
    for rec in runs:
        info, t = last_info(rec)
        if info is not None and has(info):
            used.append((rec, info, t))
    if not used:
        return None
    rows = []
    for f in figures:
        if f.get is None:
            vals = [_peak(rec, figures, _PEAK_OF[f.key]) for rec, _, _ in used]
        else:
            vals = [f.get(info) for _, info, _ in used]
        rows.append(FigureRow(f, Spread.of(float(v) for v in vals if v is not None)))
    return BlockStats(name, len(used),
                      sum(1 for rec, _, _ in used if rec.integrity.verdict == "corrupted"),
                      sum(1 for _, _, t in used if t is not None), tuple(rows))


def feature_stats(runs: Sequence[RunRecord]) -> FeatureStats:
    """The compression and XBZRLE statistics over ``runs`` (the repetitions of one cell)."""
    return FeatureStats(_block("compression", COMPRESSION, runs), _block("xbzrle", XBZRLE, runs))


@dataclass(frozen=True)
class FeatureSeries:
    """One figure of one run over time, for a plot (t: seconds after the migrate command)."""

    repetition: int
    block: str
    key: str
    label: str
    t: tuple[float, ...]
    y: tuple[float | None, ...]


def feature_timelines(runs: Sequence[RunRecord]) -> list[FeatureSeries]:
    """Every figure of both blocks, per run, at each timeline sample that has the block (the
    peaks are left out: a series shows every period's value). Runs in repetition order."""
    out = []
    for rec in sorted(runs, key=lambda r: r.repetition):
        for name, figures in (("compression", COMPRESSION), ("xbzrle", XBZRLE)):
            samples = [s for s in rec.timeline
                       if (s.compression if name == "compression" else s.xbzrle_cache)
                       is not None]
            if not samples:
                continue
            for f in figures:
                if f.get is None:
                    continue
                get = f.get
                ys = tuple(None if (v := get(s)) is None else float(v) for s in samples)
                out.append(FeatureSeries(rec.repetition, name, f.key, f.label,
                                         tuple(s.t for s in samples), ys))
    return out


__all__ = ["COMPRESSION", "XBZRLE", "BlockStats", "FeatureSeries", "FeatureStats", "Figure",
           "FigureRow", "feature_stats", "figure_text", "feature_timelines", "last_info", "pages_saved"]
