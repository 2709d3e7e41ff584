"""``migbench nightly``: a matrix run as a night of a history, judged against earlier nights.

``nightly`` runs a matrix into a new night of a history (:mod:`harness.analysis.history`), judges it
against the earlier nights of the same machine identity (:mod:`harness.analysis.regress`) and writes
``verdict.json`` (:mod:`harness.ci.verdict`), optionally JUnit XML, and an HTML report with a trend
page.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis import compare, history, regress
from harness.analysis.stopping import cell_line
from harness.ci.verdict import (
    NO_BASELINE,
    VERDICT_SCHEMA,
    Record,
    cell_entry,
    one_pair,
    print_verdict,
    printing_progress,
    summarize,
    threshold_args,
    thresholds_from,
    write_json,
    write_outputs,
)
from harness.plan import config
from harness.results import store


@dataclass
class Judged:
    verdict: dict[str, Any]
    cell_nights: dict[str, list[tuple[str, list[Record]]]]  # for the trend page



def judge_night(hist: Path, night: history.NightDir, th: regress.Thresholds) -> Judged:
    """The verdict of ``night`` against the earlier nights of its identity."""
    records = night.records()
    ident = history.identity_of(records)
    matrix = records[0].campaign if records else ""
    earlier = [n for n in history.nights(hist, night.key) if n.stamp < night.stamp]
    current = history.group_by_cell(records)
    cell_nights: dict[str, list[tuple[str, list[Record]]]] = {k: [] for k in current}
    for n in earlier:
        for key, recs in history.group_by_cell(n.records()).items():
            if key in cell_nights:
                cell_nights[key].append((n.stamp, recs))
    for key, recs in current.items():
        cell_nights[key].append((night.stamp, recs))
    has_baseline = any(len(v) > 1 for v in cell_nights.values())
    baseline: dict[str, Any] = {"status": "ok" if has_baseline else NO_BASELINE,
                                "nights": [n.stamp for n in earlier], "differences": []}
    if not has_baseline:
        other = history.closest_other(hist, night.key, matrix)
        if earlier:
            baseline["message"] = (f"{len(earlier)} earlier night(s) with this identity ran no "
                                   "cell of this night")
        elif other is not None:
            baseline["message"] = (f"the latest night of another identity ({other[0]}, "
                                   f"{other[2]}) is not compared")
            baseline["other_identity"] = other[0]
            baseline["differences"] = history.differences(other[1], ident)
        else:
            baseline["message"] = "the first night of this history"
    cells = []
    for key, series in cell_nights.items():
        recs = series[-1][1]
        notes = []
        if len(series) > 1:
            changes = history.parameter_changes(series[-2][1], recs)
            if changes:
                notes.append("settings changed since the previous night (same cell "
                             "coordinates, compared anyway): " + "; ".join(changes))
        else:
            notes.append(NO_BASELINE if not has_baseline else
                         "new cell: no earlier night ran these coordinates")
        stopped = cell_line(recs)  # repetitions {min, max, ci}: how many runs, and why
        if stopped:
            notes.append(stopped)
        findings = regress.evaluate_cell(series, th)
        cells.append(cell_entry(key, history.coordinate_label(recs[0]),
                                compare.workload_label(recs[0]),
                                [r.cell.id for r in recs], findings, notes))
    cells.sort(key=lambda c: (not any(r["verdict"] == regress.REGRESSION for r in c["results"]),
                              c["workload"], c["cell"]))
    verdict = {
        "schema": VERDICT_SCHEMA, "kind": "nightly", "matrix": matrix, "night": night.stamp,
        "identity_key": night.key, "identity": ident, "baseline": baseline,
        "thresholds": th.to_dict(), "cells": cells, "summary": summarize(cells),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Judged(verdict, cell_nights)



def write_trend_report(hist: Path, night: history.NightDir, judged: Judged,
                       th: regress.Thresholds, out: Path) -> Path:
    """The latest night's report plus ``trend.html`` in ``out``; returns the trend page."""
    from harness.report import make_report
    from harness.report.trend import build_trend, render_trend

    make_report(night.path, out)
    verdicts = {}
    for n in history.nights(hist, night.key):
        v = n.verdict()
        if v is not None:
            verdicts[n.stamp] = v
    verdicts[night.stamp] = judged.verdict
    notes = []
    b = judged.verdict["baseline"]
    if b["status"] != "ok":
        notes.append(f"{b['status']}: {b.get('message', '')}")
        notes += [f"differs: {d}" for d in b.get("differences", [])]
    trend = build_trend(judged.cell_nights, verdicts,
                        title=f"{judged.verdict['matrix']} — nightly {night.stamp}",
                        identity_key=night.key, identity=judged.verdict["identity"],
                        thresholds=th, notes=notes)
    return render_trend(trend, out)



def run_nightly(matrix_path: Path, hist: Path, *, hosts_path: Path | None = None,
                th: regress.Thresholds = regress.Thresholds(), junit: Path | None = None,
                verdict_path: Path | None = None, report: Path | None | bool = True,
                image: Any = None, quiet: bool = False,
                pair: str | None = None) -> tuple[int, dict[str, Any], Path]:
    """Run one night and judge it: (exit code, verdict, night folder).

    ``report``: True for ``HISTORY/<identity>/report``, a folder, or False for none. The night
    runs on one host pair (``pair``, default the first): a history describes one machine.

    :raise HarnessError: configuration, host or result problems (exit code 1).
    """
    from harness.plan.config import load_hosts, load_matrix
    from harness.run.runner import run_matrix

    hosts_path = config.hosts_path(hosts_path)
    hosts = load_hosts(hosts_path)
    spec = load_matrix(matrix_path)
    pair = one_pair(hosts, hosts_path, pair)
    config.plan(matrix_path, spec, hosts_path, hosts)  # before the night's folder is made
    stamp = history.utc_stamp()
    staging = history.incoming_dir(hist, stamp)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not quiet:
        print(f"migbench nightly {matrix_path} -> {staging}", flush=True)
    try:
        run_matrix(matrix_path, spec, hosts_path, hosts, staging,
                   None if quiet else printing_progress(), image, pairs=[pair])
    except BaseException:
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when the night stored nothing: finished runs stay
        raise
    records = [rec for _, rec in store.iter_runs(staging)]
    night = history.file_night(hist, staging, records)
    write_json(night.path / "night.json", {
        "matrix": spec.name, "matrix_file": str(matrix_path), "hosts_file": str(hosts_path),
        "started_utc": started, "identity_key": night.key, "thresholds": th.to_dict()})
    judged = judge_night(hist, night, th)
    verdict = judged.verdict
    write_outputs(verdict, [night.path / "verdict.json", verdict_path], junit)
    if report is not False:
        out = hist / night.key / "report" if report is True else Path(str(report))
        trend = write_trend_report(hist, night, judged, th, out)
        verdict["report"] = str(trend)
        write_outputs(verdict, [night.path / "verdict.json", verdict_path], None)
    if not quiet:
        print_verdict(verdict)
        print(f"night: {night.path}")
        if verdict.get("report"):
            print(f"trend: {verdict['report']}")
    return int(verdict["summary"]["exit_code"]), verdict, night.path



def cmd_nightly(args: argparse.Namespace) -> int:
    code, _, _ = run_nightly(
        Path(args.matrix), Path(args.history),
        hosts_path=Path(args.hosts) if args.hosts else None, th=thresholds_from(args),
        junit=Path(args.junit) if args.junit else None,
        verdict_path=Path(args.verdict) if args.verdict else None,
        report=False if args.no_report else (Path(args.report) if args.report else True),
        pair=args.pair)
    return code



def register(subparsers: Any) -> None:
    """Add ``migbench nightly``."""
    p = subparsers.add_parser(
        "nightly", help="run a matrix as a night of a history and flag regressions",
        description="Run MATRIX into a new night of HISTORY (a folder per machine identity: "
                    "CPU, kernel, accel, QEMU builds, guest image), compare it with the earlier "
                    "nights of the same identity and write verdict.json, JUnit XML and a trend "
                    "report. Exit code 0: nothing regressed; 2: a regression; 1: harness error.",
        epilog="Example: migbench nightly matrices/nightly.yaml --history /srv/migbench "
               "--junit junit.xml --metric-effect total_time_ms=10")
    p.add_argument("matrix", metavar="MATRIX.yaml")
    p.add_argument("--history", required=True, metavar="DIR", help="the history folder")
    threshold_args(p)
    p.add_argument("--report", metavar="DIR",
                   help="report folder (default: HISTORY/<identity>/report)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(func=cmd_nightly)
