"""Every number docs/reproducing-the-talk.md quotes as ours in its checked tables (between
``<!-- checked: compress-bound -->`` and ``<!-- /checked -->``) is one the report computes from
the real runs in tests/data/compress-bound: a run's total time or downtime, a figure of the
feature statistics or of the per-thread CPU table, or a count of runs or threads."""

from __future__ import annotations

import re
from pathlib import Path

from harness.report.featurestats import feature_stats
from harness.report.threads import thread_table
from tests.record_edit import WAIT_FALSE, WAIT_TRUE, cell_runs
from tests.unit.test_docs_seed_figures import checked_tables as checked_between

DOC = Path(__file__).resolve().parents[2] / "docs" / "reproducing-the-talk.md"
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def checked_tables(text: str) -> list[list[list[str]]]:
    """The markdown tables between the ``compress-bound`` checked markers."""
    return checked_between(text, "compress-bound")


def computed(cell: str) -> set[str]:
    """Every number the report gives for ``cell``: its runs' times and its text tables."""
    runs = cell_runs(cell)
    text = "\n".join([*feature_stats(runs).lines(), *thread_table([("x", runs)]).lines()])
    nums = set(NUMBER.findall(text))
    for r in runs:
        nums |= {str(r.metrics.total_time_ms), str(r.metrics.downtime_ms)}
    return nums | {str(n) for n in range(5)}  # counts: runs of 3, 4 threads, compress 0..3


def test_every_figure_we_quote_comes_from_the_runs() -> None:
    tables = checked_tables(DOC.read_text())
    assert len(tables) == 2  # slide 10/7 and slide 9
    cells = {"wait true": computed(WAIT_TRUE), "wait false": computed(WAIT_FALSE)}
    quoted = 0
    for table in tables:
        header, *rows = table
        for i, title in enumerate(header):
            which = next((k for k in cells if title.startswith("ours") and k in title), None)
            if which is None:
                continue
            for row in rows:
                for num in NUMBER.findall(row[i]):
                    quoted += 1
                    assert num in cells[which], f"{row[0]!r}, {title!r}: {num} is not a figure " \
                                                f"of the {which} runs"
    assert quoted > 40


def test_the_check_fails_on_a_figure_that_is_not_ours() -> None:
    text = DOC.read_text().replace("128757 (128474-129171)", "128758 (128474-129171)")
    tables = checked_tables(text)
    row = next(r for r in tables[0] if r[0].startswith("compression busy"))
    assert "128758" not in computed(WAIT_FALSE) and "128758" in row[4]
