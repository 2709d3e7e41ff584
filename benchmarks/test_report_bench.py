"""Cost of `migbench report` on a 500-run campaign (50 cells x 10 repetitions, synthetic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report.model import build_report
from harness.report.render import render
from tests.report_data import campaign

N_CELLS, REPS = 50, 10


def test_report_500_runs(benchmark: Any, tmp_path: Path) -> None:
    records = campaign(N_CELLS, REPS)
    assert len(records) == 500
    base = [r for r in records if r.cell.variant == "q72"]
    out = tmp_path / "report"

    def run() -> list[Path]:
        rep = build_report(records, title="bench", baseline_variant="q72")
        return render(rep, out)

    pages = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    assert len(pages) == N_CELLS + 2 and base
    largest = max(pages, key=lambda p: p.stat().st_size)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    benchmark.extra_info.update(largest_page=largest.name, largest_page_bytes=largest.stat().st_size,
                                folder_bytes=total, pages=len(pages))
    print(f"\n500-run report: {benchmark.stats.stats.median:.2f} s median; largest page "
          f"{largest.relative_to(out)} {largest.stat().st_size / 1024:.0f} KiB; "
          f"folder {total / 1024**2:.1f} MiB")
