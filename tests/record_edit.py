"""Real run records for the report's pure modules, and edits of them that stay valid records.

Every edited record goes back through :func:`harness.results.record.loads`, so a test can only build
what a reader could meet in a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.results.record import RunRecord, dump, loads, read

DATA = Path(__file__).resolve().parent / "data"
COMPRESS_72 = DATA / "v1/8fcf85a3052a/1.json"  # 7.2 legacy compress, 2 threads
MULTIFD_100 = DATA / "v1/615439fa7f3c/1.json"  # 10.0 multifd, 2 channels
XBZRLE_72 = DATA / "v1/e69a149952cd/1.json"
NOT_CONVERGED = DATA / "v1/ebde118b7008/1.json"  # 10.0 precopy, cancelled at 12 s
BOUND = DATA / "compress-bound"
WAIT_TRUE = "bf157b8d9d23"  # 7.2, 4 compress threads, compress-wait-thread true, 3 runs
WAIT_FALSE = "881a6a0446c9"  # the same with false
CANCELLED_1T = "a3036c449ed1"  # 1 thread, wait true: not-converged


def cell_runs(cell: str) -> list[RunRecord]:
    return [read(p) for p in sorted((BOUND / cell).glob("*.json"))]


def bound_runs() -> list[RunRecord]:
    return [read(p) for p in sorted(BOUND.glob("*/*.json"))]


def edit(rec: RunRecord, changes: dict[str, Any]) -> RunRecord:
    """``rec`` with each dotted path (``cell.axes``, ``cpu.source.threads``) set to its value."""
    raw = json.loads(dump(rec))
    for path, value in changes.items():
        node = raw
        *head, last = path.split(".")
        for key in head:
            node = node[key]
        node[last] = value
    return loads(json.dumps(raw))


def threads(*spec: tuple[int, str, str, float]) -> list[dict[str, Any]]:
    """A side's ``threads`` list from (tid, name, class, pct)."""
    return [{"tid": tid, "comm": comm, "class": cls, "pct": pct} for tid, comm, cls, pct in spec]


def with_threads(rec: RunRecord, source: list[dict[str, Any]] | None,
                 destination: list[dict[str, Any]] | None = None) -> RunRecord:
    """``rec`` whose CPU sides hold these threads (None: that side was not sampled)."""
    def side(ths: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        return None if ths is None else {"threads": ths, "window_s": 5.0, "samples": 50,
                                         "classes": {}}
    return edit(rec, {"cpu": {"hz": 10.0, "window": [0.0, 5.0], "source": side(source),
                              "destination": side(destination)}})
