"""``migbench nightly`` and ``migbench compare``: unattended runs with a CI verdict.

``nightly`` runs a matrix into a new night of a history (:mod:`harness.history`), judges it
against the earlier nights of the same machine identity (:mod:`harness.regress`) and writes
``verdict.json``, optionally JUnit XML, and an HTML report with a trend page. ``compare`` runs two
variants (matrix variants, hosts.yaml QEMU builds, or ``src:TREE[+PATCH...]`` built by
:mod:`harness.patchbuild`) interleaved, A B A B, and writes the before/after report and the same
verdict.

Exit codes (CI): 0 nothing regressed, 2 a regression, 1 a harness error (raised as
:class:`HarnessError` and turned into 1 by :func:`harness.cli.main`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import compare, config, history, regress, store
from harness.errors import ConfigError, HarnessError, shorten
from harness.output import terminal_text, write_atomic, write_failure
from harness.record import RunRecord

EXIT_OK = 0
EXIT_REGRESSION = 2
VERDICT_SCHEMA = 1
NO_BASELINE = "no baseline with the same identity"

Record = RunRecord


# ---------------------------------------------------------------------------------------------
# Verdict documents (pure)


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
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
            _write_json(p, verdict)
    if junit is not None:
        xml = junit_xml(verdict)
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(junit, lambda f: xml.write(f, encoding="utf-8", xml_declaration=True))
        except OSError as exc:
            raise write_failure(junit, "the JUnit file", exc, _WRITE_FIX) from None


# ---------------------------------------------------------------------------------------------
# Judging a night (reads the history)


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


# ---------------------------------------------------------------------------------------------
# Commands


def thresholds_from(args: argparse.Namespace) -> regress.Thresholds:
    try:
        per = regress.parse_metric_effects(args.metric_effect or [])
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    if not args.min_effect > 0:
        raise HarnessError(f"--min-effect {args.min_effect}: must be a positive percentage")
    return regress.Thresholds(min_effect=args.min_effect / 100.0, per_metric=per,
                              alpha=args.alpha, persist=args.persist)


def _printing_progress() -> Any:
    from harness.runner import Progress

    def run_finished(cell: Any, rep: int, rec: RunRecord) -> None:
        tt = rec.metrics.total_time_ms
        desc = f"{rec.outcome}, integrity {rec.integrity.verdict}"
        if tt is not None:
            desc += f", {tt / 1000:.1f} s"
        print(terminal_text(f"  {cell.label} rep {rep}: {desc}"), flush=True)

    return Progress(run_finished=run_finished)


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
    from harness.config import load_hosts, load_matrix
    from harness.runner import run_matrix

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
                   None if quiet else _printing_progress(), image, pairs=[pair])
    except BaseException:
        with contextlib.suppress(OSError):
            staging.rmdir()  # only when the night stored nothing: finished runs stay
        raise
    records = [rec for _, rec in store.iter_runs(staging)]
    night = history.file_night(hist, staging, records)
    _write_json(night.path / "night.json", {
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


def _threshold_args(p: argparse.ArgumentParser) -> None:
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
                   help="hosts file (default: ./hosts.yaml, else the repository's)")
    p.add_argument("--pair", metavar="NAME",
                   help="the host pair to run on (default: the first of the hosts file); one "
                        "pair, so that every run is on the same machines")


def register_nightly(subparsers: Any) -> None:
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
    _threshold_args(p)
    p.add_argument("--report", metavar="DIR",
                   help="report folder (default: HISTORY/<identity>/report)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(func=cmd_nightly)


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


# ---------------------------------------------------------------------------------------------
# compare


def resolve_side(token: str, spec: Any, hosts: Any, *, build_cache: Path | None = None,
                 configure_args: Sequence[str] = (), quiet: bool = False,
                 pair_name: str | None = None) -> tuple[str, Any, Any]:
    """(variant name, Variant, hosts config) for a --before/--after value.

    :raise HarnessError: a value that is none of variant, build, or ``src:TREE[+PATCH...]``.
    """
    from harness.models import Variant

    base = next(iter(spec.variants.values())) if len(spec.variants) == 1 else Variant()
    if token in spec.variants:
        return token, spec.variants[token], hosts
    pair_name = pair_name or str(next(iter(hosts.pairs)))
    pair = hosts.pairs[pair_name]
    if token in hosts.qemu_builds or token in pair.source.qemu:
        return token, base.model_copy(update={"build": token}), hosts
    if token.startswith("src:"):
        from harness.patchbuild import build_for_pair, parse_source

        name, hosts2 = build_for_pair(
            parse_source(token), hosts, cache=build_cache, pair_name=pair_name,
            configure_args=configure_args,
            log=None if quiet else (lambda s: print(terminal_text(s), flush=True)))
        return name, base.model_copy(update={"build": name}), hosts2
    raise HarnessError(
        f"{shorten(token)} is not a variant of the matrix ({', '.join(spec.variants)}), nor a QEMU "
        f"build of the hosts file ({', '.join(hosts.qemu_builds)}), nor src:TREE[+PATCH...]")


def compare_verdict(records: Sequence[Record], before: str, after: str,
                    th: regress.Thresholds) -> dict[str, Any]:
    """The before/after verdict of a compare campaign (pure)."""
    base = [r for r in records if r.cell.variant == before]
    new = [r for r in records if r.cell.variant == after]
    groups: dict[str, tuple[list[Record], list[Record]]] = {}
    for r in base:
        groups.setdefault(compare.cell_key(r), ([], []))[0].append(r)
    for r in new:
        groups.setdefault(compare.cell_key(r), ([], []))[1].append(r)
    cells = []
    for key, (b, n) in groups.items():
        any_rec = (b or n)[0]
        label = compare.axes_label(any_rec)
        if not b or not n:
            cells.append(cell_entry(key, label, compare.workload_label(any_rec),
                                    [r.cell.id for r in b + n], [],
                                    [f"only on the {'before' if b else 'after'} side"]))
            continue
        findings = regress.compare_sides(b, n, th, names=(before, after))
        cells.append(cell_entry(key, label, compare.workload_label(any_rec),
                                [r.cell.id for r in b + n], findings))
    ident_b, ident_a = history.identity_of(base), history.identity_of(new)
    diffs = [d for d in history.differences(ident_b, ident_a) if not d.startswith("qemu.")]
    return {
        "schema": VERDICT_SCHEMA, "kind": "compare", "before": before, "after": after,
        "matrix": records[0].campaign if records else "",
        "identity": {"before": ident_b, "after": ident_a},
        "baseline": {"status": "ok", "differences": diffs},
        "thresholds": th.to_dict(), "cells": cells, "summary": summarize(cells),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_compare(matrix_path: Path, before: str, after: str, *, hosts_path: Path | None = None,
                out: Path | None = None, th: regress.Thresholds = regress.Thresholds(),
                junit: Path | None = None, verdict_path: Path | None = None,
                build_cache: Path | None = None, configure_args: Sequence[str] = (),
                image: Any = None, quiet: bool = False,
                pair: str | None = None) -> tuple[int, dict[str, Any], Path]:
    """Run ``before`` and ``after`` interleaved and judge: (exit code, verdict, output folder).

    Both sides run on one host pair (``pair``, default the first), alternating, so that machine
    drift cancels; ``src:`` sides are built on that pair's hosts.

    :raise HarnessError: configuration, build, host or result problems (exit code 1).
    """
    from harness.config import load_hosts, load_matrix, plan
    from harness.report import make_report
    from harness.runner import run_matrix

    hosts_path = config.hosts_path(hosts_path)
    hosts = load_hosts(hosts_path)
    spec = load_matrix(matrix_path)
    pair = one_pair(hosts, hosts_path, pair)
    name_b, var_b, hosts = resolve_side(before, spec, hosts, build_cache=build_cache,
                                        configure_args=configure_args, quiet=quiet,
                                        pair_name=pair)
    name_a, var_a, hosts = resolve_side(after, spec, hosts, build_cache=build_cache,
                                        configure_args=configure_args, quiet=quiet,
                                        pair_name=pair)
    if name_a == name_b:
        raise HarnessError(f"--before and --after both name {name_b!r}: nothing to compare")
    spec2 = spec.model_copy(update={
        "variants": {name_b: var_b, name_a: var_a}, "order": "interleaved",
        "axes": {k: v for k, v in spec.axes.items() if k != "variant"},
        "exclude": [r for r in spec.exclude if "variant" not in r],
        "include": [r for r in spec.include if "variant" not in r]})
    plan(matrix_path, spec2, hosts_path, hosts)  # fail before anything boots
    out = out or Path("results") / f"compare-{spec.name}-{history.utc_stamp()}"
    runs = out / "runs"
    if not quiet:
        print(f"migbench compare {name_b} -> {name_a} on {matrix_path} (interleaved) -> {out}",
              flush=True)
    run_matrix(matrix_path, spec2, hosts_path, hosts, runs,
               None if quiet else _printing_progress(), image, pairs=[pair])
    records = [rec for _, rec in store.iter_runs(runs)]
    if not records:
        raise HarnessError(f"{runs}: the comparison produced no run records")
    verdict = compare_verdict(records, name_b, name_a, th)
    pages = make_report(runs, out / "report", baseline=name_b)
    verdict["report"] = str(pages[-1])
    write_outputs(verdict, [out / "verdict.json", verdict_path], junit)
    if not quiet:
        print_verdict(verdict)
        print(f"report: {pages[-1]}")
    return int(verdict["summary"]["exit_code"]), verdict, out


def cmd_compare(args: argparse.Namespace) -> int:
    code, _, _ = run_compare(
        Path(args.matrix), args.before, args.after,
        hosts_path=Path(args.hosts) if args.hosts else None,
        out=Path(args.out) if args.out else None, th=thresholds_from(args),
        junit=Path(args.junit) if args.junit else None,
        verdict_path=Path(args.verdict) if args.verdict else None,
        build_cache=Path(args.build_cache) if args.build_cache else None,
        configure_args=tuple(args.configure_arg or ()), pair=args.pair)
    return code


def register_compare(subparsers: Any) -> None:
    """Add ``migbench compare``."""
    p = subparsers.add_parser(
        "compare", help="run two variants interleaved and give a before/after verdict",
        description="Run MATRIX for --before and --after interleaved (A B A B ... so machine "
                    "drift cancels), write the before/after HTML report and verdict.json. A side "
                    "is a variant of the matrix, a QEMU build of the hosts file, or "
                    "src:TREE[+PATCH...]: a QEMU source tree plus mbox/diff patches, built on "
                    "each host (cached by source commit and patch hash). Exit code 0: nothing "
                    "regressed; 2: a regression (outcome, integrity or metric); 1: harness error.",
        epilog="Example: migbench compare --before 7.2 --after 10.0 matrices/demo.yaml; "
               "migbench compare --before src:~/qemu --after src:~/qemu+fix.mbox m.yaml")
    p.add_argument("matrix", metavar="MATRIX.yaml")
    p.add_argument("--before", required=True, metavar="A", help="baseline side")
    p.add_argument("--after", required=True, metavar="B", help="new side")
    p.add_argument("--out", metavar="DIR",
                   help="output folder: runs/, report/, verdict.json (default: "
                        "results/compare-<matrix>-<time>)")
    p.add_argument("--build-cache", metavar="DIR",
                   help="where src: builds are cached on each host (default: <workdir>/qemu-builds)")
    p.add_argument("--configure-arg", action="append", metavar="ARG",
                   help="extra argument for QEMU's configure (repeatable), e.g. --enable-debug")
    _threshold_args(p)
    p.set_defaults(func=cmd_compare)


def register(subparsers: Any) -> None:
    """Add both ``nightly`` and ``compare``."""
    register_nightly(subparsers)
    register_compare(subparsers)
