"""Per-thread compression throughput from real multifd runs (benchmarks/multifd-encoder.yaml)
or legacy compress runs (benchmarks/compress-encoder.yaml, QEMU 7.2).

    .venv/bin/migbench run benchmarks/multifd-encoder.yaml --out results/multifd-encoder
    .venv/bin/python benchmarks/encoder_rate.py results/multifd-encoder

One line per cell: method, level, writer pattern, and over its runs the median RAM bytes one
send thread compressed per CPU-second (:func:`harness.analysis.diagnosis.encoder_rate`), the
wire bytes per RAM byte of the pages sent whole, and the runs' range. These are the figures of
``ENCODE_RATE`` and ``WIRE_RATIO`` in harness/analysis/patterns.py.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from harness.analysis.convergence import MiB, observe
from harness.analysis.diagnosis import encoder_rate
from harness.results import store


def main(root: Path) -> None:
    cells: dict[tuple[str, int, str], list[tuple[float, float | None]]] = defaultdict(list)
    for rec in store.records(root):
        params = {**rec.cell.migration.parameters,
                  **(rec.applied.source.parameters if rec.applied else {})}
        caps = {**rec.cell.migration.capabilities,
                **(rec.applied.source.capabilities if rec.applied else {})}
        if caps.get("compress"):  # legacy compress (QEMU < 9.1): zlib, compress-level
            method, level = "compress", params.get("compress-level", 1)
        else:
            method = str(params.get("multifd-compression"))
            level = params.get(f"multifd-{method}-level")
        writer = rec.cell.workload.writer
        enc = encoder_rate(rec)
        if enc is None or writer is None or not isinstance(level, int):
            print(f"{rec.cell.id} rep {rec.repetition}: no figure ({rec.outcome})")
            continue
        cells[(method, level, writer.pattern)].append((enc.per_thread, observe(rec.timeline).ratio))
    print("method level pattern  MiB/s of RAM per CPU-second (median, min-max, runs)  wire/RAM")
    for (method, level, pattern), got in sorted(cells.items()):
        rates = [r / MiB for r, _ in got]
        ratios = [x for _, x in got if x is not None]
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "-"
        print(f"{method:6} {level:5} {pattern:8} {statistics.median(rates):8.0f} "
              f"({min(rates):.0f}-{max(rates):.0f}, {len(rates)})  {ratio}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/multifd-encoder"))
