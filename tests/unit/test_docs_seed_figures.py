"""Every number docs/reproducing-the-talk.md quotes from the `make seed` run of
matrices/seed-compress-bound.yaml (the tables between ``<!-- checked: seed-compress-bound -->`` and
``<!-- /checked -->``) is in that run's committed CSVs (docs/data/seed-compress-bound/: the report's
per-cell tables and the campaign's summary.csv), at the precision the docs print it.

A column is checked against the cell whose 12-hex id its header names in backticks; columns
naming no cell (the talk's own figures, labels) are not ours to check."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reproducing-the-talk.md"
DATA = ROOT / "docs" / "data" / "seed-compress-bound"
MARK = "seed-compress-bound"
NUMBER = re.compile(r"\d+(?:\.\d+)?")
CELL = re.compile(r"`([0-9a-f]{12})`")
#: small counts a table may state (runs of 3, threads 1..4, thread indexes 0..3)
COUNTS = {0, 1, 2, 3, 4}


def checked_tables(text: str, mark: str = MARK) -> list[list[list[str]]]:
    """The markdown tables between the checked markers, as rows of cells (header first)."""
    tables: list[list[list[str]]] = []
    for block in re.findall(rf"<!-- checked: {re.escape(mark)} -->(.*?)<!-- /checked -->", text,
                            re.S):
        current: list[list[str]] = []
        for line in block.splitlines() + [""]:
            if line.startswith("|"):
                if not set(line) <= set("|- "):
                    current.append([c.strip() for c in line.strip().strip("|").split("|")])
            elif current:
                tables.append(current)
                current = []
    return tables


def _floats(cells: list[str]) -> list[float]:
    out = []
    for c in cells:
        try:
            out.append(float(c.replace(",", "")))
        except ValueError:
            continue
    return out


def cell_values(cell: str) -> list[float]:
    """Every number of ``cell`` in the committed CSVs: its report tables and its summary rows."""
    files = sorted((DATA / "cells").glob(f"{cell}-*.csv"))
    assert files, f"no committed CSVs for cell {cell} under {DATA}"
    values: list[float] = []
    for f in files:
        with f.open(newline="") as fh:
            for row in csv.reader(fh):
                values += _floats(row)
    with (DATA / "summary.csv").open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec["cell_id"] == cell:
                values += _floats(list(rec.values()))
    return values


def quoted_matches(num: str, values: list[float]) -> bool:
    """A figure printed with d decimals is one of ``values`` rounded to d decimals."""
    d = len(num.split(".")[1]) if "." in num else 0
    want = float(num)
    return (d == 0 and int(want) in COUNTS) or any(
        abs(round(v, d) - want) < 10 ** -(d + 3) for v in values)


def check(text: str) -> int:
    """Checks every quoted figure; returns how many were checked."""
    tables = checked_tables(text)
    assert tables, f"no tables between <!-- checked: {MARK} --> markers in {DOC}"
    quoted = 0
    for table in tables:
        header, *rows = table
        for i, title in enumerate(header):
            m = CELL.search(title)
            if m is None:
                continue
            values = cell_values(m.group(1))
            for row in rows:
                for num in NUMBER.findall(row[i]):
                    quoted += 1
                    assert quoted_matches(num, values), \
                        f"{row[0]!r}, {title!r}: {num} is not a figure of cell {m.group(1)}"
    return quoted


def test_every_seed_figure_we_quote_is_in_the_committed_csvs() -> None:
    assert check(DOC.read_text()) > 40


def test_the_check_fails_on_a_figure_that_is_not_in_the_csvs() -> None:
    text = DOC.read_text()
    table = checked_tables(text)[0]
    header, *rows = table
    col = next(i for i, t in enumerate(header) if CELL.search(t))
    row = next(r for r in rows if re.search(r"\d\.\d", r[col]))
    num = re.search(r"\d+\.\d+", row[col]).group(0)  # type: ignore[union-attr]
    wrong = f"{float(num) + 977:.{len(num.split('.')[1])}f}"
    with pytest.raises(AssertionError, match="is not a figure of cell"):
        check(text.replace(f"| {row[col]} |", f"| {row[col].replace(num, wrong, 1)} |", 1))
