"""Results on disk: ``results/<campaign>/<cell-id>/<repetition>.json`` plus ``summary.csv``.

The one door out and the one door in for run records: :func:`write_run` stores a
:class:`~harness.results.record.RunRecord` as its canonical bytes (:func:`harness.results.record.dump`), written
atomically and never overwritten (a rerun of a finished run is skipped by the runner, and writing
one that exists is an error); :func:`load_run` and :func:`iter_runs` give records back, upgraded
and validated (:func:`harness.results.record.read`): a file that does not validate is one line naming
the file, the field, what was expected and the fix. The summary is rebuilt from the run files,
so it can never disagree with them.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, StoreError
from harness.output import csv_cell, csv_row, write_atomic, write_failure
from harness.plan.models import workload_label
from harness.results.record import RunRecord, dump, loads, read
from harness.results.record.codec import MAX_BYTES
from harness.results.record.errors import RecordError
from harness.results.record.metrics import CPU, CPU_SIDES, SUMMARY, cpu_column
from harness.results.record.scalars import CELL_ID_PATTERN

#: The diagnosis of a run (:meth:`harness.analysis.diagnosis.Diagnosis.columns`, which the
#: writer of the summary passes in: this stage does not import the analysis): the limiting
#: factor, the advice, and the model's prediction before the run (and from its first pass)
#: beside the measured ``total_time_ms`` and ``downtime_ms``.
DIAGNOSIS_COLUMNS = [
    "diagnosis", "advice", "predicted_outcome", "predicted_total_time_ms",
    "predicted_downtime_ms", "predicted_passes", "early_total_time_ms", "early_downtime_ms",
]

#: How the run's source came up (issue 18: ``warm``, restored, or ``cold``, booted, and why it
#: booted where a warm start was asked or possible) and where its time went
#: (:class:`~harness.results.record.model.Phases`, empty for a record without phases), with its
#: overhead (:func:`overhead_s`).
PHASE_COLUMNS = [f"phase_{name}" for name in (
    "prepare_s", "start_s", "steady_s", "setup_s", "migration_s", "observation_s", "teardown_s")]
TIME_COLUMNS = ["start", "start_reason", "wall_s", "overhead_s", *PHASE_COLUMNS]

#: The disk copy of a ``storage: copy`` run (issue 17; empty with shared storage): mirror start
#: to READY, bytes mirrored in all, the switchover's mirror completion, mirror start to the end
#: of the migration, and the disk check's differing 1 MiB chunks (0: the disks are equal).
STORAGE_COLUMNS = ["disk_sync_s", "disk_mirrored_bytes", "disk_switchover_ms", "disk_total_s",
                   "disk_differing_chunks"]

#: The run's identity and outcome, its figures (:data:`harness.results.record.metrics.SUMMARY`),
#: its start and time (:data:`TIME_COLUMNS`), its diagnosis, its error.
SUMMARY_COLUMNS = [
    "campaign", "cell_id", "variant", "qemu_version", "features", "workload", "repetition",
    "outcome", "integrity", "timing_excluded", *(m.key for m in SUMMARY), *TIME_COLUMNS,
    *STORAGE_COLUMNS, *DIAGNOSIS_COLUMNS, "error",
]


#: A value of a summary or frame row.
Cell = str | int | float | bool | None
Row = dict[str, Cell]

#: Extra columns of a run's summary row computed by a later stage (the diagnosis).
Annotate = Callable[[RunRecord], Row]

#: A cell id (:data:`harness.results.record.scalars.CELL_ID_PATTERN`). Ids name folders and report
#: pages, so one read from a file must match before it is used as either.
CELL_ID = re.compile(CELL_ID_PATTERN)

_RESUME = "and rerun the same command to resume (finished runs are kept), or choose another " \
          "results folder"


def valid_cell_id(value: object) -> bool:
    return isinstance(value, str) and CELL_ID.match(value) is not None


def run_path(root: Path, cell_id: str, repetition: int) -> Path:
    """``root/<cell-id>/<repetition>.json``.

    :raise HarnessError: ``cell_id`` is not a cell id or ``repetition`` not a positive integer
        (neither may become a path component).
    """
    if not valid_cell_id(cell_id):
        raise HarnessError(f"{cell_id!r:.40} is not a cell id (12 hex digits)")
    if isinstance(repetition, bool) or not isinstance(repetition, int) or repetition < 1:
        raise HarnessError(f"repetition {repetition!r:.20} is not a positive integer")
    return root / cell_id / f"{repetition}.json"


def exists(root: Path, cell_id: str, repetition: int) -> bool:
    return run_path(root, cell_id, repetition).exists()


def folder_error(root: Path, what: str, exc: OSError) -> StoreError:
    """One line for a results folder that cannot take a file: full, read-only or removed."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not root.is_dir():
        return StoreError(f"results folder {root}: cannot write {what}: the folder was removed "
                          "during the run; rerun the same command to start again, or choose "
                          "another results folder")
    return write_failure(f"results folder {root}", what, exc, _RESUME)


def check_writable(root: Path) -> None:
    """Create ``root`` if needed and prove it takes a byte, before any run starts.

    :raise StoreError: it cannot be created or written (read-only, full, no permission ...).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".probe-")
        try:
            os.write(fd, b"\n")  # an empty file needs no space: a full folder takes one
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        raise write_failure(f"results folder {root}", "into it", exc,
                            "or choose another results folder") from None


def write_run(root: Path, record: RunRecord) -> Path:
    """Write one run record into the campaign folder ``root``: atomically, never overwriting.

    ``root`` must exist: a campaign folder removed during a run is not made again, since the
    runs it held would be missing from it. Nothing is left behind when the write fails.

    :raise HarnessError: when the run file already exists.
    :raise StoreError: the file cannot be written (full, read-only or vanished folder), or
        ``record`` holds what no reader would accept (:func:`harness.results.record.dump`).
    """
    path = run_path(root, record.cell.id, record.repetition)
    what = f"run file {path.relative_to(root)}"
    try:
        data = dump(record)
    except RecordError as exc:
        raise StoreError(str(exc.in_file(str(path)))) from None
    made_dir = False
    try:
        if not path.parent.is_dir():
            path.parent.mkdir()
            made_dir = True
        write_atomic(path, data, overwrite=False)
    except FileExistsError:
        raise HarnessError(f"{path} exists already; results are never overwritten") from None
    except OSError as exc:
        if made_dir:
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        raise folder_error(root, what, exc) from None
    return path


def iter_runs(root: Path) -> Iterator[tuple[Path, RunRecord]]:
    """All run records below ``root`` (a campaign folder), in a stable order.

    :raise RecordError: a run file cannot be read, does not validate, is of a newer schema, or
        lies outside its cell's folder (one line naming the file and the fix).
    """
    paths = sorted(root.glob("*/*.json"), key=lambda p: (p.parent.name, _rep_number(p)))
    for path in paths:
        if path.name.startswith("."):
            continue
        yield path, load_stored(path)


def _rep_number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1


def load_run(path: Path) -> RunRecord:
    """One run record, upgraded to the current schema and validated.

    :raise RecordError: the file cannot be read or does not hold a valid record (one line).
    """
    return read(path)


def load_stored(path: Path) -> RunRecord:
    """A run file of a campaign folder (``<cell id>/<repetition>.json``): :func:`load_run`, and
    the record's cell is that of its folder.

    :raise RecordError: as :func:`load_run`, or the record is another cell's (one line).
    """
    record = load_run(path)
    if record.cell.id != path.parent.name:
        raise RecordError("cell.id", f"{record.cell.id!r} differs from its folder "
                          f"{path.parent.name!r}", "move the file to its cell's folder or "
                          "delete it", str(path))
    return record


def receive_run(data: bytes | str, source: str) -> RunRecord:
    """A record that arrives as bytes rather than as a file (a lab worker's answer, see
    harness.lab): the same checks as :func:`load_run`, ``source`` naming where it came from.

    :raise RecordError: it is larger than a run file may be or does not hold a valid record.
    """
    if len(data) > MAX_BYTES:
        raise RecordError("", f"{len(data)} bytes, more than a run record may have "
                          f"({MAX_BYTES})", "check the sender", source)
    return loads(data, source)


def records(root: Path) -> list[RunRecord]:
    """Every run record of the campaign folder ``root`` (see :func:`iter_runs`).

    :raise HarnessError: ``root`` is not a folder, or holds no run file.
    :raise RecordError: a run file does not validate.
    """
    if not root.is_dir():
        raise HarnessError(f"{root}: no such results folder (expected <campaign>/<cell-id>/"
                           "<rep>.json, e.g. results/demo)")
    out = [rec for _, rec in iter_runs(root)]
    if not out:
        raise HarnessError(f"{root}: no run results here (expected <cell-id>/<rep>.json); "
                           "run `migbench run MATRIX.yaml --out DIR` first")
    return out


def summary_row(record: RunRecord, annotate: Annotate | None = None) -> Row:
    """One ``summary.csv`` row: the run's identity, outcome and figures, and the columns
    ``annotate`` adds (:data:`DIAGNOSIS_COLUMNS`; left empty without it)."""
    cell = record.cell
    m = record.metrics
    row: Row = {
        "campaign": record.campaign,
        "cell_id": cell.id,
        "variant": cell.variant,
        "qemu_version": record.qemu.version,
        "features": cell.migration.feature,
        "workload": workload_label(cell.workload),
        "repetition": record.repetition,
        "outcome": record.outcome,
        "integrity": record.integrity.verdict,
        "timing_excluded": record.timing_excluded,
    }
    for metric in SUMMARY:
        row[metric.key] = getattr(m, metric.key)  # as stored: an integer stays one in the CSV
    row.update(_time_columns(record))
    st, disk = record.storage, record.integrity.disk
    row.update(dict.fromkeys(STORAGE_COLUMNS))
    if st is not None:
        row.update({"disk_sync_s": st.sync_s, "disk_mirrored_bytes": st.mirrored_bytes,
                    "disk_switchover_ms": st.switchover_ms, "disk_total_s": st.total_s})
    row["disk_differing_chunks"] = disk.differing_chunks if disk is not None else None
    if annotate is not None:
        row.update({k: v for k, v in annotate(record).items() if k in DIAGNOSIS_COLUMNS})
    row["error"] = (record.error or "").replace("\n", " ")[:300]
    return row


def overhead_s(record: RunRecord) -> float | None:
    """Seconds of the run that were neither its migration nor its configured observation:
    ``wall - migration - min(observation, observe_after_s)`` (integrity checks that outlast
    ``observe_after_s`` count as overhead; a run that never completed observed nothing); None
    for a record without phases (older files, runs that never started). The one definition:
    :mod:`harness.analysis.overhead` reads it from here."""
    p = record.phases
    if p is None:
        return None
    observed = min(p.observation_s or 0.0, record.cell.limits.observe_after_s)
    return max(0.0, p.wall_s - (p.migration_s or 0.0) - observed)


def _time_columns(record: RunRecord) -> Row:
    start, p = record.start, record.phases
    row: Row = {"start": start.kind if start is not None else None,
                "start_reason": _one_line(start.reason) if start is not None else None,
                "wall_s": p.wall_s if p is not None else None,
                "overhead_s": _round3(overhead_s(record))}
    for col in PHASE_COLUMNS:
        row[col] = getattr(p, col.removeprefix("phase_")) if p is not None else None
    return row


def _round3(v: float | None) -> float | None:
    return round(v, 3) if v is not None else None


def _one_line(text: str | None) -> str | None:
    return text.replace("\n", " ")[:300] if text is not None else None


def summary_rows(root: Path, annotate: Annotate | None = None) -> dict[tuple[str, int], Row]:
    """Summary rows of every run file below ``root``, keyed by (cell id, repetition)."""
    return {(rec.cell.id, rec.repetition): summary_row(rec, annotate)
            for _, rec in iter_runs(root)}


def write_summary(root: Path, rows: dict[tuple[str, int], Row] | None = None,
                  annotate: Annotate | None = None) -> Path:
    """Write ``summary.csv`` (atomic replace) from ``rows``, or rebuilt from the run files.

    A runner passes the rows it keeps so that saving one run does not re-read every run file;
    the order is that of the run files either way (cell id, then repetition).
    """
    table = summary_rows(root, annotate) if rows is None else rows
    path = root / "summary.csv"

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(SUMMARY_COLUMNS)
    for key in sorted(table):
        writer.writerow(csv_row(table[key].get(col) for col in SUMMARY_COLUMNS))
    try:
        write_atomic(path, buf.getvalue())
    except OSError as exc:
        raise folder_error(root, "summary.csv", exc) from None
    return path


def drop_summary(root: Path) -> None:
    """Remove ``summary.csv`` (best effort): one that misses a stored run must not stay behind
    when it cannot be rewritten; the next run of the campaign rebuilds it from the run files."""
    with contextlib.suppress(OSError):
        (root / "summary.csv").unlink()


def _flatten_cpu(record: RunRecord) -> Row:
    """Each side's CPU share per thread class the run had (a class no thread had is absent)."""
    out: Row = {}
    cpu = record.cpu
    for side in CPU_SIDES:
        cpu_side = getattr(cpu, side) if cpu is not None else None
        for cls, pct in (cpu_side.classes if cpu_side is not None else {}).items():
            out[cpu_column(side, cls)] = pct
    return out


def rows(runs: Iterable[RunRecord], annotate: Annotate | None = None) -> list[dict[str, object]]:
    """One flat dict per run: the summary columns (``annotate``'s diagnosis as in summary.csv),
    every metric, per-class CPU and the axes."""
    out: list[dict[str, object]] = []
    for rec in runs:
        row: dict[str, object] = dict(summary_row(rec, annotate))
        for k, v in rec.metrics.model_dump().items():
            row.setdefault(k, v)
        row.update(_flatten_cpu(rec))
        for k, v in rec.cell.axes.items():
            row[f"axis_{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        out.append(row)
    return out


#: Metrics a run carries besides the summary columns (see harness.run.migration._metrics).
EXTRA_METRIC_COLUMNS = ["qemu_mbps", "samples", "guest_stall_clock"]

#: Columns every frame of :func:`load` has, even an empty one, before any other metric and the
#: ``axis_*`` columns of the campaign's matrix.
FRAME_COLUMNS = SUMMARY_COLUMNS + EXTRA_METRIC_COLUMNS + [m.key for m in CPU]

_CATEGORY_COLUMNS = ("campaign", "variant", "features", "workload", "outcome", "integrity")
# the diagnosis's text: strings (a categorical with no value, without ``annotate``, does not
# survive parquet)
_STRING_COLUMNS = ("cell_id", "qemu_version", "error", "guest_stall_clock", "diagnosis",
                   "advice", "predicted_outcome", "start", "start_reason")
_FLOAT_COLUMNS = tuple(c for c in FRAME_COLUMNS if c not in _CATEGORY_COLUMNS + _STRING_COLUMNS
                       + ("repetition", "timing_excluded"))


def load(root: Path) -> Any:
    """All runs below ``root`` as a pandas DataFrame, one row a run, with typed columns.

    Columns: :data:`FRAME_COLUMNS` (also when the campaign has no runs), then any other metric,
    then ``axis_<name>`` per matrix axis. Figures (times, bytes, rates, counts, per-class CPU
    percentages) are float64, NaN where a run has no value; ``repetition`` is int64 and
    ``timing_excluded`` bool; outcome, integrity, variant, features, workload and campaign are
    categoricals; ids, versions and errors are strings. Any other column, axes included, is
    numeric when every value is a number, boolean when every value is a bool, else a string
    (an axis ``max-bandwidth: [100mbit, 25000000]`` is a string column).

    :raise HarnessError: ``root`` is not a folder, or a run file is unreadable (see
        :func:`load_run`).
    """
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such campaign folder")
    return frame(rec for _, rec in iter_runs(root))


def frame(runs: Iterable[RunRecord], annotate: Annotate | None = None) -> Any:
    """The DataFrame of :func:`load` for ``runs`` (the diagnosis columns filled by ``annotate``,
    empty without it)."""
    import pandas as pd

    df = pd.DataFrame(rows(runs, annotate))
    extra = [c for c in df.columns if c not in FRAME_COLUMNS]
    df = df.reindex(columns=FRAME_COLUMNS + extra)
    for col in _FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["repetition"] = df["repetition"].astype("int64")
    df["timing_excluded"] = df["timing_excluded"].astype(bool)
    for col in _CATEGORY_COLUMNS:
        df[col] = df[col].astype(object).astype("category")
    for col in _STRING_COLUMNS:
        df[col] = df[col].astype("string")
    for col in extra:
        df[col] = _typed(df[col])
    return df


def _typed(column: Any) -> Any:
    """``column`` as numbers, booleans or strings: whichever holds every value it has."""
    import pandas as pd

    values = [v for v in column if not _missing(v)]
    if values and all(isinstance(v, bool) for v in values):
        return column.astype("boolean")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pd.to_numeric(column)
    return column.map(_text).astype("string")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _text(v: Any) -> str | None:
    if _missing(v):
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def export(root: Path, fmt: str, dest: Path | None = None, annotate: Annotate | None = None
           ) -> Path:
    """Write the DataFrame of ``root`` as parquet or csv; returns the file written. ``annotate``
    fills the diagnosis columns as in summary.csv (the CLI passes the diagnosis).

    :raise HarnessError: unknown format, no run in ``root``, unreadable run file, or the file
        cannot be written.
    """
    if fmt not in ("parquet", "csv"):
        raise HarnessError(f"unknown export format {fmt!r}: use parquet or csv")
    df = frame(records(root), annotate)  # an empty folder is refused: no export
    path = dest or (root / f"runs.{fmt}")
    try:
        if fmt == "parquet":
            write_atomic(path, lambda f: df.to_parquet(f, index=False))
        else:
            text = _csv_safe(df).to_csv(index=False, lineterminator="\n")
            write_atomic(path, text)
    except OSError as exc:
        raise write_failure(path, "the export", exc, "or choose another -o FILE") from None
    return path


def _csv_safe(df: Any) -> Any:
    """``df`` with every text cell through :func:`harness.output.csv_cell`; numbers untouched
    (parquet keeps the typed frame: it is not read as formulas)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind in "biufcmM":  # numbers, booleans, times: no text inside
            continue
        out[col] = out[col].astype(object).map(csv_cell)
    return out

