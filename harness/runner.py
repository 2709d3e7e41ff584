"""Runs a matrix: every cell x repetition on a host pair, fresh VMs each time, resumable.

A failed run is a recorded outcome and the matrix goes on. Finished runs are on disk as soon as
they finish; rerunning the same matrix into the same folder skips them. SIGTERM is turned into
KeyboardInterrupt so that Ctrl-C and a polite kill both clean up the same way.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from harness import store
from harness.config import plan
from harness.host import Host, detect_accel, make_host
from harness.image import GuestImage, ensure_image
from harness.matrix import Cell
from harness.migration import SCHEMA_VERSION, RunContext, run_migration, utc
from harness.models import HostsConfig, MatrixSpec, QemuBuild
from harness.probe import Probe, probe, unsupported_reason

REPO = Path(__file__).resolve().parent.parent


def harness_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (commit + ("-dirty" if dirty else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Progress:
    """Callbacks the CLI uses to draw progress; all optional."""

    start: Callable[[int, int], None] | None = None  # total runs, already done
    run_started: Callable[[Cell, int], None] | None = None
    state: Callable[[str], None] | None = None
    run_finished: Callable[[Cell, int, dict[str, Any]], None] | None = None


def _probe(build: QemuBuild, probes: dict[str, Probe]) -> Probe:
    key = str(build.binary)
    if key not in probes:
        probes[key] = probe(build, REPO / "build" / "probe-cache")
    return probes[key]


def skip_reason(cell: Cell, src_build: QemuBuild, dst_build: QemuBuild, src_accel: str,
                dst_accel: str, probes: dict[str, Probe]) -> str:
    """Why this cell cannot run on this pair (missing capability, no KVM ...), or ""."""
    for build, accel in ((src_build, src_accel), (dst_build, dst_accel)):
        reason = unsupported_reason(_probe(build, probes), cell.migration,
                                    detect_accel(accel).accel)
        if reason:
            return reason
    return ""


def skipped_record(cell: Cell, rep: int, campaign: str, reason: str, probes: dict[str, Probe],
                   build: QemuBuild, source: Host, destination: Host) -> dict[str, Any]:
    """The record of a run that was not attempted, with the reason."""
    now = time.time()
    p = probes.get(str(build.binary))
    return {
        "schema_version": SCHEMA_VERSION, "campaign": campaign, "cell": cell.to_dict(),
        "repetition": rep, "started_utc": utc(now), "finished_utc": utc(now),
        "outcome": "skipped", "error": reason, "integrity": "unchecked", "integrity_detail": {},
        "timing_excluded": True,
        "qemu": {"build": cell.build, "version": f"{p.version} ({p.package})" if p else None,
                 "source_binary": str(build.binary)},
        "hosts": {"source": source.facts(), "destination": destination.facts()},
        "metrics": {}, "timeline": [], "events": {}, "console": {},
    }


def run_order(cells: list[Cell], repetitions: int, order: str) -> list[tuple[Cell, int]]:
    """(cell, repetition) pairs in run order (pure).

    ``interleaved`` runs repetition 1 of every cell, then repetition 2 ..., with the variants of
    the same point next to each other (A B A B), so slow drift of the machine hits both alike.
    """
    reps = range(1, repetitions + 1)
    if order != "interleaved":
        return [(c, r) for c in cells for r in reps]
    points: dict[str, list[Cell]] = {}
    for c in cells:
        key = repr(sorted(c.axes.items())) + c.workload.model_dump_json()
        points.setdefault(key, []).append(c)
    grouped = [c for group in points.values() for c in group]
    return [(c, r) for r in reps for c in grouped]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_matrix(
    matrix_path: Path, spec: MatrixSpec, hosts_path: Path, hosts: HostsConfig, out: Path,
    progress: Progress | None = None, image: GuestImage | None = None,
) -> list[Path]:
    """Run every unfinished run of the matrix into ``out`` (the campaign folder).

    :raise ConfigError: before anything boots, for a matrix or hosts problem.
    """
    cells = plan(matrix_path, spec, hosts_path, hosts)
    progress = progress or Progress()
    pair_name, pair = next(iter(hosts.pairs.items()))
    if image is None:
        image = ensure_image(REPO / "build" / "image",
                             fio=any(c.workload.fio is not None for c in cells))
    out.mkdir(parents=True, exist_ok=True)
    source = make_host("source", pair.source)
    destination = make_host("destination", pair.destination)
    todo = run_order(cells, spec.repetitions, spec.order)
    done_before = sum(1 for c, r in todo if store.exists(out, c.id, r))
    if progress.start:
        progress.start(len(todo), done_before)
    old = signal.signal(signal.SIGTERM, _sigterm)
    written: list[Path] = []
    commit = harness_commit()
    probes: dict[str, Probe] = {}
    try:
        for cell, rep in todo:
            if store.exists(out, cell.id, rep):
                continue
            if progress.run_started:
                progress.run_started(cell, rep)
            src_build = hosts.build_for(pair.source, cell.build)
            dst_build = hosts.build_for(pair.destination, cell.build)
            assert src_build is not None and dst_build is not None  # checked by plan()
            reason = skip_reason(cell, src_build, dst_build, pair.source.accel,
                                 pair.destination.accel, probes)
            if reason:
                record = skipped_record(cell, rep, spec.name, reason, probes, src_build,
                                        source, destination)
                record["harness"] = {"commit": commit, "matrix_file": str(matrix_path),
                                     "pair": pair_name}
                written.append(store.write_run(out, record))
                store.write_summary(out)
                if progress.run_finished:
                    progress.run_finished(cell, rep, record)
                continue
            workdir = pair.source.workdir / spec.name / f"{cell.id}-{rep}-{int(time.time())}"
            ctx = RunContext(
                cell=cell, repetition=rep, campaign=spec.name, source=source,
                destination=destination, source_build=src_build, destination_build=dst_build,
                image=image, workdir=workdir, on_state=progress.state,
            )
            try:
                record = run_migration(ctx)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            record["harness"] = {"commit": commit, "matrix_file": str(matrix_path),
                                 "pair": pair_name}
            written.append(store.write_run(out, record))
            store.write_summary(out)
            if progress.run_finished:
                progress.run_finished(cell, rep, record)
    finally:
        signal.signal(signal.SIGTERM, old)
        source.close()
        destination.close()
        if (out / "summary.csv").exists() or written:
            store.write_summary(out)
    return written
