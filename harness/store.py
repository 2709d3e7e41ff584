"""Results on disk: ``results/<campaign>/<cell-id>/<repetition>.json`` plus ``summary.csv``.

Run files are versioned (``schema_version``), written atomically and never overwritten: a rerun
of a finished run is skipped by the runner, and writing one that exists is an error. The summary
is rebuilt from the run files, so it can never disagree with them.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, StoreError
from harness.output import csv_cell, csv_row, write_atomic, write_failure
from harness.sampling.cpu import CLASSES as CPU_CLASSES
from harness.workload import label as workload_label

SUMMARY_COLUMNS = [
    "campaign", "cell_id", "variant", "qemu_version", "features", "workload", "repetition",
    "outcome", "integrity", "timing_excluded", "total_time_ms", "downtime_ms", "host_pause_ms",
    "setup_time_ms", "transferred_bytes", "throughput_mbps", "dirty_sync_count",
    "guest_max_stall_ms", "guest_max_stall_guest_clock_ms", "guest_visible_downtime_ms",
    "ping_lost", "ping_max_gap_ms", "ping_rtt_p99_ms", "fio_iops_before", "fio_iops_during",
    "fio_lat_p99_us_before", "fio_lat_p99_us_during", "error",
]


#: A cell id as :func:`harness.matrix.cell_id` makes it: 12 hex digits of a SHA-256. Ids name
#: folders and report pages, so one read from a file must match before it is used as either.
CELL_ID = re.compile(r"[0-9a-f]{12}\Z")

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


def write_run(root: Path, record: dict[str, Any]) -> Path:
    """Write one run record atomically into the campaign folder ``root``; never overwrite.

    ``root`` must exist: a campaign folder removed during a run is not made again, since the
    runs it held would be missing from it. Nothing is left behind when the write fails.

    :raise HarnessError: when the run file already exists.
    :raise StoreError: the file cannot be written (full, read-only or vanished folder).
    """
    path = run_path(root, record["cell"]["id"], record["repetition"])
    what = f"run file {path.relative_to(root)}"
    made_dir = False
    try:
        if not path.parent.is_dir():
            path.parent.mkdir()
            made_dir = True
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    except OSError as exc:
        raise folder_error(root, what, exc) from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and fails if the file exists: never overwrite
    except FileExistsError:
        raise HarnessError(f"{path} exists already; results are never overwritten") from None
    except OSError as exc:
        if made_dir:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
                path.parent.rmdir()
        raise folder_error(root, what, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return path


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """Bring an older record up to the current schema (version 1 is the first)."""
    version = record.get("schema_version")
    if version != 1:
        raise HarnessError(f"unsupported result schema_version {version!r}")
    return record


def iter_runs(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """All run records below ``root`` (a campaign folder), in a stable order.

    :raise HarnessError: a run file cannot be read, is not valid JSON or has an unknown schema
        (one line naming the file and the fix).
    """
    paths = sorted(root.glob("*/*.json"), key=lambda p: (p.parent.name, _rep_number(p)))
    for path in paths:
        if path.name.startswith("."):
            continue
        record = load_run(path)
        if record["cell"]["id"] != path.parent.name:
            raise HarnessError(f"{path}: cell.id {record['cell']['id']!r} differs from its folder "
                               f"{path.parent.name!r}: move the file to its cell's folder or "
                               "delete it")
        yield path, record


def _rep_number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        return -1


def load_run(path: Path) -> dict[str, Any]:
    """One run record, upgraded to the current schema.

    :raise HarnessError: the file cannot be read, is not a JSON object, or has an unknown schema.
    """
    try:
        with open(path) as f:
            record = json.load(f)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read result: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # write_run never leaves a partial file, so this one was damaged after the run.
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise HarnessError(f"{path}: cannot read result: not valid JSON{where}: "
                           "delete it to rerun that repetition") from exc
    if not isinstance(record, dict):
        raise HarnessError(f"{path}: cannot read result: not a run record (a JSON "
                           f"{type(record).__name__}): delete it to rerun that repetition")
    try:
        record = upgrade(record)
    except HarnessError as exc:
        raise HarnessError(f"{path}: {exc}") from exc
    problem = _shape_problem(record)
    if problem:
        raise HarnessError(f"{path}: cannot read result: {problem}: not a run record migbench "
                           "wrote (or edited since): delete it to rerun that repetition")
    return record


def _shape_problem(record: dict[str, Any]) -> str:
    """What makes ``record`` unusable (its identity is used as folder, page and link names and
    as table keys), or ""."""
    cell = record.get("cell")
    if not isinstance(cell, dict):
        return "cell is not an object"
    if not valid_cell_id(cell.get("id")):
        return f"cell.id {str(cell.get('id'))!r:.40} is not a cell id (12 hex digits)"
    rep = record.get("repetition")
    if isinstance(rep, bool) or not isinstance(rep, int) or rep < 1:
        return f"repetition {rep!r:.20} is not a positive integer"
    for key in ("outcome", "integrity"):
        if not isinstance(record.get(key), str):
            return f"{key} is not a string"
    if not isinstance(cell.get("variant"), str):
        return "cell.variant is not a string"
    return ""


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    cell = record["cell"]
    m = record.get("metrics", {})
    row = {
        "campaign": record.get("campaign"),
        "cell_id": cell["id"],
        "variant": cell["variant"],
        "qemu_version": (record.get("qemu") or {}).get("version"),
        "features": cell["migration"]["feature"],
        "workload": _workload_label(cell),
        "repetition": record["repetition"],
        "outcome": record["outcome"],
        "integrity": record["integrity"],
        "timing_excluded": record.get("timing_excluded", False),
        "error": (record.get("error") or "").replace("\n", " ")[:300],
    }
    for col in SUMMARY_COLUMNS:
        if col not in row:
            row[col] = m.get(col)
    return row


def _workload_label(cell: dict[str, Any]) -> str:
    return workload_label(cell.get("workload"))


def summary_rows(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Summary rows of every run file below ``root``, keyed by (cell id, repetition)."""
    return {(rec["cell"]["id"], int(rec["repetition"])): summary_row(rec)
            for _, rec in iter_runs(root)}


def write_summary(root: Path, rows: dict[tuple[str, int], dict[str, Any]] | None = None) -> Path:
    """Write ``summary.csv`` (atomic replace) from ``rows``, or rebuilt from the run files.

    A runner passes the rows it keeps so that saving one run does not re-read every run file;
    the order is that of the run files either way (cell id, then repetition).
    """
    table = summary_rows(root) if rows is None else rows
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


CPU_SIDES = {"source": "src", "destination": "dst"}


def cpu_column(side: str, cls: str) -> str:
    """The frame column of one side's CPU use by one thread class, e.g. ``cpu_src_migration_pct``
    (percent of one CPU over the migration window)."""
    return f"cpu_{CPU_SIDES[side]}_{cls}_pct"


def _flatten_cpu(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu = record.get("cpu") or {}
    for side in CPU_SIDES:
        classes = ((cpu.get(side) or {}).get("classes")) or {}
        for cls, pct in classes.items():
            out[cpu_column(side, cls)] = pct
    return out


def rows(root: Path) -> list[dict[str, Any]]:
    """One flat dict per run: the summary columns, every metric, per-class CPU and the axes."""
    out = []
    for _, rec in iter_runs(root):
        row = summary_row(rec)
        for k, v in (rec.get("metrics") or {}).items():
            row.setdefault(k, v)
        row.update(_flatten_cpu(rec))
        for k, v in (rec["cell"].get("axes") or {}).items():
            row[f"axis_{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        out.append(row)
    return out


#: Metrics a run carries besides the summary columns (see harness.migration._metrics).
EXTRA_METRIC_COLUMNS = ["qemu_mbps", "samples", "guest_stall_clock"]

#: Columns every frame of :func:`load` has, even an empty one, before any other metric and the
#: ``axis_*`` columns of the campaign's matrix.
FRAME_COLUMNS = SUMMARY_COLUMNS + EXTRA_METRIC_COLUMNS + [
    cpu_column(side, cls) for side in CPU_SIDES for cls in CPU_CLASSES]

_CATEGORY_COLUMNS = ("campaign", "variant", "features", "workload", "outcome", "integrity")
_STRING_COLUMNS = ("cell_id", "qemu_version", "error", "guest_stall_clock")
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
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such campaign folder")
    records = rows(root)
    df = pd.DataFrame(records)
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


def export(root: Path, fmt: str, dest: Path | None = None) -> Path:
    """Write the DataFrame of ``root`` as parquet or csv; returns the file written.

    :raise HarnessError: unknown format, unreadable run file, or the file cannot be written.
    """
    if fmt not in ("parquet", "csv"):
        raise HarnessError(f"unknown export format {fmt!r}: use parquet or csv")
    df = load(root)
    path = dest or (root / f"runs.{fmt}")
    try:
        if fmt == "parquet":
            write_atomic(path, lambda f: df.to_parquet(f, index=False), mode=0o644)
        else:
            text = _csv_safe(df).to_csv(index=False, lineterminator="\n")
            write_atomic(path, text, mode=0o644)
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
