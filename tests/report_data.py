"""Synthetic run records for report tests and benchmarks, built from one real record.

``tests/data/run-xbzrle.json`` is a real QEMU 10.0 xbzrle run of the demo matrix (console trimmed).
"""

from __future__ import annotations

import copy
import json
import random
from functools import cache
from pathlib import Path
from typing import Any

from harness.results.record import RunRecord, upgrade

DATA = Path(__file__).resolve().parent / "data"
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@cache
def _fixture() -> str:
    return (DATA / "run-xbzrle.json").read_text()


def real_record() -> dict[str, Any]:
    rec: dict[str, Any] = json.loads(_fixture())
    return rec


def make_run(
    *, cell_id: str = "c0ffee000001", variant: str = "default",
    axes: dict[str, Any] | None = None, rep: int = 1, total_ms: float | None = 7600.0,
    downtime_ms: float | None = 3.0, outcome: str = "completed", integrity: str = "ok",
    timing_excluded: bool = False, cpu: dict[str, Any] | None = None, error: str | None = None,
    base: dict[str, Any] | None = None, ping_lost: int | None = None,
) -> dict[str, Any]:
    """A record like the fixture with the given identity and headline figures, as the JSON of
    its (version 1) file: a test may change it further before :func:`harness.results.record.upgrade`
    (see :func:`run`)."""
    rec = copy.deepcopy(base) if base is not None else real_record()
    rec["cell"]["id"] = cell_id
    rec["cell"]["variant"] = variant
    rec["cell"]["axes"] = dict(axes if axes is not None else {"feature": "xbzrle"})
    rec["repetition"] = rep
    rec["outcome"] = outcome
    rec["integrity"] = integrity
    rec["timing_excluded"] = timing_excluded
    rec["error"] = error
    m = rec["metrics"]
    # QEMU counts milliseconds in whole numbers: so does the record
    m["total_time_ms"] = round(total_ms) if total_ms is not None and outcome == "completed" \
        else None
    m["downtime_ms"] = round(downtime_ms) if downtime_ms is not None and outcome == "completed" \
        else None
    if total_ms:
        m["throughput_mbps"] = round(m["transferred_bytes"] * 8 / total_ms / 1000, 2)
    if ping_lost is not None:
        m["ping_lost"] = ping_lost
    if cpu is not None:
        rec["cpu"] = cpu
    if outcome != "completed":
        rec["final"] = {"status": "cancelled"}
    return rec


def run(**kw: Any) -> RunRecord:
    """:func:`make_run` as the run record readers take."""
    return upgrade(make_run(**kw))


def cpu_block(scale: float = 1.0) -> dict[str, Any]:
    classes = {"main": 3.0, "migration": 42.0, "compress": 0.0, "decompress": 0.0,
               "multifd_send": 0.0, "multifd_recv": 0.0, "vcpu": 97.0, "other": 1.0}

    def side(factor: float) -> dict[str, Any]:
        return {"classes": {k: round(v * factor, 1) for k, v in classes.items()},
                "window_s": 7.6, "samples": 76}

    return {"hz": 10.0, "window": [0.0, 7.6], "source": side(scale),
            "destination": side(scale / 2)}


def campaign(n_cells: int, reps: int, seed: int = 1) -> list[RunRecord]:
    """``n_cells`` x ``reps`` runs over two axes and two variants, with every kind of outcome."""
    rnd = random.Random(seed)
    base = real_record()
    out = []
    bandwidths = ["100mbit", "200mbit", "500mbit", "1gbit", "2gbit"]
    for c in range(n_cells):
        variant = "q72" if c % 2 else "q10"
        axes = {"feature": ["precopy", "xbzrle", "multifd", "postcopy", "auto-converge"][
            (c // 2) % 5], "max-bandwidth": bandwidths[(c // 10) % 5]}
        if c >= 50:
            axes["writer.rate_mib_s"] = 8 * (1 + c // 50)
        cid = f"{c:012x}"
        for r in range(1, reps + 1):
            kind = (c * 7 + r) % 23
            outcome, integrity, error = "completed", "ok", None
            if c % 10 == 3:
                outcome, error = "not-converged", "did not converge within max_time_s=25"
            elif c % 17 == 5:
                outcome, error = "skipped", "xbzrle needs QEMU >= 99 (not in 10.0.2)"
            elif kind == 0:
                integrity = "corrupted"
            total = 7600.0 * (1 + 0.3 * (c % 5)) * rnd.uniform(0.95, 1.05)
            out.append(upgrade(make_run(
                cell_id=cid, variant=variant, axes=axes, rep=r, total_ms=round(total),
                downtime_ms=round(rnd.uniform(2, 30), 1), outcome=outcome, integrity=integrity,
                error=error, base=base, cpu=cpu_block(rnd.uniform(0.9, 1.1)),
                ping_lost=rnd.randint(0, 5),
            )))
    return out
