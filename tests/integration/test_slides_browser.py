"""A before/after slide page and a cell page with the per-thread and feature tables, in real
headless Chromium (the driver and checks of test_report_browser): both info migrate blocks side
by side, the tables rendered, the feature timeline drawn, and no request leaving the folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report import make_report
from tests.record_edit import BOUND, WAIT_FALSE, WAIT_TRUE

from .test_report_browser import _check_offline, _load, driver, no_leftover_qemu, pytestmark

__all__ = ["driver", "no_leftover_qemu", "pytestmark"]


@pytest.fixture(scope="module")
def report_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="mb-slides-"))
    make_report(BOUND, tmp, slide_specs=[f"{WAIT_TRUE}..{WAIT_FALSE}"])
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def test_slide_page_shows_both_blocks_and_tables_offline(driver: Any, report_dir: Path) -> None:
    page = report_dir / "slides" / f"{WAIT_TRUE}-{WAIT_FALSE}.html"
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(page.as_uri())
    _check_offline(driver, page)
    blocks = driver.execute_script(
        "return ['block-before', 'block-after'].map(id => {"
        " var e = document.getElementById(id); var r = e.getBoundingClientRect();"
        " return [e.querySelector('pre.info').innerText, r.left, r.top, r.width]; })")
    (before, left_b, top_b, width_b), (after, left_a, top_a, _) = blocks
    assert "Migration status" in before and "compression busy" in after
    assert "129171" in after or "128757" in after  # wait false counted busy pages
    # side by side: the after block starts right of the before block, on the same row
    assert left_a >= left_b + width_b - 1 and abs(top_a - top_b) < 5, blocks
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.threads tbody tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.innerText))")
    labels = [r[0] for r in rows]
    for i in range(4):
        assert f"compress {i}" in labels and f"decompress {i}" in labels
    assert all(len(r) == 5 for r in rows)  # thread + source/destination x before/after
    heads = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.threads th')).map(e => e.innerText)")
    assert heads[1:] == ["source before %", "source after %", "destination before %",
                         "destination after %"]
    assert driver.execute_script(
        "return document.querySelectorAll('table.features tbody tr').length") >= 8
    assert driver.execute_script(
        "return document.querySelectorAll('table.differences tbody tr').length") == 3


def test_index_links_the_slide_and_the_cell_draws_its_feature_timeline(
        driver: Any, report_dir: Path) -> None:
    _load(driver, report_dir / "index.html")
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('ul.slides a')).map(a => a.href)")
    assert links == [(report_dir / "slides" / f"{WAIT_TRUE}-{WAIT_FALSE}.html").as_uri()]
    cell = report_dir / "cells" / f"{WAIT_FALSE}.html"
    _load(driver, cell)
    _check_offline(driver, cell)
    assert driver.execute_script(
        "return document.getElementById('ft-compression').getAttribute('data-drawn')") == "1"
    assert driver.execute_script(
        "return document.querySelectorAll('table.threads tr.imbalance').length") >= 2
