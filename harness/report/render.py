"""Render a :class:`~harness.report.model.Report` to a self-contained folder of HTML pages.

Layout of the output folder::

    index.html             overview: heatmaps per workload and variant, hosts, QEMU, parameters
    cells/<cell-id>.html   one page per cell: info migrate, guest impact, timelines, CPU, every
                           repetition
    compare.html           before/after (only with a baseline)
    slides/<a>-<b>.html    before/after slides of two cells (``migbench report --slides``): both
                           info migrate blocks, per-thread CPU, feature statistics, differences
    *.csv, cells/*.csv     every table as data
    assets/plotly.min.js   plotly, bundled once from the installed package (no CDN)
    assets/report.css, assets/report.js

Pages are rendered by jinja2 with autoescaping on: record text (QEMU errors, guest console
lines) is untrusted. Figures are embedded as JSON in ``<script type="application/json">``
with ``<``, ``>`` and ``&`` escaped, so no record text can end the script element; strings that
plotly draws (annotations) are HTML-escaped too, since plotly interprets a few tags.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.analysis import stats
from harness.output import csv_row, write_atomic, write_failure
from harness.report.featurestats import figure_text
from harness.report.model import (
    CellPage,
    Heatmap,
    Report,
    Timeline,
    change_text,
    fmt,
    impact_summary,
    impact_text,
    safe_id,
)
from harness.report.slides import Slide

ASSETS = "assets"
PANEL_HEIGHT = 150
COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563",
           "#be185d"]
STATUS_SCALE = [  # z = STATUS_RANK: corrupted 0, failed 1, not-converged 2, skipped 3, ok 4
    [0.0, "#7f1d1d"], [0.2, "#7f1d1d"], [0.2, "#ef4444"], [0.4, "#ef4444"],
    [0.4, "#f59e0b"], [0.6, "#f59e0b"], [0.6, "#d1d5db"], [0.8, "#d1d5db"],
    [0.8, "#22c55e"], [1.0, "#22c55e"],
]


def _esc(s: str) -> str:
    return html.escape(str(s), quote=True)


def json_script(obj: Any) -> Markup:
    """JSON safe to place inside a ``<script type="application/json">`` element."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


# ---------------------------------------------------------------------------------------------
# Figures (plain plotly JSON: building them with plotly.graph_objects costs ~50 ms each)


def timeline_figure(tl: Timeline) -> dict[str, Any]:
    n = max(1, len(tl.panels))
    gap = 0.04 if n > 1 else 0.0
    h = (1.0 - gap * (n - 1)) / n
    layout: dict[str, Any] = {
        "height": PANEL_HEIGHT * n + 110,
        "margin": {"l": 70, "r": 20, "t": 40, "b": 45},
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.06 - 0.1 / n, "x": 0},
        "hovermode": "x unified",
        "font": {"family": "Inter, Helvetica, Arial, sans-serif", "size": 12},
        "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
        "xaxis": {"title": {"text": "seconds since migrate"}, "anchor": f"y{n if n > 1 else ''}",
                  "gridcolor": "#eef0f3", "zeroline": False},
        "shapes": [], "annotations": [],
    }
    data: list[dict[str, Any]] = []
    for i, panel in enumerate(tl.panels):
        name = "yaxis" if i == 0 else f"yaxis{i + 1}"
        top = 1.0 - i * (h + gap)
        layout[name] = {"domain": [max(0.0, top - h), top], "title": {"text": _esc(panel),
                        "font": {"size": 11}}, "gridcolor": "#eef0f3", "rangemode": "tozero",
                        "zeroline": False}
        if i:
            layout[name]["anchor"] = "x"
    axis_of = {p: ("y" if i == 0 else f"y{i + 1}") for i, p in enumerate(tl.panels)}
    for k, s in enumerate(tl.series):
        if s.kind == "bar":
            width = (s.x[1] - s.x[0]) if len(s.x) > 1 else 0.1
            data.append({"type": "bar", "name": _esc(s.name), "x": s.x, "y": s.y, "xaxis": "x",
                         "yaxis": axis_of[s.panel], "width": width,
                         "marker": {"color": COLOURS[k % 8], "line": {"width": 0}}})
            continue
        data.append({"type": "scattergl" if len(s.x) > 2000 else "scatter", "mode": "lines",
                     "name": _esc(s.name), "x": s.x, "y": s.y, "xaxis": "x",
                     "yaxis": axis_of[s.panel], "line": {"width": 2, "color": COLOURS[k % 8]}})
    syncs = 0
    for m in tl.markers:
        style = {"start": ("#111827", "solid", 2), "sync": ("#9ca3af", "dot", 1),
                 "switchover": ("#dc2626", "dash", 2)}[m.kind]
        layout["shapes"].append({"type": "line", "xref": "x", "yref": "paper", "x0": m.t,
                                 "x1": m.t, "y0": 0, "y1": 1,
                                 "line": {"color": style[0], "dash": style[1], "width": style[2]}})
        if m.kind == "sync":
            syncs += 1
            text, yshift, size = m.label.replace("sync ", ""), -12 * (syncs % 2), 9
        else:
            text, yshift, size = m.label, 10, 11
        layout["annotations"].append({"x": m.t, "xref": "x", "y": 1, "yref": "paper",
                                      "yanchor": "bottom", "text": _esc(text), "showarrow": False,
                                      "yshift": yshift, "font": {"size": size,
                                                                 "color": style[0]}})
    if not data:
        layout["annotations"].append({"text": "no query-migrate samples", "showarrow": False,
                                      "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5})
    return {"data": data, "layout": layout}


def heatmap_figure(hm: Heatmap) -> dict[str, Any]:
    rows, cols = len(hm.y), len(hm.x)
    trace: dict[str, Any] = {
        "type": "heatmap", "x": [_esc(x) for x in hm.x], "y": [_esc(y) for y in hm.y],
        "z": hm.z, "customdata": hm.links, "hoverongaps": False, "xgap": 3, "ygap": 3,
        "text": [[_esc(t) for t in row] for row in hm.text],
        "hovertemplate": "%{text}<extra></extra>",
    }
    if hm.kind == "status":
        trace.update(colorscale=STATUS_SCALE, zmin=0, zmax=4, showscale=False)
    else:
        trace.update(colorscale=[[0, "#fef9c3"], [0.5, "#fdba74"], [1, "#f87171"]], showscale=True,
                     colorbar={"thickness": 10, "title": {"text": _esc(hm.unit)}})
    data = [trace]
    blank = [[1.0 if (z is None and hm.text[i][j]) else None for j, z in enumerate(row)]
             for i, row in enumerate(hm.z)]
    if hm.kind == "metric" and any(v is not None for row in blank for v in row):
        # Cells without a number (cannot complete, skipped ...) get a neutral grey tile.
        data.insert(0, {"type": "heatmap", "x": trace["x"], "y": trace["y"], "z": blank,
                        "colorscale": [[0, "#e5e7eb"], [1, "#e5e7eb"]], "showscale": False,
                        "hoverinfo": "skip", "xgap": 3, "ygap": 3, "customdata": hm.links})
    annotations = []
    for i, y in enumerate(hm.y):
        for j, x in enumerate(hm.x):
            text = hm.text[i][j]
            if not text:
                continue
            if len(text) > 28:
                text = text[:27] + "…"
            annotations.append({"x": _esc(x), "y": _esc(y), "text": _esc(text),
                                "showarrow": False, "font": {"size": 12, "color": "#111827"}})
    return {
        "data": data,
        "config": {"displayModeBar": False},
        "layout": {
            "title": {"text": _esc(hm.title), "x": 0, "font": {"size": 15}},
            "height": 120 + 64 * rows, "margin": {"l": 140, "r": 30, "t": 40, "b": 50},
            "font": {"family": "Inter, Helvetica, Arial, sans-serif", "size": 12},
            "xaxis": {"title": {"text": _esc(hm.x_title)}, "type": "category",
                      "showgrid": False},
            "yaxis": {"title": {"text": _esc(hm.y_title)}, "type": "category",
                      "showgrid": False, "autorange": "reversed"},
            "annotations": annotations, "plot_bgcolor": "#ffffff",
            "width": max(380, 160 + 130 * cols),
        },
    }


# ---------------------------------------------------------------------------------------------
# CSV


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV table; text a spreadsheet would run as a formula is neutralised
    (:func:`harness.output.csv_cell`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_row(header))
    for r in rows:
        w.writerow(csv_row(r))
    return buf.getvalue()


def _raw(v: float | None, scale: float = 1.0) -> float | None:
    return None if v is None else v / scale


def _count(integer: bool, v: float | None) -> float | int | None:
    return int(v) if integer and v is not None and v == int(v) else v


def index_tables(rep: Report) -> dict[str, str]:
    metrics = rep.metrics
    cells = csv_text(
        ["workload", "variant", "cell_id", "axes", "status", "runs"]
        + [f"{m.label} median ({m.unit})" for m in metrics],
        [[g.workload, g.variant, r.cell.id, r.cell.label, r.cell.status_line, len(r.cell.reps)]
         + [_raw(s.summary.median if s.summary else None, s.metric.scale)
            for s in r.cell.stat_rows]
         for g in rep.groups for r in g.rows])
    hosts = csv_text(list(rep.hosts[0]) if rep.hosts else ["role"],
                     [list(h.values()) for h in rep.hosts])
    params = csv_text(["cell_id", "variant", "axes"] + rep.varying_params,
                      [[p.id, p.variant, p.label] + vals for p, vals in rep.param_rows])
    common = csv_text(["parameter", "value"], rep.common_params)
    qemu = csv_text(["variant", "qemu_version", "runs"], rep.qemu)
    out = {"overview.csv": cells, "hosts.csv": hosts, "parameters.csv": params,
           "parameters-common.csv": common, "qemu.csv": qemu}
    if rep.predictions is not None:
        out["predictions.csv"] = csv_text(*rep.predictions.csv())
    return out


def cell_tables(page: CellPage) -> dict[str, str]:
    reps = csv_text(
        ["repetition", "status", "integrity", "timing_excluded"]
        + [f"{m.label} ({m.unit})" for m in page.metrics] + ["error"],
        [[r.repetition, r.status, r.integrity, r.timing_excluded] + r.cells + [r.error]
         for r in page.reps])
    st = csv_text(
        ["metric", "unit", "n", "median", "q1", "q3", "min", "max", "cv"],
        [[s.metric.label, s.metric.unit, s.summary.n if s.summary else 0]
         + ([_raw(v, s.metric.scale) for v in (s.summary.median, s.summary.q1, s.summary.q3,
                                                 s.summary.min, s.summary.max)]
            + [s.summary.cv] if s.summary else [None] * 6)
         for s in page.stat_rows])
    out = {f"{page.file_id}-runs.csv": reps, f"{page.file_id}-stats.csv": st,
           f"{page.file_id}-info-migrate.csv": csv_text(["field", "value"], page.info)}
    if page.cpu.sampled:
        out[f"{page.file_id}-cpu.csv"] = csv_text(["class", "source %", "destination %"],
                                                  page.cpu.rows)
    if page.threads is not None:
        out[f"{page.file_id}-threads.csv"] = csv_text(*page.threads.csv())
        out[f"{page.file_id}-imbalance.csv"] = csv_text(*page.threads.imbalance_csv())
    if page.features is not None:
        out[f"{page.file_id}-features.csv"] = csv_text(*page.features.csv())
    if page.impact.rows:
        out[f"{page.file_id}-guest-impact.csv"] = csv_text(
            ["measure", "unit", "phase"] + [f"rep {rep} ({st})" for rep, st in page.impact.reps]
            + ["n", "median", "min", "max"],
            [[r.measure, r.unit, r.phase] + [_count(r.integer, v) for v in r.values]
             + [r.n] + [_count(r.integer, v) for v in (r.median, r.low, r.high)]
             for r in page.impact.rows])
    return out


def slide_name(sl: Slide) -> str:
    """A slide's page name: both cell ids as page names (:func:`safe_id`), never a path."""
    return f"{safe_id(sl.cell_ids[0])}-{safe_id(sl.cell_ids[1])}"


def slide_tables(sl: Slide) -> dict[str, str]:
    name = slide_name(sl)
    return {f"{name}-threads.csv": csv_text(*sl.cpu.csv()),
            f"{name}-imbalance.csv": csv_text(*sl.cpu.imbalance_csv())}


def compare_tables(rep: Report) -> dict[str, str]:
    rows, outcomes = [], []
    for sec in rep.comparisons:
        for c in sec.cells:
            if c.outcome is not None:
                outcomes.append([sec.title, c.workload, c.label, c.outcome.before,
                                 c.outcome.after, c.outcome.direction,
                                 "integrity" if c.outcome.integrity else "outcome"])
            for r in c.rows:
                cmp = r.comparison
                change, ci = change_text(r)
                if change.startswith("+") and change.endswith("%"):
                    change = change[1:]  # "+5.0%" would be neutralised as a formula; "5.0%" is a number
                rows.append([
                    sec.title, c.workload, c.label, r.metric.label, r.metric.unit,
                    cmp.base.n if cmp.base else 0, cmp.new.n if cmp.new else 0,
                    _raw(cmp.base.median if cmp.base else None, r.metric.scale),
                    _raw(cmp.new.median if cmp.new else None, r.metric.scale),
                    change, ci, None if cmp.test.p is None else f"{cmp.test.p:.4g}",
                    None if cmp.test.effect is None else f"{cmp.test.effect:.3f}",
                    cmp.verdict.value, "; ".join(r.warnings)])
    return {
        "compare.csv": csv_text(
            ["comparison", "workload", "cell", "metric", "unit", "n_base", "n_new",
             "median_base", "median_new", "change", "ci95", "p", "cliffs_delta", "verdict",
             "warnings"], rows),
        "compare-outcomes.csv": csv_text(
            ["comparison", "workload", "cell", "before", "after", "direction", "kind"],
            outcomes),
    }


# ---------------------------------------------------------------------------------------------
# Pages


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,  # record text is untrusted: escape everything by default
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["json_script"] = json_script
    env.filters["fmt"] = fmt
    env.filters["file_id"] = safe_id  # a cell id read from a record, as a page name
    env.globals["change_text"] = change_text
    env.globals["impact_text"] = impact_text
    env.globals["impact_summary"] = impact_summary
    env.globals["stats"] = stats
    env.globals["figure_text"] = figure_text
    return env


_WRITE_FIX = "or choose another report folder (-o DIR)"


def _mkdir(path: Path) -> None:
    """:raise StoreError: the folder cannot be made (one line naming it)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(path, "the report folder", exc, _WRITE_FIX) from None


def _write(path: Path, text: str) -> None:
    """Write one report file whole (no partial page or temporary file is left on failure).

    :raise StoreError: it cannot be written (one line naming it).
    """
    _mkdir(path.parent)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise write_failure(path, "the report", exc, _WRITE_FIX) from None


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs())


def write_assets(out: Path) -> None:
    """plotly.min.js (once: it is 4-5 MB), the stylesheet and the page script."""
    assets = out / ASSETS
    _mkdir(assets)
    js = assets / "plotly.min.js"
    import plotly  # type: ignore[import-untyped]

    stamp = assets / "plotly.version"
    if not js.exists() or not stamp.exists() or stamp.read_text() != plotly.__version__:
        _write(js, _plotly_js())
        _write(stamp, plotly.__version__)
    static = resources.files("harness.report") / "static"
    for name in ("report.css", "report.js"):
        _write(assets / name, (static / name).read_text(encoding="utf-8"))


def render(rep: Report, out: Path, slides: Sequence[Slide] = ()) -> list[Path]:
    """Write the report folder; return the pages written (index first, slides last)."""
    env = _env()
    _mkdir(out)
    write_assets(out)
    pages: list[Path] = []
    common = {"report": rep, "has_compare": rep.has_comparison,
              "has_trend": (out / "trend.html").exists(),
              "slide_links": [(slide_name(sl), sl.labels) for sl in slides]}

    index = env.get_template("index.html").render(
        root="", figures={f"hm-{gi}-{hi}": heatmap_figure(h) for gi, g in enumerate(rep.groups)
                          for hi, h in enumerate(g.heatmaps)}, **common)
    _write(out / "index.html", index)
    pages.append(out / "index.html")
    for name, text in index_tables(rep).items():
        _write(out / name, text)

    cell_tpl = env.get_template("cell.html")
    for page in rep.cells:
        figs = {f"tl-{t.repetition}": timeline_figure(t) for t in page.timelines}
        figs |= {f"ft-{t.status}": timeline_figure(t) for t in page.feature_timelines}
        path = out / "cells" / f"{page.file_id}.html"
        _write(path, cell_tpl.render(root="../", cell=page, figures=figs, **common))
        pages.append(path)
        for name, text in cell_tables(page).items():
            _write(out / "cells" / name, text)

    if rep.has_comparison:
        path = out / "compare.html"
        _write(path, env.get_template("compare.html").render(
            root="", figures={}, alpha=stats.ALPHA, min_effect=stats.MIN_EFFECT,
            rounds=stats.BOOTSTRAP_ROUNDS, seed=stats.BOOTSTRAP_SEED, **common))
        pages.append(path)
        for name, text in compare_tables(rep).items():
            _write(out / name, text)
    slide_tpl = env.get_template("slide.html")
    for sl in slides:
        path = out / "slides" / f"{slide_name(sl)}.html"
        header, threads, imbalance = sl.cpu.grid()
        _write(path, slide_tpl.render(root="../", figures={}, slide=sl, name=slide_name(sl),
                                      cpu_header=header, cpu_rows=threads,
                                      cpu_imbalance=imbalance, **common))
        pages.append(path)
        for name, text in slide_tables(sl).items():
            _write(out / "slides" / name, text)
    return pages
