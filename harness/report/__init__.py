"""``migbench report``: a results folder -> a self-contained HTML report folder.

Where it stands in the flow (the last stage)::

    plan -> run -> results -> analysis -> [report]

The pure model lives in :mod:`harness.report.model` (with ``impact``, ``threads``,
``featurestats``, ``predictions``, ``slides``, ``trend``), rendering in
:mod:`harness.report.render` (jinja2 + plotly, with ``templates/`` and ``static/`` as package
data). This module loads records (through :mod:`harness.results.store`) and adds the ``report``
subcommand via :func:`register`.

May import: errors, inputs, output, digest, locations; plan, results, analysis.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError
from harness.results import store
from harness.results.record import RunRecord

if TYPE_CHECKING:
    from harness.report.slides import Slide

__all__ = ["cmd_report", "load_records", "make_report", "pick_slides", "register"]


def load_records(root: Path) -> list[RunRecord]:
    """Every run record of a campaign folder.

    :raise HarnessError: when the folder does not exist or holds no run files.
    :raise RecordError: a run file does not validate (one line: file, field, fix).
    """
    return store.records(root)


def pick_slides(records: Sequence[RunRecord], specs: Sequence[str] | None,
                command: str | None = None) -> list[Slide]:
    """The slides ``--slides`` asks for: each ``A..B`` of ``specs``, or with none given (an
    empty list) :func:`~harness.report.slides.default_pairs`; ``None``: no slides.

    :raise UsageError: a pair that is not ``A..B`` or names no cell or several.
    """
    from harness.report.slides import default_pairs, parse_pair, slides

    if specs is None:
        return []
    pairs = [parse_pair(records, s) for s in specs] if specs else default_pairs(records)
    return slides(records, pairs, command=command)


def make_report(results: Path, out: Path, baseline: str | None = None,
                slide_specs: Sequence[str] | None = None) -> list[Path]:
    """Build and write the report of ``results`` into ``out``; return the pages written.

    ``baseline`` is a variant name of ``results`` or another results folder; ``slide_specs``
    as :func:`pick_slides` takes them.

    :raise HarnessError: unreadable results, or a baseline that is neither.
    """
    from harness.analysis.compare import variants
    from harness.report.model import build_report
    from harness.report.render import render

    records = load_records(results)
    chosen = pick_slides(records, slide_specs)  # a bad pair fails before anything is written
    title = f"{', '.join(sorted({r.campaign for r in records}))} — {results.name}"
    kwargs: dict[str, Any] = {}
    if baseline is not None:
        known = variants(records)
        if baseline in known:
            if len(known) < 2:
                raise HarnessError(f"{results} has only the variant {baseline!r}: nothing to "
                                   "compare it with; pass another results folder as --baseline")
            kwargs["baseline_variant"] = baseline
        elif Path(baseline).is_dir():
            kwargs["baseline"] = load_records(Path(baseline))
            kwargs["baseline_name"] = Path(baseline).name
        else:
            raise HarnessError(f"--baseline {baseline!r} is neither a variant of {results} "
                               f"({', '.join(known)}) nor a results folder")
    rep = build_report(records, title=title, source=results.name, **kwargs)
    return render(rep, out, chosen)


def cmd_report(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if args.text:
        # Text only: the slides as fixed-width blocks for a mailing-list reply, no folder.
        command = shlex.join(["migbench", "report", str(results), "--slides",
                              *(args.slides or ()), "--text"])
        for sl in pick_slides(load_records(results), args.slides or [], command):
            print(sl.text())
        return 0
    out = Path(args.output) if args.output else Path("reports") / results.resolve().name
    pages = make_report(results, out, args.baseline, args.slides)
    print(f"report: {pages[0]}  ({len(pages)} pages; open it in a browser, it works offline)")
    for page in (p for p in pages if p.parent.name == "slides"):
        print(f"slide: {page}")
    if args.baseline is not None and (out / "compare.html") in pages:
        print(f"before/after: {out / 'compare.html'}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to ``migbench``'s subparsers."""
    p = subparsers.add_parser(
        "report", help="write an HTML report of a results folder",
        description="Turn a campaign folder into a self-contained HTML report (opens offline "
                    "from the file system): an overview with heatmaps, one page per cell, and a "
                    "before/after comparison with --baseline. Every table is also written as CSV.",
        epilog="Example: migbench report results/demo --baseline precopy -o reports/demo",
    )
    p.add_argument("results", metavar="RESULTS_DIR", help="campaign folder, e.g. results/demo")
    p.add_argument("--baseline", metavar="VARIANT_OR_DIR",
                   help="compare against this variant of RESULTS_DIR, or another results folder")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="report folder (default: reports/<name of RESULTS_DIR>)")
    p.add_argument("--slides", nargs="*", metavar="A..B",
                   help="also write before/after slides (slides/<a>-<b>.html): each A..B names "
                        "two cells by id, id prefix or variant=...,axis=value; without a value, "
                        "each variant pair and each axis's first value vs the others")
    p.add_argument("--text", action="store_true",
                   help="print the slides as fixed-width text (for a mailing-list reply) "
                        "instead of writing the HTML report; implies --slides")
    p.set_defaults(func=cmd_report)
