"""The ``migbench`` command: thin commands over the library.

This is the only place that catches :class:`HarnessError`: it prints the one-line message and
exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from harness import locations
from harness.analysis.diagnosis import Diagnosis, aggregate, diagnose, summary_columns
from harness.analysis.overhead import campaign_time, phase_line
from harness.analysis.stopping import Decision, cell_line
from harness.checks import preflight
from harness.ci.abtest import register as register_compare
from harness.ci.nightly import register as register_nightly
from harness.errors import MAX_LINE, HarnessError, UsageError, one_line
from harness.hosts.hostsfile import register as register_init
from harness.hosts.provision import register as register_provision
from harness.hosts.testbed import register as register_testbed
from harness.lab.broker import engine_broker
from harness.lab.commands import register as register_lab
from harness.output import console_text, terminal_text
from harness.plan.config import hosts_path, load_hosts, load_matrix, plan
from harness.plan.matrix import Cell
from harness.plan.models import MatrixSpec
from harness.plan.repetitions import Repetitions
from harness.report import register as register_report
from harness.results import store
from harness.results.record import RunRecord
from harness.results.show import run_block

if TYPE_CHECKING:  # the runner is imported only when a command runs: `migbench --help` stays quick
    from harness.run.runner import Progress as RunProgress

# emoji=False: ":name:" in text from a result file must print as written, not as an emoji
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)


def run_eta(first_start: float | None, now: float, finished: float, remaining: float | None
            ) -> float | None:
    """Seconds left: the wall-clock time per run finished since ``first_start``, times the runs
    left; None before the first run has finished.

    Wall-clock time per run, not the mean run duration, so that it stays right when several
    host pairs run at once.
    """
    if remaining is not None and remaining <= 0:
        return 0.0
    if first_start is None or finished <= 0 or remaining is None:
        return None
    return max(0.0, now - first_start) / finished * remaining


class RunEtaColumn(ProgressColumn):
    """ETA from :func:`run_eta`, fed by the task fields ``first_start`` (clock time the first run
    of this session started) and ``resumed`` (runs already done before it).

    rich's TimeRemainingColumn drops speed samples older than ``speed_estimate_period`` (30 s);
    a run here takes 28-50 s, so it had at most one sample and showed -:--:-- all along.
    """

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        first, now = task.fields.get("first_start"), task.get_time()
        finished = task.completed - task.fields.get("resumed", 0)
        eta = run_eta(first, now, finished, task.remaining)
        lo = task.fields.get("planned_lo")  # repetitions {min, max, ci}: the fewest runs left
        if lo is not None and task.total is not None and lo < task.total:
            soon = run_eta(first, now, finished, lo - task.completed)
            return Text(f"{_clock(soon)}..{_clock(eta)}", style="progress.remaining")
        return Text(_clock(eta), style="progress.remaining")


def _clock(eta: float | None) -> str:
    if eta is None:
        return "-:--:--"
    minutes, seconds = divmod(math.ceil(eta), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}"


class RunCountColumn(MofNCompleteColumn):
    """``done/total``; with repetitions that stop when sure, ``done/fewest..most`` planned."""

    def render(self, task: Task) -> Text:
        lo = task.fields.get("planned_lo")
        if lo is None or task.total is None or lo >= task.total:
            return super().render(task)
        return Text(f"{int(task.completed)}/{int(lo)}..{int(task.total)}",
                    style="progress.download")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.run.runner import run_matrix

    matrix_path = Path(args.matrix)
    url = engine_broker(args.engine, args.broker)
    # a lab's --attach plans from what the submission left on the broker: no hosts file
    from_broker = url is not None and args.attach and not args.hosts
    hosts_file = None if from_broker else hosts_path(args.hosts)
    hosts = None if hosts_file is None else load_hosts(hosts_file)
    spec = load_matrix(matrix_path)
    if args.smoke:
        spec = smoke(spec)
    dest = Path(args.out) if args.out else Path("results") / spec.name
    if hosts_file is None or hosts is None:
        from harness.lab.submit import attach_cells

        assert url is not None
        cells = attach_cells(url, matrix_path, spec, dest)[1]
    else:
        cells = plan(matrix_path, spec, hosts_file, hosts)
    rule = spec.repetitions.describe() if isinstance(spec.repetitions, Repetitions) else None
    if args.dry_run:
        for c in cells:
            out.print(terminal_text(f"{c.id}  {c.label}  ({c.workload_label()})"), markup=False)
        out.print(f"{len(cells)} cells x {spec.repetitions} repetitions")
        if rule:
            out.print(f"repetitions: {rule}")
        return 0
    out.print(f"[bold]migbench run[/] {console_text(matrix_path)} -> {console_text(dest)} "
              f"({len(cells)} cells x {spec.repetitions} repetitions)")
    if rule:
        out.print(f"repetitions: {rule}")

    # The description holds the cell's label (matrix values): shown as text, never as markup.
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  RunCountColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), RunEtaColumn(),
                  console=out, transient=False) as bar:
        callbacks = _run_progress(bar)
        if url is not None:  # a lab (harness.lab): the same progress, records from workers
            from harness.lab.submit import run_lab

            run_lab(matrix_path, spec, hosts_file, hosts, dest, url, callbacks,
                    attach=args.attach, redeliveries=args.redeliveries)
        else:
            assert hosts_file is not None and hosts is not None
            run_matrix(matrix_path, spec, hosts_file, hosts, dest, callbacks,
                       pairs=args.pair or None)
    _summary_table(dest)
    out.print(f"results: {console_text(dest)}  (details: migbench show {console_text(dest)})")
    return 0


def _run_progress(bar: Progress) -> RunProgress:
    """The run's progress bar, fed by the runner's (or the lab's) callbacks: the cell being
    run and its state, each finished run's line, and the ETA as adaptive cells plan."""
    from harness.run.runner import Progress as RunProgress

    task = bar.add_task("starting", total=1, first_start=None, resumed=0)
    current: dict[str, Any] = {}

    def start(total: int, done: int) -> None:
        bar.update(task, total=total, completed=done, resumed=done)
        if done:
            out.print(f"resuming: {done} of {total} runs already finished")

    def run_started(cell: Cell, rep: int) -> None:
        current["label"] = terminal_text(f"{cell.label} rep {rep}")
        if current.get("first_start") is None:
            current["first_start"] = bar.get_time()
            bar.update(task, first_start=current["first_start"])
        bar.update(task, description=f"{current['label']}: boot")

    def state(name: str) -> None:
        bar.update(task, description=f"{current.get('label', '')}: {name}")

    def run_finished(cell: Cell, rep: int, rec: RunRecord) -> None:
        m = rec.metrics
        total = m.total_time_ms
        desc = f"{rec.outcome}, integrity {rec.integrity.verdict}"
        if total is not None:
            timing = f"{total / 1000:.1f} s, downtime {m.downtime_ms} ms"
            desc += (f" ({timing}: not a result, the guest was corrupted)"
                     if rec.integrity.verdict == "corrupted" else f", {timing}")
        if rec.error:
            desc += f" ({terminal_text(rec.error)[:120]})"  # QEMU's or a guest's text
        bar.console.print(terminal_text(f"  {cell.label} rep {rep}: {desc}"), markup=False,
                          highlight=False)
        bar.advance(task)

    def note(message: str) -> None:
        bar.console.print(terminal_text(message), markup=False, highlight=False)

    def planned(done: int, lo: int, hi: int) -> None:
        bar.update(task, total=max(hi, 1), planned_lo=lo)

    def cell_stopped(cell: Cell, decision: Decision) -> None:
        note(f"  {cell.label}: {decision.text()}")

    return RunProgress(start, run_started, state, run_finished, note=note, planned=planned,
                       cell_stopped=cell_stopped)


def smoke(spec: MatrixSpec) -> MatrixSpec:
    """The shortest version of a matrix: one repetition, short limits (a CI smoke run)."""
    limits = spec.limits.model_copy(update={
        "max_time_s": min(spec.limits.max_time_s, 8.0), "observe_after_s": 0.5})
    return spec.model_copy(update={"repetitions": 1, "limits": limits,
                                   "name": f"{spec.name}-smoke"})


def _summary_table(dest: Path) -> None:
    table = Table(title=console_text(dest))
    for col in ("variant", "axes", "rep", "outcome", "integrity", "total s", "downtime ms",
                "pause ms", "stall ms", "Mbit/s", "syncs"):
        table.add_column(col)
    records = [rec for _, rec in store.iter_runs(dest)]
    for rec in records:
        m = rec.metrics
        tt = m.total_time_ms
        bad = rec.integrity.verdict == "corrupted"  # figures shown, struck through: not a result
        table.add_row(  # record text as Text: no markup, no control characters
            Text(terminal_text(rec.cell.variant)),
            Text(terminal_text(", ".join(f"{k}={v}" for k, v in rec.cell.axes.items()))),
            str(rec.repetition), Text(terminal_text(rec.outcome)),
            Text(terminal_text(rec.integrity.verdict)),
            _strike(f"{tt / 1000:.1f}", bad) if tt is not None else _s(tt),
            _strike(_s(m.downtime_ms), bad), _s(m.host_pause_ms),
            _s(m.guest_max_stall_ms), _s(m.throughput_mbps),
            _s(m.dirty_sync_count),
        )
    if any(rec.integrity.verdict == "corrupted" for rec in records):
        table.caption = "✗: the guest was corrupted; that figure is not a result"
    out.print(table)


def _strike(text: str, on: bool) -> str:
    return f"[strike]{text}[/strike] ✗" if on else text


def _s(v: object) -> str:
    """A figure of a record for a table cell (rich markup): a hostile file may put text there."""
    return "-" if v is None else console_text(v)


def cmd_show(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        records = store.records(path)
    elif path.exists() or path.is_symlink():
        records = [store.load_run(path)]  # a file; anything else is refused there in one line
    else:
        raise HarnessError(f"{path}: no such result file or campaign folder")
    cells: dict[str, list[Diagnosis]] = {}
    by_cell: dict[str, list[RunRecord]] = {}
    for rec in records:
        diag = diagnose(rec)
        cells.setdefault(rec.cell.id, []).append(diag)
        by_cell.setdefault(rec.cell.id, []).append(rec)
        phases = phase_line(rec)
        text = "\n".join([run_block(rec), *([f"  {phases}"] if phases else []),
                          *(f"  {line}" for line in diag.lines())])
        out.print(terminal_text(text, newlines=True), highlight=False, markup=False)
        out.print()
    if len(records) > 1:  # a folder: each cell's repetitions together
        for cell_id, diags in cells.items():
            stopped = cell_line(by_cell[cell_id])
            lines = [f"== cell {cell_id}: {len(diags)} runs", *([stopped] if stopped else []),
                     *aggregate(diags).lines()]
            out.print(terminal_text("\n".join(lines), newlines=True), highlight=False,
                      markup=False)
            out.print()
        spent = campaign_time(records)
        if spent is not None:
            out.print(terminal_text(spent.line()), highlight=False, markup=False)
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from harness.analysis.advise import lines, multifd_settings
    from harness.analysis.diagnosis import premeasured, scenarios
    from harness.plan.models import workload_label
    from harness.plan.units import parse_bytes
    from harness.run.calibrate import calibrate

    matrix_path = Path(args.matrix)
    hosts_file = hosts_path(args.hosts)
    hosts = load_hosts(hosts_file)
    spec = load_matrix(matrix_path)
    dest = Path(args.out) if args.out else Path("results") / f"{spec.name}-calibration"
    configured = spec.migration.get("xbzrle-cache-size")  # checked by load_matrix's plan rules
    cache = parse_bytes(configured) if configured is not None else None
    out.print(f"[bold]migbench advise[/] {console_text(matrix_path)}: one {args.calibration_s:g} s"
              f" precopy calibration per workload and link -> {console_text(dest)}")
    for rec in calibrate(matrix_path, spec, hosts_file, hosts, dest, args.calibration_s):
        pre = premeasured(rec)
        sc = scenarios(rec, pre)
        base = sc.early or sc.configured
        title = (f"{rec.cell.variant} {workload_label(rec.cell.workload)} "
                 + ", ".join(f"{k}={v}" for k, v in rec.cell.axes.items() if k != "feature"))
        if base is None:
            text = [f"== {title}", f"  no prediction: the calibration run has no figures "
                                   f"({rec.outcome}: {rec.error or 'no error recorded'})"]
        else:
            writer = rec.cell.workload.writer
            how = ("calc-dirty-rate before the run" if pre is not None
                   else "the writer's configured rate: calc-dirty-rate gave no figure")
            channels, level = multifd_settings(rec.cell.migration.parameters, spec.migration)
            text = lines(title, base, writer.pattern if writer else None, how, cache, channels,
                         level, rec.hosts.source.cpus)
        out.print(terminal_text("\n".join(text), newlines=True), markup=False, highlight=False)
    out.print("Measured by the calibration: dirty rate, throughput, zero pages; assumed from the "
              "writer's pattern: the XBZRLE saving; measured on the harness's machine by real "
              "multifd runs: zstd's ratio and rate per thread (see harness/analysis/advise.py).",
              markup=False, highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path = store.export(Path(args.campaign), args.format,
                        Path(args.output) if args.output else None,
                        annotate=summary_columns)  # the diagnosis, as summary.csv has it
    out.print(f"wrote {console_text(path)}")  # a path may hold "[/x]": text, not markup
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from harness.guest.image import ensure_image

    fio = Path(args.fio) if isinstance(args.fio, str) else None
    img = ensure_image(Path(args.cache), force=args.force, fio=bool(args.fio), fio_binary=fio,
                       debian=args.distro == "debian",
                       log=lambda s: out.print(terminal_text(s), markup=False, highlight=False))
    # paths under --cache, which may hold "[/x]" (rich markup) or anything else
    out.print(terminal_text(f"guest image {img.digest[:16]}: kernel {img.kernel} "
                            f"({img.kernel_release}, {'PVH' if img.pvh else 'bzImage'}), "
                            f"initrd {img.initrd}"), markup=False, highlight=False)
    if img.debian_disk is not None:
        out.print(terminal_text(f"Debian guest: root disk {img.debian_disk}, initrd "
                                f"{img.debian_initrd}"), markup=False, highlight=False)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit code 1 like every other harness error:
    its own exit code 2 means "a regression" to the callers of nightly and compare."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="migbench",
        description="Benchmark and evaluate QEMU live migration: run migration matrices on a "
                    "source/destination host pair, store every figure, and show the results.",
        epilog="Quick start: `make demo`. Example: migbench run matrices/demo.yaml && "
               "migbench show results/demo",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a migration matrix",
                       description="Run every cell x repetition of MATRIX on the host pairs of "
                                   "the hosts file: all pairs at once (or those given with --pair),"
                                   " one migration at a time per pair; a pair that fails its checks"
                                   " is skipped. Finished runs in --out are skipped (resume); runs "
                                   "interrupted by Ctrl-C run again.")
    r.add_argument("matrix", metavar="MATRIX.yaml", help="matrix file, e.g. matrices/demo.yaml")
    r.add_argument("--hosts", metavar="HOSTS.yaml",
                   help="hosts file (default: $MIGBENCH_HOSTS, ./hosts.yaml, "
                        "$XDG_CONFIG_HOME/migbench/hosts.yaml; see README)")
    r.add_argument("--out", metavar="DIR", help="campaign folder (default: results/<matrix name>)")
    r.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    r.add_argument("--pair", action="append", metavar="NAME",
                   help="run only on this host pair (repeatable; default: every pair, concurrently)")
    r.add_argument("--smoke", action="store_true",
                   help="one repetition with the shortest limits (max_time_s <= 8): a quick check")
    r.add_argument("--engine", metavar="ENGINE",
                   help="local (default: this process runs every pair) or celery://REDIS-URL: "
                        "submit the runs to a lab of `migbench worker`s (README: A lab of host "
                        "pairs)")
    r.add_argument("--broker", metavar="URL", help="the same as --engine celery://URL")
    r.add_argument("--attach", action="store_true",
                   help="lab only: submit nothing, collect the runs this campaign submitted "
                        "before (after the submitter was stopped); needs no hosts file "
                        "unless --hosts is given")
    r.add_argument("--redeliveries", type=int, default=2, metavar="N",
                   help="lab only: a run whose worker is lost is redelivered at most N times, "
                        "then recorded failed (default 2)")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("show", help="print results like `info migrate`",
                       description="Print each run of a result file or campaign folder as a "
                                   "block in the style of QEMU's `info migrate`.")
    s.add_argument("path", metavar="RESULT.json|CAMPAIGN_DIR")
    s.set_defaults(func=cmd_show)

    a = sub.add_parser("advise", help="predict each feature's outcome for a matrix's workloads",
                       description="Run one short precopy calibration per workload and link of "
                                   "MATRIX (calc-dirty-rate before it, QEMU's throughput in pass "
                                   "0), then print the convergence model's predicted outcome of "
                                   "precopy, xbzrle, multifd zstd, auto-converge and postcopy, "
                                   "ranked, with the reason.")
    a.add_argument("matrix", metavar="MATRIX.yaml")
    a.add_argument("--hosts", metavar="HOSTS.yaml", help="hosts file (as for run)")
    a.add_argument("--out", metavar="DIR",
                   help="calibration campaign folder (default: results/<matrix name>-calibration)")
    a.add_argument("--calibration-s", type=float, default=10.0, metavar="S",
                   help="seconds of migration per calibration run (default 10)")
    a.set_defaults(func=cmd_advise)

    e = sub.add_parser("export", help="export a campaign's runs as parquet or csv",
                       description="Write one row per run (summary figures, every metric, "
                                   "per-class CPU, matrix axes) as parquet or csv.")
    e.add_argument("campaign", metavar="CAMPAIGN_DIR")
    e.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    e.add_argument("-o", "--output", metavar="FILE", help="default: CAMPAIGN_DIR/runs.FORMAT")
    e.set_defaults(func=cmd_export)

    register_report(sub)
    register_testbed(sub)
    register_nightly(sub)
    register_compare(sub)
    register_provision(sub)
    register_init(sub)
    register_lab(sub)

    i = sub.add_parser("image", help="guest image commands")
    isub = i.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    ib = isub.add_parser("build", help="build (or reuse) the guest kernel + initramfs",
                         description="Build the guest image: kernel, virtio modules, busybox "
                                     "initramfs and the workloads. Cached by a hash of its inputs.")
    ib.add_argument("--cache", default=str(locations.image_cache()),
                    help=f"cache folder (default: image/ under ${locations.CACHE_ENV}, "
                         "$XDG_CACHE_HOME/migbench or ~/.cache/migbench)")
    ib.add_argument("--force", action="store_true", help="rebuild even if cached")
    ib.add_argument("--fio", nargs="?", const=True, default=False, metavar="FIO",
                    help="also build the fio part, with this static fio (default: "
                         f"${locations.FIO_ENV}, else one under the cache's fio/, else built by "
                         "a checkout's scripts/build-fio.sh, which needs the Debian mirror)")
    ib.add_argument("--distro", choices=("initramfs", "debian"), default="initramfs",
                    help="debian: also the Debian 12 guest (mmdebstrap of redis-server, "
                         "memcached, stress-ng and fio into a qcow2; needs root), which a matrix "
                         "selects with guest: {image: debian}")
    ib.set_defaults(func=cmd_image_build)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    limit = MAX_LINE  # until the inputs have passed: any echo of them stays short
    try:
        args = parser.parse_args(argv)
        preflight(parser, args)
        limit = 1000  # a host's or QEMU's error may carry a few lines of output
        return int(args.func(args))
    except HarnessError as exc:
        err.print(f"migbench: error: {terminal_text(one_line(str(exc), limit))}",
                  highlight=False, markup=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("migbench: interrupted; finished runs are saved", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
