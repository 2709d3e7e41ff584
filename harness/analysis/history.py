"""The nightly history on disk, keyed by machine identity, and how cells match across nights.

Layout::

    HISTORY/
      <identity-key>/                 one folder per machine identity (see :func:`identity_of`)
        identity.json                 the identity the key hashes
        <YYYYmmddTHHMMSSZ>/           one night: a campaign folder (<cell-id>/<rep>.json,
          night.json                  summary.csv) plus what the nightly command wrote about it
          verdict.json
        report/                       HTML report of the latest night + trend.html
      .incoming/<stamp>/              a night being run (its identity is known only afterwards)

**Identity** is what makes two nights comparable: CPU model, kernel and accelerator of both hosts,
each QEMU build's version and binary path (the package string is part of the version), and the
guest image digest. The host name is left out on purpose, so a CI runner that gets a new name
keeps its history. Nights of another identity are never compared; :func:`differences` says what
differs.

**Cell coordinates** match a cell across nights: matrix name, variant, axes, workload and guest,
*not* the cell id. The id hashes every migration parameter, so editing the matrix's fixed
``migration:`` block (e.g. a lower ``max-bandwidth``) keeps the coordinates and the cell is still
compared with its past; :func:`parameter_changes` lists such edits so the verdict can say so.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import HarnessError, one_line
from harness.inputs import read_text
from harness.output import write_atomic, write_failure
from harness.plan import matrix
from harness.results import store
from harness.results.record import RunRecord

Record = RunRecord
# The history's own JSON files, read through harness.inputs (a FIFO planted there must not
# hang a night); a verdict of a large matrix is bigger than a matrix file may be.
_MAX_JSON = 64 * 1024**2
INCOMING = ".incoming"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
HOST_FACTS = ("cpu_model", "kernel", "accel")


# ---------------------------------------------------------------------------------------------
# Identity (pure)


def identity_of(records: Iterable[Record]) -> dict[str, Any]:
    """The machine identity of a night's records (union over the runs).

    Skipped runs contribute host facts and QEMU builds; the image digest comes from any run that
    booted a guest.
    """
    hosts: dict[str, dict[str, object]] = {}
    versions: dict[str, str | None] = {}
    binaries: dict[str, set[str]] = {}
    build_ids: dict[str, set[str]] = {}
    images: set[str] = set()
    for rec in records:
        for role, facts in (("source", rec.hosts.source), ("destination", rec.hosts.destination)):
            hosts.setdefault(role, {k: getattr(facts, k) for k in HOST_FACTS})
        q = rec.qemu
        name = q.build or rec.cell.build or "?"
        if not versions.get(name):
            versions[name] = q.version or None
        binaries.setdefault(name, set()).update(
            b for b in (q.source_binary, q.destination_binary) if b)
        build_ids.setdefault(name, set()).update(
            b for b in (q.source_build_id, q.destination_build_id) if b)
        if rec.image is not None and rec.image.digest:
            images.add(rec.image.digest)
    builds = {name: {"version": versions[name], "binaries": sorted(binaries[name]),
                     "build_ids": sorted(build_ids[name])} for name in versions}
    return {"hosts": dict(sorted(hosts.items())), "qemu": dict(sorted(builds.items())),
            "image": sorted(images)[0] if len(images) == 1 else sorted(images)}


def identity_key(ident: dict[str, Any]) -> str:
    """A short, stable folder name for an identity: first CPU word + a hash."""
    digest = hashlib.sha256(matrix.canonical(ident).encode()).hexdigest()[:12]
    accel = next((str(h.get("accel")) for h in ident.get("hosts", {}).values() if h), "x")
    # The key is a folder name and the accelerator comes from the records: a word, or "x".
    return f"{accel if re.fullmatch(r'[a-z0-9]{1,16}', accel) else 'x'}-{digest}"


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (lists become one comma-separated value)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        return {prefix: ", ".join(str(x) for x in obj)}
    return {prefix: str(obj)}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two identities, one line per field: ``key: old -> new``."""
    a, b = flatten(old), flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}")
    return out


# ---------------------------------------------------------------------------------------------
# Cell coordinates (pure)


def coordinate_key(rec: Record) -> str:
    """The cell's coordinates (:func:`harness.plan.matrix.coordinate_key`): a night's key for it."""
    return matrix.coordinate_key(rec.cell)


def coordinate_label(rec: Record) -> str:
    cell = rec.cell
    axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items()) or "base"
    return f"{cell.variant}: {axes}"


def group_by_cell(records: Iterable[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for rec in records:
        out.setdefault(coordinate_key(rec), []).append(rec)
    return out


def _params(rec: Record) -> dict[str, str]:
    mig = rec.cell.migration
    flat = flatten({"capabilities": mig.capabilities, "parameters": mig.parameters})
    flat["build"] = rec.cell.build
    flat["qemu_args"] = str(list(rec.cell.variant_spec.qemu_args))
    return flat


def parameter_changes(old: Sequence[Record], new: Sequence[Record]) -> list[str]:
    """Settings of the same cell coordinates that differ between two nights."""
    if not old or not new:
        return []
    a, b = _params(old[0]), _params(new[0])
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


# ---------------------------------------------------------------------------------------------
# The history on disk


@dataclass(frozen=True)
class NightDir:
    key: str
    stamp: str
    path: Path

    def records(self) -> list[Record]:
        return [rec for _, rec in store.iter_runs(self.path)]

    def verdict(self) -> dict[str, Any] | None:
        """The night's verdict.json; None when it is missing, unreadable, or not of the shape
        the trend reads (an edited or damaged file: the trend then marks nothing that night)."""
        p = self.path / "verdict.json"
        if not p.exists():
            return None
        try:
            data = json.loads(read_text(p, "verdict", _MAX_JSON))
            _StoredVerdict.model_validate(data)
        except (HarnessError, json.JSONDecodeError, RecursionError, ValidationError):
            return None
        assert isinstance(data, dict)
        return data


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _StoredRow(_Open):
    verdict: str | None = None
    metric: str | None = None
    reason: str | None = None
    scale: float | None = None
    unit: str | None = None


class _StoredCell(_Open):
    key: str | None = None
    results: list[_StoredRow] = []
    notes: list[str] = []


class _StoredVerdict(_Open):
    """What :func:`harness.report.trend.build_trend` reads of an earlier night's verdict."""

    cells: list[_StoredCell] = []


def utc_stamp(now: float | None = None) -> str:
    return time.strftime(STAMP_FORMAT, time.gmtime(time.time() if now is None else now))


def incoming_dir(history: Path, stamp: str) -> Path:
    """A fresh folder for a night being run.

    :raise StoreError: it cannot be made (read-only or full history folder ...).
    """
    path = history / INCOMING / stamp
    n = 1
    while path.exists():
        n += 1
        path = history / INCOMING / f"{stamp}-{n}"
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise write_failure(f"history folder {history}", f"{path.relative_to(history)}", exc,
                            "or choose another --history") from None
    return path


def file_night(history: Path, staging: Path, records: Sequence[Record]) -> NightDir:
    """Move a finished night from ``.incoming`` under its identity; return where it went.

    :raise HarnessError: when the night has no run records (nothing identifies it).
    :raise StoreError: the history folder cannot take it (the night stays in ``.incoming``).
    """
    if not records:
        raise HarnessError(f"{staging}: the night produced no run records")
    ident = identity_of(records)
    key = identity_key(ident)
    folder = history / key
    id_file = folder / "identity.json"
    stamp = staging.name
    dest = folder / stamp
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            write_atomic(id_file, json.dumps(ident, indent=1, sort_keys=True) + "\n")
        n = 1
        while dest.exists():
            n += 1
            dest = folder / f"{stamp}-{n}"
        shutil.move(str(staging), str(dest))  # a rename when both are on one file system
    except OSError as exc:
        raise write_failure(f"history folder {history}", f"the night into {key}/ (it stays in "
                            f"{staging})", exc, "or choose another --history") from None
    return NightDir(key, dest.name, dest)


def nights(history: Path, key: str) -> list[NightDir]:
    """The nights of one identity, oldest first (stamps sort chronologically)."""
    folder = history / key
    if not folder.is_dir():
        return []
    return [NightDir(key, p.name, p) for p in sorted(folder.iterdir())
            if p.is_dir() and p.name[:1].isdigit()]


def identities(history: Path) -> dict[str, dict[str, Any]]:
    """Every identity in the history: key -> identity."""
    out: dict[str, dict[str, Any]] = {}
    if not history.is_dir():
        return out
    for p in sorted(history.iterdir()):
        f = p / "identity.json"
        if p.is_dir() and not p.name.startswith(".") and f.exists():
            try:
                out[p.name] = json.loads(read_text(f, "identity", _MAX_JSON))
            except (json.JSONDecodeError, RecursionError) as exc:
                raise HarnessError(f"{f}: unreadable identity file: {one_line(str(exc), 120)}"
                                   ) from None
    return out


def closest_other(history: Path, key: str, matrix: str) -> tuple[str, dict[str, Any], str] | None:
    """The most recent night of *another* identity that ran ``matrix``: (key, identity, stamp).

    Used to say what differs when there is no baseline with the same identity.
    """
    best: tuple[str, dict[str, Any], str] | None = None
    for other, ident in identities(history).items():
        if other == key:
            continue
        for night in reversed(nights(history, other)):
            meta = night.path / "night.json"
            ran = None
            if meta.exists():
                try:
                    ran = json.loads(read_text(meta, "night", _MAX_JSON)).get("matrix")
                except (HarnessError, json.JSONDecodeError, RecursionError, AttributeError):
                    ran = None
            if ran in (None, matrix):
                if best is None or night.stamp > best[2]:
                    best = (other, ident, night.stamp)
                break
    return best
