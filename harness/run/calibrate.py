"""The calibration of ``migbench advise``: one short precopy run per workload and link of a
matrix, whose record carries what the model needs (calc-dirty-rate before the migration, QEMU's
throughput and zero pages in pass 0). Stored as an ordinary campaign, so ``show`` reads it."""

from __future__ import annotations

from pathlib import Path

from harness.guest.image import GuestImage
from harness.plan.models import HostsConfig, MatrixSpec
from harness.results import store
from harness.results.record import RunRecord
from harness.run.runner import Progress, run_matrix

#: Seconds of migration a calibration run gets: pass 0 and the first syncs, not the outcome.
DEFAULT_SECONDS = 10.0


def calibration_spec(spec: MatrixSpec, seconds: float) -> MatrixSpec:
    """``spec`` with one repetition of plain precopy per remaining cell, cut at ``seconds``."""
    axes = {k: v for k, v in spec.axes.items() if k not in ("feature", "variant")}
    axes["feature"] = ["precopy"]
    data = spec.model_dump(mode="json", by_alias=True)
    data.update(name=f"{spec.name}-calibration"[:64], repetitions=1, axes=axes, include=[],
                exclude=[e for e in spec.exclude if "feature" not in e and "variant" not in e])
    data["limits"]["max_time_s"] = min(spec.limits.max_time_s, seconds)
    data["limits"]["observe_after_s"] = 0
    return MatrixSpec.model_validate(data)


def calibrate(matrix_path: Path, spec: MatrixSpec, hosts_file: Path, hosts: HostsConfig,
              out: Path, seconds: float = DEFAULT_SECONDS, progress: Progress | None = None,
              image: GuestImage | None = None) -> list[RunRecord]:
    """Run the calibration campaign into ``out``; its records, by cell id."""
    run_matrix(matrix_path, calibration_spec(spec, seconds), hosts_file, hosts, out, progress,
               image)
    return sorted((rec for _, rec in store.iter_runs(out)), key=lambda r: r.cell.id)
