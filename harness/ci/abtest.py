"""``migbench compare``: two variants run interleaved (A B A B ...) and a before/after verdict.

A side is a matrix variant, a QEMU build of the hosts file, or ``src:TREE[+PATCH...]`` built on
the pair's hosts by :mod:`harness.ci.patchbuild`. Both sides run on one host pair, alternating, so
machine drift cancels; the result is the before/after report and the verdict of
:mod:`harness.ci.verdict`.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.analysis import compare, history, regress
from harness.analysis.stopping import cell_line
from harness.ci.verdict import (
    VERDICT_SCHEMA,
    Record,
    cell_entry,
    one_pair,
    print_verdict,
    printing_progress,
    summarize,
    threshold_args,
    thresholds_from,
    write_outputs,
)
from harness.errors import HarnessError, shorten
from harness.output import terminal_text
from harness.plan import config
from harness.results import store


def resolve_side(token: str, spec: Any, hosts: Any, *, build_cache: Path | None = None,
                 configure_args: Sequence[str] = (), quiet: bool = False,
                 pair_name: str | None = None) -> tuple[str, Any, Any]:
    """(variant name, Variant, hosts config) for a --before/--after value.

    :raise HarnessError: a value that is none of variant, build, or ``src:TREE[+PATCH...]``.
    """
    from harness.plan.models import Variant

    base = next(iter(spec.variants.values())) if len(spec.variants) == 1 else Variant()
    if token in spec.variants:
        return token, spec.variants[token], hosts
    pair_name = pair_name or str(next(iter(hosts.pairs)))
    pair = hosts.pairs[pair_name]
    if token in hosts.qemu_builds or token in pair.source.qemu:
        return token, base.model_copy(update={"build": token}), hosts
    if token.startswith("src:"):
        from harness.ci.patchbuild import build_for_pair, parse_source

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
        # repetitions {min, max, ci}: how many runs each side took, and why it stopped
        notes = [f"{name}: {line}" for name, side in ((before, b), (after, n))
                 if (line := cell_line(side))]
        cells.append(cell_entry(key, label, compare.workload_label(any_rec),
                                [r.cell.id for r in b + n], findings, notes))
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



def compare_slides(records: Sequence[Record], before: str, after: str,
                   command: str | None = None) -> list[Any]:
    """A before/after slide (:mod:`harness.report.slides`) per cell of the comparison that ran
    on both sides, matched by the compare's own cell key (pure)."""
    from harness.report.slides import slide

    groups: dict[str, tuple[list[Record], list[Record]]] = {}
    for r in records:
        if r.cell.variant in (before, after):
            groups.setdefault(compare.cell_key(r), ([], []))[r.cell.variant == after].append(r)
    return [slide(sorted(b, key=lambda r: r.repetition), sorted(n, key=lambda r: r.repetition),
                  command=command)
            for b, n in groups.values() if b and n]


def command_line(args: argparse.Namespace) -> str:
    """The ``migbench compare`` command that reproduces ``args`` (quoted for a shell)."""
    argv = ["migbench", "compare", str(args.matrix), "--before", args.before,
            "--after", args.after]
    for flag, value in (("--hosts", args.hosts), ("--pair", args.pair)):
        if value:
            argv += [flag, str(value)]
    for arg in args.configure_arg or ():
        argv += ["--configure-arg", arg]
    return shlex.join([*argv, "--text"])


def run_compare(matrix_path: Path, before: str, after: str, *, hosts_path: Path | None = None,
                out: Path | None = None, th: regress.Thresholds = regress.Thresholds(),
                junit: Path | None = None, verdict_path: Path | None = None,
                build_cache: Path | None = None, configure_args: Sequence[str] = (),
                image: Any = None, quiet: bool = False,
                pair: str | None = None,
                text_command: str | None = None) -> tuple[int, dict[str, Any], Path]:
    """Run ``before`` and ``after`` interleaved and judge: (exit code, verdict, output folder).

    Both sides run on one host pair (``pair``, default the first), alternating, so that machine
    drift cancels; ``src:`` sides are built on that pair's hosts. With ``text_command`` (the
    command line that reproduces it), each cell's before/after slide is printed as text.

    :raise HarnessError: configuration, build, host or result problems (exit code 1).
    """
    from harness.plan.config import load_hosts, load_matrix, plan
    from harness.report import make_report
    from harness.run.runner import run_matrix

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
               None if quiet else printing_progress(), image, pairs=[pair])
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
    if text_command is not None:
        for sl in compare_slides(records, name_b, name_a, text_command):
            print(terminal_text(sl.text(), newlines=True))
    return int(verdict["summary"]["exit_code"]), verdict, out



def cmd_compare(args: argparse.Namespace) -> int:
    code, _, _ = run_compare(
        Path(args.matrix), args.before, args.after,
        hosts_path=Path(args.hosts) if args.hosts else None,
        out=Path(args.out) if args.out else None, th=thresholds_from(args),
        junit=Path(args.junit) if args.junit else None,
        verdict_path=Path(args.verdict) if args.verdict else None,
        build_cache=Path(args.build_cache) if args.build_cache else None,
        configure_args=tuple(args.configure_arg or ()), pair=args.pair,
        text_command=command_line(args) if args.text else None)
    return code



def register(subparsers: Any) -> None:
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
    p.add_argument("--text", action="store_true",
                   help="also print each cell's before/after slide as fixed-width text (info "
                        "migrate side by side, per-thread CPU, differences with p and interval, "
                        "QEMU builds, hosts, this command) for a mailing-list reply")
    threshold_args(p)
    p.set_defaults(func=cmd_compare)
