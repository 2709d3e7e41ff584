"""Before/after slides, the talk's slides 9, 10 and 13 (pure: run records in, a slide out).

A slide puts two cells of a campaign side by side: both ``info migrate`` blocks, both per-thread
CPU tables (:mod:`harness.report.threads`), the compression and XBZRLE statistics
(:mod:`harness.report.featurestats`) and the differences in total time, downtime and
transferred data with their significance (:func:`harness.analysis.stats.compare`). :meth:`Slide.text`
renders it as a fixed-width block that reads well pasted into a mailing-list reply (QEMU patches
are reviewed there), with the QEMU builds, the host facts and the command that reproduces it.

Rules, shared with :mod:`harness.analysis.compare`:

* only completed runs whose guest survived and whose timing counts (not ``timing_excluded``)
  feed the differences; a corrupted run is never shown as fast;
* the ``info migrate`` block of a cell is that of one repetition: the completed run with the
  median total time (the lower one of two middles); if no run completed, the first repetition
  of the cell's best outcome (cannot complete before corrupted before failed) and, for a
  cancelled run, its last sample before the cancel (QEMU's answer after it has no figures):
  the block then says "cannot complete";
* CPU and feature statistics use every repetition that has them (their cost is real even when
  the guest was corrupted).

Default pairs (:func:`default_pairs`): each pair of variants of the same point of the matrix,
and, per axis, the cell with the axis's first value against each cell that differs from it in
that axis only. Orders are those of the matrix, read from when each cell's first run started.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.analysis import stats
from harness.analysis.compare import usable  # may a run's timings enter statistics
from harness.errors import UsageError
from harness.output import terminal_text as _t
from harness.report.featurestats import FeatureStats, feature_stats, figure_text, last_info
from harness.report.model import STATUS_LABEL
from harness.report.threads import ThreadTable, thread_table
from harness.results.record import RunRecord
from harness.results.record.metrics import CATALOGUE
from harness.results.show import info_migrate

#: Figures compared on every slide (the catalogue's): (metrics field, label, unit, divide by).
DIFFERENCES: tuple[tuple[str, str, str, float], ...] = tuple(
    (m.key, m.label, m.unit, m.scale)
    for m in (CATALOGUE[k] for k in ("total_time_ms", "downtime_ms", "transferred_bytes")))
KEY_WIDTH = 26
VALUE_WIDTH = 26


def cell_label(rec: RunRecord) -> str:
    """``variant: axis=value, ...`` as the runner prints a cell."""
    axes = ", ".join(f"{k}={v}" for k, v in rec.cell.axes.items())
    return f"{rec.cell.variant}: {axes or 'base'}"


def by_cell(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """The runs grouped by cell id, cells in the order their first run started (the matrix's
    order, unless it was shuffled), runs by repetition."""
    cells: dict[str, list[RunRecord]] = {}
    for rec in sorted(runs, key=lambda r: (r.started_utc, r.cell.id, r.repetition)):
        cells.setdefault(rec.cell.id, []).append(rec)
    for recs in cells.values():
        recs.sort(key=lambda r: r.repetition)
    return cells


# ---------------------------------------------------------------------------------------------
# Which pairs


def default_pairs(runs: Sequence[RunRecord]) -> list[tuple[str, str]]:
    """(before, after) cell ids: each variant pair, then each axis's first value vs the others.

    Variant pairs join cells of one matrix with the same axes, the variant that ran first being
    "before". Axis pairs join cells of one matrix and variant whose axes differ in that axis
    only (an axis one cell lacks, such as a knob its feature drops, does not count as a
    difference), the cell with the axis's first value being "before". No pair is listed twice.
    """
    cells = by_cell(runs)
    first = {cid: recs[0] for cid, recs in cells.items()}
    order = list(first)
    pairs: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))

    for i, a in enumerate(order):
        for b in order[i + 1:]:
            ca, cb = first[a].cell, first[b].cell
            if ca.matrix == cb.matrix and ca.variant != cb.variant and ca.axes == cb.axes:
                add(a, b)
    axes: list[str] = []
    for cid in order:
        axes += [k for k in first[cid].cell.axes if k not in axes]
    for axis in axes:
        values: list[Any] = []
        for cid in order:
            v = first[cid].cell.axes.get(axis)
            if axis in first[cid].cell.axes and v not in values:
                values.append(v)
        if len(values) < 2:
            continue
        for a in order:
            ca = first[a].cell
            if ca.axes.get(axis, _ABSENT) != values[0]:
                continue
            for b in order:
                cb = first[b].cell
                if (b == a or cb.matrix != ca.matrix or cb.variant != ca.variant
                        or cb.axes.get(axis, _ABSENT) in (values[0], _ABSENT)):
                    continue
                if all(ca.axes[k] == cb.axes[k] for k in ca.axes
                       if k != axis and k in cb.axes):
                    add(a, b)
    return pairs


_ABSENT = object()


def find_cell(runs: Sequence[RunRecord], selector: str) -> str:
    """The id of the one cell ``selector`` names: a cell id, a prefix of one (4+ characters),
    or ``key=value,...`` over ``variant`` and the axes (a value as the runner prints it, or as
    JSON: ``compress-wait-thread=True`` or ``=true``).

    :raise UsageError: no cell or several cells match (the line lists some that exist).
    """
    cells = by_cell(runs)
    sel = selector.strip()
    if "=" in sel:
        want = {}
        for part in sel.split(","):
            k, _, v = part.partition("=")
            want[k.strip()] = v.strip()

        def match(rec: RunRecord) -> bool:
            have = {"variant": [rec.cell.variant],
                    **{k: [str(v), json.dumps(v)] for k, v in rec.cell.axes.items()}}
            return all(v in have.get(k, ()) for k, v in want.items())

        found = [cid for cid, recs in cells.items() if match(recs[0])]
    else:
        found = [cid for cid in cells if len(sel) >= 4 and cid.startswith(sel)]
    if len(found) == 1:
        return found[0]
    known = "; ".join(f"{cid} {cell_label(recs[0])}" for cid, recs in list(cells.items())[:4])
    what = "no cell" if not found else f"{len(found)} cells"
    raise UsageError(f"--slides: {selector!r} matches {what}; name one by its id or as "
                     f"variant=...,axis=value (cells: {known}{' ...' if len(cells) > 4 else ''})")


def parse_pair(runs: Sequence[RunRecord], spec: str) -> tuple[str, str]:
    """``A..B`` (each as :func:`find_cell` takes it) as (before, after) cell ids.

    :raise UsageError: not of the form ``A..B``, or a side names no cell or several.
    """
    before, sep, after = spec.partition("..")
    if not sep or not before.strip() or not after.strip():
        raise UsageError(f"--slides: expected BEFORE..AFTER (cell ids or axis=value lists), "
                         f"got {spec!r}")
    a, b = find_cell(runs, before), find_cell(runs, after)
    if a == b:  # a slide of a cell against itself says nothing
        raise UsageError(f"--slides: {spec!r} names cell {a} on both sides: give two different "
                         "cells, e.g. feature=precopy..feature=xbzrle")
    return a, b


# ---------------------------------------------------------------------------------------------
# The slide


@dataclass(frozen=True)
class InfoBlock:
    """One cell's ``info migrate`` block and what it stands for."""

    verdict: str  # completed | cannot complete | corrupted | failed | skipped
    outcomes: str  # e.g. "completed 2/3, not-converged 1/3"
    repetition: int | None  # the run shown; None: no run has figures
    shown: str  # why this run: "median total time of 3", "last sample at 29.95 s"
    rows: tuple[tuple[str, str], ...]  # harness.results.show.info_migrate's lines


@dataclass(frozen=True)
class Difference:
    key: str
    label: str
    unit: str
    scale: float
    comparison: stats.Comparison

    def cells(self) -> tuple[str, str, str, str, str, str, str]:
        """(before, after, change, interval, p, runs per side, verdict: reason) as texts."""
        c = self.comparison

        def v(s: stats.Summary | None) -> str:
            return "-" if s is None else f"{s.median / self.scale:.3g} {self.unit}"

        if c.change is not None:
            change = f"{c.change:+.1%}"
            ci = "" if c.ci is None else f"[{c.ci[0]:+.1%}, {c.ci[1]:+.1%}]"
        elif c.diff is not None:
            change = f"{c.diff / self.scale:+.3g} {self.unit}"
            ci = "" if c.ci is None else (f"[{c.ci[0] / self.scale:+.3g}, "
                                          f"{c.ci[1] / self.scale:+.3g}]")
        else:
            change, ci = "", ""
        p = "p=-" if c.test.p is None else f"p={c.test.p:.2g}"
        n = f"n={c.base.n if c.base else 0}/{c.new.n if c.new else 0}"
        return v(c.base), v(c.new), change, ci, p, n, f"{c.verdict.value}: {c.reason}"

    def text(self) -> str:
        """``total time  5.94 s -> 2.35 s  -60.4% [-62.0%, -58.1%]  p=0.1  inconclusive``."""
        before, after, change, ci, p, n, verdict = self.cells()
        return (f"{self.label:<12} {before:>10} -> {after:<10} "
                f"{change}{' ' + ci if ci else ''}  {p} {n}  {verdict}")


@dataclass(frozen=True)
class Slide:
    """Two cells side by side; ``before`` and ``after`` are each cell's runs."""

    campaign: str
    labels: tuple[str, str]  # cell labels
    cell_ids: tuple[str, str]
    blocks: tuple[InfoBlock, InfoBlock]
    cpu: ThreadTable
    features: tuple[FeatureStats, FeatureStats]
    differences: tuple[Difference, ...]
    builds: tuple[tuple[str, ...], tuple[str, ...]]  # QEMU builds of each cell's runs
    hosts: tuple[str, ...]  # host facts, one line per distinct host
    command: str | None

    def text(self) -> str:
        """The slide as a fixed-width block (at most about 80 columns but for long values)."""
        out = [f"== {_t(self.campaign)}: before/after",
               f"before: {_t(self.labels[0])}  [{self.cell_ids[0]}]",
               f"after:  {_t(self.labels[1])}  [{self.cell_ids[1]}]", ""]
        out += self._info_lines() + [""]
        out += self.cpu.lines() + [""]
        feature = _feature_lines(*self.features)
        out += feature + ([""] if feature else [])
        out += ["differences, after vs before: medians over completed runs with intact guests,",
                "change with its 95% bootstrap interval, Mann-Whitney U p, runs per side"]
        out += [f"  {d.text()}" for d in self.differences]
        out.append("")
        for label, builds in zip(("before", "after"), self.builds):
            for b in builds or ("-",):
                out.append(f"QEMU {label}: {_t(b)}")
        out += [f"host {_t(h)}" for h in self.hosts]
        if self.command:
            out.append(f"reproduce: {_t(self.command)}")
        return "\n".join(out) + "\n"

    def info_rows(self) -> list[tuple[str, str, str]]:
        """Both ``info migrate`` blocks as (field, before, after) rows, outcome first."""
        a, b = self.blocks
        head = [("outcome", a.verdict, b.verdict), ("runs", a.outcomes, b.outcomes),
                ("repetition shown", _rep(a), _rep(b))]
        return head + _merge(a.rows, b.rows)

    def feature_rows(self) -> list[tuple[str, tuple[int, int], list[tuple[str, str, str, str]]]]:
        """Both cells' compression and XBZRLE figures: per block (name, runs per side,
        rows of (label, before, after, kind))."""
        out = []
        for block_a, block_b in ((self.features[0].compression, self.features[1].compression),
                                 (self.features[0].xbzrle, self.features[1].xbzrle)):
            some = block_a or block_b
            if some is None:
                continue
            rows = []
            for i, row in enumerate(some.rows):
                before, after = (figure_text(row.figure, None if x is None else x.rows[i].spread)
                                 for x in (block_a, block_b))
                rows.append((row.figure.label, before, after, row.figure.kind))
            out.append((some.name, (0 if block_a is None else block_a.runs,
                                    0 if block_b is None else block_b.runs), rows))
        return out

    def _info_lines(self) -> list[str]:
        rows = self.info_rows()
        out = [f"{'info migrate':<{KEY_WIDTH}}{'before':<{VALUE_WIDTH}}{'after'}"]
        for key, va, vb in rows:
            # a value as wide as its column still keeps a space before the next one
            out.append(f"{_t(key)[:KEY_WIDTH - 1]:<{KEY_WIDTH}}{_t(va):<{VALUE_WIDTH - 1}} "
                       f"{_t(vb)}".rstrip())
        return out


def _feature_lines(a: FeatureStats, b: FeatureStats) -> list[str]:
    """Both cells' compression and XBZRLE figures, side by side, ``median (min-max)``."""
    out = []
    for block_a, block_b in ((a.compression, b.compression), (a.xbzrle, b.xbzrle)):
        if block_a is None and block_b is None:
            continue
        some = block_a or block_b
        assert some is not None
        runs = [0 if x is None else x.runs for x in (block_a, block_b)]
        out.append(f"{some.name + f' ({runs[0]}/{runs[1]} runs)':<{KEY_WIDTH + 6}}"
                   f"{'before':<{VALUE_WIDTH - 2}}after")
        for i, row in enumerate(some.rows):
            cells = []
            for x in (block_a, block_b):
                cells.append(figure_text(row.figure, None if x is None else x.rows[i].spread))
            out.append(f"  {row.figure.label:<{KEY_WIDTH + 4}}{cells[0]:<{VALUE_WIDTH - 3}} "
                       f"{cells[1]}".rstrip())
    if out:
        out += ["  whole run: ours, from QEMU's counters (busy or misses / pages saved, pages x",
                "  page size / bytes); last, peak period: QEMU's rate over one dirty-sync period"]
    return out


def _rep(b: InfoBlock) -> str:
    return "-" if b.repetition is None else f"{b.repetition} ({b.shown})"


def _merge(a: Sequence[tuple[str, str]],
           b: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Both blocks' rows in one list: a's order, b's extra rows after their predecessor."""
    keys = [k for k, _ in a]
    for i, (k, _) in enumerate(b):
        if k not in keys:
            prev = b[i - 1][0] if i else None
            keys.insert(keys.index(prev) + 1 if prev in keys else len(keys), k)
    da, db = dict(a), dict(b)
    return [(k, da.get(k, ""), db.get(k, "")) for k in keys]


_VERDICTS = ("completed", "cannot complete", "corrupted", "failed", "skipped")


def _verdict(rec: RunRecord) -> str:
    if usable(rec):
        return "completed"
    return STATUS_LABEL.get(rec.status, rec.status)


def info_block(runs: Sequence[RunRecord]) -> InfoBlock:
    """The ``info migrate`` block that stands for ``runs`` (one cell); see the module rules."""
    counts = Counter(r.status for r in runs)
    outcomes = ", ".join(f"{k} {n}/{len(runs)}" for k, n in counts.most_common())
    if not runs:
        return InfoBlock("no runs", "", None, "", ())
    ok = sorted((r for r in runs if usable(r)),
                key=lambda r: (r.metrics.total_time_ms is None, r.metrics.total_time_ms or 0,
                               r.repetition))
    if ok:
        rec = ok[(len(ok) - 1) // 2]
        verdict, shown = "completed", f"median total time of {len(ok)}"
    else:
        verdict = min((_verdict(r) for r in runs), key=_VERDICTS.index)
        rec = min((r for r in runs if _verdict(r) == verdict), key=lambda r: r.repetition)
        shown = "first such run"
    info, t = last_info(rec)
    if info is None:
        return InfoBlock(verdict, outcomes, rec.repetition, "no figures recorded",
                         (("error", rec.error or "-"),))
    if t is not None:
        shown = f"last sample, {t:.2f} s"
    rows = tuple(info_migrate(info))
    return InfoBlock(verdict, outcomes, rec.repetition, shown, rows)


def _builds(runs: Sequence[RunRecord]) -> tuple[str, ...]:
    out: list[str] = []
    for r in runs:
        q = r.qemu
        ids = sorted({i for i in (q.source_build_id, q.destination_build_id) if i})
        line = f"{q.build}: {q.version or 'version not probed'}" + (
            f" ({', '.join(ids)})" if ids else "")
        if line not in out:
            out.append(line)
    return tuple(out)


def _hosts(runs: Sequence[RunRecord]) -> tuple[str, ...]:
    out: list[str] = []
    for r in runs:
        for role in ("source", "destination"):
            h = getattr(r.hosts, role)
            facts = [f for f in (h.hostname, h.cpu_model,
                                 f"{h.cpus} CPUs" if h.cpus is not None else None,
                                 h.accel, f"Linux {h.kernel}" if h.kernel else None,
                                 h.transport) if f]
            name = role if h.name == role else f"{role} {h.name}"
            line = f"{name}: {', '.join(facts)}"
            if line not in out:
                out.append(line)
    return tuple(out)


def slide(before: Sequence[RunRecord], after: Sequence[RunRecord], *,
          command: str | None = None) -> Slide:
    """The slide of two cells' runs (``before`` first); ``command`` reproduces it.

    :raise ValueError: a side has no runs (callers pick pairs from :func:`by_cell`).
    """
    if not before or not after:
        raise ValueError("a slide needs runs on both sides")
    diffs = []
    for key, label, unit, scale in DIFFERENCES:
        base = [getattr(r.metrics, key) for r in before if usable(r)]
        new = [getattr(r.metrics, key) for r in after if usable(r)]
        diffs.append(Difference(key, label, unit, scale, stats.compare(base, new)))
    return Slide(
        campaign=before[0].campaign if before[0].campaign == after[0].campaign
        else f"{before[0].campaign} vs {after[0].campaign}",
        labels=(cell_label(before[0]), cell_label(after[0])),
        cell_ids=(before[0].cell.id, after[0].cell.id),
        blocks=(info_block(before), info_block(after)),
        cpu=thread_table([("before", before), ("after", after)]),
        features=(feature_stats(before), feature_stats(after)),
        differences=tuple(diffs),
        builds=(_builds(before), _builds(after)),
        hosts=_hosts([*before, *after]),
        command=command,
    )


def slides(runs: Sequence[RunRecord], pairs: Sequence[tuple[str, str]] | None = None, *,
           command: str | None = None) -> list[Slide]:
    """A slide per pair of cell ids (default: :func:`default_pairs`)."""
    cells = by_cell(runs)
    return [slide(cells[a], cells[b], command=command)
            for a, b in (default_pairs(runs) if pairs is None else pairs)]
