"""The trend page of a nightly history: each metric of each cell over the nights, regressions marked.

:func:`build_trend` is pure (records and verdicts in, a :class:`Trend` out); :func:`render_trend`
writes ``trend.html`` into a report folder that :func:`harness.report.render.render` has filled
(assets, ``cells/<id>.html`` pages of the latest night, which the trend links to).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis import compare, regress
from harness.analysis.compare import Record
from harness.report.model import safe_id
from harness.results.record.metrics import Metric

MARK = {regress.REGRESSION: ("#dc2626", "x"), regress.IMPROVEMENT: ("#16a34a", "triangle-down"),
        regress.SUSPECT: ("#f59e0b", "circle-open")}


@dataclass
class TrendSeries:
    metric: Metric
    values: list[list[float]]  # per night (timing data only)
    medians: list[float | None]
    marks: list[tuple[int, str, str]]  # (night index, verdict, reason)
    steps: list[tuple[int, str]]  # (night index where the level changes, verdict)


@dataclass
class TrendCell:
    key: str
    label: str
    workload: str
    link: str | None  # cell page of the latest night, relative to the report folder
    statuses: list[str]  # status counts per night ("" where the cell did not run)
    series: list[TrendSeries]
    current: list[dict[str, Any]]  # the latest night's findings (verdict.json rows)
    notes: list[str] = field(default_factory=list)  # the latest night's notes on the cell

    @property
    def flagged(self) -> bool:
        return any(r.get("verdict") == regress.REGRESSION for r in self.current)


@dataclass
class Trend:
    title: str
    identity_key: str
    identity: dict[str, Any]
    nights: list[str]
    cells: list[TrendCell]
    notes: list[str] = field(default_factory=list)


def build_trend(cell_nights: Mapping[str, Sequence[tuple[str, Sequence[Record]]]],
                verdicts: Mapping[str, dict[str, Any]], *, title: str, identity_key: str,
                identity: dict[str, Any], thresholds: regress.Thresholds,
                notes: Sequence[str] = ()) -> Trend:
    """``cell_nights``: coordinate key -> [(night, records)], oldest first; ``verdicts``: night ->
    that night's verdict.json, whose regressions are marked."""
    all_nights = sorted({n for series in cell_nights.values() for n, _ in series})
    index = {n: i for i, n in enumerate(all_nights)}
    latest = all_nights[-1] if all_nights else ""
    cells: list[TrendCell] = []
    for key, series in cell_nights.items():
        if not series:
            continue
        by_night = dict(series)
        last_recs = list(series[-1][1])
        first = last_recs[0]
        statuses = [compare.describe_counts(compare.status_counts(by_night[n])) if n in by_night
                    else "" for n in all_nights]
        flagged: dict[tuple[str, int], tuple[str, str]] = {}
        current_rows: list[dict[str, Any]] = []
        cell_notes: list[str] = []
        for night, verdict in verdicts.items():
            if night not in index:
                continue
            for cell in verdict.get("cells", []):
                if cell.get("key") != key:
                    continue
                for row in cell.get("results", []):
                    if row.get("verdict") in MARK:
                        flagged[(str(row.get("metric")), index[night])] = (
                            str(row["verdict"]), str(row.get("reason", "")))
                if night == latest:
                    current_rows = list(cell.get("results", []))
                    cell_notes = [str(n) for n in cell.get("notes", [])]
        out_series = []
        for metric in regress.METRICS:
            values = [compare.values(by_night.get(n, []), metric) for n in all_nights]
            if not any(values):
                continue
            medians = [statistics.median(v) if v else None for v in values]
            with_data = [i for i, v in enumerate(values) if v]
            steps = [(with_data[s.index], s.verdict)
                     for s in regress.all_steps([values[i] for i in with_data], metric,
                                                thresholds)]
            marks = [(i, v, r) for (m, i), (v, r) in sorted(flagged.items(), key=lambda x: x[0][1])
                     if m == metric.key]
            out_series.append(TrendSeries(metric, values, medians, marks, steps))
        outcome_marks = [(i, v, r) for (m, i), (v, r) in flagged.items() if m == "outcome"]
        if outcome_marks and out_series:
            out_series[0].marks.extend(outcome_marks)
        link = f"cells/{safe_id(first.cell.id)}.html" if series[-1][0] == latest else None
        cells.append(TrendCell(key, history_label(first), compare.workload_label(first), link,
                               statuses, out_series, current_rows, cell_notes))
    cells.sort(key=lambda c: (not c.flagged, c.workload, c.label))
    return Trend(title, identity_key, identity, all_nights, cells, list(notes))


def history_label(rec: Record) -> str:
    cell = rec.cell
    axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items()) or "base"
    return f"{cell.variant}: {axes}"


def trend_figure(cell: TrendCell, nights: Sequence[str]) -> dict[str, Any]:
    """One panel per metric, nights on a shared category axis."""
    from harness.report.render import COLOURS, PANEL_HEIGHT, _esc

    n = max(1, len(cell.series))
    gap = 0.05 if n > 1 else 0.0
    h = (1.0 - gap * (n - 1)) / n
    layout: dict[str, Any] = {
        "height": PANEL_HEIGHT * n + 100, "margin": {"l": 80, "r": 20, "t": 20, "b": 60},
        "showlegend": False, "hovermode": "closest",
        "font": {"family": "Inter, Helvetica, Arial, sans-serif", "size": 12},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff", "shapes": [],
        "xaxis": {"type": "category", "categoryorder": "array", "categoryarray": list(nights),
                  "anchor": f"y{n if n > 1 else ''}", "gridcolor": "#eef0f3"},
    }
    data: list[dict[str, Any]] = []
    for i, s in enumerate(cell.series):
        yname = "yaxis" if i == 0 else f"yaxis{i + 1}"
        yref = "y" if i == 0 else f"y{i + 1}"
        top = 1.0 - i * (h + gap)
        layout[yname] = {"domain": [max(0.0, top - h), top], "gridcolor": "#eef0f3",
                         "rangemode": "tozero", "zeroline": False,
                         "title": {"text": _esc(f"{s.metric.label} ({s.metric.unit})"),
                                   "font": {"size": 11}}}
        if i:
            layout[yname]["anchor"] = "x"
        sc = s.metric.scale
        xs = [nights[j] for j, vs in enumerate(s.values) for _ in vs]
        ys = [v / sc for vs in s.values for v in vs]
        data.append({"type": "scatter", "mode": "markers", "x": xs, "y": ys, "xaxis": "x",
                     "yaxis": yref, "name": "repetition",
                     "marker": {"size": 5, "color": "#9ca3af"}})
        data.append({"type": "scatter", "mode": "lines+markers", "xaxis": "x", "yaxis": yref,
                     "x": list(nights), "name": "median", "connectgaps": True,
                     "y": [None if m is None else m / sc for m in s.medians],
                     "line": {"width": 2, "color": COLOURS[0]}})
        for verdict in MARK:
            pts = [(j, r) for j, v, r in s.marks if v == verdict]
            if not pts:
                continue
            colour, symbol = MARK[verdict]
            data.append({
                "type": "scatter", "mode": "markers", "xaxis": "x", "yaxis": yref,
                "name": verdict, "x": [nights[j] for j, _ in pts],
                "y": [(s.medians[j] or 0.0) / sc for j, _ in pts],
                "text": [_esc(r) for _, r in pts], "hovertemplate": f"{verdict}: %{{text}}"
                "<extra></extra>",
                "marker": {"size": 14, "color": colour, "symbol": symbol,
                           "line": {"width": 2, "color": colour}}})
        for j, verdict in s.steps:
            layout["shapes"].append({
                "type": "line", "xref": "x", "yref": f"{yref} domain", "x0": nights[j],
                "x1": nights[j], "y0": 0, "y1": 1,
                "line": {"color": MARK.get(verdict, ("#6b7280", ""))[0], "dash": "dash",
                         "width": 1}})
    return {"data": data, "layout": layout}


def render_trend(trend: Trend, out: Path) -> Path:
    """Write ``out/trend.html`` (and ``trend.csv``); the folder's assets must exist."""
    from harness.report.render import _env, _write, csv_text, write_assets

    env = _env()
    write_assets(out)
    figures = {f"trend-{i}": trend_figure(c, trend.nights) for i, c in enumerate(trend.cells)}
    page = env.get_template("trend.html").render(
        root="", trend=trend, figures=figures, report=trend, has_compare=False, has_trend=True,
        fmt_value=_fmt_value)
    path = out / "trend.html"
    _write(path, page)
    rows = []
    for c in trend.cells:
        for s in c.series:
            for j, night in enumerate(trend.nights):
                if s.values[j]:
                    rows.append([c.label, c.workload, s.metric.key, night, len(s.values[j]),
                                 s.medians[j]])
    _write(out / "trend.csv", csv_text(["cell", "workload", "metric", "night", "n", "median"],
                                       rows))
    return path


def _fmt_value(row: Mapping[str, Any], key: str) -> str:
    from harness.report.model import fmt

    v = row.get(key)
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    scale = float(row.get("scale") or 1.0)
    return f"{fmt(float(v) / scale)} {row.get('unit') or ''}".strip()
