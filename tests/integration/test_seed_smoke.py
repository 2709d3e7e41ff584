"""Issue 8 in CI: every seed matrix runs as a smoke subset (one repetition, shortest limits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import smoke
from harness.guest.image import GuestImage
from harness.plan.config import load_matrix, plan
from harness.plan.models import HostsConfig
from harness.results import store
from harness.run.runner import run_matrix

from .conftest import REPO

pytestmark = pytest.mark.integration

SEEDS = sorted((REPO / "matrices").glob("seed-*.yaml"))


def test_three_seed_matrices_exist() -> None:
    assert {p.name for p in SEEDS} >= {"seed-compression.yaml", "seed-xbzrle.yaml",
                                        "seed-autoconverge.yaml"}


@pytest.mark.parametrize("path", SEEDS, ids=[p.stem for p in SEEDS])
def test_seed_matrix_smoke(path: Path, tmp_path: Path, hosts: HostsConfig,
                           image: GuestImage) -> None:
    spec = smoke(load_matrix(path))
    cells = plan(path, spec, REPO / "hosts.yaml", hosts)
    out = tmp_path / spec.name
    run_matrix(path, spec, REPO / "hosts.yaml", hosts, out, None, image)
    runs = [r for _, r in store.iter_runs(out)]
    assert len(runs) == len(cells)
    for r in runs:
        assert r.outcome in ("completed", "not-converged", "skipped"), (r.cell.axes, r.error)
        if r.outcome == "completed" and (r.qemu.version or "").startswith("10."):
            assert r.integrity.verdict == "ok", r.integrity
