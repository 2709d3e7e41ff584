"""The HTML report in real headless Chromium (Debian's chromium + chromedriver, via selenium).

Loads pages from file:// and checks: no console errors, no network requests, charts drawn
(the screenshot has many colours), and hostile record text shown as text, never executed.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report.model import build_report
from harness.report.render import render
from harness.results.record import upgrade
from tests.report_data import HOSTILE, cpu_block, make_run

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (make deps)",
)


def png_colours(png: bytes, step: int = 3) -> int:
    """Distinct RGB colours of an 8-bit RGB/RGBA PNG (every ``step``-th pixel of each row)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, width, step):
            colours.add(bytes(line[x * bpp:x * bpp + 3]))
        prev = line
    return len(colours)


@pytest.fixture(autouse=True)
def no_leftover_qemu() -> Iterator[None]:
    """No QEMU here: override the integration suite's QEMU leak check (others may run QEMU)."""
    yield


@pytest.fixture(scope="module")
def report_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="mb-report-"))
    recs = [make_run(cell_id="a00000000001", variant="q10", rep=r, total_ms=t,
                     cpu=cpu_block(), axes={"feature": "xbzrle"})
            for r, t in enumerate([7600, 7650, 7580, 7620], 1)]
    recs += [make_run(cell_id="a00000000002", variant="q10", rep=1, outcome="not-converged",
                      axes={"feature": "precopy"}, error="did not converge")]
    hostile = make_run(cell_id="a00000000003", variant="q10", rep=1, outcome="failed",
                       axes={"feature": "multifd"}, error=HOSTILE)
    hostile["console"]["destination"].append({"t": 0.0, "line": "guest says " + HOSTILE})
    hostile["cell"]["axes"]["feature"] = "multifd" + HOSTILE
    recs.append(hostile)
    # a skip reason is shown on the overview (table and heatmap) as well as on the cell page
    recs.append(make_run(cell_id="a00000000004", variant="q10", rep=1, outcome="skipped",
                         axes={"feature": "dirty-limit"}, error=HOSTILE))
    recs += [make_run(cell_id="b00000000001", variant="q72", rep=r, total_ms=t * 1.3,
                      axes={"feature": "xbzrle"})
             for r, t in enumerate([7600, 7650, 7580, 7620], 1)]
    render(build_report([upgrade(r) for r in recs], title="browser test",
                        baseline_variant="q72"), tmp)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mb-chromium-")
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--window-size=1400,2000", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _load(drv: Any, path: Path) -> None:
    drv.get_log("browser")
    drv.get_log("performance")
    drv.get(path.as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, 30).until(lambda d: d.execute_script(
        "var f = document.querySelectorAll('.fig');"
        "var open = Array.from(f).filter(e => !e.closest('details') || e.closest('details').open);"
        "return open.length > 0 && open.every(e => e.getAttribute('data-drawn') === '1');"))


def _requests(drv: Any) -> list[str]:
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _check_offline(drv: Any, path: Path) -> None:
    """No console errors and no request other than file:, data: or blob: since the load."""
    errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    remote = [u for u in _requests(drv) if not u.startswith(("file:", "data:", "blob:"))]
    assert remote == [], f"network requests from {path.name}: {remote}"


def _check_page(drv: Any, path: Path, shot: Path) -> None:
    _load(drv, path)
    _check_offline(drv, path)
    drv.save_screenshot(str(shot))
    assert png_colours(shot.read_bytes()) > 60, "screenshot looks blank"
    # every drawn figure has an SVG with data in it
    n = drv.execute_script("return document.querySelectorAll('.fig[data-drawn] .main-svg').length")
    assert n > 0


def test_index_loads_offline_and_draws(driver: Any, report_dir: Path, tmp_path: Path) -> None:
    _check_page(driver, report_dir / "index.html", tmp_path / "index.png")
    assert driver.execute_script("return typeof Plotly") == "object"
    heatmaps = driver.execute_script("return document.querySelectorAll('.fig .heatmaplayer').length")
    assert heatmaps >= 4


def test_cell_page_loads_offline_and_draws(driver: Any, report_dir: Path, tmp_path: Path) -> None:
    _check_page(driver, report_dir / "cells" / "a00000000001.html", tmp_path / "cell.png")
    body = driver.find_element("tag name", "body").text
    assert "info migrate" in body and "Migration status" in body
    assert "migration" in body and "42.0" in body  # CPU table
    lines = driver.execute_script("return document.querySelectorAll('.fig .scatterlayer path.js-line').length")
    assert lines >= 4


def test_collapsed_repetitions_draw_when_opened(driver: Any, report_dir: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    _load(driver, report_dir / "cells" / "a00000000001.html")
    drawn = "return Array.from(document.querySelectorAll('.fig[id^=tl-]')).map(e => e.id + ':' + " \
            "(e.getAttribute('data-drawn') || ''))"
    # the first repetition is drawn at once; the three in closed <details> wait
    assert driver.execute_script(drawn) == ["tl-1:1", "tl-2:", "tl-3:", "tl-4:"]
    driver.execute_script("document.querySelector('details #tl-3').closest('details').open = true")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.getElementById('tl-3').getAttribute('data-drawn') === '1'"))
    widths = driver.execute_script(
        "return ['tl-1', 'tl-3'].map(id => [document.getElementById(id).clientWidth,"
        " document.querySelector('#' + id + ' .main-svg').getBoundingClientRect().width])")
    (box1, svg1), (box3, svg3) = widths
    # drawn at the size of its container (not plotly's 700 px default for a hidden element)
    assert svg3 > 0.9 * box3 and abs(svg3 - svg1) < 0.1 * svg1 + 40, widths
    assert driver.execute_script(drawn)[1:] == ["tl-2:", "tl-3:1", "tl-4:"]
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors


def test_compare_page(driver: Any, report_dir: Path, tmp_path: Path) -> None:
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get((report_dir / "compare.html").as_uri())
    body = driver.find_element("tag name", "body").text
    assert "q10 vs q72" in body and "Mann-Whitney" in body
    assert driver.find_elements("css selector", ".badge.v-better")
    _check_offline(driver, report_dir / "compare.html")


def test_hostile_text_is_escaped(driver: Any, report_dir: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    for page in (report_dir / "cells" / "a00000000003.html",
                 report_dir / "cells" / "a00000000004.html", report_dir / "index.html"):
        _load(driver, page)
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 - an alert would mean script ran
        assert driver.execute_script("return document.querySelectorAll('img').length") == 0
        assert driver.execute_script(
            "return Array.from(document.scripts).filter(s => s.textContent.includes('alert(1)')"
            " && s.type !== 'application/json').length") == 0
        # shown as text: the whole string, markup and all
        assert HOSTILE in driver.find_element("tag name", "body").text, page.name
    index = driver.find_element("tag name", "body").text
    assert "skipped: " + HOSTILE in index  # the skip reason in the overview table
    assert "multifd" + HOSTILE in index  # the axis value in the overview table
    _load(driver, report_dir / "cells" / "a00000000003.html")
    driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    body = driver.find_element("tag name", "body").text
    assert "guest says " + HOSTILE in body
    assert "<img src=x onerror=alert(2)>" in body
