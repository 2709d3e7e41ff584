"""The CI verdict that ``nightly`` and ``compare`` both give, and what both commands share.

A verdict is a JSON document (cells, each with the findings of :mod:`harness.analysis.regress`, and
a summary with the exit code), optionally JUnit XML, and a few terminal lines. Also here: the
threshold options both commands take, their progress lines, and the choice of one host pair.

Exit codes (CI): 0 nothing regressed, 2 a regression, 1 a harness error (raised as
:class:`HarnessError` and turned into 1 by :func:`harness.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.analysis import regress
from harness.errors import ConfigError, HarnessError, shorten
from harness.output import terminal_text, write_atomic, write_failure
from harness.results.record import RunRecord

EXIT_OK = 0

EXIT_REGRESSION = 2

VERDICT_SCHEMA = 1

NO_BASELINE = "no baseline with the same identity"

Record = RunRecord



def cell_entry(key: str, label: str, workload: str, cell_ids: Sequence[str],
               findings: Sequence[regress.Finding], notes: Sequence[str] = ()) -> dict[str, Any]:
    return {"key": key, "cell": label, "workload": workload, "cell_ids": sorted(set(cell_ids)),
            "notes": list(notes), "results": [f.to_dict() for f in findings]}



def summarize(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for c in cells:
        for r in c["results"]:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    regressions = counts.get(regress.REGRESSION, 0)
    return {"cells": len(cells), "counts": counts, "regressions": regressions,
            "improvements": counts.get(regress.IMPROVEMENT, 0),
            "suspects": counts.get(regress.SUSPECT, 0),
            "result": "regression" if regressions else "ok",
            "exit_code": EXIT_REGRESSION if regressions else EXIT_OK}



def junit_xml(verdict: dict[str, Any]) -> ET.ElementTree:
    """One ``testcase`` per cell and metric; regressions are failures, no-baseline skipped."""
    suite_name = f"migbench {verdict.get('kind', 'nightly')} {verdict.get('matrix', '')}".strip()
    root = ET.Element("testsuites", name="migbench")
    suite = ET.SubElement(root, "testsuite", name=suite_name,
                          timestamp=str(verdict.get("finished_utc", "")))
    props = ET.SubElement(suite, "properties")
    for k in ("identity_key", "night", "before", "after"):
        if verdict.get(k):
            ET.SubElement(props, "property", name=k, value=str(verdict[k]))
    tests = failures = skipped = 0
    baseline = verdict.get("baseline") or {}
    for cell in verdict.get("cells", []):
        classname = f"{verdict.get('matrix', 'matrix')}.{cell['cell']}"
        for r in cell["results"]:
            tests += 1
            tc = ET.SubElement(suite, "testcase", classname=classname, name=str(r["metric"]),
                               time="0")
            text = _result_line(r)
            if r["verdict"] == regress.REGRESSION:
                failures += 1
                f = ET.SubElement(tc, "failure", message=text, type=str(r["kind"]))
                f.text = text + "\n" + "\n".join(cell.get("notes", []))
            elif r["verdict"] == regress.NO_DATA and baseline.get("status") == NO_BASELINE:
                skipped += 1
                ET.SubElement(tc, "skipped", message=NO_BASELINE)
            else:
                ET.SubElement(tc, "system-out").text = text
    if not verdict.get("cells") and baseline.get("status") == NO_BASELINE:
        tests += 1
        skipped += 1
        tc = ET.SubElement(suite, "testcase", classname=str(verdict.get("matrix")),
                           name="baseline")
        ET.SubElement(tc, "skipped", message=NO_BASELINE + ": "
                      + "; ".join(baseline.get("differences", [])))
    for el in (suite, root):
        el.set("tests", str(tests))
        el.set("failures", str(failures))
        el.set("errors", "0")
    suite.set("skipped", str(skipped))
    ET.indent(root)
    return ET.ElementTree(root)



def _result_line(r: dict[str, Any]) -> str:
    def val(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        return f"{float(v) / float(r.get('scale') or 1.0):.4g} {r.get('unit') or ''}".strip()

    parts = [f"{r.get('label') or r['metric']}: {r['verdict']}",
             f"baseline {val(r.get('baseline'))}", f"current {val(r.get('current'))}"]
    if r.get("change") is not None:
        parts.append(f"change {r['change']:+.1%}")
    if r.get("interval") and r.get("change") is not None:
        lo, hi = r["interval"]
        parts.append(f"95% CI [{lo:+.1%}, {hi:+.1%}]")
    if r.get("p") is not None:
        parts.append(f"p={r['p']:.3g}")
    return ", ".join(parts) + f" ({r.get('reason', '')})"



_WRITE_FIX = "or choose another path"



def write_json(path: Path, data: dict[str, Any]) -> None:
    """:raise StoreError: the file cannot be written (one line naming it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, default=str) + "\n")
    except OSError as exc:
        raise write_failure(path, "the file", exc, _WRITE_FIX) from None



def write_outputs(verdict: dict[str, Any], paths: Sequence[Path | None],
                  junit: Path | None) -> None:
    """verdict.json at each of ``paths``, and JUnit XML at ``junit``.

    :raise StoreError: a file cannot be written (one line naming it).
    """
    for p in paths:
        if p is not None:
            write_json(p, verdict)
    if junit is not None:
        xml = junit_xml(verdict)
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(junit, lambda f: xml.write(f, encoding="utf-8", xml_declaration=True))
        except OSError as exc:
            raise write_failure(junit, "the JUnit file", exc, _WRITE_FIX) from None



def thresholds_from(args: argparse.Namespace) -> regress.Thresholds:
    try:
        per = regress.parse_metric_effects(args.metric_effect or [])
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    if not args.min_effect > 0:
        raise HarnessError(f"--min-effect {args.min_effect}: must be a positive percentage")
    return regress.Thresholds(min_effect=args.min_effect / 100.0, per_metric=per,
                              alpha=args.alpha, persist=args.persist)



def printing_progress() -> Any:
    from harness.run.runner import Progress

    def run_finished(cell: Any, rep: int, rec: RunRecord) -> None:
        tt = rec.metrics.total_time_ms
        desc = f"{rec.outcome}, integrity {rec.integrity.verdict}"
        if tt is not None:
            desc += f", {tt / 1000:.1f} s"
        print(terminal_text(f"  {cell.label} rep {rep}: {desc}"), flush=True)

    def cell_stopped(cell: Any, decision: Any) -> None:  # repetitions {min, max, ci}
        print(terminal_text(f"  {cell.label}: {decision.text()}"), flush=True)

    return Progress(run_finished=run_finished, cell_stopped=cell_stopped)



def print_verdict(verdict: dict[str, Any]) -> None:
    # Cell labels, notes and identity facts come from run records: one clean line each.
    def line(text: str) -> None:
        print(terminal_text(text))

    s = verdict["summary"]
    b = verdict.get("baseline") or {}
    if b.get("status") and b["status"] != "ok":
        line(f"{b['status']}: {b.get('message', '')}")
        for d in b.get("differences", []):
            line(f"  differs: {d}")
    for cell in verdict["cells"]:
        for r in cell["results"]:
            if r["verdict"] in (regress.REGRESSION, regress.IMPROVEMENT, regress.SUSPECT):
                line(f"{r['verdict'].upper():12} {cell['cell']}: {_result_line(r)}")
        for note in cell.get("notes", []):
            if note != NO_BASELINE:
                line(f"note         {cell['cell']}: {note}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items()))
    line(f"verdict: {s['result']} ({s['cells']} cells; {counts or 'nothing compared'})")



def threshold_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-effect", type=float, default=5.0, metavar="PERCENT",
                   help="smallest change of medians that counts (default 5)")
    p.add_argument("--metric-effect", action="append", metavar="METRIC=PERCENT",
                   help="per-metric minimum effect, e.g. total_time_ms=10 (repeatable; metrics: "
                        + ", ".join(regress.METRIC_KEYS) + ")")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level of the Mann-Whitney U test (default 0.05)")
    p.add_argument("--persist", type=int, default=2, metavar="NIGHTS",
                   help="with 4+ nights of history, a step must last this many nights (default 2)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one test per cell and "
                                                   "metric; regressions are failures)")
    p.add_argument("--verdict", metavar="FILE", help="also write verdict.json here")
    p.add_argument("--hosts", metavar="HOSTS.yaml",
                   help="hosts file (default: $MIGBENCH_HOSTS, ./hosts.yaml, "
                        "$XDG_CONFIG_HOME/migbench/hosts.yaml; see README)")
    p.add_argument("--pair", metavar="NAME",
                   help="the host pair to run on (default: the first of the hosts file); one "
                        "pair, so that every run is on the same machines")



def one_pair(hosts: Any, hosts_path: Path, name: str | None) -> str:
    """The host pair a night or a comparison runs on: ``name``, or the hosts file's first.

    :raise ConfigError: ``name`` is not a pair of the hosts file.
    """
    if name is None:
        return str(next(iter(hosts.pairs)))
    if name not in hosts.pairs:
        raise ConfigError(hosts_path, "pairs", f"no pair {shorten(name)}",
                          f"--pair takes one of: {', '.join(hosts.pairs)}")
    return name
